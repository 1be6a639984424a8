"""Draw every randomized parameter of one sample into a JSON-able dict.

Sampling is pure: ``sample_scene(config, rng, ...)`` depends only on its arguments, so the recorded
parameters fully describe a sample and :meth:`DiscoRenderer.render` can redraw it from them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from discopose._errors import ConfigError
from discopose.camera import CameraModel, jittered_aim
from discopose.geometry.transforms import (invert_transform, look_at, make_transform, matrix_from_quat_wxyz, random_rotation,
                                           rotation_about_axis)
from discopose.render.config import RenderConfig
from discopose.render.textures import random_color


def sample_seed(dataset_seed: int, index: int) -> int:
    """Each sample's own seed: independent of worker count and order of rendering."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1, np.uint64)[0] >> 1)


def nominal_cameras(config: RenderConfig) -> list[CameraModel]:
    """Cameras before per-sample jitter: from camera files, or spread on a ring around the workspace."""
    names = config.camera_names
    cam_cfg = config.camera
    if cam_cfg.files:
        cameras = []
        for name, path in zip(names, cam_cfg.files):
            camera = CameraModel.load(path)
            if camera.world_from_camera is None:
                raise ConfigError(f"camera file {path!r} has no world_from_camera; "
                                  "add it with `discopose calibrate extrinsics`")
            camera.name = name
            cameras.append(camera)
        return cameras
    center = np.asarray(config.pose.workspace_center_m, float)
    cameras = []
    for i, name in enumerate(names):
        azimuth = np.radians(-90.0 + 360.0 * i / cam_cfg.count)
        elevation = np.radians(cam_cfg.elevation_deg)
        eye = center + cam_cfg.distance_m * np.array([np.cos(elevation) * np.cos(azimuth),
                                                      np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        cameras.append(CameraModel.from_fov(name, cam_cfg.width_px, cam_cfg.height_px, cam_cfg.fov_deg,
                                            world_from_camera=look_at(eye, center)))
    return cameras


def load_pose_file(path: str) -> np.ndarray:
    """``world_from_object`` poses (N, 4, 4) from JSON lines or .npz.

    JSON lines: one ``{"position_m": [x, y, z], "quat_wxyz": [w, x, y, z]}`` per line.
    .npz: arrays ``position_m`` (N, 3) and ``quat_wxyz`` (N, 4).
    """
    try:
        if str(path).endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                positions, quats = data["position_m"], data["quat_wxyz"]
        else:
            rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
            positions = np.array([r["position_m"] for r in rows], float)
            quats = np.array([r["quat_wxyz"] for r in rows], float)
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"pose.poses_file={path!r} is malformed ({exc}); each pose needs position_m and "
                          "quat_wxyz") from None
    if positions.ndim != 2 or positions.shape[1:] != (3,) or quats.shape != (len(positions), 4) or len(quats) == 0:
        raise ConfigError(f"pose.poses_file={path!r}: need N x 3 position_m and N x 4 quat_wxyz, N > 0")
    return np.stack([make_transform(matrix_from_quat_wxyz(q), p) for p, q in zip(positions, quats)])


def _material(rng: np.random.Generator, config: RenderConfig, bank_size: int) -> dict:
    tex = config.textures
    # The bank holds tex.bank_size procedural textures, then the images of tex.image_dir (if any).
    procedural = min(tex.bank_size, bank_size)
    if bank_size > procedural and rng.random() < tex.image_prob:
        texture = procedural + int(rng.integers(bank_size - procedural))
    else:
        texture = int(rng.integers(procedural))
    return {"texture": texture,
            "tint": (0.5 + 0.5 * rng.random(3)).tolist(),
            "metallic": float(rng.uniform(*tex.metallic)),
            "roughness": float(rng.uniform(*tex.roughness))}


def _contrasting_colors(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Face and marking colours whose luminance differs enough for the markings to stay legible."""
    luminance = np.array([0.299, 0.587, 0.114])
    faces, marks = [], []
    for _ in range(count):
        while True:
            face, mark = random_color(rng), random_color(rng)
            if abs(face @ luminance - mark @ luminance) > 0.3:
                break
        faces.append(face)
        marks.append(mark)
    return np.array(faces), np.array(marks)


def _jitter_camera(camera: CameraModel, rng: np.random.Generator, config: RenderConfig) -> dict:
    cam_cfg = config.camera
    world_from_camera = camera.world_from_camera.copy()
    offset = rng.normal(size=3)
    world_from_camera[:3, 3] += cam_cfg.position_jitter_m * rng.random() ** (1 / 3) * offset / np.linalg.norm(offset)
    world_from_camera[:3, :3] = world_from_camera[:3, :3] @ rotation_about_axis(
        rng.normal(size=3), np.radians(rng.uniform(0, cam_cfg.rotation_jitter_deg)))
    K = camera.K.copy()
    focal_scale = 1 + rng.uniform(-cam_cfg.focal_jitter_frac, cam_cfg.focal_jitter_frac)
    K[0, 0] *= focal_scale
    K[1, 1] *= focal_scale * (1 + rng.uniform(-0.01, 0.01))
    K[:2, 2] += rng.uniform(-cam_cfg.principal_point_jitter_px, cam_cfg.principal_point_jitter_px, 2)
    return {"name": camera.name, "width_px": camera.width_px, "height_px": camera.height_px,
            "K": K.tolist(), "world_from_camera": world_from_camera.tolist()}


def _aim_at_object(camera: dict, object_position: np.ndarray, diameter_m: float, rng: np.random.Generator,
                   config: RenderConfig) -> dict:
    """Turn and zoom a sampled camera onto the object, as the crop stage of a model sees it."""
    cam_cfg = config.camera
    world_from_camera = np.asarray(camera["world_from_camera"])
    object_in_camera = (invert_transform(world_from_camera) @ np.append(object_position, 1.0))[:3]
    crop, crop_from_camera = jittered_aim(object_in_camera, diameter_m, cam_cfg.width_px, cam_cfg.object_fill_frac,
                                          cam_cfg.aim_offset_frac, cam_cfg.aim_scale_jitter_frac, rng)
    world_from_crop = world_from_camera.copy()
    world_from_crop[:3, :3] = world_from_camera[:3, :3] @ crop_from_camera.T
    return {**camera, "K": crop.K.tolist(), "width_px": crop.width_px, "height_px": crop.height_px,
            "world_from_camera": world_from_crop.tolist()}


def _light(rng: np.random.Generator, config: RenderConfig, light_type: str, target: np.ndarray) -> dict:
    light_cfg = config.lighting
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) + 0.3  # mostly from above, like rooms are lit
    direction /= np.linalg.norm(direction)
    eye = target + rng.uniform(*light_cfg.distance_m) * direction
    world_from_light = look_at(eye, target + rng.normal(0, 0.05, 3))
    # OpenCV-style look_at; lights shine down -z in pyrender, converted in the renderer.
    white = np.ones(3)
    color = (1 - rng.uniform(0, light_cfg.color_saturation_max)) * white \
        + rng.uniform(0, light_cfg.color_saturation_max) * random_color(rng)
    return {"type": light_type, "color": np.clip(color, 0, 1).tolist(),
            "intensity": float(rng.uniform(*getattr(light_cfg, f"{light_type}_intensity"))),
            "world_from_light": world_from_light.tolist(),
            "inner_cone_rad": float(rng.uniform(0.1, 0.4)), "outer_cone_rad": float(rng.uniform(0.45, 0.9))}


def _placed_shape(rng, shape: str, center: np.ndarray, size_m: float, config: RenderConfig, bank_size: int) -> dict:
    aspect = rng.uniform(0.4, 1.0, 3)
    return {"shape": shape, "world_from_shape": make_transform(random_rotation(rng), center).tolist(),
            "scale_m": (size_m * aspect / aspect.max()).tolist(), "material": _material(rng, config, bank_size)}


def sample_scene(config: RenderConfig, rng: np.random.Generator, cameras: list[CameraModel], bank_size: int,
                 object_diameter_m: float, world_from_object: np.ndarray | None = None) -> dict:
    """All parameters of one sample. ``world_from_object`` overrides the random pose (pose files)."""
    center = np.asarray(config.pose.workspace_center_m, float)
    if world_from_object is None:
        offset = rng.uniform(-1, 1, 3) * np.asarray(config.pose.workspace_half_extent_m)
        world_from_object = make_transform(random_rotation(rng), center + offset)
    object_position = world_from_object[:3, 3]
    params: dict = {"world_from_object": np.asarray(world_from_object).tolist()}

    appearance = {"mode": config.object.appearance}
    if config.object.appearance == "markings":
        faces, marks = _contrasting_colors(rng, 6)
        appearance.update(face_colors=faces.tolist(), mark_colors=marks.tolist(),
                          hue_shift_deg=float(rng.uniform(0, 360)), saturation_scale=float(rng.uniform(0.6, 1.4)))
    elif config.object.appearance == "random":
        appearance.update(_material(rng, config, bank_size))
    appearance.update(metallic=float(rng.uniform(*config.textures.metallic)),
                      roughness=float(rng.uniform(*config.textures.roughness)))
    params["object_appearance"] = appearance

    params["cameras"] = [_jitter_camera(camera, rng, config) for camera in cameras]
    if config.camera.aim == "object":
        params["cameras"] = [_aim_at_object(camera, object_position, object_diameter_m, rng, config)
                             for camera in params["cameras"]]

    light_cfg = config.lighting
    count = int(rng.integers(light_cfg.count[0], light_cfg.count[1] + 1))
    params["lights"] = [_light(rng, config, str(rng.choice(light_cfg.types)), object_position) for _ in range(count)]
    params["ambient"] = (rng.uniform(*light_cfg.ambient) * (0.8 + 0.2 * rng.random(3))).tolist()
    params["shadows"] = bool(rng.random() < light_cfg.shadows_prob)
    params["bg_color"] = random_color(rng).tolist()

    clutter = config.clutter
    params["room"] = None
    if rng.random() < clutter.room_prob:
        camera_reach = max(np.linalg.norm(np.asarray(c["world_from_camera"])[:3, 3] - center)
                           for c in params["cameras"])
        low = max(clutter.room_half_extent_m[0], camera_reach + 0.05)
        high = max(clutter.room_half_extent_m[1], low)
        params["room"] = {"half_extent_m": rng.uniform(low, high, 3).tolist(),
                          "yaw_rad": float(rng.uniform(0, 2 * np.pi)),
                          "walls": [_material(rng, config, bank_size) for _ in range(6)]}

    shapes = list(clutter.primitives) + [f"mesh{i}" for i in range(len(clutter.meshes))]
    distractors = []
    for _ in range(int(rng.integers(clutter.distractor_count[0], clutter.distractor_count[1] + 1)) if shapes else 0):
        size = rng.uniform(*clutter.distractor_size_m)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        # Keep distractors clear of the object so they clutter rather than intersect it.
        radius = max(rng.uniform(*clutter.distractor_radius_m), object_diameter_m / 2 + size)
        distractors.append(_placed_shape(rng, str(rng.choice(shapes)), object_position + radius * direction,
                                         size, config, bank_size))
    params["distractors"] = distractors

    occluders = []
    if shapes and rng.random() < clutter.occluder_prob:
        camera = params["cameras"][int(rng.integers(len(params["cameras"])))]
        camera_position = np.asarray(camera["world_from_camera"])[:3, 3]
        along = rng.uniform(0.3, 0.6)
        size = object_diameter_m * rng.uniform(*clutter.occluder_size_frac)
        lateral = rng.normal(size=3) * object_diameter_m * 0.35
        occluder_center = object_position + along * (camera_position - object_position) + lateral
        occluders.append(_placed_shape(rng, str(rng.choice(shapes)), occluder_center, size, config, bank_size))
    params["occluders"] = occluders

    noise = config.noise
    params["noise"] = {"gaussian_sigma": float(rng.uniform(*noise.gaussian_sigma)),
                       "blur_sigma_px": float(rng.uniform(*noise.blur_sigma_px)) if rng.random() < noise.blur_prob else 0.0,
                       "seed": int(rng.integers(2**31))}
    return params
