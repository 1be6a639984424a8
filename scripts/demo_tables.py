"""The README's accuracy tables from `discopose demo` runs: every figure read from their `demo_summary.json`.

    python scripts/demo_tables.py demo_seed0/demo_summary.json demo_seed1/demo_summary.json

Prints (Markdown) the run line (seed, code, CPU, minutes per stage), the per-test-set table (medians of every run
side by side, the other columns the first run's) and the per-distance table, so that the figures a fresh clone
reproduces are pasted, not retyped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = (  # (results key, the row's name in the README)
    ("test", "synthetic, in family (the hand world), 1 camera"),
    ("test_no_hand", "synthetic, no hand, limbs or table"),
    ("test_held_out", "synthetic, held-out appearance"),
    ("rig3_fused", "synthetic, 3-camera rig, fused (world)"),
    ("rig3_first_camera", "synthetic, 3-camera rig, its first camera"),
    ("test_beyond", "synthetic, 0.1–1.5 m, past the volume on both sides"),
    ("realistic", "**realistic proxy, 1 webcam, hand**"),
    ("realistic_no_hand", "realistic proxy, 1 webcam, no hand"),
    ("realistic_heavy_grip", "realistic proxy, heavy grip (fingers across the letters)"),
    ("realistic_rig3_fused", "**realistic proxy, 3 webcams fused**"),
    ("realistic_rig3_first_camera", "realistic proxy, the rig's first webcam"),
    ("test_locator_only", "ablation: locator alone, no zoom-in, in family"),
)
VOLUME_BINS = ((0.15, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.0))
BEYOND_BINS = (((0.0, 0.12), "< 0.12 m"), ((0.12, 0.15), "0.12–0.15 m"), ((1.0, 1.3), "1.0–1.3 m"),
               ((1.3, None), "> 1.3 m"))


def pose(mm: float, deg: float) -> str:
    return f"{mm:.1f} mm, {deg:.1f}°"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def test_set_row(name: str, sets: list[dict]) -> str:
    first = sets[0]
    medians = " · ".join(pose(s["te_mm_median"], s["re_deg_median"]) for s in sets)
    heads = first.get("heads")
    head_cell = " · ".join(f"{heads[h]['re_deg']:.1f}°" for h in ("regressed", "pnp", "reported")) if heads else "–"
    refine = first.get("refine")
    networks = pose(refine["network_te_mm_median"], refine["network_re_deg_median"]) if refine else "–"
    uncertainty, validity, chance = first["uncertainty"], first["validity"], first["chance"]
    covers = " / ".join(percent(v) for v in uncertainty["position_within_1sigma_per_axis"])
    valid = (f"{percent(validity['valid_frac'])}; {percent(validity['good_valid_frac'])} of {validity['good_count']}; "
             f"{percent(validity['gross_invalid_frac'])} of {validity['gross_count']}")
    return (f"| {name} ({first['count']}) | {medians} | {first['te_mm_p90']:.0f} mm, {first['re_deg_p90']:.0f}° | "
            f"{head_cell} | {networks} | {covers} | {percent(uncertainty['rotation_within_2sigma'])} | {valid} | "
            f"{chance['te_mm_median']:.0f} mm, {chance['re_deg_median']:.0f}° |")


def distance_bin(result: dict, bounds: tuple) -> dict | None:
    for row in result.get("by_distance", []):
        if tuple(row["distance_m"]) == tuple(bounds):
            return row
    return None


def per_distance_rows(runs: list[dict]) -> list[str]:
    def cell(key: str, bounds: tuple, with_count: bool = False) -> str:
        parts = []
        for run in runs:
            row = distance_bin(run["results"].get(key, {}), bounds)
            if row is None:
                parts.append("–")
                continue
            text = f"{row['te_mm_median']:.1f} mm ({100 * row['te_rel_median']:.1f}%), {row['re_deg_median']:.1f}°"
            parts.append(f"{text} ({row['count']})" if with_count else text)
        return " · ".join(parts)

    def shares(key: str, bounds: tuple, field: str) -> str:
        rows = [distance_bin(run["results"].get(key, {}), bounds) or {} for run in runs]
        return " · ".join(percent(row.get(field)) for row in rows)

    lines = []
    for bounds in VOLUME_BINS:
        lines.append(f"| {bounds[0]}–{bounds[1]} m | {cell('test', bounds)} | {cell('test_no_hand', bounds)} | "
                     f"{shares('test', bounds, 'position_within_1sigma')} | "
                     f"{shares('test', bounds, 'gross_invalid_frac')} | {cell('realistic', bounds, True)} |")
    beyond = ", ".join(f"{label} {shares('test_beyond', bounds, 'gross_invalid_frac')}"
                       for bounds, label in BEYOND_BINS)
    lines.append(f"| past it (0.1–1.5 m set): gross flagged per bin | – | – | – | {beyond} | – |")
    return lines


def run_line(run: dict) -> str:
    seconds = run["seconds"]
    stages = ", ".join(f"{stage} {value / 60:.1f}" for stage, value in seconds.items())
    budget = run.get("budget", {})
    epochs = f"{budget['crop_epochs']} of {budget['planned_crop_epochs']} crop epochs" if budget else ""
    return (f"seed {run['plan']['seed']}, code {run['code_version'][:7]}: **{run['total_seconds'] / 60:.1f} min** "
            f"({stages}; {epochs}); CPU {run['cpu']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summaries", nargs="+", help="demo_summary.json of each run, the first one's p90s shown")
    args = parser.parse_args()
    runs = []
    for path in args.summaries:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"{path}: cannot read it as JSON ({exc.__class__.__name__}); pass the demo_summary.json that "
                         "`discopose demo --out DIR` writes in DIR")
        if not isinstance(run, dict) or "results" not in run or "plan" not in run:
            parser.error(f"{path}: not a demo summary (no results); pass DIR/demo_summary.json of `discopose demo`")
        runs.append(run)
    for run in runs:
        print(f"- {run_line(run)}")
    seeds = " · ".join(f"seed {run['plan']['seed']}" for run in runs)
    print(f"\n| test set (samples) | median, {seeds} | p90 | rotation per head: regressed · PnP · reported | "
          "networks alone (no refinement) | position 1σ covers x / y / z | rotation within 2σ | "
          "valid: all; good ones valid; gross ones invalid | chance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, name in ROWS:
        if all(key in run["results"] for run in runs):
            print(test_set_row(name, [run["results"][key] for run in runs]))
    print(f"\n| camera–object distance ({seeds}) | in family, hand: median (% of distance), rotation | no hand | "
          "1σ covers (hand) | gross flagged (hand) | realistic, hand (frames) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(per_distance_rows(runs)))
    for run in runs:
        tracking = run.get("tracking") or {}
        quality = tracking.get("quality", {})
        if tracking:
            print(f"\nseed {run['plan']['seed']} tracking: {tracking['hz']:.1f} Hz, latency p50 "
                  f"{tracking['latency_ms_p50']:.0f} / p99 {tracking['latency_ms_p99']:.0f} ms, "
                  f"{tracking['subscriber_received']} of {tracking['messages']} received; raw → filtered "
                  f"{quality['raw']['te_mm_median']:.1f} → {quality['filtered']['te_mm_median']:.1f} mm, "
                  f"{quality['raw']['re_deg_median']:.1f} → {quality['filtered']['re_deg_median']:.1f}°"
                  if quality else "")


if __name__ == "__main__":
    main()
