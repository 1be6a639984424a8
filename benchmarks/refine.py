"""The refinement's basin: success and final error against the initial error, per look, with the time per frame.

    python benchmarks/refine.py --out refine_basin.png [--frames 30] [--hypotheses 1 7]
        [--realistic-hand DIR] [--realistic-no-hand DIR]

Frames: the project's rasterizer at 640x480 in its default (domain-randomized) world and in a plain one (no
hand, no occluders), and the realistic proxy (path traced, webcam lens and noise) with and without the hand,
read from ``discopose realistic`` datasets (rendered here into a temporary folder when no folder is given:
about 4 s a frame). Each frame's true ``camera_from_object`` is perturbed by each initial error (a random
axis, the exact angle; a random direction, the exact distance) and refined from there with the built-in cube's
model. Success: final error < 5 deg and < 5 mm (the letters matter: no symmetry is taken off); ``sym`` is the
same with the cube's 24 shape symmetries taken off (the geometry was found, a wrong equivalent kept). Worse:
the rotation error grew by more than 5 deg. Score: the refinement's own score of its result, median over
successes and failures, and the ROC AUC with which it tells them apart. Times are of one ``refine_pose`` call
(all hypotheses): wall clock (p50/p90), on whatever else the machine is running (the load is printed), and
this process's CPU time (p50), which another job on the same cores disturbs less.

    python benchmarks/refine.py --estimator MODEL --data DIR [DIR ...] [--limit N] [--rows rows.json]

The score gate of the estimator's refinement (``PoseEstimator.refine_min_score``): the estimator runs with the
refinement on and no gate (every alignment that beats its start replaces the networks' pose), and for each
threshold the alignment is kept only where its score reaches it; per dataset (several cameras: fused and refined
jointly) the networks alone ("off") and each threshold: share taken, rotation and position median/p90, share
made worse by > 5 deg (and of those, flagged invalid), share made better by > 5 deg.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from discopose._hardware import describe_cpu
from discopose.camera import CameraModel
from discopose.geometry.transforms import rotation_about_axis, rotation_angle_deg
from discopose.refine import RefineConfig, RefineModel, refine_pose

INITIAL_ERRORS = ((5, 2), (10, 5), (20, 10), (30, 15), (45, 20), (60, 30))  # (deg, mm)
SCORE_FLAG = 0.6  # a refined pose scoring below this is flagged (the trust model's threshold to be calibrated)
PLAIN = ["hand.prob=0", "limbs.prob=0", "clutter.occluder_prob=0"]


def rendered_frames(count: int, seed: int, extra: list[str]) -> list[dict]:
    """``count`` rasterized 640x480 frames: image, camera, true pose, visible share, the object's refine model."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    from discopose.render.objects import build_object
    config = RenderConfig.load(overrides=[f"seed={seed}", "camera.width_px=640", "camera.height_px=480"] + extra)
    renderer = DiscoRenderer(config)
    obj = build_object(config.object)
    model = RefineModel.cube(config.object.cube_size_m) if config.object.mesh is None else \
        RefineModel.from_mesh(obj.positions, obj.indices, name=obj.name)
    frames = []
    try:
        for index in range(count):
            _, views = renderer.render_index(index)
            for name, view in views.items():
                labels = view["labels"]
                frames.append({"rgb": view["rgb"], "camera": CameraModel(name, 640, 480, labels["K"]),
                               "pose": np.asarray(labels["camera_from_object"]),
                               "visible": labels["visible_fraction"], "model": model})
    finally:
        renderer.close()
    return frames


def realistic_frames(folder: str | None, count: int, seed: int, hand: bool, scratch: str) -> list[dict]:
    """Frames of a ``discopose realistic`` dataset (rendered into ``scratch`` when ``folder`` is None)."""
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.reader import iter_samples, open_dataset
    if folder is None:
        from discopose.realistic.pathtraced import render_realistic_dataset
        folder = os.path.join(scratch, f"realistic_{'hand' if hand else 'no_hand'}")
        render_realistic_dataset(folder, count, seed=seed, hand=hand, progress=False)
    frames = []
    for sample in iter_samples(open_dataset(folder), limit=count):
        for name, view in sample["views"].items():
            labels = sample["labels"]["cameras"][name]
            frames.append({"rgb": view["rgb"], "camera": camera_from_labels(name, labels),
                           "pose": np.asarray(labels["camera_from_object"]),
                           "visible": labels.get("visible_fraction", 1.0)})
    return frames


def perturbed(pose: np.ndarray, deg: float, mm: float, rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    out = pose.copy()
    out[:3, :3] = rotation_about_axis(rng.normal(size=3), np.radians(deg)) @ pose[:3, :3]
    out[:3, 3] += direction / np.linalg.norm(direction) * mm / 1000
    return out


def errors(pose: np.ndarray, truth: np.ndarray, symmetries: np.ndarray) -> tuple[float, float, float]:
    """(rotation deg, position mm, rotation deg with the shape symmetries taken off)."""
    rotation = rotation_angle_deg(pose[:3, :3], truth[:3, :3])
    traces = np.einsum("nij,ij->n", truth[:3, :3] @ symmetries, pose[:3, :3])
    symmetric = float(np.degrees(np.arccos(np.clip((traces.max() - 1) / 2, -1, 1))))
    return rotation, 1000 * float(np.linalg.norm(pose[:3, 3] - truth[:3, 3])), symmetric


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if len(positive) == 0 or len(negative) == 0:
        return None
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def evaluate(frames: list[dict], config: RefineConfig, seed: int) -> list[dict]:
    cube = RefineModel.cube()
    rows = []
    for deg, mm in INITIAL_ERRORS:
        rng = np.random.default_rng([seed, deg, mm])
        for frame in frames:
            model = frame.get("model", cube)
            start = perturbed(frame["pose"], deg, mm, rng)
            cpu_started = time.process_time()
            result = refine_pose(frame["rgb"], frame["camera"], model, start, config)
            cpu_ms = 1000 * (time.process_time() - cpu_started)
            rotation, position, symmetric = errors(result.camera_from_object, frame["pose"], model.shape_symmetries)
            rows.append({"deg": deg, "mm": mm, "rotation": rotation, "position": position, "symmetric": symmetric,
                         "score": result.score, "ms": result.time_ms, "cpu_ms": cpu_ms})
    return rows


def summarize(rows: list[dict]) -> dict:
    rotation = np.array([r["rotation"] for r in rows])
    position = np.array([r["position"] for r in rows])
    symmetric = np.array([r["symmetric"] for r in rows])
    score = np.array([r["score"] for r in rows])
    initial = np.array([r["deg"] for r in rows])
    success = (rotation < 5) & (position < 5)
    worse = rotation > initial + 5
    flagged = score < SCORE_FLAG
    return {"n": len(rows), "success": success.mean(), "sym": ((symmetric < 5) & (position < 5)).mean(),
            "rot": np.median(rotation), "pos": np.median(position), "worse": worse.mean(),
            "worse_flagged": flagged[worse].mean() if worse.any() else None,
            "good_kept": (~flagged[success]).mean() if success.any() else None,
            "score_ok": np.median(score[success]) if success.any() else None,
            "score_bad": np.median(score[~success]) if (~success).any() else None,
            "auc": auc(score[success], score[~success]), "ms": np.median([r["ms"] for r in rows]),
            "cpu_ms": np.median([r["cpu_ms"] for r in rows]),
            "ms90": np.percentile([r["ms"] for r in rows], 90)}


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def gate_sweep(model: str, datasets: list[str], limit: int | None, thresholds: list[float],
               rows_path: str | None, config: RefineConfig) -> None:
    """The estimator's refinement (``config``) with each score threshold, from one ungated pass per dataset (see
    the module docstring)."""
    import json

    from discopose.datasets.reader import open_dataset
    from discopose.estimator.api import load
    from discopose.evaluation import predict_with_estimator
    from discopose.models.metrics import re
    estimator = load(model, refine=config)
    estimator.refine_min_score = 0.0
    symmetries = estimator.symmetries if len(estimator.symmetries) > 1 else None
    print(f"# {model}: score gate sweep, refinement {estimator.refine_config}\n")
    header = (f"{'data':<22} {'gate':>5} {'n':>4} {'taken':>5} {'rot med/p90':>13} {'pos med/p90':>14} "
              f"{'worse':>6} {'flagged':>7} {'better':>6} {'ms':>5}")
    print(header)
    print("-" * len(header))
    dump = {}
    for data in datasets:
        p = predict_with_estimator(estimator, open_dataset(data), limit=limit)
        network_re = np.array([re(r, t, symmetries) for r, t in zip(p["network_rotation"], p["true_rotation"])])
        refined_re = np.array([re(r, t, symmetries) for r, t in zip(p["rotation"], p["true_rotation"])])
        network_te = 1000 * np.linalg.norm(p["network_position_m"] - p["true_position_m"], axis=1)
        refined_te = 1000 * np.linalg.norm(p["position_m"] - p["true_position_m"], axis=1)
        candidate = p["refine_hypothesis"] >= 0  # -1: the start scored better; -2: the alignment could not run
        name = f"{os.path.basename(os.path.normpath(data))}, {config.hypotheses}h"
        dump[name] = {"network_re": network_re.tolist(), "refined_re": refined_re.tolist(),
                      "network_te": network_te.tolist(), "refined_te": refined_te.tolist(),
                      "score": p["refine_score"].tolist(), "candidate": candidate.tolist(),
                      "valid": p["valid"].tolist(), "distance_m": p["distance_m"].tolist(),
                      "visible": p["visible_fraction"].tolist()}
        for gate in [None] + thresholds:
            taken = np.zeros(len(candidate), bool) if gate is None else candidate & (p["refine_score"] >= gate)
            rotation = np.where(taken, refined_re, network_re)
            position = np.where(taken, refined_te, network_te)
            worse = rotation > network_re + 5
            flagged = f"{(~p['valid'][worse]).mean():.2f}" if worse.any() else "-"
            ms = np.median(1000 * p["seconds"] - (0 if gate is not None else p["refine_ms"]))
            print(f"{name:<22} {'off' if gate is None else f'{gate:.2f}':>5} {len(rotation):>4} {taken.mean():>5.2f} "
                  f"{np.median(rotation):>5.1f}/{np.percentile(rotation, 90):<6.1f}d "
                  f"{np.median(position):>5.1f}/{np.percentile(position, 90):<5.1f}mm {worse.mean():>6.2f} "
                  f"{flagged:>7} {(rotation < network_re - 5).mean():>6.2f} {ms:>5.0f}")
        print()
    if rows_path:
        with open(rows_path, "w") as f:
            json.dump(dump, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="PNG path of the basin plot (required unless --estimator)")
    parser.add_argument("--frames", type=int, default=30, help="frames per look (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hypotheses", type=int, nargs="+", default=[1, 7],
                        help="RefineConfig.hypotheses settings to measure (default 1 7)")
    parser.add_argument("--realistic-hand", help="a `discopose realistic` dataset (default: render one here)")
    parser.add_argument("--realistic-no-hand", help="a `discopose realistic --no-hand` dataset (default: render)")
    parser.add_argument("--skip-realistic", action="store_true", help="rasterized looks only")
    parser.add_argument("--no-drill", action="store_true", help="leave out the user-mesh look (the example drill)")
    parser.add_argument("--estimator", help="an estimator (run's best/ or 'cube'): sweep its refinement's score gate "
                                            "on --data instead of measuring the basin")
    parser.add_argument("--data", nargs="+", default=[], help="--estimator: datasets to sweep on")
    parser.add_argument("--limit", type=int, help="--estimator: samples per dataset (default all)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
                        help="--estimator: score thresholds to try")
    parser.add_argument("--rows", help="--estimator: write the per-frame errors and scores to this JSON file")
    args = parser.parse_args()
    if args.estimator:
        for hypotheses in args.hypotheses:
            rows = args.rows and (args.rows if len(args.hypotheses) == 1 else f"{args.rows}.{hypotheses}h.json")
            gate_sweep(args.estimator, args.data, args.limit, args.thresholds, rows, RefineConfig(hypotheses=hypotheses))
        return
    if not args.out:
        parser.error("--out is required (the basin plot's PNG path)")

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"# {cpu}, {os.cpu_count()} CPUs, {describe_cpu()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"# {args.frames} frames per look, seed {args.seed}; success = final < 5 deg and < 5 mm; "
          f"worse = rotation error grew by > 5 deg; flagged: share of the worse with score < {SCORE_FLAG}; "
          f"kept: share of the successes with score >= {SCORE_FLAG}\n")
    started = time.perf_counter()
    looks = {"rendered": lambda: rendered_frames(args.frames, 1000 + args.seed, []),
             "rendered plain": lambda: rendered_frames(args.frames, 2000 + args.seed, PLAIN)}
    with tempfile.TemporaryDirectory() as scratch:
        if not args.no_drill:
            from discopose.render.example_objects import make_example_object
            drill = make_example_object("drill", os.path.join(scratch, "drill.glb"))
            looks["drill, plain"] = lambda: rendered_frames(args.frames, 5000 + args.seed, PLAIN + [
                f"object.mesh={drill}", "object.mesh_scale_to_m=0.001"])
        if not args.skip_realistic:
            looks["realistic, hand"] = lambda: realistic_frames(args.realistic_hand, args.frames, 3000 + args.seed,
                                                                True, scratch)
            looks["realistic, no hand"] = lambda: realistic_frames(args.realistic_no_hand, args.frames,
                                                                   4000 + args.seed, False, scratch)
        frames = {name: make() for name, make in looks.items()}
    print(f"# frames ready in {time.perf_counter() - started:.0f} s\n")

    results = {}
    header = (f"{'look':<20} {'hyp':>3} {'init':>9} {'n':>4} {'success':>7} {'sym':>5} {'rot med':>8} "
              f"{'pos med':>8} {'worse':>6} {'flagged':>7} {'score ok/bad':>13} {'auc':>5} {'kept':>5} "
              f"{'ms p50/p90':>12} {'cpu ms':>6}")
    print(header)
    print("-" * len(header))
    for hypotheses in args.hypotheses:
        config = RefineConfig(hypotheses=hypotheses)
        for name, look in frames.items():
            rows = evaluate(look, config, args.seed)
            results[(name, hypotheses)] = rows
            for deg, mm in INITIAL_ERRORS + ((None, None),):
                part = rows if deg is None else [r for r in rows if r["deg"] == deg]
                s = summarize(part)
                label = "all" if deg is None else f"{deg}d/{mm}mm"
                print(f"{name:<20} {hypotheses:>3} {label:>9} {s['n']:>4} {s['success']:>7.2f} {s['sym']:>5.2f} "
                      f"{s['rot']:>7.1f}d {s['pos']:>6.1f}mm {s['worse']:>6.2f} {fmt(s['worse_flagged'], '.2f'):>7} "
                      f"{fmt(s['score_ok'], '.2f'):>6}/{fmt(s['score_bad'], '.2f'):<6} {fmt(s['auc'], '.2f'):>5} "
                      f"{fmt(s['good_kept'], '.2f'):>5} "
                      f"{s['ms']:>5.1f}/{s['ms90']:<5.1f} {s['cpu_ms']:>6.1f}")
            print()
    plot(results, args.out, args.frames)
    print(f"# basin plot: {args.out}; total {time.perf_counter() - started:.0f} s")


def plot(results: dict, path: str, frames: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    degrees = [deg for deg, _ in INITIAL_ERRORS]
    positions = np.arange(len(degrees))
    labels = [f"{deg}°\n{mm} mm" for deg, mm in INITIAL_ERRORS]
    for (name, hypotheses), rows in results.items():
        style = "-" if hypotheses == 1 else "--"
        success = [summarize([r for r in rows if r["deg"] == deg])["success"] for deg in degrees]
        median = [summarize([r for r in rows if r["deg"] == deg])["rot"] for deg in degrees]
        line, = left.plot(positions, success, style, marker="o", label=f"{name}, {hypotheses} start"
                          + ("s" if hypotheses > 1 else ""))
        right.plot(positions, median, style, marker="o", color=line.get_color())
    right.plot(positions, degrees, ":", color="grey", label="no change")
    left.set(xlabel="initial error", ylabel="success (< 5° and < 5 mm)", ylim=(0, 1.02),
             title=f"Refinement basin ({frames} frames per look)")
    right.set(xlabel="initial error", ylabel="final rotation error, median (°)", yscale="log",
              title="Final rotation error")
    for axis in (left, right):
        axis.set_xticks(positions, labels)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
