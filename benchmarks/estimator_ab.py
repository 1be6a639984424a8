"""Estimator alone: model A (the baseline) against model B in one process, calls alternating; or A alone.

    python benchmarks/estimator_ab.py --a cube [--b runs/demo/run/best] [--backend onnx|torch] [--size 640x480]
                                      [--refine calibrated|on|off] [--cameras 1]

Renders 40 frames of the default world at the given size once, then times one call per frame, three passes:
one camera, ``predict_views`` on its view; several (``--cameras 3``), ``predict`` on every camera's image, the
world-frame pose fused and, where the model refines, aligned to all images jointly. A and B alternate so that both
see the same machine load, and which of them runs first on a frame alternates too (the second reads an image the
first has just brought into the caches); prints p50 / p99 ms and B's ratio to A beside the CPU's flags. A model
without ``model.onnx`` needs ``discopose export`` first for onnx.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import discopose
from discopose._hardware import describe_cpu
from discopose.datasets.format import camera_from_labels
from discopose.datasets.generate import generate_dataset
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.render.config import RenderConfig


def time_alternating(calls: dict, items: list, passes: int = 3, clock=time.perf_counter) -> dict[str, list[float]]:
    """Milliseconds of each call in ``calls`` (name: function of one item) on every item, ``passes`` times. The
    calls take turns on each item, and which goes first alternates from item to item and pass to pass, so
    neither always finds the item warmed by the other."""
    names = list(calls)
    times = {name: [] for name in names}
    for done in range(passes):
        for i, item in enumerate(items):
            for name in (names if (i + done) % 2 == 0 else names[::-1]):
                start = clock()
                calls[name](item)
                times[name].append(1000 * (clock() - start))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="cube", help="the baseline model")
    parser.add_argument("--b", help="the model compared with A (default: A alone)")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--refine", choices=["calibrated", "on", "off"], default="calibrated",
                        help="the refinement: as each model was calibrated (default), on or off for both")
    parser.add_argument("--cameras", type=int, default=1, help="cameras per frame (several: fused in the world)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as data:
        generate_dataset(data, 40, RenderConfig.load(overrides=[f"camera.width_px={width}", "seed=5",
                                                                 f"camera.height_px={height}",
                                                                 f"camera.count={args.cameras}"]),
                         progress=False)
        frames = []
        for sample in iter_samples(open_dataset(data)):
            cameras = {name: camera_from_labels(name, labels) for name, labels in sample["labels"]["cameras"].items()}
            frames.append(({name: sample["views"][name]["rgb"] for name in cameras}, cameras))
    refine = {"calibrated": None, "on": True, "off": False}[args.refine]
    names = [args.a] + ([args.b] if args.b and args.b != args.a else [])
    models = {name: discopose.load(name, backend=args.backend, refine=refine) for name in names}

    def call(estimator, frame):
        images, cameras = frame
        if args.cameras > 1:
            return estimator.predict(images, camera=cameras)
        name = next(iter(images))
        return estimator.predict_views([(images[name], cameras[name])])

    for estimator in models.values():
        call(estimator, frames[0])  # warm-up
    times = time_alternating({name: (lambda frame, e=estimator: call(e, frame)) for name, estimator in models.items()},
                             frames)
    what = "1 camera" if args.cameras == 1 else f"{args.cameras} cameras fused"
    print(f"# estimator alone, {what}, {width}x{height} each, {args.backend}, refinement {args.refine}, "
          f"{os.cpu_count()} CPU cores ({describe_cpu()})")
    baseline = np.percentile(times[args.a], 50)
    for name, values in times.items():
        p50 = np.percentile(values, 50)
        print(f"{name}: p50 {p50:.1f} ms, p99 {np.percentile(values, 99):.1f} ms ({p50 / baseline:.2f}x)")


if __name__ == "__main__":
    main()
