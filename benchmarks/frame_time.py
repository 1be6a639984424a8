"""Where a tracked frame's time goes: one and three 640x480 cameras through the live tracker, every frame.

    python benchmarks/frame_time.py --model cube [--frames 120] [--size 640x480] [--cameras 1 3] [--backend auto]
                                    [--no-split-networks-frames]

A clip of the model's own world plays in lockstep (every frame processed once) through ``Tracker.step``, with each
part of the frame's path timed where it runs: the remaps onto each network's camera (``stage_view``), the locator
(and its zoomed second look), the crop network, the dense head's PnP consistency check, the refinement (one camera,
several jointly, or following the last pose), multi-camera fusion, publishing on localhost; "rest" is the step's
time outside those (grabbing, the trust model, the filter, Python). Mean ms per frame of each part and its share
of the mean step (the step's median and p99 beside them), per camera count and per path: networks, following,
and (several cameras, ``TrackConfig.split_networks_frames``) aligning the last frame's fused networks pose. Prints
the CPU it ran on; a machine with other load gives larger figures, so compare shares, or runs made in the same process.
Several cameras' networks run one after another here (``view_threads=1``), so that the parts add up to the step.
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import discopose
import discopose.estimator.api as api
import discopose.refine as refine
from discopose._hardware import describe_cpu
from discopose.camera import CameraModel
from discopose.estimator.publisher import PosePublisher
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import STEPS, TrackConfig, Tracker
from discopose.render.trajectory import render_trajectory_video

PARTS = ("remap", "locator", "crop network", "PnP check", "refine", "fusion", "publish", "rest")


class Timings:
    """Seconds per part for the current frame; wrap() times a callable under a part's name."""

    def __init__(self):
        self.frame = collections.defaultdict(float)

    def wrap(self, part, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.frame[part] += time.perf_counter() - start
        return timed


class TimedNetwork:
    """A stage's network whose calls are timed; everything else (spec, decode, meta) is the network's own."""

    def __init__(self, network, timed_call):
        self._network, self._timed_call = network, timed_call

    def __call__(self, images):
        return self._timed_call(images)

    def __getattr__(self, name):
        return getattr(self._network, name)


def instrument(estimator, timings: Timings) -> None:
    # The parts are timed one after another: several cameras' networks side by side (load(view_threads=2)) would
    # count the helper thread's parts on top of the caller's.
    estimator.view_threads = 1
    api.stage_view = timings.wrap("remap", api.stage_view)
    api.dense_consistency = timings.wrap("PnP check", api.dense_consistency)
    api.fuse_world_poses = timings.wrap("fusion", api.fuse_world_poses)
    refine.refine_pose = timings.wrap("refine", refine.refine_pose)
    refine.refine_world_pose = timings.wrap("refine", refine.refine_world_pose)
    estimator.locator = TimedNetwork(estimator.locator, timings.wrap("locator", estimator.locator.__call__))
    if estimator.crop is not None:
        estimator.crop = TimedNetwork(estimator.crop, timings.wrap("crop network", estimator.crop.__call__))
    PosePublisher.publish = timings.wrap("publish", PosePublisher.publish)


def measure(estimator, clip, timings: Timings, follow: bool, split: bool) -> dict:
    sources = {name: CameraSource(name, str(video), mode="lockstep") for name, video in clip.videos.items()}
    calibrations = {name: CameraModel.load(path) for name, path in clip.cameras.items()}
    tracker = Tracker(estimator, sources, calibrations, TrackConfig(publish="tcp://127.0.0.1:0", follow=follow,
                                                                    split_networks_frames=split))
    rows = {step: [] for step in STEPS}
    try:
        tracker.warm_up()
        while not all(s.ended for s in sources.values()):
            timings.frame.clear()
            start = time.perf_counter()
            if tracker.step() is None:
                continue
            total = time.perf_counter() - start
            parts = dict(timings.frame)
            parts["rest"] = total - sum(parts.values())
            rows[tracker.last_step].append((total, parts))
    finally:
        tracker.close()
    result = {}
    for path, frames in rows.items():
        if not frames:
            continue
        totals = np.array([t for t, _ in frames]) * 1000
        result[path] = {"frames": len(frames), "total_ms_p50": float(np.median(totals)),
                        "total_ms_p99": float(np.percentile(totals, 99)),
                        # Means, so that the parts add up to the mean step (medians of parts would not).
                        "total_ms_mean": float(np.mean(totals)),
                        "parts_ms": {p: float(np.mean([parts.get(p, 0.0) for _, parts in frames]) * 1000)
                                     for p in PARTS}}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--split-networks-frames", action=argparse.BooleanOptionalAction, default=True,
                        help="several cameras: the joint alignment on the frame after the networks (TrackConfig)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"# {args.model} ({args.backend}), {args.size}, {args.frames} frames; CPU: {describe_cpu()}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    timings = Timings()
    estimator = discopose.load(args.model, backend=args.backend)
    print(f"refinement {'on' if estimator.refines else 'off'} (as calibrated); networks and joint alignment "
          f"{'split over two frames' if args.split_networks_frames else 'in one frame'} with several cameras\n")
    instrument(estimator, timings)
    print("| cameras | path | frames | step p50 / p99 ms | " + " | ".join(PARTS) + " |")
    print("|---|---|---|---|" + "---|" * len(PARTS))
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.cameras:
            world = estimator.train_render_config.with_overrides(
                [f"camera.width_px={width}", f"camera.height_px={height}", f"camera.count={count}", "seed=4545",
                 # Arm's length: a clip far out (0.7 m) in a hand is all invalid, and nothing would be followed.
                 "camera.distance_range_m=[0.2, 0.4]"])
            clip = render_trajectory_video(world, Path(tmp) / f"clip{count}.mp4", num_frames=args.frames)
            for follow in ((False, True) if estimator.refines else (False,)):
                for path, row in measure(estimator, clip, timings, follow, args.split_networks_frames).items():
                    total = row["total_ms_mean"]
                    cells = " | ".join(f"{row['parts_ms'][p]:.1f} ({100 * row['parts_ms'][p] / total:.0f}%)"
                                       for p in PARTS)
                    print(f"| {count} | {path}{' (follow on)' if follow else ''} | {row['frames']} | "
                          f"{row['total_ms_p50']:.1f} / {row['total_ms_p99']:.1f} | {cells} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
