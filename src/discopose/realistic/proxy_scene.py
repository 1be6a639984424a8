"""What the realistic proxy adds to a sampled scene: everyday clutter on the table, the materials
("looks") of every surface, area lights, and the procedural textures those looks describe.

Pure numpy/cv2 and JSON-able: :func:`sample_proxy` draws everything from one Generator into dicts that
the parameters of a sample record, and :func:`look_texture` turns a look into its texture again from its
seed. Clutter items are ordinary distractor shape items (``box`` and ``cylinder``, unit meshes stretched
by ``scale_m``), so the rasterized pass that makes the masks sees exactly the geometry the path tracer
renders. World frame: metres, z up (``docs/conventions.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from discopose.config import check_range
from discopose.render.config import _check_weights
from discopose.geometry.transforms import invert_transform, look_at, make_transform, rotation_about_axis
from discopose.render.hand import box_corners
from discopose.render.objects import CUBE_FACES
from discopose.render.sampling import _segment_distance

LIGHT_KINDS = ("panel", "window", "lamp")
CLUTTER_KINDS = ("books", "package", "small_cube", "phone", "can", "mug", "marker")
# Luminous efficacy that turns a luminance (cd/m^2) of our unit-luminance colours into radiance (W/(m^2 sr)).
LUMENS_PER_WATT = 683.0

_WORDS = ("NOTES", "TEA", "COFFEE", "OATS", "CEREAL", "ROBOTICS", "PHYSICS", "ALGEBRA", "HISTORY", "MILK", "TOOLS",
          "CABLES", "SCREWS", "PARTS", "SNACKS", "FRESH", "ORGANIC", "VISION", "DESIGN", "CHEMISTRY", "POETRY",
          "ATLAS", "MANUAL", "SENSORS", "BATTERY", "COCOA", "RICE", "PASTA", "BISCUITS", "JOURNAL")
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX)
# sRGB colours (0-255) of common surfaces.
_WOODS = (((205, 165, 115), (160, 115, 70)), ((115, 78, 52), (70, 45, 30)), ((170, 98, 62), (118, 60, 36)),
          ((222, 198, 160), (188, 158, 118)), ((150, 110, 75), (100, 70, 45)))
_LAMINATES = ((236, 236, 232), (205, 205, 202), (222, 208, 184), (96, 96, 98), (48, 48, 50), (180, 190, 196))
_PAINTS = ((240, 238, 230), (246, 236, 216), (216, 216, 214), (202, 216, 230), (212, 226, 202), (232, 216, 192),
           (236, 222, 222))
_CARPETS = ((118, 118, 122), (72, 82, 110), (120, 100, 82), (86, 96, 80))


@dataclass
class ProxySceneConfig:
    """Ranges ``(min, max)`` of the proxy's scene, drawn uniformly per sample."""

    # Clutter items on the table (a stack of books is one item).
    clutter_count: tuple[int, int] = (3, 7)
    # Relative frequency of each clutter kind.
    clutter_weights: dict[str, float] = field(default_factory=lambda: {
        "books": 0.2, "package": 0.2, "small_cube": 0.12, "phone": 0.08, "can": 0.14, "mug": 0.16, "marker": 0.1})
    # Where an item stands: with ``clutter_in_view_prob`` where a random pixel of a random camera looks at
    # the table (so the cameras see clutter), else anywhere at this distance from the object along the table.
    clutter_in_view_prob: float = 0.7
    clutter_radius_m: tuple[float, float] = (0.07, 0.45)
    # Area lights: count, and relative frequency of ceiling panels, windows and desk lamps.
    light_count: tuple[int, int] = (1, 2)
    light_weights: dict[str, float] = field(default_factory=lambda: {"panel": 0.45, "window": 0.3, "lamp": 0.25})
    # Luminance of each light's surface (cd/m^2) and its colour temperature (K).
    panel_luminance_cd_m2: tuple[float, float] = (2000.0, 6000.0)
    window_luminance_cd_m2: tuple[float, float] = (1500.0, 5000.0)
    lamp_luminance_cd_m2: tuple[float, float] = (5000.0, 15000.0)
    panel_cct_k: tuple[float, float] = (3000.0, 6500.0)
    window_cct_k: tuple[float, float] = (5500.0, 8000.0)
    lamp_cct_k: tuple[float, float] = (2700.0, 4200.0)
    # The environment seen through the open top of the room: the glow of a lit ceiling.
    environment_luminance_cd_m2: tuple[float, float] = (60.0, 250.0)
    environment_cct_k: tuple[float, float] = (3500.0, 6500.0)
    # Probability that the forearm wears a sleeve instead of bare skin.
    sleeve_prob: float = 0.5

    def __post_init__(self):
        check_range("proxy.clutter_count", self.clutter_count, 0, 16)
        check_range("proxy.clutter_in_view_prob", self.clutter_in_view_prob, 0.0, 1.0)
        check_range("proxy.clutter_radius_m", self.clutter_radius_m, 0.0, 5.0)
        check_range("proxy.light_count", self.light_count, 1, 4)
        for name in ("panel_luminance_cd_m2", "window_luminance_cd_m2", "lamp_luminance_cd_m2",
                     "environment_luminance_cd_m2"):
            check_range(f"proxy.{name}", getattr(self, name), 0.0)
        for name in ("panel_cct_k", "window_cct_k", "lamp_cct_k", "environment_cct_k"):
            check_range(f"proxy.{name}", getattr(self, name), 1000.0, 25000.0)
        check_range("proxy.sleeve_prob", self.sleeve_prob, 0.0, 1.0)
        _check_weights("proxy.clutter_weights", self.clutter_weights, CLUTTER_KINDS)
        _check_weights("proxy.light_weights", self.light_weights, LIGHT_KINDS)


# ------------------------------------------------------------------------------------------- colour
def _decode_srgb(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


# uint8 images decode through a table: a 1024 x 1024 texture in milliseconds.
_SRGB_TABLE = _decode_srgb(np.arange(256) / 255.0).astype(np.float32)


def linear_from_srgb255(color) -> np.ndarray:
    """Linear RGB in [0, 1] of sRGB values in 0-255: a colour (float64) or a uint8 image (float32)."""
    color = np.asarray(color)
    if color.dtype == np.uint8:
        return _SRGB_TABLE[color]
    return _decode_srgb(color.astype(float) / 255.0)


def blackbody_rgb(cct_k: float) -> np.ndarray:
    """Linear sRGB colour of a blackbody at ``cct_k`` kelvin (Planckian locus, Kim et al. 2002 cubic fit),
    scaled to unit luminance."""
    t = float(np.clip(cct_k, 1667.0, 25000.0))
    if t <= 4000:
        x = -0.2661239e9 / t ** 3 - 0.2343589e6 / t ** 2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t ** 3 + 2.1070379e6 / t ** 2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x ** 3 - 1.34811020 * x ** 2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x ** 3 - 1.37418593 * x ** 2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x ** 3 - 5.87338670 * x ** 2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1 - x - y) / y])
    rgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]) @ xyz
    rgb = np.clip(rgb, 0.0, None)
    return rgb / (rgb @ [0.2126, 0.7152, 0.0722])


def radiance(luminance_cd_m2: float, cct_k: float) -> list[float]:
    """Linear RGB radiance (W/(m^2 sr), 555 nm-equivalent) of a surface of that luminance and colour."""
    return (blackbody_rgb(cct_k) * luminance_cd_m2 / LUMENS_PER_WATT).tolist()


# ------------------------------------------------------------------------------------------ sampling
def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _pick(rng: np.random.Generator, palette) -> list[float]:
    return [float(c) for c in palette[int(rng.integers(len(palette)))]]


def _random_srgb(rng: np.random.Generator, saturation=(0.3, 0.95), value=(0.35, 0.95)) -> list[float]:
    """A printed colour (sRGB 0-255): any hue, fairly saturated."""
    hsv = np.uint8([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float).tolist()


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _item(shape: str, world_from_shape: np.ndarray, scale_m, look: dict) -> dict:
    """A distractor shape item; its rasterizer material is a plain grey (only its silhouette is used)."""
    return {"shape": shape, "world_from_shape": np.asarray(world_from_shape).tolist(),
            "scale_m": [float(s) for s in scale_m],
            "material": {"texture": None, "tint": [0.5, 0.5, 0.5], "metallic": 0.0, "roughness": 1.0}, "look": look}


def _clutter_kind(rng: np.random.Generator, kind: str, place) -> list[dict]:
    """The shape items of one clutter item of ``kind``; ``place(x, y, z, yaw, tilt)`` maps a pose in the
    table-top frame (origin on the top surface, z up) to ``world_from_shape``."""
    yaw = rng.uniform(0, 2 * np.pi)
    if kind == "books":
        items, z = [], 0.0
        for _ in range(int(rng.integers(1, 4))):
            size = [rng.uniform(0.13, 0.24), rng.uniform(0.10, 0.17), rng.uniform(0.012, 0.04)]
            offset = rng.normal(0, 0.008, 2)
            items.append(_item("box", place(*offset, z + size[2] / 2, yaw + rng.normal(0, 0.2)), size,
                               {"kind": "book", "seed": _seed(rng), "cover": _random_srgb(rng, value=(0.2, 0.9))}))
            z += size[2]
        return items
    if kind == "package":
        size = [rng.uniform(0.06, 0.2), rng.uniform(0.03, 0.09), rng.uniform(0.05, 0.24)]
        if rng.random() < 0.3:  # lying on its broad side
            size = [size[0], size[2], size[1]]
        return [_item("box", place(0, 0, size[2] / 2, yaw), size,
                      {"kind": "package", "seed": _seed(rng), "color": _random_srgb(rng)})]
    if kind == "small_cube":
        style = str(rng.choice(["die", "puzzle", "block"]))
        edge = {"die": (0.016, 0.026), "puzzle": (0.054, 0.058), "block": (0.03, 0.05)}[style]
        edge = rng.uniform(*edge)
        return [_item("box", place(0, 0, edge / 2, yaw), [edge] * 3,
                      {"kind": style, "seed": _seed(rng), "color": _random_srgb(rng)})]
    if kind == "phone":
        size = [rng.uniform(0.14, 0.16), rng.uniform(0.068, 0.076), rng.uniform(0.007, 0.009)]
        return [_item("box", place(0, 0, size[2] / 2, yaw), size, {"kind": "phone", "seed": _seed(rng),
                                                                    "color": _random_srgb(rng, value=(0.1, 0.6))})]
    if kind == "can":
        radius, height = rng.uniform(0.026, 0.033), rng.uniform(0.09, 0.16)
        return [_item("cylinder", place(0, 0, height / 2, yaw), [2 * radius, 2 * radius, height],
                      {"kind": "can", "seed": _seed(rng), "color": _random_srgb(rng)})]
    if kind == "mug":
        radius, height = rng.uniform(0.035, 0.045), rng.uniform(0.08, 0.105)
        glaze = _random_srgb(rng, value=(0.5, 0.98)) if rng.random() < 0.6 else [240.0, 238.0, 232.0]
        look = {"kind": "mug", "seed": _seed(rng), "color": glaze, "fill": str(rng.choice(["coffee", "tea", "empty"]))}
        items = [_item("cylinder", place(0, 0, height / 2, yaw), [2 * radius, 2 * radius, height], look)]
        # A squared handle of three bars: two arms out of the wall and a grip joining them.
        reach, bar = rng.uniform(0.022, 0.03), rng.uniform(0.008, 0.011)
        handle_look = {"kind": "glaze", "color": glaze}
        direction = np.array([np.cos(yaw), np.sin(yaw)])
        for z in (0.78 * height, 0.28 * height):
            x, y = (radius + reach / 2 - 0.003) * direction
            items.append(_item("box", place(x, y, z, yaw), [reach + 0.006, 1.2 * bar, bar], handle_look))
        x, y = (radius + reach) * direction
        items.append(_item("box", place(x, y, 0.53 * height, yaw), [bar, 1.2 * bar, 0.5 * height + bar], handle_look))
        return items
    if kind == "marker":
        radius, length = rng.uniform(0.005, 0.009), rng.uniform(0.12, 0.15)
        return [_item("cylinder", place(0, 0, radius, yaw, tilt=np.pi / 2), [2 * radius, 2 * radius, length],
                      {"kind": "marker", "seed": _seed(rng), "color": _random_srgb(rng)})]
    raise ValueError(kind)


def _item_aabb(item: dict) -> np.ndarray:
    """World-axis bounds [[low], [high]] of a shape item (its unit shape fits the unit cube)."""
    pose = np.asarray(item["world_from_shape"])
    corners = box_corners([-0.5] * 3, [0.5] * 3) * np.asarray(item["scale_m"])
    points = corners @ pose[:3, :3].T + pose[:3, 3]
    return np.stack([points.min(0), points.max(0)])


def _overlap(a: np.ndarray, b: np.ndarray, margin_m: float = 0.0) -> bool:
    return bool(np.all(a[0] - margin_m < b[1]) and np.all(b[0] - margin_m < a[1]))


def _clear_of_sightlines(items: list[dict], eyes: list[np.ndarray], target: np.ndarray) -> bool:
    """No item comes within its own half-width of a line of sight from a camera to the object's centre:
    clutter may hide the object's surroundings but never the object itself."""
    for item in items:
        pose = np.asarray(item["world_from_shape"])
        scale = np.asarray(item["scale_m"])
        axis = np.argmax(scale)
        t = np.linspace(-0.5, 0.5, 9)[:, None]
        spine = pose[:3, 3] + t * scale[axis] * pose[:3, axis]
        reach = 0.5 * float(np.linalg.norm(np.delete(scale, axis))) + 0.01
        if any(_segment_distance(spine, eye, target).min() < reach for eye in eyes):
            return False
    return True


def _table_in_view(rng: np.random.Generator, cameras: list[dict], world_from_top: np.ndarray) -> np.ndarray | None:
    """Where a random pixel of a random camera sees the table-top plane (its xy in the top's frame), or
    None when that pixel looks above the horizon."""
    camera = cameras[int(rng.integers(len(cameras)))]
    world_from_camera = np.asarray(camera["world_from_camera"])
    pixel = [rng.uniform(0, camera["width_px"]), rng.uniform(0, camera["height_px"]), 1.0]
    direction = world_from_camera[:3, :3] @ np.linalg.solve(np.asarray(camera["K"]), pixel)
    normal, origin = world_from_top[:3, 2], world_from_top[:3, 3]
    along = float(direction @ normal)
    distance = float((origin - world_from_camera[:3, 3]) @ normal) / along if abs(along) > 1e-9 else -1.0
    if distance <= 0:
        return None
    point = world_from_camera[:3, 3] + distance * direction
    return (invert_transform(world_from_top) @ np.append(point, 1.0))[:2]


def sample_clutter(rng: np.random.Generator, config: ProxySceneConfig, params: dict, object_corners: np.ndarray
                   ) -> list[dict]:
    """Everyday objects standing on the table around the object, clear of the object, the hand, each other and
    every camera's line of sight to the object; none without a table."""
    table = params.get("table")
    if table is None:
        return []
    world_from_table = np.asarray(table["world_from_shape"])
    half = np.asarray(table["scale_m"]) / 2
    world_from_top = world_from_table @ make_transform(np.eye(3), [0, 0, half[2] + 2e-4])
    top_from_world = invert_transform(world_from_top)
    center = object_corners.mean(0)
    object_xy = (top_from_world @ np.append(center, 1.0))[:2]
    keep_out = [np.stack([object_corners.min(0), object_corners.max(0)])]
    keep_out += [_item_aabb(part) for part in ((params.get("hand") or {}).get("parts") or [])]
    eyes = [np.asarray(camera["world_from_camera"])[:3, 3] for camera in params["cameras"]]
    placed: list[dict] = []
    footprints: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(config.clutter_count[0], config.clutter_count[1] + 1))):
        kind = _choice(rng, config.clutter_weights)
        for _attempt in range(12):
            in_view = rng.random() < config.clutter_in_view_prob
            xy = _table_in_view(rng, params["cameras"], world_from_top) if in_view else None
            if xy is None:
                angle = rng.uniform(0, 2 * np.pi)
                xy = object_xy + rng.uniform(*config.clutter_radius_m) * np.array([np.cos(angle), np.sin(angle)])

            def place(x, y, z, yaw, tilt=0.0, origin=xy):
                rotation = rotation_about_axis([0, 0, 1], yaw) @ rotation_about_axis([0, 1, 0], tilt)
                return world_from_top @ make_transform(rotation, [origin[0] + x, origin[1] + y, z])

            items = _clutter_kind(rng, kind, place)
            corners = np.concatenate([(top_from_world @ np.c_[box_corners(*_item_aabb(i)), np.ones(8)].T).T[:, :3]
                                      for i in items])
            radius = float(np.linalg.norm(corners[:, :2] - xy, axis=1).max())
            on_table = bool(np.all(np.abs(corners[:, :2]) <= half[:2] - 0.005))
            apart = all(np.linalg.norm(xy - other) > radius + other_radius + 0.01 for other, other_radius in footprints)
            clear = not any(_overlap(_item_aabb(i), box, 0.005) for i in items for box in keep_out)
            if on_table and apart and clear and _clear_of_sightlines(items, eyes, center):
                placed += items
                footprints.append((xy, radius))
                break
    return placed


def _sees(camera: dict, point: np.ndarray, margin_frac: float = 0.15) -> bool:
    """Whether ``point`` (world) projects into ``camera``'s image grown by ``margin_frac`` on every side."""
    camera_from_world = invert_transform(np.asarray(camera["world_from_camera"]))
    p = camera_from_world[:3, :3] @ point + camera_from_world[:3, 3]
    if p[2] <= 0:
        return False
    u, v = (np.asarray(camera["K"]) @ (p / p[2]))[:2]
    w, h = camera["width_px"], camera["height_px"]
    return -margin_frac * w <= u <= (1 + margin_frac) * w and -margin_frac * h <= v <= (1 + margin_frac) * h


def _lamp(rng: np.random.Generator, target: np.ndarray, cameras: list[dict]) -> tuple[np.ndarray, list] | None:
    """A desk lamp's shade opening: close, above the object to one side, out of every camera's view
    (a lamp head without its lamp would look odd, and the rasterizer does not see it); None if none fits."""
    for _attempt in range(10):
        elevation, azimuth = rng.uniform(np.radians(35), np.radians(75)), rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)])
        eye = target + rng.uniform(0.3, 0.6) * direction
        if not any(_sees(camera, eye) for camera in cameras):
            return look_at(eye, target + rng.normal(0, 0.05, 3)), [rng.uniform(0.12, 0.25), rng.uniform(0.08, 0.15)]
    return None


def _window(rng: np.random.Generator, room: dict, table_top_z: float, workspace_center: np.ndarray
            ) -> tuple[np.ndarray, list]:
    """A window in one of the room's four walls, glowing with daylight."""
    half = np.asarray(room["half_extent_m"])
    world_from_room = make_transform(rotation_about_axis([0, 0, 1], room["yaw_rad"]), workspace_center)
    axis, sign = int(rng.integers(2)), float(rng.choice([-1, 1]))
    along = 1 - axis
    size = [min(rng.uniform(0.6, 1.2), 1.6 * half[along]), rng.uniform(0.6, 1.0)]
    center = np.zeros(3)
    center[axis] = sign * (half[axis] - 0.005)  # just inside the wall, so the wall cannot hide it
    center[along] = rng.uniform(-1, 1) * (half[along] - size[0] / 2)
    center[2] = min(table_top_z - workspace_center[2] + rng.uniform(0.15, 0.6), half[2] - size[1] / 2)
    inward = np.zeros(3)
    inward[axis] = -sign
    # Rectangle axes: x along the wall, y up, z into the room.
    x = np.cross([0.0, 0.0, 1.0], inward)
    return world_from_room @ make_transform(np.stack([x, np.cross(inward, x), inward], axis=1), center), size


def _panel(rng: np.random.Generator, target: np.ndarray, table_top_z: float, room: dict | None,
           workspace_center: np.ndarray) -> tuple[np.ndarray, list]:
    """A ceiling panel facing straight down, above the table and off to one side."""
    azimuth = rng.uniform(0, 2 * np.pi)
    eye = target + rng.uniform(0.1, 0.9) * np.array([np.cos(azimuth), np.sin(azimuth), 0.0])
    eye[2] = table_top_z + rng.uniform(0.8, 1.4)
    if room is not None:
        eye[2] = min(eye[2], workspace_center[2] + room["half_extent_m"][2] - 0.05)
    down = np.diag([1.0, -1.0, -1.0]) @ rotation_about_axis([0, 0, 1], rng.uniform(0, np.pi))
    return make_transform(down, eye), [rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)]


def _light(rng: np.random.Generator, config: ProxySceneConfig, target: np.ndarray, table_top_z: float,
           params: dict, workspace_center: np.ndarray) -> dict:
    """A rectangular area light; ``world_from_light`` has its emitting side along +z, ``size_m`` its sides."""
    kind = _choice(rng, config.light_weights)
    placed = None
    if kind == "lamp":
        placed = _lamp(rng, target, params["cameras"])
    elif kind == "window" and params.get("room") is not None:
        placed = _window(rng, params["room"], table_top_z, workspace_center)
    if placed is None:
        kind = "panel"
        placed = _panel(rng, target, table_top_z, params.get("room"), workspace_center)
    pose, size = placed
    return {"kind": kind, "world_from_light": np.asarray(pose).tolist(), "size_m": [float(v) for v in size],
            "luminance_cd_m2": float(rng.uniform(*getattr(config, f"{kind}_luminance_cd_m2"))),
            "cct_k": float(rng.uniform(*getattr(config, f"{kind}_cct_k")))}


def sample_proxy(rng: np.random.Generator, config: ProxySceneConfig, params: dict, object_corners: np.ndarray,
                 workspace_center_m) -> tuple[list[dict], dict]:
    """The proxy's clutter items (distractors) and its ``proxy`` record: area lights, environment and the
    looks of the table, walls, floor, skin and sleeve. ``object_corners``: the object's bounding-box corners
    (8, 3) in the world."""
    clutter = sample_clutter(rng, config, params, object_corners)
    center = np.asarray(workspace_center_m, float)
    target = object_corners.mean(0)
    table = params.get("table")
    table_top_z = float(_item_aabb(table)[1, 2]) if table else float(object_corners[:, 2].min()) - 0.1
    lights = [_light(rng, config, target, table_top_z, params, center)
              for _ in range(int(rng.integers(config.light_count[0], config.light_count[1] + 1)))]
    table_kind = str(rng.choice(["wood", "laminate"], p=[0.6, 0.4]))
    table_look = {"kind": table_kind, "seed": _seed(rng),
                  "palette": int(rng.integers(len(_WOODS if table_kind == "wood" else _LAMINATES))),
                  "roughness": float(rng.uniform(0.3, 0.65)),
                  # Varnish on wood: a clear glossy coat over the grain.
                  "clearcoat": float(rng.uniform(0.0, 0.6)) if table_kind == "wood" else 0.0}
    wall = {"kind": "paint", "seed": _seed(rng), "color": _pick(rng, _PAINTS)}
    floor_kind = str(rng.choice(["wood", "carpet"]))
    floor = {"kind": floor_kind, "seed": _seed(rng),
             "palette": int(rng.integers(len(_WOODS if floor_kind == "wood" else _CARPETS))), "roughness": 0.5,
             "clearcoat": 0.0}
    sleeve = ({"kind": "cloth", "color": _random_srgb(rng, saturation=(0.0, 0.7), value=(0.15, 0.8))}
              if rng.random() < config.sleeve_prob else None)
    proxy = {"area_lights": lights,
             "environment": {"luminance_cd_m2": float(rng.uniform(*config.environment_luminance_cd_m2)),
                             "cct_k": float(rng.uniform(*config.environment_cct_k))},
             "looks": {"table": table_look, "walls": wall, "floor": floor, "sleeve": sleeve,
                       "skin_roughness": float(rng.uniform(0.5, 0.7))}}
    return clutter, proxy


# ------------------------------------------------------------------------------------------ textures
def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, stretch: int = 1) -> np.ndarray:
    """Smooth noise in [0, 1] (float32, height x width) of about ``cells`` blobs across the height, each
    ``stretch`` times longer along x (wood fibre)."""
    coarse = rng.random((max(2, cells), max(2, cells * width // max(height * stretch, 1)))).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _wood(rng: np.random.Generator, palette: int, size: int = 1024) -> np.ndarray:
    """Planks along x (3-5 per image) with warped growth rings, fibre streaks and dark seams."""
    light, dark = (linear_from_srgb255(c).astype(np.float32) for c in _WOODS[palette % len(_WOODS)])
    rows = int(rng.integers(3, 6))
    bands = np.linspace(0, size, rows + 1).astype(int)
    planks = []
    for top, bottom in zip(bands[:-1], bands[1:]):
        height = bottom - top
        y, x = np.mgrid[:height, :size].astype(np.float32) / size
        warp = rng.uniform(1.5, 4) * _smooth_noise(rng, height, size, 3, 4) + x * rng.uniform(0.5, 2)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (y * rng.uniform(8, 20) + warp))
        grain = 0.55 * rings ** 3 + 0.45 * _smooth_noise(rng, height, size, height // 4, 48)
        plank = rng.uniform(0.85, 1.15) * (light + (dark - light) * grain[..., None])
        plank[:2] *= 0.45  # the seam to the plank above
        planks.append(plank)
    return np.concatenate(planks).clip(0, 1).astype(np.float32)


def _speckled(rng: np.random.Generator, color, size: int = 512, amount: float = 0.04) -> np.ndarray:
    base = linear_from_srgb255(color).astype(np.float32)
    variation = 1 + amount * (_smooth_noise(rng, size, size, 6) - 0.5) \
        + 0.5 * amount * rng.standard_normal((size, size), dtype=np.float32)
    return np.clip(base * variation[..., None], 0, 1).astype(np.float32)


def _text(canvas: np.ndarray, text: str, box, color, rng: np.random.Generator, thickness_frac: float = 0.09) -> None:
    """Draw ``text`` as large as fits into ``box`` = (x0, y0, x1, y1) pixels of an sRGB uint8 canvas."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    (w, h), base = cv2.getTextSize(text, font, 1.0, 1)
    scale = min((x1 - x0) / max(w, 1), (y1 - y0) / max(h + base, 1))
    thickness = max(1, int(scale * h * thickness_frac))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    origin = (x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 + h - base) // 2)
    cv2.putText(canvas, text, origin, font, scale, [int(c) for c in color], thickness, cv2.LINE_AA)


def _body_lines(canvas: np.ndarray, box, color, rng: np.random.Generator) -> None:
    """Rows of small print, drawn as thin bars of random lengths."""
    x0, y0, x1, y1 = (int(v) for v in box)
    pitch = max(3, int(rng.uniform(0.04, 0.08) * canvas.shape[0]))
    for y in range(y0, y1 - pitch // 2, pitch):
        end = x0 + int((x1 - x0) * rng.uniform(0.5, 1.0))
        cv2.line(canvas, (x0, y), (end, y), [int(c) for c in color], max(1, pitch // 3), cv2.LINE_AA)


def _contrast(color) -> list[float]:
    return [20.0, 20.0, 20.0] if np.dot(color, [0.299, 0.587, 0.114]) > 140 else [245.0, 245.0, 240.0]


def _package_face(rng: np.random.Generator, width: int, height: int, color, face: int, word: str) -> np.ndarray:
    """Printed cardboard: the brand on front and back, small print and a barcode on the sides."""
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:] = [int(c) for c in color]
    ink = _contrast(color)
    accent = _random_srgb(rng)
    if face in (0, 1):  # the two broad faces (+x, -x in the item frame are the narrow ones; see caller)
        band = (int(height * rng.uniform(0.15, 0.4)), int(height * rng.uniform(0.55, 0.8)))
        canvas[band[0]:band[1]] = [int(c) for c in accent]
        _text(canvas, word, (0.08 * width, band[0], 0.92 * width, band[1]), _contrast(accent), rng)
        cv2.circle(canvas, (int(width * 0.8), int(height * 0.1)), int(min(width, height) * 0.07), ink, -1, cv2.LINE_AA)
        _body_lines(canvas, (0.1 * width, 0.85 * height, 0.9 * width, 0.97 * height), ink, rng)
    else:
        _body_lines(canvas, (0.1 * width, 0.1 * height, 0.9 * width, 0.6 * height), ink, rng)
        if face == 2:  # a barcode
            x0, y0 = int(0.2 * width), int(0.68 * height)
            cv2.rectangle(canvas, (x0 - 3, y0 - 3), (int(0.8 * width) + 3, int(0.92 * height) + 3), (250, 250, 250), -1)
            x = x0
            while x < 0.8 * width:
                bar = int(rng.integers(1, 4))
                cv2.rectangle(canvas, (x, y0), (x + bar - 1, int(0.92 * height)), (15, 15, 15), -1)
                x += bar + int(rng.integers(1, 4))
    return canvas


def _book_face(rng: np.random.Generator, width: int, height: int, face: int, cover, word: str) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    if face in (1,):  # the spine (-x)
        canvas[:] = [int(c) for c in cover]
        _text(canvas, word, (0.08 * width, 0.12 * height, 0.8 * width, 0.88 * height), _contrast(cover), rng)
    elif face in (4, 5):  # front and back covers (+z, -z)
        canvas[:] = [int(c) for c in cover]
        if face == 4:
            _text(canvas, word, (0.1 * width, 0.1 * height, 0.9 * width, 0.35 * height), _contrast(cover), rng)
            accent = _random_srgb(rng)
            cv2.ellipse(canvas, (width // 2, int(height * 0.65)), (int(width * 0.25), int(height * 0.18)),
                        0, 0, 360, [int(c) for c in accent], -1, cv2.LINE_AA)
        else:
            _body_lines(canvas, (0.15 * width, 0.2 * height, 0.85 * width, 0.6 * height), _contrast(cover), rng)
    else:  # page edges, with the covers' edges above and below
        paper = np.array([236, 230, 214]) * rng.uniform(0.9, 1.02)
        canvas[:] = np.clip(paper, 0, 255).astype(np.uint8)
        for y in range(0, height, 2):
            canvas[y] = np.clip(canvas[y].astype(int) - int(rng.integers(5, 25)), 0, 255)
        rim = max(1, height // 14)
        canvas[:rim] = canvas[-rim:] = [int(c) for c in cover]
    return canvas


def _small_cube_face(rng: np.random.Generator, size: int, face: int, kind: str, color) -> np.ndarray:
    canvas = np.zeros((size, size, 3), np.uint8)
    if kind == "die":
        body = (245, 242, 235) if rng.random() < 0.7 else tuple(int(c) for c in color)
        canvas[:] = body
        pips = (1, 6, 2, 5, 3, 4)[face]
        spots = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)],
                 4: [(-1, -1), (1, -1), (-1, 1), (1, 1)], 5: [(-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)],
                 6: [(-1, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (1, 1)]}[pips]
        for dx, dy in spots:
            cv2.circle(canvas, (int(size * (0.5 + 0.27 * dx)), int(size * (0.5 + 0.27 * dy))), int(size * 0.09),
                       _contrast(body), -1, cv2.LINE_AA)
    elif kind == "puzzle":
        canvas[:] = (18, 18, 18)
        stickers = [(250, 250, 250), (200, 20, 25), (20, 60, 190), (250, 140, 10), (20, 150, 60), (240, 210, 10)]
        cell = size / 3
        for i in range(3):
            for j in range(3):
                sticker = stickers[int(rng.integers(6))]
                cv2.rectangle(canvas, (int(j * cell + 0.06 * size), int(i * cell + 0.06 * size)),
                              (int((j + 1) * cell - 0.06 * size), int((i + 1) * cell - 0.06 * size)), sticker, -1)
    else:  # a wooden toy block with a printed letter in a frame
        canvas[:] = (214, 180, 130)
        ink = [int(c) for c in color]
        cv2.rectangle(canvas, (int(0.08 * size), int(0.08 * size)), (int(0.92 * size), int(0.92 * size)), ink,
                      max(1, size // 24))
        _text(canvas, str(rng.choice(list("ACEGHKMNPSTXZ23456789"))), (0.2 * size, 0.2 * size, 0.8 * size, 0.8 * size),
              ink, rng, thickness_frac=0.15)
    return canvas


def _phone_face(rng: np.random.Generator, width: int, height: int, face: int, color) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    if face == 4:  # the screen: mostly off, sometimes showing a wallpaper
        canvas[:] = (8, 8, 10)
        if rng.random() < 0.35:
            inset = int(0.04 * min(width, height))
            wallpaper = cv2.resize((_smooth_noise(rng, 32, 32, 4)[..., None] * _random_srgb(rng)).astype(np.uint8),
                                   (width - 2 * inset, height - 2 * inset))
            canvas[inset:height - inset, inset:width - inset] = wallpaper
    else:
        canvas[:] = [int(c) for c in color]
    return canvas


def _box_atlas(look: dict, scale_m, cell_px: int = 256) -> np.ndarray:
    """The 3 x 2 atlas (sRGB uint8) of a box item's faces in ``CUBE_FACES`` order (see :func:`box_uvs`); each
    face is drawn at its true aspect ratio, then fitted to its cell."""
    rng = np.random.default_rng(look.get("seed", 0))
    word = str(rng.choice(_WORDS))
    atlas = np.zeros((2 * cell_px, 3 * cell_px, 3), np.uint8)
    for index, (_, _, right, down) in enumerate(CUBE_FACES):
        aspect = float(np.dot(np.abs(right), scale_m) / max(np.dot(np.abs(down), scale_m), 1e-6))
        if aspect >= 1:
            width, height = cell_px, max(8, int(cell_px / aspect))
        else:
            width, height = max(8, int(cell_px * aspect)), cell_px
        kind = look["kind"]
        if kind == "package":
            # Brand faces are the two largest: the ones whose normal is the smallest dimension.
            normal_axis = int(np.argmax(np.abs(CUBE_FACES[index][1])))
            order = np.argsort(scale_m)
            role = {order[0]: 0, order[1]: 2, order[2]: 3}[normal_axis]
            face = _package_face(rng, width, height, look["color"], role, word)
        elif kind == "book":
            face = _book_face(rng, width, height, index, look["cover"], word)
        elif kind in ("die", "puzzle", "block"):
            face = _small_cube_face(rng, cell_px, index, kind, look["color"])
        elif kind == "phone":
            face = _phone_face(rng, width, height, index, look["color"])
        else:
            raise ValueError(kind)
        row, col = divmod(index, 3)
        atlas[row * cell_px:(row + 1) * cell_px, col * cell_px:(col + 1) * cell_px] = cv2.resize(
            face, (cell_px, cell_px), interpolation=cv2.INTER_AREA)
    return atlas


def box_uvs(positions: np.ndarray, face_normals: np.ndarray, indices: np.ndarray, cell_px: int = 256) -> np.ndarray:
    """Texture coordinates (v down) into the :func:`_box_atlas` layout for a unit box mesh with one vertex per
    face corner: each face maps its ``CUBE_FACES`` right/down axes onto its cell, read upright from outside."""
    uvs = np.zeros((len(positions), 2), np.float32)
    normals = np.array([face[1] for face in CUBE_FACES], float)
    inset = 0.5 / cell_px  # keeps bilinear filtering inside the cell
    for triangle, normal in zip(indices, face_normals):
        index = int(np.argmax(normals @ normal))
        _, _, right, down = CUBE_FACES[index]
        row, col = divmod(index, 3)
        for vertex in triangle:
            u = np.clip(positions[vertex] @ right + 0.5, inset, 1 - inset)
            v = np.clip(positions[vertex] @ down + 0.5, inset, 1 - inset)
            uvs[vertex] = [(col + u) / 3, (row + v) / 2]
    return uvs


# Cylinder atlas: the side wraps around the top SIDE_FRAC of the image (full width, so u repeats seamlessly);
# the two caps are squares below it, the top one left, the bottom one right of it.
SIDE_FRAC = 0.6


def cylinder_uvs(positions: np.ndarray, face_normals: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Texture coordinates (v down) into the :func:`_cylinder_atlas` layout for a unit cylinder mesh (radius
    0.5, height 1 along z, one vertex per face corner)."""
    uvs = np.zeros((len(positions), 2), np.float32)
    cap = 1 - SIDE_FRAC
    # Cap squares are cap high; in u that is cap * height / width of the atlas (width = 2.5 height).
    cap_u = cap / 2.5
    for triangle, normal in zip(indices, face_normals):
        points = positions[triangle]
        if abs(normal[2]) < 0.5:
            center_angle = np.arctan2(*points.mean(0)[[1, 0]])
            for vertex, point in zip(triangle, points):
                angle = center_angle + np.angle(np.exp(1j * (np.arctan2(point[1], point[0]) - center_angle)))
                uvs[vertex] = [angle / (2 * np.pi), (0.5 - point[2]) * SIDE_FRAC]
        else:
            left = 0.0 if normal[2] > 0 else cap_u
            for vertex, point in zip(triangle, points):
                uvs[vertex] = [left + (point[0] + 0.5) * cap_u, SIDE_FRAC + (point[1] + 0.5) * cap]
    return uvs


def _cylinder_atlas(look: dict, scale_m, height_px: int = 320) -> np.ndarray:
    """The side label and caps (sRGB uint8) of a cylinder item, laid out as :func:`cylinder_uvs` expects."""
    rng = np.random.default_rng(look.get("seed", 0))
    width = int(2.5 * height_px)
    side_h, cap = int(SIDE_FRAC * height_px), height_px - int(SIDE_FRAC * height_px)
    atlas = np.zeros((height_px, width, 3), np.uint8)
    color = [int(c) for c in look["color"]]
    circumference, length = np.pi * scale_m[0], scale_m[2]
    # Draw the label at its true aspect (circumference x height), then fit it to the strip.
    label_w = int(side_h * circumference / max(length, 1e-6))
    label = np.zeros((side_h, max(label_w, 8), 3), np.uint8)
    label[:] = color
    kind = look["kind"]
    if kind == "can":
        accent = _random_srgb(rng)
        top, bottom = int(side_h * rng.uniform(0.3, 0.45)), int(side_h * rng.uniform(0.6, 0.75))
        label[top:bottom] = [int(c) for c in accent]
        word = str(rng.choice(_WORDS))
        _text(label, word, (0.05 * label.shape[1], top, 0.5 * label.shape[1], bottom), _contrast(accent), rng)
        _text(label, word, (0.55 * label.shape[1], top, 0.95 * label.shape[1], bottom), _contrast(accent), rng)
        label[:max(2, side_h // 25)] = label[-max(2, side_h // 25):] = (190, 192, 196)  # bare metal rims
        caps = (195, 197, 200)
    elif kind == "mug":
        if rng.random() < 0.5:
            _text(label, str(rng.choice(_WORDS)), (0.1 * label.shape[1], 0.3 * side_h, 0.4 * label.shape[1],
                                                   0.7 * side_h), _random_srgb(rng, value=(0.1, 0.7)), rng)
        caps = {"coffee": (48, 28, 16), "tea": (140, 80, 30), "empty": tuple(int(c * 0.8) for c in color)}[look["fill"]]
    elif kind == "marker":
        band = (int(0.62 * label.shape[1]), int(0.9 * label.shape[1]))
        label[:, band[0]:band[1]] = (235, 235, 235)
        _text(label, "MARKER", (band[0], 0.1 * side_h, band[1], 0.9 * side_h), (30, 30, 30), rng)
        caps = color
    else:
        raise ValueError(kind)
    atlas[:side_h] = cv2.resize(label, (width, side_h), interpolation=cv2.INTER_AREA)
    atlas[side_h:, :2 * cap] = caps
    if kind == "can":  # the lid's rim and tab
        center = (cap // 2, side_h + cap // 2)
        cv2.circle(atlas, center, int(cap * 0.46), (150, 152, 156), max(1, cap // 30), cv2.LINE_AA)
        cv2.ellipse(atlas, (center[0], center[1] - cap // 6), (cap // 8, cap // 14), 0, 0, 360, (160, 162, 166), -1)
    return atlas


def look_texture(look: dict, scale_m=(1.0, 1.0, 1.0)) -> np.ndarray | None:
    """The linear-RGB texture (float32 in [0, 1]) a look describes, or None for a plain colour.
    ``scale_m``: the item's size, so printed faces keep their aspect ratio."""
    kind = look["kind"]
    rng = np.random.default_rng(look.get("seed", 0))
    if kind == "wood":
        return _wood(rng, look["palette"])
    if kind == "laminate":
        return _speckled(rng, _LAMINATES[look["palette"] % len(_LAMINATES)], amount=0.05)
    if kind == "paint":
        return _speckled(rng, look["color"], size=256, amount=0.025)
    if kind == "carpet":
        return _speckled(rng, _CARPETS[look["palette"] % len(_CARPETS)], size=512, amount=0.35)
    if kind in ("package", "book", "die", "puzzle", "block", "phone"):
        return linear_from_srgb255(_box_atlas(look, np.asarray(scale_m, float)))
    if kind in ("can", "mug", "marker"):
        return linear_from_srgb255(_cylinder_atlas(look, np.asarray(scale_m, float)))
    return None
