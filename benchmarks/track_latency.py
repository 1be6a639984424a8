"""Estimator cost and live-tracking latency on webcam-sized frames, 1 and 3 cameras, torch and ONNX Runtime.

    python benchmarks/track_latency.py --model cube [--frames 300] [--size 640x480] [--cameras 1 3]

For each camera count it renders a clip (the model's own world) and reports
* the estimator alone on real frames of the clip (all cameras of a step in one call): p50 and p99 ms;
* the live tracker on the clip played as 30 fps webcams (paced, dropping frames like a real camera):
  published Hz and capture -> publish latency p50 / p99, default path and ``--fast-track``;
for the torch backend (the baseline, same process) and onnxruntime (exported on the fly when the model has
no ``model.onnx``), with the ratio to the baseline. State the machine's other load beside the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import discopose
from discopose.camera import CameraModel
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import TrackConfig, Tracker
from discopose.pretrained import resolve_model
from discopose.render.trajectory import render_trajectory_video


def estimator_ms(estimator, steps: list[list[tuple]], repeats: int = 2) -> tuple[float, float]:
    """p50, p99 of one call per step (all cameras of the step together), after a warm-up."""
    estimator.predict_views(steps[0])
    times = []
    for _ in range(repeats):
        for views in steps:
            start = time.perf_counter()
            estimator.predict_views(views)
            times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def track(estimator, clip, fast: bool) -> dict:
    sources = {name: CameraSource(name, str(video)) for name, video in clip.videos.items()}
    calibrations = {name: CameraModel.load(path) for name, path in clip.cameras.items()}
    tracker = Tracker(estimator, sources, calibrations, TrackConfig(publish=None, reuse_track=fast))
    return tracker.run()


def clip_frames(clip, count: int) -> list[list[tuple]]:
    import cv2
    calibrations = {name: CameraModel.load(path) for name, path in clip.cameras.items()}
    captures = {name: cv2.VideoCapture(str(video)) for name, video in clip.videos.items()}
    steps = []
    for _ in range(count):
        views = []
        for name, capture in captures.items():
            ok, bgr = capture.read()
            if not ok:
                return steps
            views.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), calibrations[name]))
        steps.append(views)
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    model = resolve_model(args.model)
    print(f"# {model}: {args.size} frames, {args.fps:.0f} fps clips of {args.frames} frames, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = Path(tmp) / "onnx_model"
        if not (model / "locator" / "model.onnx").is_file():
            from discopose.models.export import export_estimator
            shutil.copytree(model, onnx_model)
            export_estimator(onnx_model)
        else:
            onnx_model = model
        print("| cameras | backend | estimator p50 / p99 ms | x baseline | tracker Hz | latency p50 / p99 ms "
              "| --fast-track Hz | latency p50 / p99 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for count in args.cameras:
            estimator = discopose.load(model)
            world = estimator.train_render_config.with_overrides(
                [f"camera.width_px={width}", f"camera.height_px={height}", f"camera.count={count}", "seed=4242"])
            clip = render_trajectory_video(world, Path(tmp) / f"clip{count}.mp4", num_frames=args.frames, fps=args.fps)
            steps = clip_frames(clip, min(100, args.frames))
            baseline = None
            for backend, path in (("torch", model), ("onnx", onnx_model)):
                estimator = discopose.load(path, backend=backend)
                p50, p99 = estimator_ms(estimator, steps)
                baseline = baseline or p50
                default, fast = track(estimator, clip, fast=False), track(estimator, clip, fast=True)
                print(f"| {count} | {backend} | {p50:.1f} / {p99:.1f} | {p50 / baseline:.2f} | {default['hz']:.1f} | "
                      f"{default['latency_ms_p50']:.0f} / {default['latency_ms_p99']:.0f} | {fast['hz']:.1f} | "
                      f"{fast['latency_ms_p50']:.0f} / {fast['latency_ms_p99']:.0f} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
