"""Continuous object motion rendered as a video with ground truth, for tracking benchmarks and demos.

The scene (lights, textures, room, clutter, camera jitter) is sampled once; only the object moves, along
a smooth random trajectory inside the workspace, so the video looks like one camera watching a moving cube.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from discopose.geometry.transforms import make_transform, quat_wxyz_from_matrix, rotation_about_axis
from discopose.render.config import RenderConfig


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


def render_trajectory_video(config: RenderConfig, out_video: str | Path, num_frames: int = 150, fps: float = 30.0,
                            seed: int = 0, camera: str | None = None) -> Path:
    """Render ``num_frames`` of one camera to an MP4 and ground truth to ``<video>.gt.jsonl``.

    Ground truth per line: ``frame``, ``time_s``, ``camera_from_object`` (4x4), ``world_from_object``.
    """
    from discopose.render.renderer import DiscoRenderer

    renderer = DiscoRenderer(config)
    camera = camera or config.camera_names[0]
    poses = smooth_trajectory(num_frames, fps, np.random.default_rng(seed), config.pose.workspace_center_m,
                              config.pose.workspace_half_extent_m)
    params = renderer.sample_params(seed)
    params["occluders"] = []  # a fixed occluder would hide the object for the whole video
    out_video = Path(out_video)
    out_video.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_video.with_name(f".{out_video.name}.tmp.mp4")
    width, height = next((c["width_px"], c["height_px"]) for c in params["cameras"] if c["name"] == camera)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    lines = []
    try:
        for frame, world_from_object in enumerate(poses):
            params["world_from_object"] = world_from_object.tolist()
            params["noise"]["seed"] = seed * 100003 + frame
            view = renderer.render(params)[camera]
            writer.write(cv2.cvtColor(view["rgb"], cv2.COLOR_RGB2BGR))
            camera_from_object = np.asarray(view["labels"]["camera_from_object"])
            lines.append(json.dumps({"frame": frame, "time_s": frame / fps,
                                     "camera_from_object": camera_from_object.tolist(),
                                     "world_from_object": world_from_object.tolist(),
                                     "quat_wxyz": quat_wxyz_from_matrix(camera_from_object[:3, :3]).tolist()}))
    finally:
        writer.release()
        renderer.close()
    os.replace(tmp, out_video)
    gt = out_video.with_suffix(".gt.jsonl")
    gt.write_text("\n".join(lines) + "\n")
    return out_video
