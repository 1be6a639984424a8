"""Render a dataset into shards: local worker processes or a Ray cluster; resumable and deterministic.

Shard ``i`` always holds samples ``[i * samples_per_shard, ...)`` and each sample derives its own
seed from (dataset seed, index), so the result is independent of worker count and scheduling. A shard
is built under a temp name and committed by rename; a rerun keeps every committed shard that verifies
and renders the rest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from discopose._version import __version__
from discopose._errors import DatasetError, DiscoposeError
from discopose.datasets.format import DEPTH_UNIT_M, FORMAT, FORMAT_VERSION, MANIFEST, encode_sample, shard_name
from discopose.datasets.storage import Storage, disk_error, scan_shard, sha256_of
from discopose.render.config import RenderConfig

log = logging.getLogger(__name__)


@dataclass
class ShardTask:
    shard_index: int
    first_index: int
    count: int

    @property
    def name(self) -> str:
        return shard_name(self.shard_index)


RAY_RETRIES = 3  # restarts of a Ray render worker (and retries of its shard) before the render fails


class SampleRenderError(DiscoposeError):
    """Rendering one sample failed; the message names its index and seed to reproduce it."""


def plan_shards(num_samples: int, samples_per_shard: int) -> list[ShardTask]:
    return [ShardTask(i, first, min(samples_per_shard, num_samples - first))
            for i, first in enumerate(range(0, num_samples, samples_per_shard))]


def config_fingerprint(config: RenderConfig, num_samples: int, recipe: dict | None = None) -> str:
    content = {"config": config.to_dict(), "num_samples": num_samples}
    if recipe is not None:  # only then, so the fingerprints of plain datasets stay what they were
        content["recipe"] = recipe
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def render_shard(renderer, storage: Storage, task: ShardTask, on_sample=None) -> dict:
    """Render one shard and commit it atomically. Returns its manifest record."""
    import webdataset as wds

    tmp = storage.temp_path(task.name)
    try:
        with open(tmp, "wb") as f:
            # Fixed mtime and owner make the tar bytes (and so its sha256) reproducible.
            with wds.TarWriter(f, encoder=False, mtime=0, user="discopose", group="discopose") as writer:
                for index in range(task.first_index, task.first_index + task.count):
                    if on_sample:
                        on_sample("start", index)
                    try:
                        params, views = renderer.render_index(index)
                    except DiscoposeError:
                        raise
                    except Exception as exc:
                        raise SampleRenderError(
                            f"sample {index} (seed {_seed(renderer.config, index)}) failed to render: "
                            f"{type(exc).__name__}: {exc}\n"
                            f"{traceback.format_exc()}") from None
                    writer.write(encode_sample(params, views, renderer.config.output))
                    if on_sample:
                        on_sample("done", index)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp, "rb") as f:
            digest = sha256_of(f)
        size = os.path.getsize(tmp)
        storage.commit(tmp, task.name)
    except OSError as exc:
        raise disk_error(exc, storage.url_of(task.name)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"name": task.name, "first_index": task.first_index, "num_samples": task.count, "sha256": digest,
            "bytes": size}


# ------------------------------------------------------------------------------- local worker processes
_worker: dict = {}


def _init_worker(config_dict: dict, url: str, events) -> None:
    # A worker must not outlive the render it serves (SIGKILL to the parent skips every cleanup).
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    _worker["config"] = RenderConfig.from_dict(config_dict)
    _worker["storage"] = Storage(url)
    _worker["events"] = events
    _worker["renderer"] = None


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _worker_render_shard(task: ShardTask) -> dict:
    if _worker["renderer"] is None:  # built lazily so its errors surface as the task's result
        from discopose.render.renderer import DiscoRenderer
        _worker["renderer"] = DiscoRenderer(_worker["config"])
    events, pid = _worker["events"], os.getpid()
    return render_shard(_worker["renderer"], _worker["storage"], task,
                        on_sample=lambda kind, index: events.put((kind, pid, index)))


def _run_local(config: RenderConfig, storage: Storage, tasks: list[ShardTask], workers: int, bar,
               on_record) -> None:
    ctx = mp.get_context("spawn")  # EGL contexts and forked GL state do not mix
    events = ctx.Queue()
    in_flight: dict[int, int] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(config.to_dict(), storage.url, events)) as pool:
        futures = {pool.submit(_worker_render_shard, task): task for task in tasks}
        try:
            while futures:
                done, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(events, in_flight, bar)
                for future in done:
                    futures.pop(future)
                    on_record(future.result())
        except BrokenProcessPool:
            _drain(events, in_flight, bar)
            seeds = {index: _seed(config, index) for index in in_flight.values()}
            where = ", ".join(f"sample {i} (seed {s})" for i, s in seeds.items()) or "an unknown sample"
            raise DiscoposeError(f"a render worker died (killed or crashed) while rendering {where}; complete "
                                 "shards are kept: rerun the same command to resume") from None
        except BaseException:
            for future in futures:
                future.cancel()
            # Ctrl-C / SIGTERM / an error: stop now rather than let every shard in flight finish.
            for process in list(pool._processes.values()):
                process.terminate()
            raise


def _seed(config: RenderConfig, index: int) -> int:
    from discopose.render.sampling import sample_seed
    return sample_seed(config.seed, index)


def _drain(events, in_flight: dict, bar) -> None:
    while True:
        try:
            kind, pid, index = events.get_nowait()
        except queue.Empty:
            return
        if kind == "start":
            in_flight[pid] = index
        else:
            in_flight.pop(pid, None)
            bar.update(1)


# ----------------------------------------------------------------------------------------------- Ray
def _run_ray(config: RenderConfig, storage: Storage, tasks: list[ShardTask], workers: int, address: str | None,
             bar, on_record) -> None:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise DiscoposeError("--backend ray needs Ray: pip install 'discopose[ray]'") from None

    # A killed worker process is restarted and its shard retried: shards commit atomically and render
    # the same bytes every time, so a retry cannot leave a half or a different shard.
    @ray.remote(num_cpus=1, max_restarts=RAY_RETRIES, max_task_retries=RAY_RETRIES)
    class RenderActor:
        def __init__(self, config_dict: dict, url: str):
            from discopose.render.renderer import DiscoRenderer
            self.renderer = DiscoRenderer(RenderConfig.from_dict(config_dict))
            self.storage = Storage(url)

        def render(self, task: ShardTask) -> dict:
            return render_shard(self.renderer, self.storage, task)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if storage.is_local and not storage.url.startswith("file://") and len(nodes) > 1:
            raise DiscoposeError(f"--out {storage.url} is a local folder but the Ray cluster has {len(nodes)} nodes: "
                                 "each would write shards to its own disk; use a shared URL (s3://..., gs://...), or write "
                                 "file:///path if every node mounts that folder at the same path")
        actors = [RenderActor.remote(config.to_dict(), storage.url) for _ in range(workers)]
        pool = ActorPool(actors)
        for record in pool.map_unordered(lambda actor, task: actor.render.remote(task), tasks):
            on_record(record)
            bar.update(record["num_samples"])
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), DiscoposeError) else exc
        raise DiscoposeError(str(cause).splitlines()[0]) from None
    except ray.exceptions.RayActorError as exc:
        raise DiscoposeError(f"a Ray render worker died {RAY_RETRIES + 1} times ({str(exc).splitlines()[0]}); complete "
                             "shards are kept: rerun the same command to resume") from None
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------------- driver
def build_manifest(config: RenderConfig, num_samples: int, records: list[dict], complete: bool,
                   recipe: dict | None = None) -> dict:
    from discopose.render.objects import build_object
    from discopose.render.sampling import nominal_cameras
    obj = build_object(config.object)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "discopose_version": __version__,
        "complete": complete, "num_samples": num_samples, "samples_per_shard": config.output.samples_per_shard,
        "seed": config.seed, "fingerprint": config_fingerprint(config, num_samples, recipe),
        **({"recipe": recipe} if recipe is not None else {}),
        "object": obj.describe(),
        "cameras": [camera.to_dict() for camera in nominal_cameras(config)],
        "image_format": config.output.image_format, "depth_unit_m": DEPTH_UNIT_M,
        "keys": {"labels": "json", "rgb": "{camera}.rgb." + config.output.image_format,
                 "mask": "{camera}.mask.png" if config.output.mask else None,
                 "depth": "{camera}.depth.png" if config.output.depth else None},
        "config": config.to_dict(),
        "shards": sorted(records, key=lambda r: r["first_index"]),
    }


def generate_dataset(out: str, num_samples: int, config: RenderConfig | None = None, workers: int | None = None,
                     backend: str = "local", address: str | None = None, progress: bool = True,
                     renderer=None, recipe: dict | None = None) -> dict:
    """Render ``num_samples`` samples into ``out`` (folder or fsspec URL); resumes a previous run.

    ``renderer``: render every shard in this process with this object (``config``, ``render_index``, as
    :class:`~discopose.render.renderer.DiscoRenderer`; its config must be ``config``; the caller closes it)
    instead of DiscoRenderer workers. ``recipe``: how such a renderer makes its images, recorded in the
    manifest and its fingerprint (a rerun with another recipe is refused like one with another config).
    Returns the manifest. Raises :class:`DiscoposeError` with a one-line message on bad input.
    """
    config = config or RenderConfig()
    if num_samples < 1:
        raise DiscoposeError(f"--num must be at least 1, got {num_samples}")
    if backend not in ("local", "ray"):
        raise DiscoposeError(f"--backend {backend!r} is unknown; use local or ray")
    if workers is not None and workers < 1:
        raise DiscoposeError(f"--workers must be at least 1, got {workers} (leave it out for one per CPU core)")
    if renderer is not None and (backend != "local" or workers not in (None, 1)):
        raise DiscoposeError("a given renderer renders in this process: use backend local and one worker")
    workers = workers or max(1, os.cpu_count() or 1)
    from discopose.render.objects import build_object, check_fits_cameras
    from discopose.render.sampling import nominal_cameras
    # Before the output exists: a refused object must not leave a half-made dataset to trip the rerun.
    check_fits_cameras(build_object(config.object), nominal_cameras(config), config)
    storage = Storage(out)
    storage.ensure_writable()
    storage.remove_stale_temps()

    fingerprint = config_fingerprint(config, num_samples, recipe)
    previous = storage.read_json(MANIFEST)
    if previous is not None and previous.get("fingerprint") != fingerprint and not previous.get("shards"):
        log.info("%s holds no shard of an earlier attempt with other settings; starting over", storage.url)
        previous = None
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise DiscoposeError(f"{storage.url} already holds a dataset made with a different config or --num; "
                             "use a new --out, or delete that folder to start over")
    tasks = plan_shards(num_samples, config.output.samples_per_shard)
    records = _trusted_records(storage, tasks, previous)
    todo = [task for task in tasks if task.name not in records]
    if records:
        log.info("resuming: %d of %d shards already complete and verified", len(records), len(tasks))

    base = build_manifest(config, num_samples, [], complete=False, recipe=recipe)

    def write_manifest(complete: bool = False, **extra) -> dict:
        manifest = {**base, "complete": complete, **extra,
                    "shards": sorted(records.values(), key=lambda r: r["first_index"])}
        storage.write_bytes_atomic(MANIFEST, json.dumps(manifest, indent=1).encode())
        return manifest

    def on_record(record: dict) -> None:
        # The manifest follows every committed shard: after a crash, a rerun trusts exactly these.
        records[record["name"]] = record
        write_manifest()

    write_manifest()
    start = time.perf_counter()
    with tqdm(total=num_samples, initial=sum(r["num_samples"] for r in records.values()), unit="img", desc="render",
              disable=not progress, smoothing=0.1) as bar:
        if todo:
            workers = min(workers, len(todo))
            if backend == "ray":
                _run_ray(config, storage, todo, workers, address, bar, on_record)
            elif renderer is not None:
                for task in todo:
                    on_record(render_shard(renderer, storage, task,
                                           on_sample=lambda kind, _: bar.update(kind == "done")))
            elif workers == 1:
                from discopose.render.renderer import DiscoRenderer
                renderer = DiscoRenderer(config)
                try:
                    for task in todo:
                        on_record(render_shard(renderer, storage, task,
                                               on_sample=lambda kind, _: bar.update(kind == "done")))
                finally:
                    renderer.close()
            else:
                _run_local(config, storage, todo, workers, bar, on_record)
    return write_manifest(complete=True, render_seconds=round(time.perf_counter() - start, 3))


def _trusted_records(storage: Storage, tasks: list[ShardTask], previous: dict | None) -> dict[str, dict]:
    """Shards a rerun keeps: those the previous manifest lists whose bytes still hash to what it
    recorded. Anything else in the folder (a shard from before the manifest, a corrupted one, one
    from other settings) is re-rendered, never adopted under a new hash."""
    recorded = {record["name"]: record for record in (previous or {}).get("shards", [])}
    trusted = {}
    for task in tasks:
        record = recorded.get(task.name)
        if record is None or record.get("num_samples") != task.count or record.get("first_index") != task.first_index:
            if storage.exists(task.name):
                log.warning("%s is not in the manifest; re-rendering it", task.name)
            continue
        try:
            count, digest = scan_shard(storage, task.name)
        except DatasetError as exc:
            log.warning("%s; re-rendering it", str(exc).split(";")[0])
            continue
        if digest != record["sha256"] or count != task.count:
            log.warning("%s does not match its manifest record (sha256 or count); re-rendering it", task.name)
            continue
        trusted[task.name] = {**record, "bytes": storage.size(task.name)}
    return trusted
