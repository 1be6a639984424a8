"""The realistic proxy test set: path-traced renders through a webcam model, for evaluation only.

Models train on domain-randomized rasterized images (:class:`~discopose.render.renderer.DiscoRenderer`).
How they do on real webcam frames is approximated here by a second, independent image formation: Mitsuba
3's path tracer (``scalar_rgb``; global illumination, area lights with soft shadows, glossy materials,
printed textures) of the same sampled scenes plus everyday clutter, developed like a camera (auto
exposure and white balance, sRGB tone curve), then passed through :mod:`discopose.realistic.webcam` (lens
distortion, blur, noise, JPEG). Never train on it: it measures the domain gap.

Geometry and labels stay the project's: a :class:`DiscoRenderer` samples every parameter, its rasterized
object-only pass gives the silhouette and the visible mask (the clutter is in its scene as ordinary
distractor shapes), and the path tracer renders the identical triangle meshes. Both render one centred,
square-pixel pinhole (:func:`~discopose.realistic.webcam.pinhole_cover`) that is remapped into the labelled
camera: its K (principal point and aspect included) and, with a webcam, its distortion ``dist_coeffs``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from discopose._errors import ConfigError, DiscoposeError
from discopose.camera import CameraModel
from discopose.config import check_range
from discopose.datasets.generate import generate_dataset
from discopose.realistic.proxy_scene import (ProxySceneConfig, box_uvs, cylinder_uvs, linear_from_srgb255,
                                             look_texture, radiance, sample_proxy)
from discopose.realistic.webcam import (WebcamConfig, apply_webcam, distort_image, distortion_maps, linear_to_srgb,
                                        pinhole_cover, sample_webcam)
from discopose.render.config import RenderConfig
from discopose.render.hand import box_corners
from discopose.render.objects import box_projection_uvs, build_object
from discopose.render.renderer import (DiscoRenderer, _mesh_arrays, _scaled_pose, _unit_shape, markings_texture,
                                       wall_poses)

MITSUBA_VARIANT = "scalar_rgb"  # the llvm_* variants (JIT) crash on some CPUs; scalar runs everywhere
INSTALL_HINT = "pip install 'discopose[realistic]' (or pip install mitsuba)"
# Mitsuba's camera looks down +z with +y up and +x left; OpenCV's x right, y down: flip x and y.
_MITSUBA_FROM_OPENCV = np.diag([-1.0, -1.0, 1.0, 1.0])
# Stream of the proxy's own draws, apart from the rasterizer's (so its params are those of the config).
_PROXY_STREAM = 0x5EA1
_FLOOR, _CEILING = 5, 4  # indices into renderer._WALLS
_QUAD = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
_QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])
# Metres one texture image spans on the table and on the walls and floor.
_TABLE_TILE_M = {"wood": 0.6, "laminate": 0.5}
_ROOM_TILE_M = 1.0


@dataclass
class RealisticConfig:
    """How the proxy makes its images; recorded in the dataset's manifest as its recipe."""

    # Samples per pixel and longest light path (2 = direct light only; 3 = one bounce of indirect light):
    # about 3.5 s per 640 x 480 frame on 2 idle CPU cores (benchmarks/realistic_proxy.py); denoising does the rest.
    spp: int = 4
    max_depth: int = 3
    # Auto exposure: the centre-weighted mean of the sRGB image it aims for, per camera.
    exposure_target: tuple[float, float] = (0.38, 0.5)
    # Auto white balance: how much of the grey-world correction a camera applies (0 none, 1 full).
    awb_strength: tuple[float, float] = (0.5, 0.9)
    # Denoising of the developed image (see denoise()), non-local means as strong as this times its estimated
    # noise (0 = off): removes the path tracer's sampling noise, as a webcam's processor would; the webcam
    # model then adds its own, calibrated sensor noise.
    denoise: float = 0.9
    # None: an ideal camera (no distortion, blur, noise or JPEG).
    webcam: WebcamConfig | None = field(default_factory=WebcamConfig)
    scene: ProxySceneConfig = field(default_factory=ProxySceneConfig)

    def __post_init__(self):
        check_range("realistic.spp", self.spp, 1, 65536)
        check_range("realistic.max_depth", self.max_depth, 1, 64)
        check_range("realistic.exposure_target", self.exposure_target, 0.01, 0.99)
        check_range("realistic.awb_strength", self.awb_strength, 0.0, 1.0)
        check_range("realistic.denoise", self.denoise, 0.0, 5.0)


def realistic_render_config(seed: int = 0, cameras: int = 1, width_px: int = 640, height_px: int = 480,
                            hand: bool = True, overrides: list[str] | None = None) -> RenderConfig:
    """The render config of the proxy: the project's cameras at its default distances, 640 x 480, a skin
    hand holding the object (``hand``), a level table in a room, no rasterizer lights, noise or random
    distractors (the proxy brings its own), then ``overrides`` (``KEY=VALUE``)."""
    preset = {
        "seed": seed, "camera.count": cameras, "camera.width_px": width_px, "camera.height_px": height_px,
        "hand.prob": 1.0 if hand else 0.0, "hand.style_weights": {"skin": 1.0}, "limbs.prob": 0.0,
        "table.prob": 1.0, "table.tilt_deg": 0.0, "table.half_extent_m": [0.35, 0.8], "table.offset_frac": [0.0, 0.5],
        "clutter.distractor_count": [0, 0], "clutter.occluder_prob": 0.0, "clutter.primitives": ["box", "cylinder"],
        "clutter.room_prob": 1.0, "clutter.room_half_extent_m": [0.9, 1.8],
        "lighting.count": [0, 0], "lighting.shadows_prob": 0.0,
        "noise.gaussian_sigma": [0.0, 0.0], "noise.blur_prob": 0.0,
        # The rasterizer's colours are discarded: a tiny texture bank is enough. Without multisampling its masks
        # sample pixel centres exactly (pyrender resolves multisampled depth from one off-centre sample).
        "textures.bank_size": 4, "textures.size_px": 16, "camera.msaa_samples": 0,
        "output.samples_per_shard": 50,
    }
    return RenderConfig.load(overrides=[f"{k}={v}" for k, v in preset.items()] + list(overrides or []))


def import_mitsuba():
    """Mitsuba 3 in its scalar RGB variant, or a one-line :class:`DiscoposeError` saying how to install it."""
    try:
        import mitsuba as mi
    except ImportError as exc:
        raise DiscoposeError(f"the realistic proxy renders with Mitsuba 3, which cannot be imported ({exc}); "
                             f"{INSTALL_HINT}") from None
    mi.set_variant(MITSUBA_VARIANT)
    mi.set_log_level(mi.LogLevel.Warn)
    return mi


def _camera_dict(camera: CameraModel) -> dict:
    """A camera as the ``cameras`` entries of sampled parameters."""
    return {"name": camera.name, "width_px": camera.width_px, "height_px": camera.height_px, "K": camera.K.tolist(),
            "world_from_camera": camera.world_from_camera.tolist()}


def _transformed(positions, normals, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions and normals of a unit mesh under ``pose`` (any invertible affine: normals by its
    inverse transpose)."""
    positions = np.asarray(positions, float) @ pose[:3, :3].T + pose[:3, 3]
    if normals is None:
        return positions, None
    normals = np.asarray(normals, float) @ np.linalg.inv(pose[:3, :3])
    return positions, normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def denoise(image: np.ndarray, strength: float) -> np.ndarray:
    """Remove a path tracer's sampling noise from an 8-bit RGB image, as a camera's processor would its own:
    first impulses (pixels far from their 5 x 5 median, relative to the median spread there: a light found
    by one sample in a few, or by none), then non-local means as strong as ``strength`` times the image's
    noise (1.48 times the median absolute deviation of its luminance from a 3 x 3 median)."""
    median = cv2.medianBlur(image, 5)
    deviation = cv2.absdiff(image, median).max(axis=-1)
    spread = cv2.medianBlur(deviation, 5).astype(np.float32)
    image = np.where((deviation > 2.5 * np.maximum(spread, 3.0))[..., None], median, image)
    luminance = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sigma = 1.4826 * float(np.median(np.abs(luminance - cv2.medianBlur(luminance, 3))))
    h = min(strength * sigma, 20.0)
    return cv2.fastNlMeansDenoisingColored(image, None, h, h, 5, 11) if h >= 1.0 else image


def develop(hdr: np.ndarray, exposure_target: float, awb_strength: float, denoise_strength: float = 0.0) -> np.ndarray:
    """A camera's processing of linear radiance (H, W, 3) into 8-bit sRGB: fireflies (lone path-tracing
    outliers) clamped to their neighbourhood, grey-world white balance by ``awb_strength``, the exposure
    whose centre-weighted mean sRGB value is ``exposure_target``, a soft highlight shoulder, sRGB, then
    :func:`denoise` with ``denoise_strength`` (0 = none)."""
    hdr = np.nan_to_num(np.asarray(hdr, np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
    median = cv2.medianBlur(hdr, 3)
    hdr = np.minimum(hdr, 4.0 * median + 1e-3 * float(median.mean()))
    height, width = hdr.shape[:2]
    v, u = np.mgrid[:height, :width]
    weight = np.exp(-0.5 * (((u - width / 2) / (0.35 * width)) ** 2 + ((v - height / 2) / (0.35 * height)) ** 2))
    weight = (weight / weight.sum()).astype(np.float32)
    means = np.tensordot(weight, hdr, axes=2)
    hdr = hdr * (means[1] / np.maximum(means, 1e-12)) ** awb_strength

    def shoulder(x):  # linear below 0.8, then rolls off smoothly towards 1 instead of clipping
        return np.where(x < 0.8, x, 0.8 + 0.2 * (1 - np.exp(-(x - 0.8) / 0.2)))

    small = cv2.resize(hdr, (max(8, width // 8), max(8, height // 8)), interpolation=cv2.INTER_AREA)
    small_weight = cv2.resize(weight, small.shape[1::-1], interpolation=cv2.INTER_AREA)
    small_weight /= small_weight.sum()
    low, high = -30.0, 30.0  # log2 exposure: the metered brightness rises monotonically with it
    for _ in range(40):
        middle = (low + high) / 2
        metered = float(np.tensordot(small_weight, linear_to_srgb(shoulder(small * 2.0 ** middle)).mean(-1), axes=2))
        low, high = (middle, high) if metered < exposure_target else (low, middle)
    image = np.round(linear_to_srgb(shoulder(hdr * 2.0 ** low)) * 255).astype(np.uint8)
    return denoise(image, denoise_strength) if denoise_strength > 0 else image


class PathTracedRenderer:
    """Renders samples of a :class:`RenderConfig` like :class:`DiscoRenderer` (same parameters, labels and
    masks; see :meth:`render`), but with Mitsuba 3 path-traced images through a webcam model. Slow (seconds
    per frame): for test sets. Not thread-safe; Mitsuba renders each frame on all cores."""

    def __init__(self, config: RenderConfig, realistic: RealisticConfig | None = None):
        self.mi = import_mitsuba()
        self.config = config
        self.realistic = realistic or RealisticConfig()
        if config.object.appearance == "random":
            raise ConfigError("object.appearance=random gives the object a disco texture; the realistic proxy "
                              "renders the object as it is: use markings or original")
        missing = {"box", "cylinder"} - set(config.clutter.primitives)
        if missing:
            raise ConfigError(f"clutter.primitives lacks {sorted(missing)}, which the proxy's clutter is made of; "
                              "add them (realistic_render_config does)")
        self.object = build_object(config.object)
        if self.object.texture is None and self.object.face_index is None:
            raise ConfigError(f"object {self.object.name!r} has no texture (vertex colours only); the realistic proxy "
                              "renders textured objects: export the mesh with a texture")
        self.scene_renderer = DiscoRenderer(config, self.object)
        self._unit = {shape: _mesh_arrays(_unit_shape(shape), shape)
                      for shape in ("box", "cylinder", "slab", "rod", "joint")}
        # Face normals of the unit meshes pick each triangle's face in the box and cylinder texture atlases.
        self._face_normals = {shape: np.cross(p[i[:, 1]] - p[i[:, 0]], p[i[:, 2]] - p[i[:, 0]])
                              for shape, (p, _, i, _) in self._unit.items()}
        for normals in self._face_normals.values():
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)

    # ------------------------------------------------------------------------------------ sampling
    def sample_params(self, index: int) -> dict:
        """The rasterizer's parameters of sample ``index`` with the proxy's clutter added to the distractors
        and its lights, looks and per-camera webcams under ``proxy`` (deterministic in seed and index)."""
        params = self.scene_renderer.sample_params(index)
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, index, _PROXY_STREAM]))
        world_from_object = np.asarray(params["world_from_object"])
        corners = box_corners(*self.object.bounds_m) @ world_from_object[:3, :3].T + world_from_object[:3, 3]
        clutter, proxy = sample_proxy(rng, self.realistic.scene, params, corners, self.config.pose.workspace_center_m)
        params["distractors"] = params["distractors"] + clutter
        cfg = self.realistic
        proxy["cameras"] = {camera["name"]: {
            "exposure_target": float(rng.uniform(*cfg.exposure_target)),
            "awb_strength": float(rng.uniform(*cfg.awb_strength)),
            "webcam": None if cfg.webcam is None else sample_webcam(rng, cfg.webcam)} for camera in params["cameras"]}
        params["proxy"] = proxy
        return params

    def recipe(self) -> dict:
        """How this renderer makes its images (for the dataset manifest)."""
        return {"kind": "realistic-proxy", "purpose": "evaluation only: never train on it",
                "renderer": f"mitsuba {self.mi.__version__} {MITSUBA_VARIANT} path tracer",
                **asdict(self.realistic)}

    # ------------------------------------------------------------------------------------- cameras
    def cameras(self, params: dict) -> list[tuple[CameraModel, CameraModel]]:
        """Per camera of ``params``: the labelled camera (its K, with the webcam's distortion if any) and
        the pinhole both renderers render, which :func:`distort_image` maps into it."""
        pairs = []
        for camera in params["cameras"]:
            webcam = params["proxy"]["cameras"][camera["name"]]["webcam"]
            labelled = CameraModel(camera["name"], camera["width_px"], camera["height_px"], camera["K"],
                                   dist_coeffs=np.zeros(5) if webcam is None else webcam["dist_coeffs"],
                                   world_from_camera=camera["world_from_camera"])
            pairs.append((labelled, pinhole_cover(labelled)))
        return pairs

    # -------------------------------------------------------------------------------- mitsuba scene
    def _bitmap(self, image: np.ndarray) -> dict:
        return {"type": "bitmap", "bitmap": self.mi.Bitmap(np.ascontiguousarray(image, np.float32)), "raw": True,
                "filter_type": "bilinear", "wrap_mode": "repeat"}

    @staticmethod
    def _rgb(color) -> dict:
        return {"type": "rgb", "value": [float(c) for c in np.clip(color, 0.0, 1.0)]}

    @staticmethod
    def _principled(color: dict, roughness: float, specular: float = 0.5, **extra) -> dict:
        """Disney's principled BSDF (cheap to build, unlike roughplastic's precomputed tables); ``specular``
        0.5 is a dielectric of index 1.5, 0.35 one of 1.4 (skin)."""
        return {"type": "principled", "base_color": color, "roughness": float(roughness), "specular": specular, **extra}

    def _mesh(self, name: str, positions, indices, normals=None, uvs=None, bsdf: dict | None = None,
              emitter: dict | None = None):
        mi = self.mi
        props = mi.Properties()
        # Every surface two-sided: thin parts and quads are seen from either side.
        props["bsdf"] = mi.load_dict({"type": "twosided", "material": bsdf or {"type": "diffuse"}})
        if emitter is not None:
            props["emitter"] = mi.load_dict(emitter)
        mesh = mi.Mesh(name, len(positions), len(indices), props, has_vertex_normals=normals is not None,
                       has_vertex_texcoords=uvs is not None)
        buffers = mi.traverse(mesh)
        buffers["vertex_positions"] = np.ascontiguousarray(positions, np.float32).ravel()
        buffers["faces"] = np.ascontiguousarray(indices, np.uint32).ravel()
        if normals is not None:
            buffers["vertex_normals"] = np.ascontiguousarray(normals, np.float32).ravel()
        if uvs is not None:
            buffers["vertex_texcoords"] = np.ascontiguousarray(uvs, np.float32).ravel()
        buffers.update()
        return mesh

    def _item_mesh(self, name: str, item: dict, bsdf: dict, uvs=None, smooth_cylinder: bool = False):
        """A shape item's unit mesh stretched and placed as the rasterizer places it."""
        positions, normals, indices, _ = self._unit[item["shape"]]
        if item["shape"] in ("box", "slab", "cylinder"):
            normals = None  # one vertex per face corner: flat faces need no vertex normals
        if smooth_cylinder:
            # Same triangles (same silhouette), shaded round: radial normals on the side, flat caps.
            side = np.abs(self._face_normals["cylinder"][:, 2]) < 0.5
            normals = np.tile([0.0, 0.0, 1.0], (len(positions), 1))
            normals[indices[~side].ravel()] *= np.sign(positions[indices[~side].ravel(), 2])[:, None]
            radial = positions[indices[side].ravel()] * [1.0, 1.0, 0.0]
            normals[indices[side].ravel()] = radial / np.linalg.norm(radial, axis=1, keepdims=True)
        world_positions, world_normals = _transformed(positions, normals, _scaled_pose(item))
        return self._mesh(name, world_positions, indices, world_normals, uvs, bsdf)

    def _look_bsdf(self, look: dict, texture: np.ndarray | None) -> dict:
        """The BSDF of a clutter item's look; ``texture``: its :func:`look_texture`, linear RGB."""
        kind = look["kind"]
        color = self._bitmap(texture) if texture is not None else self._rgb(linear_from_srgb255(look["color"]))
        if kind == "can":  # print on aluminium
            return self._principled(color, 0.35, metallic=0.75)
        roughness = {"mug": 0.2, "glaze": 0.2, "phone": 0.15, "die": 0.3, "puzzle": 0.3, "book": 0.5,
                     "package": 0.6, "block": 0.7, "marker": 0.4}.get(kind, 0.6)
        return self._principled(color, roughness)

    def _clutter_shapes(self, items: list[dict]) -> dict:
        shapes = {}
        for i, item in enumerate(items):
            look = item.get("look") or {"kind": "plain"}
            if look["kind"] == "plain":  # a distractor of the rasterizer's own config: its plain tint
                bsdf = {"type": "diffuse", "reflectance": self._rgb(item["material"]["tint"])}
                shapes[f"item{i}"] = self._item_mesh(f"item{i}", item, bsdf)
                continue
            texture = look_texture(look, item["scale_m"])
            positions, _, indices, _ = self._unit[item["shape"]]
            uvs = None
            if texture is not None:
                layout = box_uvs if item["shape"] == "box" else cylinder_uvs
                uvs = layout(positions, self._face_normals[item["shape"]], indices)
            shapes[f"item{i}"] = self._item_mesh(f"item{i}", item, self._look_bsdf(look, texture), uvs,
                                                 smooth_cylinder=item["shape"] == "cylinder")
        return shapes

    def _body_shapes(self, params: dict) -> dict:
        """The hand (skin; the forearm in a sleeve when the sample has one), any limbs, and the table."""
        looks = params["proxy"]["looks"]
        groups: dict[str, tuple[dict, list[dict]]] = {}

        def skin(tint):
            return self._principled(self._rgb(tint), looks["skin_roughness"], specular=0.35, sheen=0.3)

        def cloth(color):
            return self._principled(self._rgb(color), 0.9, specular=0.2, sheen=0.6)

        hand = params.get("hand")
        if hand:
            sleeve = looks.get("sleeve")
            for part in hand["parts"]:
                # Forearm parts are the ones thicker than a finger (the palm is the one slab).
                forearm = part["shape"] != "slab" and part["scale_m"][0] > 2.02 * hand["finger_radius_m"]
                key = "sleeve" if forearm and sleeve else "skin"
                bsdf = (cloth(linear_from_srgb255(sleeve["color"])) if key == "sleeve"
                        else skin(part["material"]["tint"]))
                groups.setdefault(key, (bsdf, []))[1].append(part)
        for i, limb in enumerate(params.get("limbs") or []):
            tint = limb["parts"][0]["material"]["tint"]
            bsdf = skin(tint) if limb["style"] == "skin" else cloth(tint)
            groups[f"limb{i}"] = (bsdf, list(limb["parts"]))
        shapes = {}
        for key, (bsdf, parts) in groups.items():
            arrays = []
            offset = 0
            for part in parts:
                positions, normals, indices, _ = self._unit[part["shape"]]
                normals = None if part["shape"] == "slab" else normals
                world_positions, world_normals = _transformed(positions, normals, _scaled_pose(part))
                if world_normals is None:
                    # Mixed with smooth parts in one mesh: flat parts get their face normals per corner.
                    face = self._face_normals[part["shape"]] @ np.linalg.inv(_scaled_pose(part)[:3, :3])
                    face /= np.linalg.norm(face, axis=1, keepdims=True)
                    world_normals = np.zeros_like(world_positions)
                    world_normals[indices.ravel()] = np.repeat(face, 3, axis=0)
                arrays.append((world_positions, world_normals, indices + offset))
                offset += len(positions)
            positions, normals, indices = (np.concatenate(column) for column in zip(*arrays))
            shapes[key] = self._mesh(key, positions, indices, normals, bsdf=bsdf)
        table = params.get("table")
        if table:
            look = looks["table"]
            positions, _, indices, _ = self._unit["slab"]
            uvs = box_projection_uvs(positions * np.asarray(table["scale_m"]), self._face_normals["slab"], indices,
                                     tile_m=_TABLE_TILE_M[look["kind"]])
            bsdf = self._principled(self._bitmap(look_texture(look)), look["roughness"], clearcoat=look["clearcoat"],
                                    clearcoat_gloss=0.9)
            shapes["table"] = self._item_mesh("table", table, bsdf, uvs)
        return shapes

    def _room_shapes(self, params: dict) -> dict:
        """Four painted walls and the floor; no ceiling, so the environment lights the room from above."""
        room = params.get("room")
        if room is None:
            return {}
        looks = params["proxy"]["looks"]
        shapes = {}
        for index, pose in enumerate(wall_poses(room, self.config.pose.workspace_center_m)):
            if index == _CEILING:
                continue
            look = looks["floor"] if index == _FLOOR else looks["walls"]
            extent = np.linalg.norm(pose[:3, :2], axis=0)  # half sizes of the quad, metres
            uvs = _QUAD[:, :2] * extent / _ROOM_TILE_M
            texture = look_texture(look)
            bsdf = {"type": "diffuse", "reflectance": self._bitmap(texture)}
            if look["kind"] == "wood":
                bsdf = self._principled(self._bitmap(texture), look["roughness"])
            shapes[f"wall{index}"] = self._mesh(f"wall{index}", _QUAD @ pose[:3, :3].T + pose[:3, 3], _QUAD_FACES,
                                                uvs=uvs, bsdf=bsdf)
        return shapes

    def _object_shape(self, params: dict, emitter: dict | None = None):
        obj = self.object
        appearance = params["object_appearance"]
        image = obj.texture if appearance["mode"] == "original" else markings_texture(obj, appearance)
        world_from_object = np.asarray(params["world_from_object"])
        positions, normals = _transformed(obj.positions, obj.normals, world_from_object)
        # Printed plastic or paper: the sampled roughness (0 to 1) spans satin to matte.
        bsdf = self._principled(self._bitmap(linear_from_srgb255(image)), 0.3 + 0.3 * appearance["roughness"])
        return self._mesh("object", positions, obj.indices, normals, obj.uvs, bsdf, emitter)

    def _emitter_quad(self, name: str, world_from_quad: np.ndarray, luminance_cd_m2: float, cct_k: float,
                      reflectance: float, target_m: np.ndarray):
        """A rectangle glowing along its +z with the given luminance and colour temperature: the unit quad
        [-1, 1]^2 under ``world_from_quad`` (scaled). Mitsuba picks emitters for shadow rays in proportion
        to their weights; weighting each by the light it sends to ``target_m`` (the object: luminance times
        the solid angle it subtends there, at most a hemisphere's) puts the samples where the light comes
        from: less noise, the same expected image."""
        corners = _QUAD @ world_from_quad[:3, :3].T + world_from_quad[:3, 3]
        area_m2 = 4 * float(np.prod(np.linalg.norm(world_from_quad[:3, :2], axis=0)))
        to_target = np.asarray(target_m, float) - world_from_quad[:3, 3]
        distance_m = max(float(np.linalg.norm(to_target)), 1e-3)
        normal = world_from_quad[:3, 2] / np.linalg.norm(world_from_quad[:3, 2])
        facing = max(float(normal @ to_target) / distance_m, 0.05)
        solid_angle_sr = min(area_m2 * facing / distance_m ** 2, 2 * np.pi)
        emitter = {"type": "area", "radiance": {"type": "rgb", "value": radiance(luminance_cd_m2, cct_k)},
                   "sampling_weight": luminance_cd_m2 * solid_angle_sr}
        # Counter-clockwise seen from +z: the area emitter shines along +z only.
        bsdf = {"type": "diffuse", "reflectance": self._rgb([reflectance] * 3)}
        return self._mesh(name, corners, _QUAD_FACES, bsdf=bsdf, emitter=emitter)

    def _light_shapes(self, params: dict) -> dict:
        """The environment and the area lights. A constant environment seen through the room's open top is,
        exactly, a uniform area light filling that opening; rendered as one, it is sampled where it is
        visible rather than over the whole sphere (the walls hide most of it), for the same image with
        less noise in shadows. Without a room it is Mitsuba's constant environment."""
        environment = params["proxy"]["environment"]
        target = np.asarray(params["world_from_object"])[:3, 3]
        room = params.get("room")
        if room is None:
            shapes = {"environment": {"type": "constant", "radiance": {"type": "rgb", "value": radiance(
                environment["luminance_cd_m2"], environment["cct_k"])}}}
        else:
            opening = wall_poses(room, self.config.pose.workspace_center_m)[_CEILING]  # faces down, into the room
            shapes = {"environment": self._emitter_quad("environment", opening, environment["luminance_cd_m2"],
                                                        environment["cct_k"], 0.0, target)}
        for i, light in enumerate(params["proxy"]["area_lights"]):
            pose = np.asarray(light["world_from_light"]) @ np.diag([*np.asarray(light["size_m"]) / 2, 1.0, 1.0])
            shapes[f"light{i}"] = self._emitter_quad(f"light{i}", pose, light["luminance_cd_m2"], light["cct_k"], 0.8,
                                                     target)
        return shapes

    def build_scene(self, params: dict, coverage: bool = False):
        """The Mitsuba scene of a sample. ``coverage``: no lights, the object glowing with radiance 1 and
        paths of one segment (emission seen directly, nothing reflected), so a render is the fraction of
        each pixel where the object is visible."""
        max_depth = 1 if coverage else self.realistic.max_depth
        scene = {"type": "scene", "integrator": {"type": "path", "max_depth": max_depth}}
        glow = {"type": "area", "radiance": {"type": "rgb", "value": 1.0}} if coverage else None
        scene["object"] = self._object_shape(params, glow)
        scene.update(self._clutter_shapes(params["distractors"] + params["occluders"]))
        scene.update(self._body_shapes(params))
        scene.update(self._room_shapes(params))
        if not coverage:
            scene.update(self._light_shapes(params))
        return self.mi.load_dict(scene)

    def _sensor(self, camera: CameraModel, spp: int):
        """Mitsuba's camera for a centred, square-pixel pinhole (:func:`pinhole_cover`). Its film spans
        width / f of the image plane, whose centre is OpenCV's (width - 1) / 2, so its pixels are OpenCV's."""
        fov_deg = float(np.degrees(2 * np.arctan(camera.width_px / (2 * camera.K[0, 0]))))
        return self.mi.load_dict({
            "type": "perspective", "fov": fov_deg, "fov_axis": "x",
            "near_clip": self.config.camera.znear_m, "far_clip": self.config.camera.zfar_m,
            "to_world": self.mi.ScalarTransform4f((camera.world_from_camera @ _MITSUBA_FROM_OPENCV).tolist()),
            "film": {"type": "hdrfilm", "width": camera.width_px, "height": camera.height_px, "pixel_format": "rgb",
                     "rfilter": {"type": "box"}},
            "sampler": {"type": "multijitter", "sample_count": spp}})

    def _render(self, scene, camera: CameraModel, spp: int, seed: int) -> np.ndarray:
        return np.array(self.mi.render(scene, sensor=self._sensor(camera, spp), seed=seed % 2**32), np.float32)

    # -------------------------------------------------------------------------------------- render
    def visible_coverage(self, params: dict, spp: int = 16) -> dict[str, np.ndarray]:
        """Per camera, the fraction (H, W) of each pixel of its render pinhole (see :meth:`cameras`) where
        the path tracer sees the object unoccluded: its own silhouette, to check against the rasterizer's."""
        scene = self.build_scene(params, coverage=True)
        return {labelled.name: self._render(scene, cover, spp, params["seed"])[..., 0]
                for labelled, cover in self.cameras(params)}

    def rasterize(self, params: dict) -> dict:
        """The rasterizer's views (:meth:`DiscoRenderer.render`) of every camera's render pinhole."""
        covers = [_camera_dict(cover) for _, cover in self.cameras(params)]
        return self.scene_renderer.render({**params, "cameras": covers})

    def trace(self, params: dict) -> dict[str, np.ndarray]:
        """The path tracer's linear radiance (H, W, 3) float32 of every camera's render pinhole."""
        scene = self.build_scene(params)
        return {labelled.name: self._render(scene, cover, self.realistic.spp, params["seed"] + 7919 * number)
                for number, (labelled, cover) in enumerate(self.cameras(params))}

    def render(self, params: dict) -> dict:
        """Render a sample from its parameters (:meth:`sample_params`).

        Returns ``{camera_name: {"rgb": (H, W, 3) uint8, "depth_m": (H, W) float32, "mask", "silhouette",
        "labels"}}`` as :meth:`DiscoRenderer.render`, for the labelled camera: with a webcam its image is
        distorted, its labels carry ``dist_coeffs`` (OpenCV k1, k2, p1, p2, k3) and ``keypoints_px`` are
        projected through them. Masks and depth are the rasterizer's, remapped with the image.
        """
        rasterized = self.rasterize(params)
        radiance_images = self.trace(params)
        world_from_object = np.asarray(params["world_from_object"])
        out = {}
        for labelled, cover in self.cameras(params):
            settings = params["proxy"]["cameras"][labelled.name]
            maps = distortion_maps(cover, labelled)
            developed = develop(radiance_images[labelled.name], settings["exposure_target"], settings["awb_strength"],
                                self.realistic.denoise)
            rgb = distort_image(developed, maps)
            if settings["webcam"] is not None:
                rgb = apply_webcam(rgb, settings["webcam"])
            view = rasterized[labelled.name]
            silhouette, visible = distort_image(view["silhouette"], maps), distort_image(view["mask"], maps)
            labels = self.scene_renderer._labels(_camera_dict(labelled), world_from_object, silhouette, visible)
            if settings["webcam"] is not None:
                labels["dist_coeffs"] = labelled.dist_coeffs.tolist()
                labels["keypoints_px"] = self._distorted_keypoints(labelled, labels).tolist()
            out[labelled.name] = {"rgb": rgb, "depth_m": distort_image(view["depth_m"], maps, cv2.INTER_NEAREST),
                                  "mask": visible, "silhouette": silhouette, "labels": labels}
        return out

    def _distorted_keypoints(self, camera: CameraModel, labels: dict) -> np.ndarray:
        """The object's keypoints projected through the camera's lens distortion (those behind it stay as
        the pinhole projection gave them)."""
        camera_from_object = np.asarray(labels["camera_from_object"])
        points = self.object.keypoints_m @ camera_from_object[:3, :3].T + camera_from_object[:3, 3]
        projected, _ = cv2.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.K,
                                         camera.dist_coeffs)
        return np.where(points[:, 2:] > 0, projected.reshape(-1, 2), np.asarray(labels["keypoints_px"]))

    def render_index(self, index: int) -> tuple[dict, dict]:
        params = self.sample_params(index)
        return params, self.render(params)

    def close(self):
        self.scene_renderer.close()


def render_realistic_dataset(out: str, num: int, seed: int = 0, cameras: int = 1, webcam: bool | WebcamConfig = True,
                             width_px: int = 640, height_px: int = 480, hand: bool = True, progress: bool = True,
                             spp: int | None = None, overrides: list[str] | None = None) -> dict:
    """Write ``num`` realistic proxy samples to ``out`` (folder or fsspec URL) as a normal discopose dataset
    (``discopose eval --data OUT`` reads it); resumes an interrupted run. ``cameras`` > 1 spreads cameras
    around the workspace with labelled ``world_from_camera``; ``webcam``: True for the default webcam
    model, a :class:`WebcamConfig` for other ranges, False for the ideal developed render; ``hand=False``
    leaves the hand out; ``spp`` overrides the samples per pixel; ``overrides`` are render-config
    ``KEY=VALUE`` pairs. The manifest's ``recipe`` records how the images were made. Returns the manifest."""
    config = realistic_render_config(seed, cameras, width_px, height_px, hand, overrides)
    webcam_config = webcam if isinstance(webcam, WebcamConfig) else (WebcamConfig() if webcam else None)
    realistic = RealisticConfig(webcam=webcam_config, **({} if spp is None else {"spp": spp}))
    renderer = PathTracedRenderer(config, realistic)
    try:
        return generate_dataset(out, num, config, workers=1, progress=progress, renderer=renderer,
                                recipe=renderer.recipe())
    finally:
        renderer.close()
