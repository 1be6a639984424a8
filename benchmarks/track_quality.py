"""Tracking quality on a rendered continuous trajectory: per-frame (raw network) vs filtered error and jitter.

    python benchmarks/track_quality.py --model runs/cube/best [--frames 300] [--cameras 1|3] [--size 224]
                                       [--set KEY=VALUE ...]

Every frame of the clip is processed (lockstep), so raw and filtered see the same frames. The clip is
rendered in the world the model was trained in (its checkpoint records it; checkpoints from before that
get the demo's world: the default config without the hand, limbs and table), with --set applied on top.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import discopose
from discopose.camera import CameraModel
from discopose.demo import TRAIN_LOOKS
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
    parser.add_argument("--cameras", type=int, default=1, help="1, or several (fused in the world frame)")
    parser.add_argument("--size", type=int, default=224, help="camera image size (square)")
    parser.add_argument("--fast-track", action="store_true",
                        help="the tracker's opt-in fast path: crops aimed at the filter's prediction, no locator")
    parser.add_argument("--split-networks-frames", action=argparse.BooleanOptionalAction, default=True,
                        help="several cameras: the joint alignment on the frame after the networks (TrackConfig)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="render config override of the clip, on top of the model's training world")
    args = parser.parse_args()
    estimator = discopose.load(args.model)
    recorded_world = estimator.train_render_config
    world = recorded_world or RenderConfig.load(overrides=TRAIN_LOOKS)
    overrides = [f"camera.width_px={args.size}", f"camera.height_px={args.size}", f"camera.count={args.cameras}",
                 f"seed={args.seed}", *args.set]
    with tempfile.TemporaryDirectory() as tmp:
        clip = render_trajectory_video(world.with_overrides(overrides), Path(tmp) / "clip.mp4",
                                       num_frames=args.frames, seed=args.seed)
        tracker = Tracker(estimator, {n: CameraSource(n, str(v), mode="lockstep") for n, v in clip.videos.items()},
                          {n: CameraModel.load(path) for n, path in clip.cameras.items()},
                          config=TrackConfig(publish=None, record=str(Path(tmp) / "poses.jsonl"), status_every_s=1e9,
                                             reuse_track=args.fast_track,
                                             split_networks_frames=args.split_networks_frames))
        tracker.run()
        symmetries = Symmetry.from_dict(estimator.object["symmetry"]).matrices()
        quality = tracking_quality(Path(tmp) / "poses.jsonl", clip.ground_truth,
                                   symmetries if len(symmetries) > 1 else None)
    print(f"# tracking quality on a {args.frames}-frame rendered trajectory, {args.cameras} camera(s) "
          f"{args.size}x{args.size} (every frame processed; frame: {quality['frame']}; "
          f"{'tracking fast path' if args.fast_track else 'full pipeline'}; "
          f"{'' if args.split_networks_frames else 'networks and joint alignment in one frame; '}"
          f"clip: the model's training world{'' if recorded_world else ' (not recorded: the demo world)'}"
          f"{', overrides ' + ' '.join(args.set) if args.set else ''})\n")
    print("| estimate | median translation error mm | median rotation error deg | jitter mm/frame | jitter deg/frame |")
    print("|---|---|---|---|---|")
    for kind in ("raw", "filtered"):
        q = quality[kind]
        print(f"| {kind} | {q['te_mm_median']:.1f} | {q['re_deg_median']:.1f} | {q['jitter_mm']:.2f} | {q['jitter_deg']:.2f} |")
    print("\n" + json.dumps(quality))


if __name__ == "__main__":
    main()
