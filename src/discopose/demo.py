"""``discopose demo``: the whole pipeline on embedded defaults, on a CPU, end to end.

render train/val/test -> train (ImageNet init) -> evaluate (report.html) -> render a continuous-motion
clip -> track it live through the camera code path, publishing on localhost -> print where it all is.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from discopose._io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class DemoPlan:
    image_px: int
    train: int
    val: int
    test: int
    epochs: int
    batch_size: int
    clip_frames: int


FULL = DemoPlan(image_px=128, train=3000, val=300, test=300, epochs=8, batch_size=32, clip_frames=300)
QUICK = DemoPlan(image_px=64, train=300, val=60, test=60, epochs=1, batch_size=16, clip_frames=45)


def run_demo(out: str = "demo", quick: bool = False, workers: int | None = None, publish: str = "tcp://127.0.0.1:5555",
             progress: bool = True) -> dict:
    from discopose.datasets.generate import generate_dataset
    from discopose.estimator.api import load
    from discopose.estimator.publisher import PoseSubscriber
    from discopose.estimator.quality import tracking_quality
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker
    from discopose.geometry.symmetry import Symmetry
    from discopose.models.evaluate import evaluate_checkpoint
    from discopose.models.train import TrainConfig, train
    from discopose.render.config import RenderConfig
    from discopose.render.preview import render_preview
    from discopose.render.trajectory import render_trajectory_video

    plan = QUICK if quick else FULL
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    timings = {}
    size = [f"camera.width_px={plan.image_px}", f"camera.height_px={plan.image_px}"]

    def stage(name):
        timings[name] = time.perf_counter()
        log.info("demo: %s", name)

    stage("render")
    for split, count, seed in (("train", plan.train, 0), ("val", plan.val, 1), ("test", plan.test, 2)):
        generate_dataset(str(root / "data" / split), count, RenderConfig.load(overrides=size + [f"seed={seed}"]),
                         workers=workers, progress=progress)
    render_preview(RenderConfig.load(overrides=[f"camera.width_px=160", f"camera.height_px=160"]), 16,
                   root / "disco_samples.png", overlay=False)

    stage("train")
    config = TrainConfig(epochs=plan.epochs, batch_size=plan.batch_size, num_workers=1 if quick else 2)
    train(str(root / "data" / "train"), str(root / "run"), val=str(root / "data" / "val"), config=config,
          progress=progress)

    stage("evaluate")
    evaluation = evaluate_checkpoint(str(root / "run" / "best"), str(root / "data" / "test"), str(root / "report"))

    stage("track")
    clip_config = RenderConfig.load(overrides=size + ["seed=3"])
    clip = render_trajectory_video(clip_config, root / "clip.mp4", num_frames=plan.clip_frames, seed=3)
    estimator = load(root / "run" / "best")
    source = CameraSource("cam0", str(clip))  # realtime: paced and dropping frames, like a webcam
    tracker = Tracker(estimator, {"cam0": source}, config=TrackConfig(
        publish=publish, record=str(root / "poses.jsonl"), record_video=str(root / "tracking_overlay.mp4")))
    received = []
    stop = threading.Event()
    address = tracker.publisher.address if tracker.publisher else None

    def listen():  # the policy side: a plain subscriber on localhost
        with PoseSubscriber(address) as subscriber:
            while not stop.is_set():
                if subscriber.receive(timeout_s=0.1):
                    received.append(time.monotonic())
    listener = threading.Thread(target=listen, daemon=True)
    if address:
        listener.start()
        time.sleep(0.2)
    stats = tracker.run()
    stop.set()
    if address:
        listener.join(timeout=2)
    symmetries = Symmetry.from_dict(estimator.meta["object"]["symmetry"]).matrices()
    quality = tracking_quality(root / "poses.jsonl", clip.with_suffix(".gt.jsonl"),
                               symmetries if len(symmetries) > 1 else None)
    stage("done")

    names = list(timings)
    durations = {a: round(timings[b] - timings[a], 1) for a, b in zip(names, names[1:])}
    summary = {
        "plan": plan.__dict__, "seconds": durations, "total_seconds": round(sum(durations.values()), 1),
        "test": {"te_mm_median": evaluation["summary"]["te_mm"]["median"],
                 "re_deg_median": evaluation["summary"]["re_deg"]["median"],
                 "baseline": evaluation["baseline"]},
        "tracking": {**{k: stats[k] for k in ("messages", "hz", "latency_ms_p50", "latency_ms_p99")},
                     "subscriber_received": len(received), "quality": quality},
        "artefacts": {"samples": str(root / "disco_samples.png"), "report": str(root / "report" / "report.html"),
                      "model": str(root / "run" / "best"), "tensorboard": str(root / "run" / "tensorboard"),
                      "clip": str(clip), "overlay_video": str(root / "tracking_overlay.mp4"),
                      "poses": str(root / "poses.jsonl")},
    }
    atomic_write_json(root / "demo_summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    test, track = summary["test"], summary["tracking"]
    quality = track["quality"]
    lines = [
        f"demo finished in {summary['total_seconds'] / 60:.1f} min ({json.dumps(summary['seconds'])})",
        f"test set: median {test['te_mm_median']:.1f} mm, {test['re_deg_median']:.1f} deg "
        f"(mean-pose baseline {test['baseline']['te_mm_median']:.1f} mm, {test['baseline']['re_deg_median']:.1f} deg)",
        f"tracking: {track['hz']:.1f} Hz, latency p50 {track['latency_ms_p50']:.1f} ms p99 {track['latency_ms_p99']:.1f} ms, "
        f"{track['messages']} poses published, {track['subscriber_received']} received by a localhost subscriber",
        f"tracking error raw -> filtered: {quality['raw']['te_mm_median']:.1f} -> {quality['filtered']['te_mm_median']:.1f} mm, "
        f"jitter {quality['raw']['jitter_mm'] or 0:.2f} -> {quality['filtered']['jitter_mm'] or 0:.2f} mm/frame",
    ]
    lines += [f"  {name:13s} {path}" for name, path in summary["artefacts"].items()]
    return "\n".join(lines)
