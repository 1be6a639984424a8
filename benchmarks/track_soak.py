"""Soak: the live tracker for tens of minutes through the real capture path, one camera and three, with a camera
unplugged and plugged back in mid-run. Does memory grow, does latency drift, does an unplugged camera come back?

    python benchmarks/track_soak.py --model cube [--minutes 30] [--window 5] [--cameras 1 3] [--size 640x480]
                                    [--unplug-at 0.5] [--unplug-s 10] [--hand] [--out soak.json]
                                    [--networks background frame] [--repeat 2]

A rendered clip (the model's own world at a working distance, without the hand unless ``--hand``) loops forever as
a live 30 fps webcam: a capture that paces itself like a device and, from ``--unplug-at`` of the run for ``--unplug-s`` seconds, fails its reads and refuses to reopen, as a
pulled USB camera does (the first camera of the rig). The tracker runs as ``discopose track`` would (publishing on
localhost, the estimator's default refinement and following), its camera sources reopening with their backoff.
Reported per window: published Hz, capture -> publish latency p50 / p99, resident memory; over the run: the RSS
slope (MB/hour, a line fitted after the first window, which holds the warm-up) and the last window's p99 against
the first's; the latency by the step that measured each frame (the networks, the joint alignment after them,
following); for the unplug: how long the camera stayed away, whether it came back, and how many poses published
while it was away claimed that camera was fine (must be none) or — one camera — were still valid after the
tracker's ``valid_max_age_s`` (must be none); the share of poses published valid. Print the CPU flags and the
machine's load beside the figures.

``--networks background frame --repeat 2`` compares where the networks run (``TrackConfig.networks_in_background``:
on a worker thread, or in the frame loop as a replayed clip runs them) in one process, the variants alternated, and
prints each run's figures side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

import discopose
from discopose._hardware import describe_cpu
from discopose.camera import CameraModel
from discopose.estimator.sources import CameraSource
from discopose.estimator.tracker import STEPS, TrackConfig, Tracker
from discopose.render.trajectory import render_trajectory_video


class PublishedLog:
    """What the soak keeps of each published message, in arrays allocated and written up front: rows appended
    to a list for 30 minutes grew this process by ~6 MB, which the RSS slope would have blamed on the tracker."""

    def __init__(self, capacity: int):
        self.count = 0
        self.run_s, self.capture_time_s, self.latency_s, self.measurement_age_s = (
            np.full(capacity, np.nan) for _ in range(4))
        self.pulled_camera_ok, self.valid = np.full(capacity, False), np.full(capacity, False)
        self.step = np.full(capacity, -1, np.int8)  # Tracker.last_step as its index in STEPS

    def add(self, run_s: float, message: dict, pulled_camera: str, step: str) -> None:
        i = self.count
        if i == len(self.run_s):
            raise RuntimeError(f"soak log full after {i} messages: raise its capacity")
        self.run_s[i], self.capture_time_s[i], self.latency_s[i] = run_s, message["capture_time_s"], message["latency_s"]
        self.measurement_age_s[i] = np.nan if message["measurement_age_s"] is None else message["measurement_age_s"]
        self.pulled_camera_ok[i] = message["cameras"][pulled_camera]["state"] == "ok"
        self.valid[i] = message["valid"]
        self.step[i] = STEPS.index(step)
        self.count += 1

    def column(self, name: str) -> np.ndarray:
        return getattr(self, name)[:self.count]


class LoopingWebcam:
    """A cv2.VideoCapture-like live camera over a looping video file, on a clock shared by the rig: at run time t it
    shows frame ``floor(t * fps) % frames`` of the clip, as a live camera shows the present — one that fell behind
    or was plugged back in skips ahead rather than replaying what the others showed seconds ago (before, the
    replugged camera restarted its clip, so fusion saw three different moments). Between the monotonic times
    ``unplugged_s`` every read fails, and so does every reopen (:meth:`opener`)."""

    def __init__(self, path: str, fps: float, origin_s: float, unplugged_s: tuple[float, float] | None):
        self.period_s, self.origin_s, self.unplugged_s = 1.0 / fps, origin_s, unplugged_s
        self.capture = cv2.VideoCapture(path)
        self.frames = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.position = 0  # the decoder's next frame
        self.tick = -1  # the clock tick of the last frame delivered

    def unplugged(self) -> bool:
        return self.unplugged_s is not None and self.unplugged_s[0] <= time.monotonic() < self.unplugged_s[1]

    def isOpened(self) -> bool:  # noqa: N802 - mirrors cv2.VideoCapture
        return self.capture.isOpened()

    def read(self):
        self.tick = max(self.tick + 1, int((time.monotonic() - self.origin_s) / self.period_s))
        time.sleep(max(self.origin_s + self.tick * self.period_s - time.monotonic(), 0.0))
        if self.unplugged():  # after the wait: no frame of a tick inside the unplug is delivered
            return False, None
        target = self.tick % self.frames
        if target < self.position:  # looped (or far behind): back to the start, then forward
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.position = 0
        while self.position < target:  # skipped frames are decoded, not converted: what a late reader costs
            self.capture.grab()
            self.position += 1
        ok, image = self.capture.read()
        self.position += 1
        return ok, image

    def get(self, prop):
        return 0  # live: no file frame rate for CameraSource to pace on

    def release(self):
        self.capture.release()

    @classmethod
    def opener(cls, fps: float, origin_s: float, unplugged_s: tuple[float, float] | None):
        def open_fn(uri: str):
            camera = cls(uri, fps, origin_s, unplugged_s)
            if camera.unplugged():
                raise OSError("no such device (unplugged)")
            return camera, True
        return open_fn


UNPLUG_STAMP_SLACK_S = 0.1
SOAK_DISTANCE_M = (0.25, 0.5)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(estimator, clip, minutes: float, window_min: float, unplug_at: float, unplug_s: float,
         networks_in_background: bool = True) -> dict:
    duration = 60 * minutes
    start = time.monotonic()
    unplug = (start + unplug_at * duration, start + unplug_at * duration + unplug_s)
    names = list(clip.videos)
    sources = {name: CameraSource(name, str(video), open_fn=LoopingWebcam.opener(
        30.0, start, unplug if i == 0 else None)) for i, (name, video) in enumerate(clip.videos.items())}
    calibrations = {name: CameraModel.load(path) for name, path in clip.cameras.items()}
    tracker = Tracker(estimator, sources, calibrations, TrackConfig(publish="tcp://127.0.0.1:0", duration_s=duration,
                                                                    networks_in_background=networks_in_background))
    published = PublishedLog(capacity=int(duration * 40) + 1000)  # past the cameras' 30 Hz
    memory = np.full((int(duration / 5) + 10, 2), np.nan)  # (run s, RSS MB) every 5 s
    transitions = [(0.0, sources[names[0]].state)]  # the pulled camera's state, when it changes
    stop = threading.Event()
    first = names[0]

    def sample():
        samples = 0
        while not stop.wait(0.1):
            now = time.monotonic() - start
            if sources[first].state != transitions[-1][1]:
                transitions.append((now, sources[first].state))
            if samples < len(memory) and (samples == 0 or now - memory[samples - 1, 0] >= 5.0):
                memory[samples] = now, rss_mb()
                samples += 1
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    original_step = tracker.step

    def step():
        message = original_step()
        if message is not None:
            published.add(time.monotonic() - start, message, first, tracker.last_step)
        return message
    tracker.step = step
    try:
        stats = tracker.run()
    finally:
        stop.set()
        sampler.join()
    unplug_s0, unplug_s1 = unplug[0] - start, unplug[1] - start
    back = next((t for t, state in transitions if t >= unplug_s1 and state == "ok"), None)
    run_s, capture_s, latency_ms = (published.column(c) for c in ("run_s", "capture_time_s", "latency_s"))
    latency_ms = 1000 * latency_ms
    # Poses of frames captured while the camera was out. CameraSource stamps a frame once it is decoded, so the last
    # frame read before the pull can carry a stamp a few milliseconds inside the window: UNPLUG_STAMP_SLACK_S.
    in_unplug = (unplug[0] + UNPLUG_STAMP_SLACK_S <= capture_s) & (capture_s < unplug[1])
    claimed_ok = int(np.sum(in_unplug & published.column("pulled_camera_ok")))
    age = np.nan_to_num(published.column("measurement_age_s"), nan=0.0)
    stale_valid = int(np.sum(in_unplug & published.column("valid") & (age > tracker.config.valid_max_age_s))) \
        if len(names) == 1 else None
    windows = []
    memory = memory[~np.isnan(memory[:, 0])]
    edges = np.arange(0, duration + 1e-9, 60 * window_min)
    for low, high in zip(edges, edges[1:]):
        latencies = latency_ms[(low <= run_s) & (run_s < high)]
        rss = memory[(low <= memory[:, 0]) & (memory[:, 0] < high), 1]
        windows.append({"minutes": [low / 60, high / 60], "messages": len(latencies),
                        "hz": len(latencies) / (high - low),
                        "latency_ms_p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
                        "latency_ms_p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
                        "rss_mb": float(np.median(rss)) if len(rss) else None})
    later = memory[memory[:, 0] >= 60 * window_min]
    later = later if len(later) > 2 else memory
    slope = float(np.polyfit(later[:, 0], later[:, 1], 1)[0] * 3600) if len(later) > 2 else None
    p99 = [w["latency_ms_p99"] for w in windows if w["latency_ms_p99"] is not None]
    # Latency by the step that measured the frame: which steps make the tail.
    steps, by_step = published.column("step"), {}
    for i, name in enumerate(STEPS):
        latencies = latency_ms[steps == i]
        if len(latencies):
            by_step[name] = {"frames": len(latencies), "latency_ms_p50": float(np.percentile(latencies, 50)),
                             "latency_ms_p99": float(np.percentile(latencies, 99))}
    return {"cameras": len(names), "minutes": minutes, "networks": "background" if tracker.background else "frame",
            "messages": stats["messages"], "hz": stats["hz"], "latency_ms_p50": float(np.percentile(latency_ms, 50)),
            "latency_ms_p99": float(np.percentile(latency_ms, 99)), "valid_share": float(np.mean(published.column(
                "valid"))), "background_networks": stats["background_networks"], "windows": windows,
            "rss_slope_mb_per_hour": slope, "p99_drift": (p99[-1] / p99[0] - 1) if len(p99) > 1 else None,
            "unplug": {"camera": first, "at_s": unplug_s0, "for_s": unplug_s,
                       "back_after_replug_s": None if back is None else back - unplug_s1,
                       "came_back": back is not None, "reconnects": stats["cameras"][first]["reconnects"],
                       "published_while_away": int(np.sum(in_unplug)), "claimed_ok_while_away": claimed_ok,
                       "stale_valid_while_away": stale_valid},
            "followed": stats.get("followed"), "steps": by_step}


def report(result: dict) -> None:
    slope = result["rss_slope_mb_per_hour"]
    slope = "not fitted (fewer than 3 memory samples after the first window)" if slope is None else \
        f"{slope:+.1f} MB/hour"
    print(f"## {result['cameras']} camera(s), networks in the {result['networks']}: {result['messages']} poses, "
          f"{result['hz']:.1f} Hz, latency p50 / p99 {result['latency_ms_p50']:.0f} / {result['latency_ms_p99']:.0f} "
          f"ms, valid {100 * result['valid_share']:.0f}%, RSS slope {slope}, p99 drift "
          f"{100 * (result['p99_drift'] or 0):+.0f}%, followed {result['followed']}, background networks "
          f"{result['background_networks']}")
    print("| minutes | Hz | latency p50 / p99 ms | RSS MB |\n|---|---|---|---|")
    for w in result["windows"]:
        print(f"| {w['minutes'][0]:g}-{w['minutes'][1]:g} | {w['hz']:.1f} | {w['latency_ms_p50'] or 0:.0f} / "
              f"{w['latency_ms_p99'] or 0:.0f} | {w['rss_mb'] or 0:.0f} |")
    print("steps: " + ", ".join(f"{name} {s['frames']} frames, latency p50 / p99 {s['latency_ms_p50']:.0f} / "
                                f"{s['latency_ms_p99']:.0f} ms" for name, s in result["steps"].items()))
    print(f"unplug: {json.dumps(result['unplug'])}\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=5.0, help="minutes per reported window")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--unplug-at", type=float, default=0.5, help="share of the run at which camera 0 is pulled")
    parser.add_argument("--unplug-s", type=float, default=10.0)
    parser.add_argument("--hand", action="store_true",
                        help="render the clip with the model's hand (a grip can hide the cube for the whole clip)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--networks", nargs="+", choices=("background", "frame"), default=["background"],
                        help="where the networks run (TrackConfig.networks_in_background); several: compared")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each --networks variant, alternated")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"# {args.model}: {args.size}, {'with' if args.hand else 'without'} the hand, {args.minutes:g} min per rig, "
          f"CPU: {describe_cpu()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.cameras:
            estimator = discopose.load(args.model)
            # At a working distance: the model's world spans 0.12-1.3 m, and seed 4343's one-camera clip drew 1.25 m,
            # where every pose is rightly invalid and the tracker never follows (the fourth session's soak). Without
            # the hand by default: the soak is about endurance (memory, latency, following, redetection after the
            # unplug), and at 0.5 m this seed's one-camera clip draws a grip that hides half the cube at the image's
            # edge for all 150 frames (shipped model: 53 mm / 45 deg median, 6% good, every pose rightly flagged
            # invalid, so nothing to follow; without the hand 3.1 mm / 0.8 deg, all valid). The hand's cost is
            # benchmarks/accuracy.py's.
            world = estimator.train_render_config.with_overrides(
                [f"camera.width_px={width}", f"camera.height_px={height}", f"camera.count={count}", "seed=4343",
                 f"camera.distance_range_m=[{SOAK_DISTANCE_M[0]}, {SOAK_DISTANCE_M[1]}]"]
                + ([] if args.hand else ["hand.prob=0"]))
            clip = render_trajectory_video(world, Path(tmp) / f"clip{count}.mp4", num_frames=150, fps=30.0)
            runs = []
            for _ in range(args.repeat):
                for variant in args.networks:
                    result = soak(estimator, clip, args.minutes, args.window, args.unplug_at, args.unplug_s,
                                  networks_in_background=variant == "background")
                    report(result)
                    runs.append(result)
            results += runs
            if len(runs) > 1:
                print(f"## {count} camera(s), the runs side by side\n| networks | Hz | latency p50 / p99 ms | valid | "
                      "followed |\n|---|---|---|---|---|")
                for r in runs:
                    print(f"| {r['networks']} | {r['hz']:.1f} | {r['latency_ms_p50']:.0f} / {r['latency_ms_p99']:.0f} | "
                          f"{100 * r['valid_share']:.0f}% | {100 * r['followed'] / r['messages']:.0f}% |")
                print(flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
