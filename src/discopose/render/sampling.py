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
from discopose.render.hand import box_corners, capsule_chain, polyline_points, rotation_with_z, sample_hand, tilted_up
from discopose.render.textures import random_color

# The Monk Skin Tone scale (Monk 2019; Google 2022), sRGB, light to dark: ten tones that span human skin.
_SKIN_TONES_SRGB = np.array([[246, 237, 228], [243, 231, 219], [247, 234, 208], [234, 218, 186], [215, 189, 150],
                             [160, 126, 86], [130, 92, 67], [96, 65, 52], [58, 49, 42], [41, 36, 32]]) / 255.0


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


def _linear_from_srgb(srgb: np.ndarray) -> np.ndarray:
    """pyrender multiplies a linear base colour factor; colours are chosen in sRGB, as they look."""
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _style(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    probabilities = np.array([weights[n] for n in names], float)
    return names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]


def _body_material(rng: np.random.Generator, style: str, config: RenderConfig, bank_size: int) -> dict:
    """Material of a hand or limb. Untextured styles have ``texture: None`` and ``tint`` as the linear
    base colour: skin between two neighbouring tones of the scale, matte; robots dark grey to black,
    partly metallic; clothing any colour, matte; disco a bank material like the clutter's."""
    if style == "disco":
        return _material(rng, config, bank_size)
    if style == "skin":
        position = rng.uniform(0, len(_SKIN_TONES_SRGB) - 1)
        below = int(position)
        above = min(below + 1, len(_SKIN_TONES_SRGB) - 1)
        srgb = _SKIN_TONES_SRGB[below] + (position - below) * (_SKIN_TONES_SRGB[above] - _SKIN_TONES_SRGB[below])
        # The scale's swatches are skin as photographed; an albedo is somewhat darker, and people vary.
        srgb = srgb * rng.uniform(0.75, 0.95) * (1 + rng.normal(0, 0.03, 3))
        metallic, roughness = rng.uniform(0.0, 0.05), rng.uniform(0.45, 0.8)
    elif style == "robot":
        srgb = rng.uniform(0.03, 0.35) * (1 + rng.normal(0, 0.05, 3))
        metallic, roughness = rng.uniform(0.1, 0.8), rng.uniform(0.25, 0.7)
    elif style == "clothing":
        srgb = random_color(rng)
        metallic, roughness = 0.0, rng.uniform(0.6, 1.0)
    else:
        raise ValueError(style)
    return {"texture": None, "tint": _linear_from_srgb(srgb).tolist(), "metallic": float(metallic),
            "roughness": float(roughness)}


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


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value whose logarithm is uniform in [log low, log high]: equal share per factor."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _in_volume(camera: CameraModel, object_position: np.ndarray, object_radius_m: float, rng: np.random.Generator,
               config: RenderConfig) -> np.ndarray:
    """``world_from_camera`` of a ring camera moved along its viewing direction to a log-uniform distance
    from the object in ``camera.distance_range_m``, turned so the object lands at a uniform random image
    point where its bounding sphere still fits (``view_offset_frac`` of that room), image "up" kept."""
    cam_cfg = config.camera
    center = np.asarray(config.pose.workspace_center_m, float)
    direction = camera.world_from_camera[:3, 3] - center
    direction /= np.linalg.norm(direction)
    distance = log_uniform(rng, *cam_cfg.distance_range_m)
    eye = object_position + distance * direction
    # Half the field of view left for the object's centre once its angular radius is kept inside.
    radius_rad = np.arcsin(min(object_radius_m / distance, 1.0))
    half_fov = np.arctan(np.array([camera.width_px, camera.height_px]) / (2 * np.diag(camera.K)[:2]))
    room = np.tan(np.maximum(half_fov - radius_rad, 0.0)) * cam_cfg.view_offset_frac
    ray = np.append(rng.uniform(-1, 1, 2) * room, 1.0)
    ray /= np.linalg.norm(ray)
    world_from_camera = look_at(eye, object_position)
    # The rotation that takes the optical axis onto `ray`; undoing it puts the object on `ray`.
    axis = np.cross([0.0, 0.0, 1.0], ray)
    if np.linalg.norm(axis) > 1e-12:
        world_from_camera[:3, :3] = world_from_camera[:3, :3] @ rotation_about_axis(axis, np.arccos(ray[2])).T
    return world_from_camera


def _jitter_camera(camera: CameraModel, rng: np.random.Generator, config: RenderConfig,
                   object_position: np.ndarray, object_radius_m: float) -> dict:
    cam_cfg = config.camera
    if cam_cfg.distance_range_m is not None and not cam_cfg.files:
        world_from_camera = _in_volume(camera, object_position, object_radius_m, rng, config)
    else:
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
    # Source pixels per crop pixel (same optical centre, so the ratio of focal lengths): below 1, the
    # source camera saw the object with fewer pixels than the crop shows it.
    source_scale = min(1.0, log_uniform(rng, *cam_cfg.source_focal_px) / crop.K[0, 0])
    return {**camera, "K": crop.K.tolist(), "width_px": crop.width_px, "height_px": crop.height_px,
            "world_from_camera": world_from_crop.tolist(), "source_scale": source_scale}


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


def _item_corners(item: dict) -> np.ndarray:
    """World corners (8, 3) of the box a shape item fills (every unit shape fits the unit cube)."""
    world_from_shape = np.asarray(item["world_from_shape"])
    corners = box_corners([-0.5] * 3, [0.5] * 3) * np.asarray(item["scale_m"])
    return corners @ world_from_shape[:3, :3].T + world_from_shape[:3, 3]


def _table(rng: np.random.Generator, config: RenderConfig, cameras: list[dict], object_corners: np.ndarray,
           hand: dict | None, bank_size: int) -> dict | None:
    """A slab below the object and the hand, or None when a camera would not be above its top."""
    table_cfg = config.table
    if rng.random() >= table_cfg.prob:
        return None
    up = tilted_up(rng, table_cfg.tilt_deg)
    held = [object_corners] + ([_item_corners(item) for item in hand["parts"]] if hand else [])
    top = min(float((points @ up).min()) for points in held) - rng.uniform(*table_cfg.gap_m)
    if min(float(np.asarray(c["world_from_camera"])[:3, 3] @ up) for c in cameras) < top + 0.05:
        return None
    half = rng.uniform(*table_cfg.half_extent_m, 2)
    rotation = rotation_with_z(up) @ rotation_about_axis([0, 0, 1], rng.uniform(0, 2 * np.pi))
    # Off-centre, so the table's edges come into view in some samples.
    offset = rng.uniform(*table_cfg.offset_frac, 2) * half * rng.choice([-1, 1], 2)
    center = object_corners.mean(0)
    center = center + (top - center @ up) * up + rotation @ [*offset, -table_cfg.thickness_m / 2]
    return {"shape": "slab", "world_from_shape": make_transform(rotation, center).tolist(),
            "scale_m": [*(2 * half).tolist(), table_cfg.thickness_m], "material": _material(rng, config, bank_size)}


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance from each point (N, 3) to the segment start-end."""
    along = end - start
    t = np.clip((points - start) @ along / max(float(along @ along), 1e-18), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[:, None] * along), axis=1)


def _limb_axis(rng: np.random.Generator, config: RenderConfig, camera: dict,
               object_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions (world) and segment radii of a limb whose end lies inside ``camera``'s image near
    an edge and which runs out of the image across that edge."""
    limb_cfg = config.limbs
    K = np.asarray(camera["K"])
    world_from_camera = np.asarray(camera["world_from_camera"])
    size = np.array([camera["width_px"], camera["height_px"]], float)
    object_depth = (invert_transform(world_from_camera) @ np.append(object_position, 1.0))[2]
    depth = max(object_depth + rng.uniform(*limb_cfg.depth_behind_m), config.camera.znear_m + 0.1)
    edge = int(rng.integers(4))  # left, right, top, bottom
    axis, side = edge // 2, edge % 2
    outward = np.zeros(2)
    outward[axis] = 1.0 if side else -1.0
    pixel = np.empty(2)
    reach = rng.uniform(*limb_cfg.reach_frac) * size[axis]
    pixel[axis] = size[axis] - reach if side else reach
    pixel[1 - axis] = rng.uniform(0.1, 0.9) * size[1 - axis]
    end = depth * np.array([(pixel[0] - K[0, 2]) / K[0, 0], (pixel[1] - K[1, 2]) / K[1, 1], 1.0])
    angle = rng.uniform(-np.radians(40), np.radians(40))
    across = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ outward
    direction = np.array([*across, rng.uniform(-0.3, 0.3)])
    radii = [rng.uniform(*limb_cfg.diameter_m) / 2]
    joints = [end, end + rng.uniform(*limb_cfg.length_m) * direction / np.linalg.norm(direction)]
    for _ in range(int(rng.integers(limb_cfg.segments[0], limb_cfg.segments[1] + 1)) - 1):
        # An elbow or knee, then a thicker upper arm or thigh.
        bend = rotation_about_axis(np.cross(direction, rng.normal(size=3)), rng.uniform(0, np.radians(60)))
        direction = bend @ direction
        joints.append(joints[-1] + rng.uniform(*limb_cfg.length_m) * direction / np.linalg.norm(direction))
        radii.append(radii[-1] * rng.uniform(1.05, 1.3))
    points = np.asarray(joints) @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    return points, np.asarray(radii)


def _limbs(rng: np.random.Generator, config: RenderConfig, cameras: list[dict], object_position: np.ndarray,
           object_diameter_m: float, bank_size: int) -> list[dict]:
    """People's arms and legs at the edges of the view; never between a camera and the object's centre
    nor through the object (a limb that cannot be placed so is left out)."""
    limb_cfg = config.limbs
    if rng.random() >= limb_cfg.prob:
        return []
    limbs = []
    for _ in range(int(rng.integers(limb_cfg.count[0], limb_cfg.count[1] + 1))):
        camera = cameras[int(rng.integers(len(cameras)))]
        for _attempt in range(8):
            joints, radii = _limb_axis(rng, config, camera, object_position)
            axis_points = polyline_points(joints)
            margin = np.repeat(radii, len(axis_points) // len(radii)) + 0.1 * object_diameter_m
            clear = (np.linalg.norm(axis_points - object_position, axis=1) > margin + object_diameter_m / 2).all()
            for other in cameras:
                eye = np.asarray(other["world_from_camera"])[:3, 3]
                clear &= (_segment_distance(axis_points, eye, object_position) > margin).all()
            if clear:
                style = _style(rng, limb_cfg.style_weights)
                limbs.append({"style": style, "parts": capsule_chain(joints, radii,
                                                                     _body_material(rng, style, config, bank_size))})
                break
    return limbs


def body_items(params: dict) -> list[dict]:
    """The shape items of a sample's hand, limbs and table. Params recorded before these existed lack
    their keys and still render."""
    items = list(params["hand"]["parts"]) if params.get("hand") else []
    for limb in params.get("limbs", []):
        items += limb["parts"]
    if params.get("table"):
        items.append(params["table"])
    return items


def move_object(params: dict, world_from_object: np.ndarray) -> dict:
    """``params`` with the object at ``world_from_object`` and the hand holding it carried along rigidly."""
    moved = dict(params, world_from_object=np.asarray(world_from_object).tolist())
    if params.get("hand"):
        new_from_old = np.asarray(world_from_object) @ invert_transform(np.asarray(params["world_from_object"]))
        carry = lambda pose: (new_from_old @ np.asarray(pose)).tolist()  # noqa: E731
        moved["hand"] = dict(params["hand"], world_from_palm=carry(params["hand"]["world_from_palm"]),
                             parts=[dict(part, world_from_shape=carry(part["world_from_shape"]))
                                    for part in params["hand"]["parts"]])
    return moved


def sample_scene(config: RenderConfig, rng: np.random.Generator, cameras: list[CameraModel], bank_size: int,
                 object_diameter_m: float, world_from_object: np.ndarray | None = None,
                 object_bounds_m: np.ndarray | None = None, hand_state: dict | None = None) -> dict:
    """All parameters of one sample. ``world_from_object`` overrides the random pose (pose files);
    ``hand_state`` (a line of ``hand.joint_states_file``) the sampled grasp. ``object_bounds_m`` is the
    object's bounding box [low, high] in its frame, which fingertips touch (default: the cube whose
    diagonal is the diameter)."""
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

    params["cameras"] = [_jitter_camera(camera, rng, config, object_position, object_diameter_m / 2)
                         for camera in cameras]
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

    # Drawn last, so the parameters above are the same as for configs without hands, limbs and tables.
    if object_bounds_m is None:
        object_bounds_m = np.array([[-1.0] * 3, [1.0] * 3]) * object_diameter_m / (2 * np.sqrt(3))
    params["hand"] = None
    if hand_state is not None or (config.hand.joint_states_file is None and rng.random() < config.hand.prob):
        style = _style(rng, config.hand.style_weights)
        params["hand"] = sample_hand(rng, config.hand, np.asarray(world_from_object), object_bounds_m,
                                     object_diameter_m, _body_material(rng, style, config, bank_size), hand_state)
        if params["hand"] is not None:
            params["hand"]["style"] = style
    params["limbs"] = _limbs(rng, config, params["cameras"], object_position, object_diameter_m, bank_size)
    object_corners = box_corners(*np.asarray(object_bounds_m, float)) @ np.asarray(world_from_object)[:3, :3].T \
        + object_position
    params["table"] = _table(rng, config, params["cameras"], object_corners, params["hand"], bank_size)
    return params
