"""Tracking latency and rate: capture -> publish per message, p50/p99, Hz, for torch and onnxruntime.

    python benchmarks/track_latency.py --model runs/cube/best [--frames 300]

Plays a rendered clip through the real camera code path (paced at 30 fps like a webcam). The baseline,
in the same process, is the network's inference time alone on one preprocessed frame.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import discopose
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import TrackConfig, Tracker
from discopose.render.config import RenderConfig
from discopose.render.trajectory import render_trajectory_video


def inference_ms(estimator, repeats=50):
    height, width = estimator.input_size_px
    batch = estimator.preprocess(np.zeros((height, width, 3), np.uint8))
    for _ in range(5):
        estimator.infer(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        estimator.infer(batch)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    meta_camera = discopose.load(args.model).meta["cameras"][0]
    with tempfile.TemporaryDirectory() as tmp:
        clip = render_trajectory_video(RenderConfig.load(overrides=[f"camera.width_px={meta_camera['width_px']}",
                                                                    f"camera.height_px={meta_camera['height_px']}"]),
                                       Path(tmp) / "clip.mp4", num_frames=args.frames, fps=args.fps)
        print(f"# tracking latency, one camera {meta_camera['width_px']}x{meta_camera['height_px']} at {args.fps:.0f} fps\n")
        print("| backend | inference alone ms (p50) | Hz | latency p50 ms | latency p99 ms |")
        print("|---|---|---|---|---|")
        backends = ["torch"]
        if (Path(args.model) / "model.onnx").is_file():
            backends.append("onnx")
        for backend in backends:
            estimator = discopose.load(args.model, backend=backend)
            alone = inference_ms(estimator)
            tracker = Tracker(estimator, {"cam0": CameraSource("cam0", str(clip))},
                              config=TrackConfig(publish="tcp://127.0.0.1:0", status_every_s=1e9))
            stats = tracker.run()
            print(f"| {backend} | {alone:.1f} | {stats['hz']:.1f} | {stats['latency_ms_p50']:.1f} | "
                  f"{stats['latency_ms_p99']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
