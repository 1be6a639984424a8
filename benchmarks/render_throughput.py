"""Render throughput: images/s per worker and for all workers, scaling, peak memory, time breakdown.

    python benchmarks/render_throughput.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/render_throughput.py --quick    # smaller counts

"Full randomization" is the default RenderConfig. The baseline, run in the same process, rebuilds the
pyrender scene graph (geometry, textures, materials) for every sample instead of reusing it.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from discopose.datasets.format import encode_sample
from discopose.datasets.generate import generate_dataset
from discopose.render.config import RenderConfig
from discopose.render.renderer import DiscoRenderer


def config_for(width: int, height: int, cameras: int) -> RenderConfig:
    return RenderConfig.load(overrides=[f"camera.width_px={width}", f"camera.height_px={height}",
                                        f"camera.count={cameras}"])


def per_worker(config: RenderConfig, samples: int, warmup: int, rebuild: bool = False) -> dict:
    """One process rendering + encoding, after a warm-up that compiles the shader variants."""
    renderer = DiscoRenderer(config)
    stages = {"sample": 0.0, "render": 0.0, "encode": 0.0}
    try:
        for index in range(warmup):
            renderer.render_index(index)
        start = time.perf_counter()
        for index in range(warmup, warmup + samples):
            t0 = time.perf_counter()
            if rebuild:
                renderer._build_scene()
            params = renderer.sample_params(index)
            t1 = time.perf_counter()
            views = renderer.render(params)
            t2 = time.perf_counter()
            encode_sample(params, views, config.output)
            t3 = time.perf_counter()
            stages["sample"] += t1 - t0
            stages["render"] += t2 - t1
            stages["encode"] += t3 - t2
        elapsed = time.perf_counter() - start
    finally:
        renderer.close()
    images = samples * config.camera.count
    return {"images_per_s": images / elapsed, **{k: 1000 * v / samples for k, v in stages.items()}}


def all_workers(config: RenderConfig, samples: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate_dataset(out, samples, config, workers=workers, progress=False)
        elapsed = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"images_per_s": samples * config.camera.count / elapsed, "peak_worker_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    n = lambda count: max(4, int(count * scale))  # noqa: E731

    print(f"# render throughput on {os.cpu_count()} CPU cores, PYOPENGL_PLATFORM="
          f"{os.environ.get('PYOPENGL_PLATFORM', 'egl')}, GL: {gl_renderer_name()}")
    print("\n## per worker (one process; ms per sample by stage)\n")
    print("| image | cameras | images/s | sample ms | render ms | encode ms |")
    print("|---|---|---|---|---|---|")
    results = {}
    for (width, height), cameras, samples in [((224, 224), 1, 300), ((224, 224), 3, 100),
                                              ((640, 480), 1, 100), ((640, 480), 3, 40)]:
        config = config_for(width, height, cameras)
        r = per_worker(config, n(samples), warmup=n(120))
        results[(width, cameras)] = r
        print(f"| {width}x{height} | {cameras} | {r['images_per_s']:.1f} | {r['sample']:.1f} | {r['render']:.1f} "
              f"| {r['encode']:.1f} |", flush=True)

    config = config_for(224, 224, 1)
    base = per_worker(config, n(40), warmup=n(120), rebuild=True)
    print(f"\nbaseline (scene graph rebuilt per sample), 224x224 1 camera: {base['images_per_s']:.1f} images/s; "
          f"reuse is {results[(224, 1)]['images_per_s'] / base['images_per_s']:.1f}x faster")

    print(f"\n## all workers (discopose render, full pipeline incl. shard writing), 224x224, 1 camera\n")
    print("| workers | images/s | scaling vs 1 | peak RSS per worker MiB |")
    print("|---|---|---|---|")
    single = None
    for workers in sorted({1, args.workers}):
        r = all_workers(config, n(600) * workers, workers)
        single = single or r["images_per_s"]
        print(f"| {workers} | {r['images_per_s']:.1f} | {r['images_per_s'] / single:.2f}x | {r['peak_worker_mib']:.0f} |",
              flush=True)
    print("\nnote: all-worker figures include worker start-up and shader compilation in each worker.")


def gl_renderer_name() -> str:
    from discopose.render.gl import import_pyrender, make_offscreen_renderer, release_offscreen_renderer
    import_pyrender()
    renderer = make_offscreen_renderer(8, 8)
    renderer._platform.make_current()
    from OpenGL.GL import GL_RENDERER, glGetString
    name = glGetString(GL_RENDERER).decode()
    release_offscreen_renderer(renderer)
    return name


if __name__ == "__main__":
    main()
