"""Intrinsic and extrinsic calibration with OpenCV, producing discopose camera files."""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose.calibration.boards import BoardSpec, detect_board
from discopose.camera import CameraModel
from discopose.geometry.transforms import invert_transform, make_transform

log = logging.getLogger(__name__)
MIN_VIEWS = 5


@dataclass
class CalibrationResult:
    camera: CameraModel
    per_image_rms_px: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)  # image -> reason
    detections: dict[str, tuple] = field(default_factory=dict)


def _read(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DiscoposeError(f"{path} is not a readable image")
    return image


def calibrate_intrinsics(images: list[str] | str, board: BoardSpec, name: str = "camera",
                         min_views: int = MIN_VIEWS, outlier_factor: float = 3.0) -> CalibrationResult:
    """Calibrate K and distortion from board images (paths or a glob pattern).

    Images where the board is not found, and views whose reprojection RMS exceeds ``outlier_factor``
    times the median (and 1 px), are rejected with a reason. Fewer than ``min_views`` usable views
    cannot constrain the camera and raise an error.
    """
    paths = sorted(glob.glob(images)) if isinstance(images, str) else [str(p) for p in images]
    if not paths:
        raise DiscoposeError(f"no images match {images!r}; check the pattern (quote it in the shell)")
    detections, rejected, size = {}, {}, None
    for path in paths:
        image = _read(path)
        if size is None:
            size = image.shape[1], image.shape[0]
        elif (image.shape[1], image.shape[0]) != size:
            rejected[path] = f"size {image.shape[1]}x{image.shape[0]} differs from {size[0]}x{size[1]}"
            continue
        found = detect_board(board, image)
        if found is None:
            rejected[path] = "board not found"
            continue
        detections[path] = found
    while True:
        if len(detections) < min_views:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in list(rejected.items())[:5])
            raise DiscoposeError(f"only {len(detections)} usable views of {len(paths)} (need at least {min_views} "
                                 f"from varied angles to constrain the camera){'; rejected ' + reasons if reasons else ''}")
        rms, K, dist, per_view = calibrate_on_detections(list(detections.values()), size)
        errors = dict(zip(detections, per_view))
        limit = max(outlier_factor * float(np.median(per_view)), 1.0)
        worst = max(errors, key=errors.get)
        if errors[worst] <= limit:
            break
        rejected[worst] = f"outlier: reprojection RMS {errors[worst]:.2f} px > {limit:.2f} px"
        del detections[worst]
    for path, reason in rejected.items():
        log.warning("rejected %s: %s", path, reason)
    camera = CameraModel(name, size[0], size[1], K, dist.ravel(), rms_px=float(rms),
                         meta={"board": str(board), "views": len(detections),
                               "per_image_rms_px": {Path(p).name: round(e, 4) for p, e in errors.items()},
                               "rejected": {Path(p).name: r for p, r in rejected.items()}})
    return CalibrationResult(camera, errors, rejected, detections)


def calibrate_on_detections(detections: list[tuple], image_size: tuple[int, int]):
    """``(rms, K, dist, per_view_rms)`` from OpenCV's calibrateCamera on ``(image_pts, object_pts)`` pairs."""
    object_points = [obj.astype(np.float32) for _, obj in detections]
    image_points = [img.astype(np.float32).reshape(-1, 1, 2) for img, _ in detections]
    rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(object_points, image_points, image_size, None, None)
    return float(rms), K, dist, per_view.ravel()


def calibrate_extrinsics(camera: CameraModel, image_path: str, board: BoardSpec,
                         world_from_board: np.ndarray | None = None) -> CameraModel:
    """The camera's ``world_from_camera`` from one image of a board at a known world pose."""
    found = detect_board(board, _read(image_path))
    if found is None:
        raise DiscoposeError(f"board {board} not found in {image_path}; check the spec and lighting")
    image_points, object_points = found
    ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera.K, camera.dist_coeffs,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise DiscoposeError(f"solvePnP failed on {image_path}")
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera.K, camera.dist_coeffs)
    rms = float(np.sqrt(((projected.reshape(-1, 2) - image_points) ** 2).sum(1).mean()))
    camera_from_board = make_transform(cv2.Rodrigues(rvec)[0], tvec.ravel())
    world_from_board = np.eye(4) if world_from_board is None else np.asarray(world_from_board, float)
    result = CameraModel(camera.name, camera.width_px, camera.height_px, camera.K, camera.dist_coeffs,
                         world_from_camera=world_from_board @ invert_transform(camera_from_board),
                         rms_px=camera.rms_px, meta={**camera.meta, "extrinsics_rms_px": rms,
                                                      "extrinsics_image": str(image_path)})
    return result
