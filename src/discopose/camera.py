"""The one camera model shared by calibration, the renderer, training and tracking.

A camera file (YAML or JSON, chosen by suffix) holds a pinhole camera with OpenCV distortion::

    format: discopose-camera
    version: 1
    name: left
    width_px: 640
    height_px: 480
    K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # pixels; (0, 0) is the centre of the top-left pixel
    dist_coeffs: [k1, k2, p1, p2, k3]          # OpenCV order
    world_from_camera: 4x4 or null             # OpenCV camera axes, metres
    rms_px: reprojection RMS of the calibration, or null
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from discopose._errors import ConfigError
from discopose._io import atomic_write_text

FORMAT = "discopose-camera"
VERSION = 1


@dataclass
class CameraModel:
    name: str
    width_px: int
    height_px: int
    K: np.ndarray
    dist_coeffs: np.ndarray = field(default_factory=lambda: np.zeros(5))
    world_from_camera: np.ndarray | None = None
    rms_px: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        where = f"camera {self.name!r}"
        self.width_px = image_size_px(self.width_px, "width_px", where)
        self.height_px = image_size_px(self.height_px, "height_px", where)
        self.K = intrinsics_matrix(self.K, where)
        self.dist_coeffs = distortion_coefficients(self.dist_coeffs, where)
        if self.world_from_camera is not None:
            self.world_from_camera = rigid_transform(self.world_from_camera, "world_from_camera", where)

    @classmethod
    def from_fov(cls, name: str, width_px: int, height_px: int, fov_deg: float,
                 world_from_camera: np.ndarray | None = None) -> "CameraModel":
        """Ideal pinhole with horizontal field of view ``fov_deg`` and a centred principal point."""
        focal = 0.5 * width_px / np.tan(np.radians(fov_deg) / 2)
        K = np.array([[focal, 0, (width_px - 1) / 2], [0, focal, (height_px - 1) / 2], [0, 0, 1]])
        return cls(name, width_px, height_px, K, world_from_camera=world_from_camera)

    def scaled_to(self, width_px: int, height_px: int) -> "CameraModel":
        """The same camera resampled to another image size (pixel-centre convention kept)."""
        sx, sy = width_px / self.width_px, height_px / self.height_px
        K = self.K.copy()
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return CameraModel.derived(self.name, width_px, height_px, K, self.dist_coeffs.copy(),
                                   self.world_from_camera, self.rms_px, dict(self.meta))

    @classmethod
    def derived(cls, name: str, width_px: int, height_px: int, K: np.ndarray, dist_coeffs: np.ndarray | None = None,
                world_from_camera: np.ndarray | None = None, rms_px: float | None = None,
                meta: dict | None = None) -> "CameraModel":
        """A camera computed from already-validated ones (rescaled, aimed crops), built without re-checking
        its fields: the estimator builds several per frame, and the checks cost more than the remap."""
        camera = object.__new__(cls)
        camera.name, camera.width_px, camera.height_px = name, int(width_px), int(height_px)
        camera.K = np.asarray(K, float)
        camera.dist_coeffs = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, float)
        camera.world_from_camera, camera.rms_px, camera.meta = world_from_camera, rms_px, meta or {}
        return camera

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "name": self.name,
            "width_px": int(self.width_px), "height_px": int(self.height_px),
            "K": self.K.tolist(), "dist_coeffs": self.dist_coeffs.tolist(),
            "world_from_camera": None if self.world_from_camera is None else self.world_from_camera.tolist(),
            "rms_px": None if self.rms_px is None else float(self.rms_px),
            # JSON round trip turns numpy scalars into plain numbers that YAML can write.
            "meta": json.loads(json.dumps(self.meta, default=float)),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "camera") -> "CameraModel":
        """A camera from a camera file's mapping; every problem raises :class:`ConfigError` naming
        ``source`` (the file), the field and the fix."""
        if data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not a discopose camera file (format: {data.get('format')!r}); "
                              "write one with `discopose calibrate intrinsics`")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConfigError(f"{source}: version must be a whole number, got {_short(version)}; "
                              f"write version: {VERSION}")
        if version > VERSION:
            raise ConfigError(f"{source}: camera file version {version} is newer than this discopose "
                              f"understands ({VERSION}); upgrade discopose")
        missing = [name for name in ("name", "width_px", "height_px", "K") if name not in data]
        if missing:
            raise ConfigError(f"{source}: camera file lacks the field {missing[0]!r}; "
                              "write it again with `discopose calibrate intrinsics`")
        rms_px, meta = data.get("rms_px"), data.get("meta") or {}
        if rms_px is not None and not (isinstance(rms_px, (int, float)) and rms_px >= 0):
            raise ConfigError(f"{source}: rms_px must be a non-negative number of pixels or null, "
                              f"got {_short(rms_px)}")
        if not isinstance(meta, dict):
            raise ConfigError(f"{source}: meta must be a mapping, got {_short(meta)}; "
                              "remove it or write key: value pairs")
        world_from_camera = data.get("world_from_camera")
        return cls(name=str(data["name"]),
                   width_px=image_size_px(data["width_px"], "width_px", source),
                   height_px=image_size_px(data["height_px"], "height_px", source),
                   K=intrinsics_matrix(data["K"], source),
                   # An empty or absent list means an ideal lens, as OpenCV reads an empty distCoeffs.
                   dist_coeffs=distortion_coefficients(data.get("dist_coeffs") or np.zeros(5), source),
                   world_from_camera=None if world_from_camera is None else
                   rigid_transform(world_from_camera, "world_from_camera", source),
                   rms_px=rms_px, meta=meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = self.to_dict()
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "CameraModel":
        from discopose.config import load_mapping
        return cls.from_dict(load_mapping(path, what="camera file"), source=str(path))


# The distortion models OpenCV accepts: k1 k2 p1 p2, then k3, then k4 k5 k6, then s1..s4, then tauX tauY.
DIST_COEFF_COUNTS = (4, 5, 8, 12, 14)
# Camera files hold matrices printed to a few decimals; a rotation that far off orthonormal is still one.
RIGID_ATOL = 1e-3


def _short(value) -> str:
    """``repr(value)`` cut to a length that keeps an error message on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float_array(value, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """``value`` as finite floats (of ``shape`` when given), or None when it is not that."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if (shape is not None and array.shape != shape) or not np.isfinite(array).all():
        return None
    return array


def image_size_px(value, name: str, where: str) -> int:
    """A positive whole number of pixels (``name`` is the field, ``where`` the file or camera)."""
    whole = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating))
                                                     and float(value).is_integer())
    if isinstance(value, bool) or not whole or value <= 0:
        raise ConfigError(f"{where}: {name} must be a positive whole number of pixels, got {_short(value)}")
    return int(value)


def intrinsics_matrix(value, where: str) -> np.ndarray:
    """``K`` as a 3x3 float array with positive focal lengths and a last row of [0, 0, 1]."""
    K = _float_array(value, (3, 3))
    if K is None:
        raise ConfigError(f"{where}: K must be a 3x3 matrix of numbers [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                          f"(pixels), got {_short(value)}; rerun `discopose calibrate intrinsics` or fix the file")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConfigError(f"{where}: K has fx={K[0, 0]:g}, fy={K[1, 1]:g}; both focal lengths (K[0][0], K[1][1]) "
                          "must be positive pixels")
    if not np.allclose(K[2], [0, 0, 1]):
        raise ConfigError(f"{where}: K's last row is {K[2].tolist()}; a pinhole K ends in [0, 0, 1]")
    return K


def distortion_coefficients(value, where: str) -> np.ndarray:
    """OpenCV distortion coefficients as a flat float array of one of the lengths OpenCV accepts."""
    coeffs = _float_array(value)
    if coeffs is None:
        raise ConfigError(f"{where}: dist_coeffs must be a list of numbers [k1, k2, p1, p2, k3], got {_short(value)}")
    coeffs = coeffs.reshape(-1)
    if coeffs.size not in DIST_COEFF_COUNTS:
        raise ConfigError(f"{where}: dist_coeffs has {coeffs.size} coefficients; OpenCV takes 4, 5, 8, 12 or 14 "
                          "in the order k1, k2, p1, p2, k3, ...: pad with zeros, e.g. [k1, k2, p1, p2, 0]")
    return coeffs


def rigid_transform(value, name: str, where: str) -> np.ndarray:
    """A 4x4 rotation-and-translation matrix (metres) as a float array; ``name`` is the field."""
    matrix = _float_array(value, (4, 4))
    if matrix is None:
        raise ConfigError(f"{where}: {name} must be a 4x4 matrix of numbers (rotation and translation in "
                          f"metres), got {_short(value)}")
    rotation = matrix[:3, :3]
    orthonormal = np.allclose(rotation @ rotation.T, np.eye(3), atol=RIGID_ATOL)
    if not orthonormal or np.linalg.det(rotation) < 0 or not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise ConfigError(f"{where}: {name} is not a rigid transform (its 3x3 part must be a rotation, its last "
                          "row [0, 0, 0, 1]); no scale or mirroring: give the pose in metres")
    return matrix


def remap_image(image: np.ndarray, source: CameraModel, target: CameraModel,
                target_from_source: np.ndarray | None = None) -> np.ndarray:
    """The image ``source`` took, as the ideal (undistorted) pinhole ``target`` would see it.

    Both cameras share their optical centre; ``target_from_source`` (3x3, default identity) rotates
    the target's axes relative to the source's, which makes ``target`` a virtual camera aimed anywhere
    (a zoom-in crop). Undistortion, intrinsics matching, rotation and resizing are one ``cv2.remap``.
    Where ``target`` sees beyond the source image the result is black.
    """
    image = np.asarray(image)
    if image.shape[:2] != (source.height_px, source.width_px):
        raise ConfigError(f"camera {source.name!r} is {source.width_px}x{source.height_px} but the image is "
                          f"{image.shape[1]}x{image.shape[0]}; pass the camera file the image was taken with")
    rotation = np.eye(3) if target_from_source is None else np.asarray(target_from_source, float)
    map_x, map_y = cv2.initUndistortRectifyMap(source.K, source.dist_coeffs, rotation, target.K,
                                               (target.width_px, target.height_px), cv2.CV_32FC1)
    shrink = min(source.K[0, 0], source.K[1, 1]) / max(target.K[0, 0], target.K[1, 1])
    if shrink >= 2.0:
        # Bilinear sampling far below the source resolution aliases: area-average first, by a whole factor,
        # and only the part of the source the target sees (a zoom-in crop reads a small patch of the frame).
        factor = int(shrink)
        height, width = image.shape[:2]
        x0 = int(np.clip(np.floor(map_x.min()) - factor, 0, width))
        y0 = int(np.clip(np.floor(map_y.min()) - factor, 0, height))
        w = min(-(-(int(np.clip(np.ceil(map_x.max()) + factor + 1, 0, width)) - x0) // factor) * factor,
                width // factor * factor)
        h = min(-(-(int(np.clip(np.ceil(map_y.max()) + factor + 1, 0, height)) - y0) // factor) * factor,
                height // factor * factor)
        x0, y0 = min(x0, width - w), min(y0, height - h)
        if w <= 0 or h <= 0:
            return np.zeros((target.height_px, target.width_px, *image.shape[2:]), image.dtype)
        image = area_average(image[y0:y0 + h, x0:x0 + w], factor)
        # Pixel centres: source pixel x lies at (x - x0 + 0.5) / factor - 0.5 in the averaged patch.
        map_x = (map_x - (x0 + 0.5 * factor - 0.5)) / factor
        map_y = (map_y - (y0 + 0.5 * factor - 0.5)) / factor
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


# Where area_average's box filter is faster than cv2.resize with the same numbers (the filter alone measured 0.15-0.41x
# the resize for 3 and 5, 1.9-2.1x for 7 and 9, on 640x480 and 300x300 patches, avx512 CPU; even factors round
# differently).
BOX_FILTER_FACTORS = (3, 5)


def area_average(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` (height and width multiples of ``factor``) shrunk by a whole ``factor``, each pixel the mean of its
    ``factor`` x ``factor`` block: ``cv2.resize(..., INTER_AREA)``'s numbers. For factors 3 and 5 a box filter read
    at every ``factor``-th pixel (a nearest-neighbour resize: a NumPy strided copy costs more than the filter) gives
    the same numbers 2-3x faster: OpenCV vectorises its area resize for a factor of 2 and its box filter for small
    kernels; the box filter's rounding matches for odd factors only, and from 7 on it is slower than the resize
    (`benchmarks/view_threads.py`)."""
    size = (image.shape[1] // factor, image.shape[0] // factor)
    if factor in BOX_FILTER_FACTORS:
        blurred = cv2.boxFilter(image, -1, (factor, factor), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(blurred, size, interpolation=cv2.INTER_NEAREST)  # pixel factor * i: the block's corner
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def aimed_camera(position_camera_m, diameter_m: float, size_px: int, fill_frac: float,
                 distance_m: float | None = None, name: str = "crop") -> tuple[CameraModel, np.ndarray]:
    """A square virtual camera at the same optical centre, aimed at a point, zoomed onto an object.

    ``position_camera_m`` is the point (the object's estimated centre) in the source camera's frame;
    the virtual camera's optical axis runs through it, its image "down" stays as close to the
    source's as possible, and its focal length makes an object of ``diameter_m`` at ``distance_m``
    (default: the point's distance) span ``fill_frac`` of ``size_px``. Returns
    ``(camera, crop_from_camera)``: the camera (principal point at the image centre) and the 3x3
    rotation from source-camera to virtual-camera axes. This is the zoom-in of GDR-Net/CDPN done as
    a true camera, so the crop is an exact pinhole image and its rotation label is allocentric.
    """
    return aimed_field_camera(position_camera_m, diameter_m / fill_frac, size_px, size_px, distance_m, name)


def aimed_field_camera(position_camera_m, field_m: float, width_px: int, height_px: int,
                       distance_m: float | None = None, name: str = "aimed") -> tuple[CameraModel, np.ndarray]:
    """:func:`aimed_camera` of any image size: aimed at a point, its image ``field_m`` wide at ``distance_m``
    (default: the point's distance). Returns ``(camera, aimed_from_camera)``."""
    from discopose.geometry.transforms import look_at
    point = np.asarray(position_camera_m, float).reshape(3)
    distance = float(np.linalg.norm(point)) if distance_m is None else float(distance_m)
    camera_from_aimed = look_at(np.zeros(3), point, up=(0.0, -1.0, 0.0))[:3, :3]
    focal = width_px * distance / field_m
    K = np.array([[focal, 0, (width_px - 1) / 2], [0, focal, (height_px - 1) / 2], [0, 0, 1.0]])
    return CameraModel.derived(name, width_px, height_px, K), camera_from_aimed.T


def jittered_aim(position_camera_m, diameter_m: float, size_px: int, fill_frac: float, offset_frac: float,
                 scale_jitter_frac: float, rng: np.random.Generator) -> tuple[CameraModel, np.ndarray]:
    """:func:`aimed_camera` off by the errors a first-stage locator makes: the aim point's image lies
    up to ``offset_frac`` of the crop from the object's centre (uniform in a disc) and the zoom is off
    by a factor up to ``1 + scale_jitter_frac`` either way (log-uniform). Trains the crop stage to
    tolerate them."""
    point = np.asarray(position_camera_m, float).reshape(3)
    distance = float(np.linalg.norm(point))
    estimated_distance = distance * np.exp(rng.uniform(-1, 1) * np.log1p(scale_jitter_frac))
    exact, crop_from_camera = aimed_camera(point, diameter_m, size_px, fill_frac, estimated_distance)
    angle = rng.uniform(0, 2 * np.pi)
    offset_px = offset_frac * size_px * np.sqrt(rng.random()) * np.array([np.cos(angle), np.sin(angle)])
    ray = np.append(offset_px / exact.K[0, 0], 1.0)
    aim_point = crop_from_camera.T @ (ray / np.linalg.norm(ray)) * distance
    return aimed_camera(aim_point, diameter_m, size_px, fill_frac, estimated_distance)


# The camera-invariant position a network predicts (see discopose.models.pose_net): the projected
# centre's offset from the principal point in units of s = min(width, height), and the log of the depth
# over z_ref = fx * diameter / (fill_frac * s), the depth at which the object spans fill_frac of s.

def uvz_from_position(position_m, K: np.ndarray, size_px: tuple[int, int], diameter_m: float,
                      fill_frac: float) -> np.ndarray:
    """``(du, dv, log(z / z_ref))`` of a camera-frame position (metres) seen with ``K`` at ``size_px``
    (height, width). Inverse of :func:`position_from_uvz`."""
    scale = min(size_px)
    x, y, z = np.asarray(position_m, float)
    z_ref = K[0, 0] * diameter_m / (fill_frac * scale)
    return np.array([K[0, 0] * x / z / scale, K[1, 1] * y / z / scale, np.log(z / z_ref)])


def position_from_uvz(uvz, K: np.ndarray, size_px: tuple[int, int], diameter_m: float,
                      fill_frac: float) -> np.ndarray:
    """Camera-frame position in metres from ``(du, dv, log(z / z_ref))``."""
    scale = min(size_px)
    du, dv, log_ratio = np.asarray(uvz, float)
    z = np.exp(log_ratio) * K[0, 0] * diameter_m / (fill_frac * scale)
    return np.array([du * scale / K[0, 0] * z, dv * scale / K[1, 1] * z, z])


def position_covariance_from_uvz(uvz_sigma, position_m, K: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """3x3 covariance (m^2, camera axes) of the position, to first order, from independent 1-sigmas
    of ``(du, dv, log(z / z_ref))``: lateral errors scale with depth over focal length, depth errors
    with depth, and a depth error moves the point along its viewing ray."""
    scale = min(size_px)
    x, y, z = np.asarray(position_m, float)
    # Jacobian of position_from_uvz at the estimate: columns d/d(du), d/d(dv), d/d(log ratio).
    jacobian = np.array([[scale / K[0, 0] * z, 0.0, x],
                         [0.0, scale / K[1, 1] * z, y],
                         [0.0, 0.0, z]])
    return jacobian @ np.diag(np.asarray(uvz_sigma, float) ** 2) @ jacobian.T


def dense_grid_px(size_px: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel columns and rows (u, v) that the cells of a stride-``stride`` grid over an image of
    ``size_px`` (height, width) stand for: each cell's centre pixel, as two (rows, cols) int arrays (read-only:
    the same few grids serve every frame)."""
    return _dense_grid_px(int(size_px[0]), int(size_px[1]), int(stride))


@functools.lru_cache(maxsize=16)
def _dense_grid_px(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = -(-height // stride), -(-width // stride)
    centre = stride // 2
    grids = np.meshgrid(np.minimum(np.arange(cols) * stride + centre, width - 1),
                        np.minimum(np.arange(rows) * stride + centre, height - 1))
    for grid in grids:
        grid.flags.writeable = False
    return tuple(grids)
