"""What the second core buys the one-call several-camera estimator, and the area average beside it.

    python benchmarks/view_threads.py [--model cube] [--cameras 3] [--size 640x480] [--seconds 3]

Three measurements in one process, each against its baseline run in the same process, beside the CPU's flags:

1. the crop network called back to back on one thread against two threads calling it at once (runs a second):
   whether ONNX Runtime computes without holding the interpreter, which ``view_threads`` relies on;
2. ``predict`` on several cameras' images (fused, aligned where the model refines) with ``view_threads=1`` and
   ``2``, alternating frame by frame on 40 rendered frames of the default world, three passes; the poses must agree;
3. ``camera.area_average`` against ``cv2.resize(..., INTER_AREA)`` on a frame of ``--size`` for factors 2-7 (the
   shrink before a remap far below the frame's resolution): time and whether the numbers are the same.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import cv2
import numpy as np

import discopose
from discopose._hardware import describe_cpu
from discopose.camera import area_average
from discopose.datasets.format import camera_from_labels
from discopose.datasets.generate import generate_dataset
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.render.config import RenderConfig

from estimator_ab import time_alternating  # beside this script: the benchmarks' shared alternation


def calls_per_second(call, threads: int, seconds: float) -> float:
    """Calls a second of ``call`` made back to back on ``threads`` threads at once."""
    stop, counts = threading.Event(), [0] * threads

    def loop(index):
        while not stop.is_set():
            call()
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def median_us(call, repeats: int = 300) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    args = parser.parse_args()
    if args.cameras < 2:
        parser.error("--cameras must be 2 or more: one camera has nothing to run side by side")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    width, height = (int(v) for v in args.size.split("x"))
    print(f"# {os.cpu_count()} CPU cores ({describe_cpu()})")

    one, two = (discopose.load(args.model, view_threads=n) for n in (1, 2))
    network = one.crop or one.locator
    rows, columns = network.spec.input_size_px
    batch = np.random.default_rng(0).random((args.cameras, 3, rows, columns), dtype=np.float32)
    if one.backend == "onnx":
        run = lambda: network.session.run(None, {"images": batch})  # noqa: E731
        alone, side_by_side = (calls_per_second(run, n, args.seconds) for n in (1, 2))
        print(f"crop network, batch of {args.cameras}: one thread {alone:.0f} calls/s, two threads at once "
              f"{side_by_side:.0f} ({side_by_side / alone:.2f}x)")

    with tempfile.TemporaryDirectory() as data:
        generate_dataset(data, 40, RenderConfig.load(overrides=[f"camera.width_px={width}", f"camera.height_px={height}",
                                                                 f"camera.count={args.cameras}", "seed=5"]),
                         progress=False)
        frames = []
        for sample in iter_samples(open_dataset(data)):
            cameras = {name: camera_from_labels(name, labels) for name, labels in sample["labels"]["cameras"].items()}
            frames.append(({name: sample["views"][name]["rgb"] for name in cameras}, cameras))
    poses = {}

    def predict(estimator, name):
        def call(frame):
            poses.setdefault(name, []).append(estimator.predict(frame[0], camera=frame[1]).frame_from_object)
        return call

    for estimator in (one, two):
        estimator.predict(frames[0][0], camera=frames[0][1])  # warm-up
    times = time_alternating({"view_threads=1": predict(one, "1"), "view_threads=2": predict(two, "2")}, frames)
    gap = np.abs(np.array(poses["1"]) - np.array(poses["2"])).max()
    baseline = np.percentile(times["view_threads=1"], 50)
    for name, values in times.items():
        p50 = np.percentile(values, 50)
        print(f"predict, {args.cameras} cameras {width}x{height}, {name}: p50 {p50:.1f} ms, "
              f"p99 {np.percentile(values, 99):.1f} ms ({p50 / baseline:.2f}x)")
    print(f"poses: largest difference between the two {gap:.1e}")

    frame = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    for factor in range(2, 8):
        patch = frame[:height // factor * factor, :width // factor * factor]
        size = (patch.shape[1] // factor, patch.shape[0] // factor)
        resize = median_us(lambda: cv2.resize(patch, size, interpolation=cv2.INTER_AREA))
        averaged = median_us(lambda: area_average(patch, factor))
        same = np.array_equal(area_average(patch, factor), cv2.resize(patch, size, interpolation=cv2.INTER_AREA))
        print(f"area average, factor {factor}: cv2.resize {resize:.0f} us, area_average {averaged:.0f} us "
              f"({averaged / resize:.2f}x), same numbers: {same}")


if __name__ == "__main__":
    main()
