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

import json
from dataclasses import dataclass, field
from pathlib import Path

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
        self.K = np.asarray(self.K, dtype=float)
        self.dist_coeffs = np.asarray(self.dist_coeffs, dtype=float).reshape(-1)
        if self.K.shape != (3, 3) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ConfigError(f"camera {self.name!r}: K must be a 3x3 matrix with positive fx, fy")
        if self.width_px <= 0 or self.height_px <= 0:
            raise ConfigError(f"camera {self.name!r}: width_px and height_px must be positive")
        if self.world_from_camera is not None:
            self.world_from_camera = np.asarray(self.world_from_camera, dtype=float)
            if self.world_from_camera.shape != (4, 4):
                raise ConfigError(f"camera {self.name!r}: world_from_camera must be 4x4")

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
        return CameraModel(self.name, width_px, height_px, K, self.dist_coeffs.copy(),
                           self.world_from_camera, self.rms_px, dict(self.meta))

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
        if data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not a discopose camera file (format: {data.get('format')!r}); "
                              "write one with `discopose calibrate intrinsics`")
        if data.get("version", 0) > VERSION:
            raise ConfigError(f"{source}: camera file version {data['version']} is newer than this discopose "
                              f"understands ({VERSION}); upgrade discopose")
        try:
            return cls(name=str(data["name"]), width_px=int(data["width_px"]), height_px=int(data["height_px"]),
                       K=data["K"], dist_coeffs=data.get("dist_coeffs") or np.zeros(5),
                       world_from_camera=data.get("world_from_camera"), rms_px=data.get("rms_px"),
                       meta=data.get("meta") or {})
        except KeyError as exc:
            raise ConfigError(f"{source}: camera file lacks the field {exc.args[0]!r}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = self.to_dict()
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "CameraModel":
        from discopose.config import load_mapping
        return cls.from_dict(load_mapping(path, what="camera file"), source=str(path))
