"""Typed, validated configuration of the randomized renderer and dataset writer.

Every knob has a default that works; ranges are ``(min, max)`` pairs sampled uniformly per sample
unless the field says otherwise. Units are in the field names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from discopose._errors import ConfigError
from discopose.config import check_range, from_dict, load_mapping, apply_overrides, to_dict
from discopose.geometry.symmetry import Symmetry

TEXTURE_KINDS = ("solid", "gradient", "stripes", "checker", "noise", "blend")
LIGHT_TYPES = ("point", "spot", "directional")
APPEARANCES = ("markings", "original", "random")
PRIMITIVES = ("box", "sphere", "cylinder", "capsule", "cone")
HAND_STYLES = ("skin", "robot", "disco")
LIMB_STYLES = ("skin", "clothing", "disco")


@dataclass
class ObjectConfig:
    """The object to render. ``mesh=None`` is the built-in 57 mm cube with lettered faces."""

    mesh: str | None = None
    # Multiply mesh coordinates by this to get metres (BOP models are in millimetres: 0.001).
    mesh_scale_to_m: float = 1.0
    cube_size_m: float = 0.057
    # markings: keep identifying markings, randomize their colours; original: keep the texture;
    # random: disco texture on the object too (then the pose is ambiguous: train symmetry-aware).
    appearance: str = "markings"
    symmetry: Symmetry = field(default_factory=Symmetry)

    def __post_init__(self):
        if self.appearance not in APPEARANCES:
            raise ConfigError(f"object.appearance={self.appearance!r} is unknown; use one of {', '.join(APPEARANCES)}")
        check_range("object.mesh_scale_to_m", self.mesh_scale_to_m, 1e-9)
        check_range("object.cube_size_m", self.cube_size_m, 1e-4, 10.0)
        if self.mesh is not None and not Path(self.mesh).is_file():
            raise ConfigError(f"object.mesh={self.mesh!r} does not exist; give a .ply/.obj/.glb file path")


# The default world's working volume: the camera distances its accuracy is stated for. Training spans
# CameraConfig.distance_range_m, a little wider, so the volume's edges are not the training's.
WORKING_VOLUME_M = (0.15, 1.0)


@dataclass
class CameraConfig:
    """Cameras per sample. Either ``files`` (camera files written by ``discopose calibrate``) or
    ``count`` default cameras spread around the workspace, all looking at its centre."""

    count: int = 1
    names: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    width_px: int = 224
    height_px: int = 224
    fov_deg: float = 40.0
    # Nominal distance from the workspace centre, where the ring of cameras is placed.
    distance_m: float = 0.25
    # The working volume: each sample moves every ring camera along its viewing direction to this
    # distance from the object, drawn log-uniformly (equal share per factor of distance), and turns it
    # so the object lands anywhere in the image where it fits (``view_offset_frac`` of that room; 0:
    # the image centre). None: cameras stay at ``distance_m``, looking at the workspace centre. Calibrated
    # cameras (``files``) are fixed and never moved.
    distance_range_m: tuple[float, float] | None = (0.12, 1.3)
    view_offset_frac: float = 1.0
    elevation_deg: float = 35.0
    # Per-sample jitter around the nominal camera.
    position_jitter_m: float = 0.02
    rotation_jitter_deg: float = 3.0
    focal_jitter_frac: float = 0.05
    principal_point_jitter_px: float = 4.0
    znear_m: float = 0.02
    zfar_m: float = 10.0
    # Antialiasing: multisamples per pixel. 0 turns it off: about a third less rasterization time on
    # llvmpipe (benchmarks/render_throughput.py), at the price of stair-stepped edges.
    msaa_samples: int = 4
    # aim "workspace": the cameras as placed. aim "object": each camera is turned about its optical
    # centre to look at the object and zoomed so the object's diameter spans ``object_fill_frac`` of
    # the (square) image: zoom-in crops rendered at full detail, as the crop stage of a model sees them.
    # Its training tolerance to the first stage's errors comes from the jitter: the aim point is off by
    # up to ``aim_offset_frac`` of the image and the zoom by up to ``aim_scale_jitter_frac``.
    aim: str = "workspace"
    object_fill_frac: float = 0.75
    aim_offset_frac: float = 0.08
    aim_scale_jitter_frac: float = 0.12
    # aim "object": the focal lengths (pixels) of the cameras the crops are cut from, drawn log-uniformly
    # (a 640x480 webcam of 70 to 40 degrees). A crop never holds more detail than its source camera gave
    # the object: where that camera has fewer pixels on it than the crop (a distant object), the crop is
    # rendered, blurred and noised at the source's resolution and enlarged, as the estimator's remap does.
    source_focal_px: tuple[float, float] = (450.0, 900.0)

    def __post_init__(self):
        check_range("camera.count", self.count, 1, 16)
        check_range("camera.width_px", self.width_px, 8, 8192)
        check_range("camera.height_px", self.height_px, 8, 8192)
        check_range("camera.fov_deg", self.fov_deg, 1.0, 170.0)
        check_range("camera.distance_m", self.distance_m, 0.01)
        if self.distance_range_m is not None:
            check_range("camera.distance_range_m", self.distance_range_m, 0.01)
        check_range("camera.view_offset_frac", self.view_offset_frac, 0.0, 1.0)
        check_range("camera.source_focal_px", self.source_focal_px, 1.0)
        check_range("camera.position_jitter_m", self.position_jitter_m, 0.0)
        check_range("camera.rotation_jitter_deg", self.rotation_jitter_deg, 0.0, 90.0)
        check_range("camera.focal_jitter_frac", self.focal_jitter_frac, 0.0, 0.5)
        check_range("camera.principal_point_jitter_px", self.principal_point_jitter_px, 0.0)
        if self.msaa_samples not in (0, 2, 4, 8):
            raise ConfigError(f"camera.msaa_samples={self.msaa_samples}; use 0 (off), 2, 4 or 8")
        if self.aim not in ("workspace", "object"):
            raise ConfigError(f"camera.aim={self.aim!r}; use workspace or object")
        if self.aim == "object" and self.width_px != self.height_px:
            raise ConfigError(f"camera.aim=object renders square crops but width_px={self.width_px}, "
                              f"height_px={self.height_px}; set both to the crop size")
        check_range("camera.object_fill_frac", self.object_fill_frac, 0.05, 2.0)
        check_range("camera.aim_offset_frac", self.aim_offset_frac, 0.0, 0.5)
        check_range("camera.aim_scale_jitter_frac", self.aim_scale_jitter_frac, 0.0, 0.9)
        if self.files:
            self.count = len(self.files)
        if self.names and len(self.names) != self.count:
            raise ConfigError(f"camera.names has {len(self.names)} names for {self.count} cameras; "
                              "give one name per camera or none")
        for name in self.names:
            if not name.isidentifier():
                raise ConfigError(f"camera.names: {name!r} is not a valid name; use letters, digits, _ (no dots)")
        if len(set(self.names)) != len(self.names):
            raise ConfigError("camera.names must be unique")
        for path in self.files:
            if not Path(path).is_file():
                raise ConfigError(f"camera.files: {path!r} does not exist; write it with `discopose calibrate`")


@dataclass
class PoseConfig:
    """Object pose: uniform position in a box around ``workspace_center_m`` with uniform random
    orientation, or exactly the poses in ``poses_file`` (JSON lines or .npz; see docs)."""

    workspace_center_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    workspace_half_extent_m: tuple[float, float, float] = (0.04, 0.04, 0.03)
    poses_file: str | None = None

    def __post_init__(self):
        check_range("pose.workspace_half_extent_m", list(self.workspace_half_extent_m), 0.0)
        if self.poses_file is not None and not Path(self.poses_file).is_file():
            raise ConfigError(f"pose.poses_file={self.poses_file!r} does not exist")


@dataclass
class LightingConfig:
    count: tuple[int, int] = (1, 4)
    types: list[str] = field(default_factory=lambda: list(LIGHT_TYPES))
    point_intensity: tuple[float, float] = (0.5, 6.0)
    spot_intensity: tuple[float, float] = (1.0, 10.0)
    directional_intensity: tuple[float, float] = (0.5, 5.0)
    distance_m: tuple[float, float] = (0.3, 1.5)
    # 0 = white lights only, 1 = fully saturated colours allowed.
    color_saturation_max: float = 0.5
    ambient: tuple[float, float] = (0.05, 0.6)
    # pyrender's shadow pass (up to 13 PCF-filtered maps per fragment) costs 2-50x a plain frame on
    # llvmpipe, so shadows are off by default; enable them on GPU machines.
    shadows_prob: float = 0.0
    shadow_map_px: int = 256
    # Shadows are cast and received within this distance of the object (the hand, the object and the
    # table under them); the shadow map covers only that, so 256 px resolve a finger's shadow.
    shadow_radius_m: float = 0.3

    def __post_init__(self):
        check_range("lighting.count", self.count, 0, 4)
        for t in self.types:
            if t not in LIGHT_TYPES:
                raise ConfigError(f"lighting.types: {t!r} is unknown; use {', '.join(LIGHT_TYPES)}")
        if self.count[1] > 0 and not self.types:
            raise ConfigError("lighting.types is empty; list at least one of point, spot, directional")
        for name in ("point_intensity", "spot_intensity", "directional_intensity", "distance_m", "ambient"):
            check_range(f"lighting.{name}", getattr(self, name), 0.0)
        check_range("lighting.color_saturation_max", self.color_saturation_max, 0.0, 1.0)
        check_range("lighting.shadows_prob", self.shadows_prob, 0.0, 1.0)
        check_range("lighting.shadow_map_px", self.shadow_map_px, 16, 8192)
        check_range("lighting.shadow_radius_m", self.shadow_radius_m, 0.01, 100.0)


@dataclass
class TextureConfig:
    """Procedural "disco" textures, generated once per worker into a bank and tinted per sample."""

    kinds: list[str] = field(default_factory=lambda: list(TEXTURE_KINDS))
    bank_size: int = 48
    size_px: int = 128
    # Optional folder of images used as textures with probability ``image_prob``.
    image_dir: str | None = None
    image_prob: float = 0.3
    metallic: tuple[float, float] = (0.0, 0.6)
    roughness: tuple[float, float] = (0.2, 1.0)

    def __post_init__(self):
        for kind in self.kinds:
            if kind not in TEXTURE_KINDS:
                raise ConfigError(f"textures.kinds: {kind!r} is unknown; use {', '.join(TEXTURE_KINDS)}")
        if not self.kinds:
            raise ConfigError("textures.kinds is empty; list at least one texture kind")
        check_range("textures.bank_size", self.bank_size, 1, 4096)
        check_range("textures.size_px", self.size_px, 4, 4096)
        check_range("textures.image_prob", self.image_prob, 0.0, 1.0)
        check_range("textures.metallic", self.metallic, 0.0, 1.0)
        check_range("textures.roughness", self.roughness, 0.0, 1.0)
        if self.image_dir is not None and not Path(self.image_dir).is_dir():
            raise ConfigError(f"textures.image_dir={self.image_dir!r} is not a folder of images")


@dataclass
class ClutterConfig:
    """Distractors around the object, occluders between it and the cameras, and a room behind."""

    distractor_count: tuple[int, int] = (0, 6)
    distractor_size_m: tuple[float, float] = (0.02, 0.12)
    distractor_radius_m: tuple[float, float] = (0.08, 0.4)
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    meshes: list[str] = field(default_factory=list)
    occluder_prob: float = 0.3
    # Occluder size relative to the object's diameter.
    occluder_size_frac: tuple[float, float] = (0.3, 0.8)
    room_prob: float = 0.85
    room_half_extent_m: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self):
        check_range("clutter.distractor_count", self.distractor_count, 0, 16)
        check_range("clutter.distractor_size_m", self.distractor_size_m, 1e-4)
        check_range("clutter.distractor_radius_m", self.distractor_radius_m, 0.0)
        for p in self.primitives:
            if p not in PRIMITIVES:
                raise ConfigError(f"clutter.primitives: {p!r} is unknown; use {', '.join(PRIMITIVES)}")
        for path in self.meshes:
            if not Path(path).is_file():
                raise ConfigError(f"clutter.meshes: {path!r} does not exist")
        check_range("clutter.occluder_prob", self.occluder_prob, 0.0, 1.0)
        check_range("clutter.occluder_size_frac", self.occluder_size_frac, 0.0)
        check_range("clutter.room_prob", self.room_prob, 0.0, 1.0)
        check_range("clutter.room_half_extent_m", self.room_half_extent_m, 0.05)


def _check_weights(path: str, weights: dict[str, float], allowed: tuple[str, ...]) -> None:
    for name, weight in weights.items():
        if name not in allowed:
            raise ConfigError(f"{path}: {name!r} is unknown; use {', '.join(allowed)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{path}.{name} must be a number, got {weight!r}")
        check_range(f"{path}.{name}", weight, 0.0)
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{path}={weights} gives no style a positive weight; e.g. {{{allowed[0]}: 1.0}}")


@dataclass
class HandConfig:
    """A procedural hand holding the object: a palm on one side of it, a forearm behind the palm, and
    fingers (chains of capsule segments) from knuckles on the palm's rim to fingertips that touch the
    object's bounding box. Sizes marked ``_frac`` are fractions of the object's diameter."""

    # Probability that a sample has a hand; real frames of a manipulated cube nearly always do.
    prob: float = 0.7
    finger_count: tuple[int, int] = (2, 5)
    segments_per_finger: tuple[int, int] = (2, 3)
    # Probability that one finger is a thumb, reaching a side of the object rather than the far side.
    thumb_prob: float = 0.8
    finger_radius_frac: tuple[float, float] = (0.08, 0.12)
    # Length of the fingertip segment; the other segments span the rest of the way to the knuckle.
    fingertip_length_frac: tuple[float, float] = (0.18, 0.3)
    # Height of the contacts above the palm plane, as the elevation of the ray from the object's centre.
    contact_elevation_deg: tuple[float, float] = (-10.0, 60.0)
    # Probability that a fingertip rests on an edge of the bounding box instead of a face.
    edge_prob: float = 0.25
    palm_length_frac: tuple[float, float] = (0.8, 1.2)
    palm_width_frac: tuple[float, float] = (0.7, 1.0)
    palm_thickness_frac: tuple[float, float] = (0.2, 0.3)
    # Clearance between the object and the palm (0: the object rests on it).
    palm_gap_frac: tuple[float, float] = (0.0, 0.08)
    # Largest angle between the palm's normal (palm towards object) and world up: 0 holds the object
    # from below, 90 from the side, 180 from any side.
    palm_tilt_deg: float = 60.0
    # The wrist and forearm behind the palm; [0, 0] leaves the palm without one.
    forearm_length_m: tuple[float, float] = (0.12, 0.3)
    # Relative weights of the hand's look: human skin tones, dark (partly metallic) robot colours, or a
    # disco material from the texture bank.
    style_weights: dict[str, float] = field(default_factory=lambda: {"skin": 0.4, "robot": 0.3, "disco": 0.3})
    # Fingertip positions from a simulator (JSON lines, see docs); replaces the sampled grasp and ``prob``.
    joint_states_file: str | None = None

    def __post_init__(self):
        check_range("hand.prob", self.prob, 0.0, 1.0)
        check_range("hand.finger_count", self.finger_count, 1, 5)
        check_range("hand.segments_per_finger", self.segments_per_finger, 1, 3)
        check_range("hand.thumb_prob", self.thumb_prob, 0.0, 1.0)
        check_range("hand.finger_radius_frac", self.finger_radius_frac, 0.005, 0.5)
        check_range("hand.fingertip_length_frac", self.fingertip_length_frac, 0.01, 2.0)
        check_range("hand.contact_elevation_deg", self.contact_elevation_deg, -80.0, 80.0)
        check_range("hand.edge_prob", self.edge_prob, 0.0, 1.0)
        for name in ("palm_length_frac", "palm_width_frac", "palm_thickness_frac"):
            check_range(f"hand.{name}", getattr(self, name), 0.01, 10.0)
        check_range("hand.palm_gap_frac", self.palm_gap_frac, 0.0, 10.0)
        check_range("hand.palm_tilt_deg", self.palm_tilt_deg, 0.0, 180.0)
        check_range("hand.forearm_length_m", self.forearm_length_m, 0.0, 2.0)
        _check_weights("hand.style_weights", self.style_weights, HAND_STYLES)
        if self.joint_states_file is not None and not Path(self.joint_states_file).is_file():
            raise ConfigError(f"hand.joint_states_file={self.joint_states_file!r} does not exist; give a JSON lines "
                              "file of fingertips_object_m per sample")


@dataclass
class LimbConfig:
    """Arms and legs of people near the workspace: chains of long capsules that enter one camera's
    view at a frame edge, beside or behind the object, never in front of its centre in any camera."""

    # Probability that a sample has limbs; it then has ``count`` of them.
    prob: float = 0.3
    count: tuple[int, int] = (1, 2)
    # Forearm (or shin) only, or also the upper arm (thigh) beyond an elbow (knee).
    segments: tuple[int, int] = (1, 2)
    # Human proportions: forearms are 6-9 cm thick, thighs up to 15 cm; segments 30-50 cm long.
    diameter_m: tuple[float, float] = (0.06, 0.12)
    length_m: tuple[float, float] = (0.3, 0.5)
    # Depth of the limb's end in the view, minus the object's depth: < 0 beside and in front, > 0 behind.
    depth_behind_m: tuple[float, float] = (-0.05, 0.4)
    # How far the limb's end reaches into the image from the edge it enters by, as a fraction of the image.
    reach_frac: tuple[float, float] = (0.05, 0.35)
    style_weights: dict[str, float] = field(default_factory=lambda: {"skin": 0.4, "clothing": 0.4, "disco": 0.2})

    def __post_init__(self):
        check_range("limbs.prob", self.prob, 0.0, 1.0)
        check_range("limbs.count", self.count, 0, 4)
        check_range("limbs.segments", self.segments, 1, 3)
        check_range("limbs.diameter_m", self.diameter_m, 0.001, 1.0)
        check_range("limbs.length_m", self.length_m, 0.001, 3.0)
        check_range("limbs.depth_behind_m", self.depth_behind_m, -1.0, 5.0)
        check_range("limbs.reach_frac", self.reach_frac, 0.0, 0.5)
        _check_weights("limbs.style_weights", self.style_weights, LIMB_STYLES)


@dataclass
class TableConfig:
    """A table top under the object and the hand: a thin slab with a random bank material, horizontal up
    to ``tilt_deg``. It receives shadows when a sample has them. Left out when a camera would be below it."""

    prob: float = 0.5
    # Clearance between the table and the lowest point of the object and hand (0: they rest on it).
    gap_m: tuple[float, float] = (0.0, 0.1)
    half_extent_m: tuple[float, float] = (0.2, 0.8)
    thickness_m: float = 0.03
    tilt_deg: float = 5.0
    # Horizontal offset of the table's centre from the object, as a fraction of its half extent (edges in view).
    offset_frac: tuple[float, float] = (0.0, 0.8)

    def __post_init__(self):
        check_range("table.prob", self.prob, 0.0, 1.0)
        check_range("table.gap_m", self.gap_m, 0.0, 5.0)
        check_range("table.half_extent_m", self.half_extent_m, 0.01, 10.0)
        check_range("table.thickness_m", self.thickness_m, 0.001, 1.0)
        check_range("table.tilt_deg", self.tilt_deg, 0.0, 45.0)
        check_range("table.offset_frac", self.offset_frac, 0.0, 2.0)


@dataclass
class NoiseConfig:
    """Sensor effects applied after rendering (training adds more with albumentations)."""

    gaussian_sigma: tuple[float, float] = (0.0, 6.0)
    blur_prob: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.3, 1.2)

    def __post_init__(self):
        check_range("noise.gaussian_sigma", self.gaussian_sigma, 0.0, 255.0)
        check_range("noise.blur_prob", self.blur_prob, 0.0, 1.0)
        check_range("noise.blur_sigma_px", self.blur_sigma_px, 0.0, 50.0)


@dataclass
class OutputConfig:
    samples_per_shard: int = 500
    image_format: str = "jpg"
    jpeg_quality: int = 95
    depth: bool = False
    mask: bool = True

    def __post_init__(self):
        check_range("output.samples_per_shard", self.samples_per_shard, 1, 1_000_000)
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"output.image_format={self.image_format!r}; use jpg or png")
        check_range("output.jpeg_quality", self.jpeg_quality, 1, 100)


@dataclass
class RenderConfig:
    """Everything that defines a dataset, except the number of samples and the output location."""

    seed: int = 0
    object: ObjectConfig = field(default_factory=ObjectConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    textures: TextureConfig = field(default_factory=TextureConfig)
    clutter: ClutterConfig = field(default_factory=ClutterConfig)
    hand: HandConfig = field(default_factory=HandConfig)
    limbs: LimbConfig = field(default_factory=LimbConfig)
    table: TableConfig = field(default_factory=TableConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        check_range("seed", self.seed, 0, 2**63 - 1)

    @property
    def camera_names(self) -> list[str]:
        return list(self.camera.names) or [f"cam{i}" for i in range(self.camera.count)]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RenderConfig":
        return from_dict(cls, data)

    def with_overrides(self, overrides: list[str]) -> "RenderConfig":
        """A copy with ``KEY=VALUE`` overrides applied (validated like ``load``'s)."""
        return RenderConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "RenderConfig":
        """Defaults, updated by the YAML/JSON file at ``path``, updated by ``KEY=VALUE`` overrides."""
        data = load_mapping(path) if path else {}
        return cls.from_dict(apply_overrides(data, overrides or []))
