"""One camera's image as the modalities read it: checked once, looked up at ideal-pinhole pixels through the
lens distortion, with its grey-level gradients computed on first use."""
from __future__ import annotations

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.refine.projection import distorted_uv


class ViewImage:
    """An HxWx3 uint8 RGB image with the :class:`CameraModel` it was taken with."""

    def __init__(self, image, camera: CameraModel, name: str = "image"):
        if not isinstance(camera, CameraModel):
            raise DiscoposeError(f"{name}: camera must be a discopose CameraModel, got {type(camera).__name__}")
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise DiscoposeError(f"{name}: the refinement reads uint8 RGB images, got dtype {image.dtype}; "
                                 "pass the camera frame as HxWx3 uint8")
        if image.ndim != 3 or image.shape[2] != 3:
            raise DiscoposeError(f"{name}: the refinement reads HxWx3 RGB images, got shape {image.shape}")
        if image.shape[:2] != (camera.height_px, camera.width_px):
            raise DiscoposeError(f"{name}: camera {camera.name!r} is {camera.width_px}x{camera.height_px} but the "
                                 f"image is {image.shape[1]}x{image.shape[0]}; pass the camera the image was taken "
                                 "with (CameraModel.scaled_to for a resized stream)")
        self.image = np.ascontiguousarray(image)
        self.flat = self.image.reshape(-1, 3)
        self.camera = camera
        self.K = np.asarray(camera.K, float)
        self.dist_coeffs = np.asarray(camera.dist_coeffs, float)
        self.height, self.width = image.shape[:2]
        self._gray = None

    def pixel_indices(self, pixels_ideal: np.ndarray, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the image pixels nearest to ideal pixels (..., 2), and whether each lies inside;
        outside pixels are clamped to ``margin`` pixels inside the border."""
        u, v = distorted_uv(self.K, self.dist_coeffs, pixels_ideal[..., 0], pixels_ideal[..., 1])
        u, v = np.rint(u), np.rint(v)
        u_clamped = np.minimum(np.maximum(u, margin), self.width - 1 - margin)
        v_clamped = np.minimum(np.maximum(v, margin), self.height - 1 - margin)
        inside = (u_clamped == u) & (v_clamped == v)  # clamping moved neither (NaN compares unequal: outside)
        return v_clamped.astype(np.int64) * self.width + u_clamped.astype(np.int64), inside

    def colors(self, flat_indices: np.ndarray) -> np.ndarray:
        """(..., 3) uint8 RGB at flat pixel indices."""
        return np.take(self.flat, flat_indices, axis=0)  # several times faster than fancy indexing here

    def gradient(self, flat_indices: np.ndarray) -> np.ndarray:
        """(..., 2) grey-level gradient (d/du, d/dv; 3x3 Sobel / 8, grey levels per pixel) at flat indices at
        least one pixel inside the border (``pixel_indices(..., margin=1)``). Only the probed pixels are
        computed: a crease search reads a few thousand, the image has 300 thousand."""
        if self._gray is None:
            self._gray = cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY).reshape(-1).astype(np.float32)
        g, w = self._gray, self.width
        up_left, up, up_right = g[flat_indices - w - 1], g[flat_indices - w], g[flat_indices - w + 1]
        left, right = g[flat_indices - 1], g[flat_indices + 1]
        down_left, down, down_right = g[flat_indices + w - 1], g[flat_indices + w], g[flat_indices + w + 1]
        out = np.empty(flat_indices.shape + (2,), np.float32)
        out[..., 0] = (up_right + 2 * right + down_right - up_left - 2 * left - down_left) / 8
        out[..., 1] = (down_left + 2 * down + down_right - up_left - 2 * up - up_right) / 8
        return out
