"""The README's main job, in its quick variant: every stage runs and the artefacts exist."""
import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    # --resume on a fresh folder starts everything (scripts/train_shipped_model.sh always passes it).
    # A budget no CPU meets: both stages' training rates are measured, the crop stage keeps its one epoch (never
    # under the minimum) and the run says it is over budget.
    result = subprocess.run([sys.executable, "-m", "discopose.cli", "demo", "--quick", "--out", str(out), "--resume",
                             "--publish", "tcp://127.0.0.1:0", "--quiet", "--budget", "0.05"], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    budget = summary["budget"]
    assert budget["crop_epochs"] == summary["plan"]["crop_epochs"] == 1 and not budget["fits"]
    assert budget["crop_images_s"] > 0 and budget["locator_images_s"] > 0
    assert json.loads((out / "run" / "budget.json").read_text()) == budget and "budget 0.05 min" in result.stdout
    for path in summary["artefacts"].values():
        assert (tmp_path / path).exists() or __import__("pathlib").Path(path).exists(), path
    tracking = summary["tracking"]
    assert tracking["messages"] > 10 and tracking["subscriber_received"] > 0
    assert tracking["latency_ms_p50"] > 0
    assert "report.html" in result.stdout and "tracking:" in result.stdout
    results = summary["results"]
    assert set(results) == {"test", "test_no_hand", "test_held_out", "test_beyond", "rig3_fused", "rig3_first_camera",
                            "realistic", "realistic_no_hand", "realistic_heavy_grip", "realistic_rig3_fused",
                            "realistic_rig3_first_camera",
                            "test_locator_only"}
    # Every set spans distances and reports them per band, in the summary and the printed headline.
    assert all(row["by_distance"] and sum(band["count"] for band in row["by_distance"]) == row["count"]
               for row in results.values())
    assert "by distance: " in result.stdout
    assert results["rig3_fused"]["frame"] == results["realistic_rig3_fused"]["frame"] == "world (cameras fused)"
    for name, row in results.items():
        assert row["count"] == {"realistic": 3, "realistic_no_hand": 3, "realistic_heavy_grip": 3}.get(
            name, 2 if "realistic" in name else 24)
        assert row["chance"]["positions_from"] == "training labels"
        assert name == "test_locator_only" or 0 <= row["validity"]["valid_frac"] <= 1
    assert "chance:" in result.stdout
    # The demo calibrates its estimator with the refinement, so every evaluation of it refines and reports the
    # networks alone beside it (the locator-only ablation is a bare network: nothing to refine).
    assert {name for name, row in results.items() if "refine" in row} == set(results) - {"test_locator_only"}
    assert "networks alone" in result.stdout
    # The quick plan plots its headline sets only; the other reports keep their tables and worst cases.
    assert (out / "report" / "errors_hist.png").is_file() and (out / "report_realistic" / "errors_hist.png").is_file()
    assert not (out / "report_no_hand" / "errors_hist.png").exists()
    assert (out / "report_no_hand" / "worst_cases.png").is_file() and (out / "report_no_hand" / "report.html").is_file()
    # Packed as a shipped model would be: the card carries the recipe, the CPU and every figure. (Without the ONNX
    # networks, ~20 s: their export and parity are test_pretrained's.)
    packed = tmp_path / "packed"
    result = subprocess.run([sys.executable, "-m", "discopose.cli", "pack", "--demo", str(out), "--out", str(packed),
                             "--no-onnx"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(packed.glob("*/model.onnx"))
    card = json.loads((packed / "estimator.json").read_text())["model_card"]
    assert card["crop_views"] == summary["plan"]["crops"] * budget["crop_epochs"] and card["budget"] == budget
    assert card["cpu"] == summary["cpu"] and "avx2" in card["cpu"] and card["figures"] == summary["results"]
    # The quick recipe validates at epoch ends only: one point per crop epoch.
    assert card["trained_distances_m"] and len(card["val_curve"]) == summary["plan"]["crop_epochs"]
    # The README's tables are printed from this file, every figure read from it (scripts/demo_tables.py).
    script = Path(__file__).parent.parent / "scripts" / "demo_tables.py"
    tables = subprocess.run([sys.executable, str(script), str(out / "demo_summary.json")], capture_output=True,
                            text=True, timeout=60)
    assert tables.returncode == 0, tables.stderr[-2000:]
    test = results["test"]
    assert (f"| synthetic, in family (the hand world), 1 camera ({test['count']}) | {test['te_mm_median']:.1f} mm, "
            f"{test['re_deg_median']:.1f}° |") in tables.stdout
    assert tables.stdout.count(" m | ") >= 7 and f"**{summary['total_seconds'] / 60:.1f} min**" in tables.stdout
    wrong = subprocess.run([sys.executable, str(script), str(out / "run" / "budget.json")], capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 2 and "not a demo summary" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_budget_trains_fewer_crop_epochs_only_where_the_cpu_is_too_slow():
    from discopose.demo import AFTER_TRAINING_IMAGES, BUDGET_MIN_CROP_EPOCHS, FULL, budgeted_crop_epochs

    def projected_min(elapsed_s, locator_rate, crop_rate, crop_epochs):  # the demo's stages at these rates
        return (elapsed_s + FULL.frames * FULL.locator_epochs / locator_rate
                + (FULL.crops * crop_epochs + AFTER_TRAINING_IMAGES) / crop_rate) / 60
    # Rates like the avx512 class's: the whole recipe fits in 30 minutes and is kept.
    fast = budgeted_crop_epochs(FULL, 10 * 60, 150.0, 89.0)
    assert fast["crop_epochs"] == FULL.crop_epochs and fast["fits"] and fast["budget_min"] == 30
    # Slower (torch held to AVX2 kernels measured 66-78 crops/s): the most epochs that fit, and one more would not.
    slow = budgeted_crop_epochs(FULL, 10 * 60, 75.0, 70.0)
    epochs = slow["crop_epochs"]
    assert BUDGET_MIN_CROP_EPOCHS <= epochs < FULL.crop_epochs and slow["fits"]
    assert projected_min(600, 75.0, 70.0, epochs) <= 30 < projected_min(600, 75.0, 70.0, epochs + 1)
    assert slow["projected_min"] == pytest.approx(projected_min(600, 75.0, 70.0, epochs), abs=0.05)
    # The render already took most of the budget: never under the minimum, and said to be over it.
    late = budgeted_crop_epochs(FULL, 28 * 60, 75.0, 55.0)
    assert late["crop_epochs"] == BUDGET_MIN_CROP_EPOCHS and not late["fits"]


def test_speed_figures_say_when_torch_is_held_to_the_slow_class(monkeypatch):
    # The demo summary, training log and benchmarks print describe_cpu() beside their speeds: a fast machine held to
    # AVX2 kernels must not read as its own class there.
    from discopose._hardware import describe_cpu
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert "held" not in describe_cpu()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert describe_cpu().endswith("; torch held to ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2")
