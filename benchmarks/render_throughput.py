"""Render throughput: images/s per worker and for all workers, scaling, peak memory, time breakdown.

    python benchmarks/render_throughput.py            # full table (a few minutes on 2 CPU cores)
    python benchmarks/render_throughput.py --quick    # smaller counts

"Full randomization" is the default RenderConfig. Stages: sampling the parameters, updating the scene
graph, pyrender's draw call (main pass), the object-only depth pass for visibility, readback of pixels
(glReadPixels, where llvmpipe finishes rasterizing), sensor noise + labels, PNG/JPEG encoding.
The baseline, run in the same process, is the naive pyrender loop: pyrender's own OffscreenRenderer,
and the scene graph (geometry, textures, materials) rebuilt for every sample instead of reused.
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


OVERRIDES: list[str] = []  # --set, e.g. hand.prob=0


def config_for(width: int, height: int, cameras: int, *extra: str) -> RenderConfig:
    return RenderConfig.load(overrides=[f"camera.width_px={width}", f"camera.height_px={height}",
                                        f"camera.count={cameras}", *extra, *OVERRIDES])


STAGES = ("sample", "scene update", "draw", "visibility pass", "readback", "noise+labels", "encode")


class StageClock:
    """Wall time per stage of one renderer's samples, by wrapping the calls each stage is made of
    (measurement only: the wrapped functions run unchanged)."""

    def __init__(self, renderer: DiscoRenderer):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        pr = renderer.pyrender
        gl_renderer = pr.renderer.Renderer
        clock = self

        def timed(stage, function):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    clock.seconds[stage] += time.perf_counter() - start
            return wrapper

        read = gl_renderer._read_main_framebuffer
        render = gl_renderer.render

        def render_pass(self_, scene, flags, seg_node_map=None):
            before = clock.seconds["readback"]
            start = time.perf_counter()
            try:
                return render(self_, scene, flags, seg_node_map)
            finally:
                # Readback (and the GL flush it forces) is booked on its own, not twice.
                spent = time.perf_counter() - start - (clock.seconds["readback"] - before)
                clock.seconds["visibility pass" if flags & pr.RenderFlags.DEPTH_ONLY else "draw"] += spent

        self._restore = [(gl_renderer, "_read_main_framebuffer", read), (gl_renderer, "render", render)]
        gl_renderer._read_main_framebuffer = timed("readback", read)
        gl_renderer.render = render_pass
        renderer._apply = timed("scene update", renderer._apply)

    def close(self):
        for owner, name, function in self._restore:
            setattr(owner, name, function)


def use_unshaded_fragments(renderer: DiscoRenderer, shader_dir: str) -> None:
    """Swap pyrender's mesh fragment shader for one that writes the material's flat colour: no lighting,
    no textures. Rendering then costs only what the rest of the pipeline does (measurement only)."""
    import shutil
    source = os.path.join(os.path.dirname(renderer.pyrender.__file__), "shaders")
    shutil.copytree(source, shader_dir, dirs_exist_ok=True)
    path = os.path.join(shader_dir, "mesh.frag")
    with open(path) as f:
        text = f.read()
    text = text[:text.index("void main()")] + "void main()\n{\n    frag_color = material.base_color_factor;\n}\n"
    with open(path, "w") as f:
        f.write(text)
    renderer.render_index(0)  # creates the GL context and its program cache
    cache = renderer._gl._renderer._program_cache
    cache.clear()
    cache.shader_dir = shader_dir


def per_worker(config: RenderConfig, samples: int, warmup: int, rebuild: bool = False, barrier=None,
               unshaded: bool = False) -> dict:
    """One process rendering + encoding, after a warm-up that compiles the shader variants. With
    ``rebuild`` it is the naive pyrender loop: pyrender's own OffscreenRenderer, and the scene graph
    (geometry, textures, materials) built anew for every sample. With ``unshaded``, the ceiling of this
    draw path: fragments get a flat colour (see use_unshaded_fragments)."""
    renderer = DiscoRenderer(config)
    if rebuild:
        renderer._gl = renderer.pyrender.OffscreenRenderer(config.camera.width_px, config.camera.height_px)
    shader_dir = tempfile.TemporaryDirectory() if unshaded else None
    if unshaded:
        use_unshaded_fragments(renderer, shader_dir.name)
    try:
        for index in range(warmup):
            renderer.render_index(index)
        if barrier is not None:  # concurrent workers start timing together, after their warm-ups
            barrier.wait()
        clock = StageClock(renderer)
        render_seconds = 0.0
        start = time.perf_counter()
        for index in range(warmup, warmup + samples):
            if rebuild:
                renderer._build_scene()
            t0 = time.perf_counter()
            params = renderer.sample_params(index)
            t1 = time.perf_counter()
            views = renderer.render(params)
            t2 = time.perf_counter()
            encode_sample(params, views, config.output)
            t3 = time.perf_counter()
            clock.seconds["sample"] += t1 - t0
            clock.seconds["encode"] += t3 - t2
            render_seconds += t2 - t1
        elapsed = time.perf_counter() - start
        clock.close()
        clock.seconds["noise+labels"] = render_seconds - sum(
            clock.seconds[k] for k in ("scene update", "draw", "visibility pass", "readback"))
    finally:
        renderer.close()
        if shader_dir is not None:
            shader_dir.cleanup()
    images = samples * config.camera.count
    return {"images_per_s": images / elapsed, **{k: 1000 * v / samples for k, v in clock.seconds.items()}}


def _steady_worker(config_dict: dict, samples: int, warmup: int, barrier, results) -> None:
    results.put(per_worker(RenderConfig.from_dict(config_dict), samples, warmup, barrier=barrier)["images_per_s"])


def concurrent_workers(config: RenderConfig, samples: int, warmup: int, workers: int) -> float:
    """Summed steady-state images/s of ``workers`` renderer processes running at once (start-up and
    shader compilation excluded: every process warms up, then all start timing together)."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    processes = [ctx.Process(target=_steady_worker, args=(config.to_dict(), samples, warmup, barrier, results))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    rates = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="render config override for every run, e.g. hand.prob=0")
    args = parser.parse_args()
    OVERRIDES.extend(args.set)
    scale = 0.3 if args.quick else 1.0
    n = lambda count: max(4, int(count * scale))  # noqa: E731

    print(f"# render throughput on {os.cpu_count()} CPU cores, PYOPENGL_PLATFORM="
          f"{os.environ.get('PYOPENGL_PLATFORM', 'egl')}, GL: {gl_renderer_name()}, "
          f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, overrides: {args.set or 'none (default config)'}")
    print("\n## per worker (one process; ms per sample by stage)\n")
    print("| image | cameras | images/s | " + " | ".join(f"{stage} ms" for stage in STAGES) + " |")
    print("|---|---|---|" + "---|" * len(STAGES))
    results = {}
    for (width, height), cameras, samples in [((224, 224), 1, 300), ((224, 224), 3, 100),
                                              ((640, 480), 1, 100), ((640, 480), 3, 40)]:
        if args.quick and (width, cameras) != (224, 1):
            continue
        config = config_for(width, height, cameras)
        r = per_worker(config, n(samples), warmup=n(120))
        results[(width, cameras)] = r
        print(f"| {width}x{height} | {cameras} | {r['images_per_s']:.1f} | "
              + " | ".join(f"{r[stage]:.1f}" for stage in STAGES) + " |", flush=True)

    config = config_for(224, 224, 1)
    base = per_worker(config, n(40), warmup=n(120), rebuild=True)
    print(f"\nnaive pyrender loop (pyrender's renderer, scene graph rebuilt per sample), 224x224 1 camera: "
          f"{base['images_per_s']:.1f} images/s; discopose's renderer is "
          f"{results[(224, 1)]['images_per_s'] / base['images_per_s']:.1f}x faster")
    ceiling = per_worker(config_for(224, 224, 1, "camera.msaa_samples=0"), n(300), warmup=n(120), unshaded=True)
    print(f"ceiling of this draw path (flat-colour fragments: no lighting, textures or MSAA), 224x224 1 camera: "
          f"{ceiling['images_per_s']:.1f} images/s ("
          + ", ".join(f"{stage} {ceiling[stage]:.1f}" for stage in STAGES) + " ms); full shading reaches "
          f"{results[(224, 1)]['images_per_s'] / ceiling['images_per_s']:.0%} of it")

    print("\n## steady state, N renderer processes at once, 224x224, 1 camera\n")
    print("| processes | images/s (sum) | per process | scaling vs 1 |")
    print("|---|---|---|---|")
    single = None
    for workers in sorted({1, args.workers}):
        rate = concurrent_workers(config, n(300), n(120), workers)
        single = single or rate
        print(f"| {workers} | {rate:.1f} | {rate / workers:.1f} | {rate / single:.2f}x |", flush=True)

    print(f"\n## all workers (discopose render, full pipeline incl. shard writing), 224x224, 1 camera\n")
    print("| workers | images/s | scaling vs 1 | peak RSS per worker MiB |")
    print("|---|---|---|---|")
    single = None
    for workers in sorted({1, args.workers}):
        r = all_workers(config, n(2000) * workers, workers)  # dataset-sized: start-up is ~5 s per worker
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
