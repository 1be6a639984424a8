"""Realistic proxy: seconds per frame by stage, and its contact sheet.

    python benchmarks/realistic_proxy.py                     # 640x480, the default spp and max depth, 4 frames
    python benchmarks/realistic_proxy.py --spp 4 8 16        # compare samples per pixel
    python benchmarks/realistic_proxy.py --num 8 --sheet docs/images/realistic_samples.png

Stages: sampling the parameters (scene, clutter, lights, webcam), the rasterized pass (masks, labels),
building the Mitsuba scene (meshes, procedural textures), path tracing, and developing (exposure, white
balance, denoising) plus the webcam model and labels. Numbers are wall seconds per frame, then the CPU
seconds the process used per frame and what that makes on this machine when idle: path tracing spread
over every core (Mitsuba scales nearly perfectly), the rest counted as serial. The last two stay honest
when other jobs share the cores.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import cv2
import numpy as np

from discopose._io import atomic_write_bytes
from discopose.realistic.pathtraced import PathTracedRenderer, RealisticConfig, realistic_render_config
from discopose.viz import contact_sheet, encode_png

STAGES = ("sample", "rasterize", "build scene", "path trace", "develop+webcam")


def cpu_seconds() -> float:
    """User plus system time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(spp: int, max_depth: int, num: int, width: int, height: int) -> tuple[dict, list[np.ndarray]]:
    renderer = PathTracedRenderer(realistic_render_config(width_px=width, height_px=height),
                                  RealisticConfig(spp=spp, max_depth=max_depth))
    seconds = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)

    def timed(stage, function):
        def wrapper(*args, **kwargs):
            start, start_cpu = time.perf_counter(), cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - start
                cpu[stage] += cpu_seconds() - start_cpu
        return wrapper

    renderer.rasterize = timed("rasterize", renderer.rasterize)
    renderer.build_scene = timed("build scene", renderer.build_scene)
    renderer.trace = timed("path trace", renderer.trace)
    images = []
    try:
        renderer.render(renderer.sample_params(num))  # warm-up: GL context, Mitsuba plugins
        seconds.update(dict.fromkeys(STAGES, 0.0))
        cpu.update(dict.fromkeys(STAGES, 0.0))
        total = total_cpu = 0.0
        for index in range(num):
            start, start_cpu = time.perf_counter(), cpu_seconds()
            params = timed("sample", renderer.sample_params)(index)
            views = renderer.render(params)
            total += time.perf_counter() - start
            total_cpu += cpu_seconds() - start_cpu
            images += [view["rgb"] for view in views.values()]
    finally:
        renderer.close()
    for clock, whole in ((seconds, total), (cpu, total_cpu)):
        clock["path trace"] -= clock["build scene"]  # trace() builds the scene first
        clock["develop+webcam"] = whole - sum(clock[s] for s in STAGES[:4])
    idle = cpu["path trace"] / (os.cpu_count() or 1) + total_cpu - cpu["path trace"]
    return ({stage: value / num for stage, value in seconds.items()}
            | {"total": total / num, "cpu": total_cpu / num, "idle": idle / num}), images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spp", type=int, nargs="+", default=[RealisticConfig().spp])
    parser.add_argument("--max-depth", type=int, default=RealisticConfig().max_depth)
    parser.add_argument("--num", type=int, default=4, help="frames per setting")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--sheet", help="write the frames of the first setting as a contact sheet PNG here")
    args = parser.parse_args()
    columns = (*STAGES, "total", "cpu", "idle")
    print(f"{args.width}x{args.height}, max depth {args.max_depth}, {args.num} frames each, {os.cpu_count()} cores; "
          "seconds per frame")
    print(f"{'spp':>4} " + " ".join(f"{s:>14}" for s in columns))
    for number, spp in enumerate(args.spp):
        seconds, images = measure(spp, args.max_depth, args.num, args.width, args.height)
        print(f"{spp:>4} " + " ".join(f"{seconds[s]:>14.2f}" for s in columns))
        if args.sheet and number == 0:
            tiles = [cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
                     for image in images]
            atomic_write_bytes(args.sheet, encode_png(contact_sheet(tiles, columns=min(4, len(tiles)))))
            print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
