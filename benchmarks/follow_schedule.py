"""The tracker's follow step: which refinement schedule a start one frame off needs (``follow_schedule`` is chosen here).

    python benchmarks/follow_schedule.py DATA [DATA ...] [--limit 30] [--seed 0]

DATA: rendered or ``discopose realistic`` datasets of the built-in cube (one camera or a calibrated rig; a rig is
followed jointly in the world frame, as the tracker does, and each of its cameras alone). Each view's true pose is
moved by one frame's motion (``calibrate.one_frame_motion``: up to 3 deg and 5 mm, as the followed poses' sigmas
are fitted) and aligned from there with each schedule, in the same process, alternating which runs first. Printed
per dataset and schedule: rotation / position error median and p90, share over 2 deg, the score, and the call's
wall time p50 (and its ratio to the default schedule's). Prints the CPU it ran on.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from discopose._hardware import describe_cpu
from discopose.datasets.format import camera_from_labels
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.estimator.calibrate import one_frame_motion
from discopose.geometry.transforms import rotation_angle_deg
from discopose.refine import RefineConfig, RefineModel, follow_schedule, refine_pose, refine_world_pose

SCHEDULES = {
    "default (6,4,2,1 px; 3,2,2,2 steps)": RefineConfig(),
    "4,2,1 px; 2,2,2 steps": RefineConfig(scales_px=(4, 2, 1), iterations=(2, 2, 2), edge_search_px=(0, 6, 4)),
    "4,2,1 px; 2,1,1 steps": RefineConfig(scales_px=(4, 2, 1), iterations=(2, 1, 1), edge_search_px=(0, 6, 4)),
    "**2,1 px; 2,2 steps (follow_schedule)**": follow_schedule(RefineConfig()),
    "2,1 px; 1,1 steps": RefineConfig(scales_px=(2, 1), iterations=(1, 1), edge_search_px=(6, 4)),
    "2,1 px; 3,3 steps": RefineConfig(scales_px=(2, 1), iterations=(3, 3), edge_search_px=(6, 4)),
    "1 px; 3 steps": RefineConfig(scales_px=(1,), iterations=(3,), edge_search_px=(4,)),
}


def views_of(path: str, limit: int):
    """(views [(image, camera)], truth in the world frame, truth per camera) per sample."""
    for sample in iter_samples(open_dataset(path), limit=limit):
        cameras = sample["labels"]["cameras"]
        views = [(sample["views"][name]["rgb"], camera_from_labels(name, labels)) for name, labels in cameras.items()]
        per_camera = [np.asarray(labels["camera_from_object"], float) for labels in cameras.values()]
        world = sample["labels"].get("world_from_object")
        yield views, None if world is None else np.asarray(world, float), per_camera


def error(pose: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return rotation_angle_deg(pose[:3, :3], truth[:3, :3]), 1000 * float(np.linalg.norm(pose[:3, 3] - truth[:3, 3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--limit", type=int, default=30, help="samples per dataset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.2f}")
    model = RefineModel.cube()
    print("| data | follow | schedule | rotation median / p90 | position median / p90 | > 2 deg | score | "
          "time p50 | x default |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.data:
        rng = np.random.default_rng(args.seed)
        rows = {}  # (kind, schedule) -> [(rot, pos, score, ms)]
        for n, (views, world_truth, per_camera) in enumerate(views_of(path, args.limit)):
            tasks = [("one camera", [view], truth, False) for view, truth in zip(views, per_camera)]
            if len(views) > 1 and world_truth is not None:
                tasks.append((f"{len(views)} jointly", views, world_truth, True))
            for kind, task_views, truth, joint in tasks:
                start = one_frame_motion(truth, rng)
                names = list(SCHEDULES) if n % 2 == 0 else list(SCHEDULES)[::-1]
                for name in names:
                    began = time.perf_counter()
                    if joint:
                        result = refine_world_pose(task_views, model, start, SCHEDULES[name])
                    else:
                        result = refine_pose(task_views[0][0], task_views[0][1], model, start, SCHEDULES[name])
                    ms = 1000 * (time.perf_counter() - began)
                    rows.setdefault((kind, name), []).append((*error(result.frame_from_object, truth),
                                                              result.score, ms))
        default_ms = {kind: np.median([r[3] for r in rows[(kind, list(SCHEDULES)[0])]]) for kind, _ in rows}
        for (kind, name), values in rows.items():
            rot, pos, score, ms = np.array(values).T
            print(f"| {os.path.basename(path.rstrip('/'))} | {kind} | {name} | {np.median(rot):.2f}° / "
                  f"{np.quantile(rot, 0.9):.2f}° | {np.median(pos):.1f} / {np.quantile(pos, 0.9):.1f} mm | "
                  f"{np.mean(rot > 2):.0%} | {np.median(score):.2f} | {np.median(ms):.1f} ms | "
                  f"{np.median(ms) / default_ms[kind]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
