"""The temporal filter on recorded tracks: replay a track's raw measurements through filter settings.

    python benchmarks/filter_replay.py DEMO_OUT [DEMO_OUT ...]     # folders holding poses.jsonl + clip.gt.jsonl

``discopose demo`` records every published message (``poses.jsonl``, with the raw measurement, its stated
uncertainty and validity) and the clip's truth (``clip.gt.jsonl``). Each measurement is fed to a fresh
:class:`PoseFilter` exactly as the tracker feeds it (valid: update; invalid: predict only), and the median
error of the filtered track is printed beside the raw one, for the constant-velocity baseline and for
velocities decaying with several time constants, in the same process.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from discopose.estimator.filter import FilterConfig, PoseFilter
from discopose.estimator.quality import tracking_quality
from discopose.geometry.transforms import matrix_from_quat_wxyz, quat_wxyz_from_matrix

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


if __name__ == "__main__":
    main()
