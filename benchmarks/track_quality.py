"""Tracking quality on a rendered continuous trajectory: per-frame (raw network) vs filtered error and jitter.

    python benchmarks/track_quality.py --model runs/cube/best [--frames 300]

Every frame of the clip is processed (lockstep), so raw and filtered see the same frames.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import discopose
from discopose.estimator.quality import tracking_quality
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import TrackConfig, Tracker
from discopose.geometry.symmetry import Symmetry
from discopose.render.config import RenderConfig
from discopose.render.trajectory import render_trajectory_video


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    estimator = discopose.load(args.model)
    camera = estimator.meta["cameras"][0]
    with tempfile.TemporaryDirectory() as tmp:
        clip = render_trajectory_video(RenderConfig.load(overrides=[f"camera.width_px={camera['width_px']}",
                                                                    f"camera.height_px={camera['height_px']}",
                                                                    f"seed={args.seed}"]),
                                       Path(tmp) / "clip.mp4", num_frames=args.frames, seed=args.seed)
        tracker = Tracker(estimator, {"cam0": CameraSource("cam0", str(clip), mode="lockstep")},
                          config=TrackConfig(publish=None, record=str(Path(tmp) / "poses.jsonl"), status_every_s=1e9))
        tracker.run()
        symmetries = Symmetry.from_dict(estimator.meta["object"]["symmetry"]).matrices()
        quality = tracking_quality(Path(tmp) / "poses.jsonl", clip.with_suffix(".gt.jsonl"),
                                   symmetries if len(symmetries) > 1 else None)
    print(f"# tracking quality on a {args.frames}-frame rendered trajectory (every frame processed)\n")
    print("| estimate | median translation error mm | median rotation error deg | jitter mm/frame | jitter deg/frame |")
    print("|---|---|---|---|---|")
    for kind in ("raw", "filtered"):
        q = quality[kind]
        print(f"| {kind} | {q['te_mm_median']:.1f} | {q['re_deg_median']:.1f} | {q['jitter_mm']:.2f} | {q['jitter_deg']:.2f} |")
    print("\n" + json.dumps(quality))


if __name__ == "__main__":
    main()
