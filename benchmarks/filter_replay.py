"""The temporal filter on recorded tracks: replay a track's raw measurements through filter settings.

    python benchmarks/filter_replay.py DEMO_OUT [DEMO_OUT ...]     # folders holding poses.jsonl + clip.gt.jsonl

``discopose demo`` records every published message (``poses.jsonl``, with the raw measurement, its stated
uncertainty and validity) and the clip's truth (``clip.gt.jsonl``). Each measurement is fed to a fresh
:class:`PoseFilter` exactly as the tracker feeds it (valid: update; invalid: predict only), and the median
error of the filtered track is printed beside the raw one, for the constant-velocity baseline and for
velocities decaying with several time constants, in the same process.

Then the floor no filter goes below: each valid raw measurement's error (position, and rotation as a tangent
vector) averaged with its neighbours' over a window of consecutive frames centred on it — a smoother with perfect
hindsight and no lag, which removes the frame-to-frame noise and keeps what persists. Where that floor is not 10%
below the raw median, the raw error is bias that lasts longer than the window, and no causal filter can lower it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from discopose.estimator.filter import FilterConfig, PoseFilter
from discopose.estimator.quality import ground_truth_poses, tracking_quality
from discopose.geometry.transforms import matrix_from_quat_wxyz, quat_wxyz_from_matrix, rotation_vector

# Hindsight windows, frames (centred): ~0.2 s and ~0.4 s at 30 fps.
HINDSIGHT_FRAMES = (5, 11)
SETTINGS = {"constant velocity (baseline)": 1e9, "decay 1.0 s": 1.0, "decay 0.5 s (default)": 0.5, "decay 0.2 s": 0.2}


def replay(records: list[dict], config: FilterConfig) -> list[dict]:
    """The records with ``position_m``/``quat_wxyz`` replaced by what a filter with ``config`` publishes."""
    pose_filter, out_records = PoseFilter(config), []
    for record in records:
        time_s = record["capture_time_s"]
        if record["raw_valid"]:
            out = pose_filter.update(time_s, np.asarray(record["raw_position_m"]),
                                     matrix_from_quat_wxyz(record["raw_quat_wxyz"]),
                                     np.asarray(record["raw_position_sigma_m"]), record["raw_rotation_sigma_rad"])
        elif pose_filter.initialized:
            pose_filter.predict(time_s)
            out = pose_filter.output(accepted=False)
        else:
            out = None
        replayed = dict(record)
        if out is not None:
            replayed.update(position_m=out.position_m.tolist(), quat_wxyz=quat_wxyz_from_matrix(out.rotation).tolist())
        else:
            replayed.update(position_m=record["raw_position_m"], quat_wxyz=record["raw_quat_wxyz"])
        out_records.append(replayed)
    return out_records


def raw_errors(records: list[dict], ground_truth: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices, position errors (N, 3) in mm and rotation errors (N, 3) as tangent vectors in degrees of the
    valid raw measurements, in the frame they were published in."""
    truths = ground_truth_poses(ground_truth, records[0]["frame"])
    frames, position, rotation = [], [], []
    for record in records:
        if not record["raw_valid"]:
            continue
        index = next(iter(record["frame_index"].values()))
        truth = truths[index]
        frames.append(index)
        position.append(1000 * (np.asarray(record["raw_position_m"]) - truth[:3, 3]))
        rotation.append(np.degrees(rotation_vector(matrix_from_quat_wxyz(record["raw_quat_wxyz"]) @ truth[:3, :3].T)))
    return np.array(frames), np.array(position).reshape(-1, 3), np.array(rotation).reshape(-1, 3)


def hindsight_floor(frames: np.ndarray, errors: np.ndarray, window: int) -> float:
    """Median norm of each error averaged with those of the frames within ``window // 2`` of it (the valid ones)."""
    half = window // 2
    smoothed = [errors[np.abs(frames - frame) <= half].mean(0) for frame in frames]
    return float(np.median(np.linalg.norm(smoothed, axis=1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="demo output folders")
    args = parser.parse_args()
    print("| track | valid measurements | filter | raw median | filtered median | filtered / raw |")
    print("|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        records = [json.loads(line) for line in (run / "poses.jsonl").read_text().splitlines() if line.strip()]
        valid = np.mean([r["raw_valid"] for r in records])
        for name, decay_s in SETTINGS.items():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "replayed.jsonl"
                path.write_text("\n".join(json.dumps(r) for r in replay(records, FilterConfig(velocity_decay_s=decay_s))))
                quality = tracking_quality(path, run / "clip.gt.jsonl")
            raw, filtered = quality["raw"], quality["filtered"]
            print(f"| {run.name} | {valid:.0%} | {name} | {raw['te_mm_median']:.1f} mm / {raw['re_deg_median']:.1f}° | "
                  f"{filtered['te_mm_median']:.1f} mm / {filtered['re_deg_median']:.1f}° | "
                  f"{filtered['te_mm_median'] / raw['te_mm_median']:.2f} |", flush=True)
    print("\n| track | raw median (valid) | " + " | ".join(f"hindsight floor, {w} frames" for w in HINDSIGHT_FRAMES)
          + " | frame-to-frame share of the error |")
    print("|---|---|" + "---|" * len(HINDSIGHT_FRAMES) + "---|")
    for run in map(Path, args.runs):
        records = [json.loads(line) for line in (run / "poses.jsonl").read_text().splitlines() if line.strip()]
        frames, position, rotation = raw_errors(records, run / "clip.gt.jsonl")
        raw = np.median(np.linalg.norm(position, axis=1)), np.median(np.linalg.norm(rotation, axis=1))
        floors = [(hindsight_floor(frames, position, w), hindsight_floor(frames, rotation, w)) for w in HINDSIGHT_FRAMES]
        cells = " | ".join(f"{t:.1f} mm / {r:.2f}° ({t / raw[0]:.2f} / {r / raw[1]:.2f})" for t, r in floors)
        widest = floors[-1]
        print(f"| {run.name} | {raw[0]:.1f} mm / {raw[1]:.2f}° | {cells} | {1 - widest[0] / raw[0]:.0%} / "
              f"{1 - widest[1] / raw[1]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
