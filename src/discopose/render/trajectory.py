"""Continuous object motion rendered as a video with ground truth, for tracking benchmarks and demos.

The scene (lights, textures, room, clutter, camera jitter) is sampled once; only the object (and the hand
holding it) moves, along a smooth random trajectory inside the workspace, so the video looks like one camera
watching a moving cube.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from discopose._io import atomic_write_text
from discopose.geometry.transforms import make_transform, rotation_about_axis
from discopose.render.config import RenderConfig
from discopose.render.sampling import move_object


def smooth_trajectory(num_frames: int, fps: float, rng: np.random.Generator, center_m, half_extent_m,
                      max_speed_m_s: float = 0.05, max_angular_speed_deg_s: float = 60.0) -> np.ndarray:
    """``world_from_object`` (N, 4, 4): sums of slow sinusoids for position, a smoothly varying angular
    velocity integrated for orientation."""
    t = np.arange(num_frames) / fps
    half = np.asarray(half_extent_m, float)
    position = np.tile(np.asarray(center_m, float), (num_frames, 1))
    for axis in range(3):
        for _ in range(2):
            frequency = rng.uniform(0.05, 0.25)
            amplitude = min(half[axis] / 2, max_speed_m_s / (2 * np.pi * frequency) / 2)
            position[:, axis] += amplitude * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
    axis_phase = rng.uniform(0, 2 * np.pi, 3)
    rotation = rotation_about_axis(rng.normal(size=3), rng.uniform(0, np.pi))
    poses = []
    for time_s in t:
        poses.append(make_transform(rotation, position[len(poses)]))
        omega = np.sin(0.3 * time_s + axis_phase)
        omega = np.radians(max_angular_speed_deg_s) * omega / max(np.linalg.norm(omega), 1e-9)
        rotation = rotation_about_axis(omega, np.linalg.norm(omega) / fps) @ rotation
    return np.stack(poses)


@dataclass
class Clip:
    """A rendered clip: one video per camera, the camera file each was rendered with (what a user's
    calibration would give), and the ground truth (``frame``, ``time_s``, ``world_from_object``,
    ``camera_from_object`` per camera name)."""

    videos: dict
    cameras: dict
    ground_truth: Path


def render_trajectory_video(config: RenderConfig, out_video: str | Path, num_frames: int = 150, fps: float = 30.0,
                            seed: int = 0) -> Clip:
    """Render ``num_frames`` of every camera of ``config`` to MP4: ``out_video`` itself for one camera,
    ``<stem>.<camera>.mp4`` beside it for several; ground truth in ``<stem>.gt.jsonl``."""
    from discopose.camera import CameraModel
    from discopose.render.renderer import DiscoRenderer

    renderer = DiscoRenderer(config)
    poses = smooth_trajectory(num_frames, fps, np.random.default_rng(seed), config.pose.workspace_center_m,
                              config.pose.workspace_half_extent_m)
    params = renderer.sample_params(seed)
    params["occluders"] = []  # a fixed occluder would hide the object for the whole video
    params["table"] = None  # the hand moves with the object and would cut through a fixed table
    out_video = Path(out_video)
    out_video.parent.mkdir(parents=True, exist_ok=True)
    several = len(params["cameras"]) > 1
    videos = {c["name"]: out_video.with_name(f"{out_video.stem}.{c['name']}.mp4") if several else out_video
              for c in params["cameras"]}
    cameras = {}
    for camera in params["cameras"]:
        model = CameraModel(camera["name"], camera["width_px"], camera["height_px"], camera["K"],
                            world_from_camera=camera["world_from_camera"])
        cameras[camera["name"]] = model.save(videos[camera["name"]].with_suffix(".camera.json"))
    writers = {c["name"]: cv2.VideoWriter(str(videos[c["name"]].with_name(f".{videos[c['name']].name}.tmp.mp4")),
                                          cv2.VideoWriter_fourcc(*"mp4v"), fps, (c["width_px"], c["height_px"]))
               for c in params["cameras"]}
    lines = []
    try:
        for frame, world_from_object in enumerate(poses):
            params["noise"]["seed"] = seed * 100003 + frame
            views = renderer.render(move_object(params, world_from_object))
            for name, view in views.items():
                writers[name].write(cv2.cvtColor(view["rgb"], cv2.COLOR_RGB2BGR))
            lines.append(json.dumps({"frame": frame, "time_s": frame / fps,
                                     "world_from_object": world_from_object.tolist(),
                                     "camera_from_object": {name: view["labels"]["camera_from_object"]
                                                            for name, view in views.items()}}))
    finally:
        for writer in writers.values():
            writer.release()
        renderer.close()
    for video in videos.values():
        os.replace(video.with_name(f".{video.name}.tmp.mp4"), video)
    ground_truth = out_video.with_name(f"{out_video.stem}.gt.jsonl")
    atomic_write_text(ground_truth, "\n".join(lines) + "\n")
    return Clip(videos=videos, cameras=cameras, ground_truth=ground_truth)
