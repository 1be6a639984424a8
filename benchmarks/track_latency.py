"""Tracking latency and rate: capture -> publish per message, p50/p99, Hz, for torch and onnxruntime.

    python benchmarks/track_latency.py --model runs/cube/best [--frames 300] [--cameras 1|3] [--size 224]

Plays a rendered clip through the real camera code path (paced at 30 fps like a webcam). The baseline,
in the same process, is the estimator alone (locator + refined crops) on one frame per camera.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import discopose
from discopose.camera import CameraModel
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import TrackConfig, Tracker
from discopose.render.config import RenderConfig
from discopose.render.trajectory import render_trajectory_video


def inference_ms(estimator, views, repeats=30):
    for _ in range(3):
        estimator.predict_views(views)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        estimator.predict_views(views)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fast-track", action="store_true", help="the tracker's opt-in fast path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = render_trajectory_video(RenderConfig.load(overrides=[f"camera.width_px={args.size}",
                                                                    f"camera.height_px={args.size}",
                                                                    f"camera.count={args.cameras}"]),
                                       Path(tmp) / "clip.mp4", num_frames=args.frames, fps=args.fps)
        calibrations = {n: CameraModel.load(p) for n, p in clip.cameras.items()}
        print(f"# tracking latency, {args.cameras} camera(s) {args.size}x{args.size} at {args.fps:.0f} fps\n")
        print("| backend | estimator alone ms (p50) | Hz | latency p50 ms | latency p99 ms |")
        print("|---|---|---|---|---|")
        backends = ["torch"]
        if (Path(args.model) / "locator" / "model.onnx").is_file():
            backends.append("onnx")
        views = [(np.zeros((args.size, args.size, 3), np.uint8), camera) for camera in calibrations.values()]
        for backend in backends:
            estimator = discopose.load(args.model, backend=backend)
            alone = inference_ms(estimator, views)
            tracker = Tracker(estimator, {n: CameraSource(n, str(v)) for n, v in clip.videos.items()}, calibrations,
                              config=TrackConfig(publish="tcp://127.0.0.1:0", status_every_s=1e9,
                                                 reuse_track=args.fast_track))
            stats = tracker.run()
            print(f"| {backend} | {alone:.1f} | {stats['hz']:.1f} | {stats['latency_ms_p50']:.1f} | "
                  f"{stats['latency_ms_p99']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
