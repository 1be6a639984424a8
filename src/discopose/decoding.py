"""The pose networks' interface: what goes in (:func:`stage_view`, :func:`network_batch`), what comes out
and its decoding into poses, in numpy and OpenCV only. Training (``datasets.loader``) and inference (both
estimator backends) prepare images through the same two functions.

Below both the network modules (``models/``, which produce the outputs) and the estimator (which consumes
them, with the torch or the ONNX Runtime backend): nothing here imports torch or pyrender, so a tracker-only
install runs on onnxruntime alone.

Both predict the same camera-invariant quantities, so one class serves both:

* ``position_uvz`` (B, 3): the object centre's image offset from the principal point in units of the
  image size, ``(u - cx) / s, (v - cy) / s`` with ``s = min(width, height)``, and ``log(z / z_ref)``
  with ``z_ref = fx * diameter / (fill_frac * s)``, the depth at which the object would span
  ``fill_frac`` of the image. :func:`discopose.camera.position_from_uvz` turns them into metres.
* ``rotation`` (B, 3, 3): camera_from_object rotation. When the geometry has a larger symmetry group
  than the object (the lettered cube: 24 vs 1), the network regresses ``rotation_shape`` up to the
  geometry's group (6D representation) and classifies the *canonical* equivalent the markings show
  (``symmetry_logits``, labelled from ground truth only: :func:`canonical_index`).
* ``position_log_var`` (B, 3), ``rotation_log_var`` (B,): heteroscedastic uncertainty, the log
  variance of the ``position_uvz`` errors and of the rotation angle (rad^2, per axis, isotropic).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from discopose._errors import ConfigError
from discopose.camera import (CameraModel, aimed_camera, dense_grid_px, position_covariance_from_uvz,
                              position_from_uvz, remap_image)

STAGES = ("locator", "crop")
ROTATION_HEADS = ("6d", "patch_pnp")


@dataclass
class PoseNetSpec:
    """Everything needed to rebuild the network and feed it (stored in checkpoint metadata)."""

    backbone: str = "mobilenet_v2"
    stage: str = "crop"
    input_size_px: tuple[int, int] = (96, 96)  # (height, width)
    # Locator: the model camera every frame is remapped onto (3x3 K at input size). Crop: unused.
    camera_K: list | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    object_diameter_m: float = 0.0987
    fill_frac: float = 0.75
    hidden: int = 256
    keypoints: int = 16
    # Dense head (crop stage): per cell of a stride-8 grid, is the object there and which point of its
    # surface (object-frame coordinates over half the diameter); the pose then follows by PnP.
    dense: bool = True
    dense_stride: int = 8
    # Rotations of the geometry's symmetry group to classify among (empty: plain regression).
    shape_rotations: list = field(default_factory=list)
    # How the rotation is regressed: "6d" (Zhou et al.'s 6D from the global features; up to the shape's
    # group, nearest equivalent as the target, with the markings' class) or "patch_pnp" (GDR-Net's
    # Patch-PnP: the full rotation, 6D, from the dense head's surface-coordinate and mask maps; README:
    # the 6D head sat at chance up to the cube's symmetry). Checkpoints without the field are 6d.
    rotation_head: str = "6d"

    def __post_init__(self):
        self.input_size_px = tuple(int(v) for v in self.input_size_px)
        if self.rotation_head not in ROTATION_HEADS:
            raise ConfigError(f"rotation_head={self.rotation_head!r}; use one of {', '.join(ROTATION_HEADS)}")

    @property
    def rotation_size(self) -> int:
        """How many numbers the global head regresses for the rotation."""
        return 6 if self.rotation_head == "6d" else 0


def stage_camera(spec: PoseNetSpec, aim_m=None) -> tuple[CameraModel, np.ndarray]:
    """The camera a network of ``spec`` sees and the rotation from the source camera's axes to it: the
    locator's fixed model camera (no rotation), or the crop camera aimed at ``aim_m`` (a point in the
    source camera's frame, where the object is believed to be)."""
    height, width = spec.input_size_px
    if spec.stage == "locator":
        return CameraModel.derived("model", width, height, np.asarray(spec.camera_K, float)), np.eye(3)
    if aim_m is None:
        raise ValueError("a crop network's view needs aim_m, the point it is aimed at")
    return aimed_camera(aim_m, spec.object_diameter_m, width, spec.fill_frac)


def stage_view(image: np.ndarray, source: CameraModel, target: CameraModel, target_from_source: np.ndarray
               ) -> np.ndarray:
    """``image`` (taken by ``source``) as ``target`` (from :func:`stage_camera`) sees it; unchanged when
    the two cameras are the same."""
    if (source.width_px, source.height_px) == (target.width_px, target.height_px) and \
            np.allclose(target_from_source, np.eye(3)) and np.allclose(source.K, target.K) and \
            not np.any(source.dist_coeffs):
        return image
    return remap_image(image, source, target, target_from_source)


def network_batch(images: list[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 images on a network's camera -> its (N, 3, H, W) float32 input in [0, 1] (the
    ImageNet normalization is the network's first layer, so both backends and training share it)."""
    return np.stack([np.asarray(image).transpose(2, 0, 1) for image in images]).astype(np.float32) / np.float32(255)


def pose_from_dense(mask_logits: np.ndarray, coordinates: np.ndarray, K: np.ndarray, spec: PoseNetSpec,
                    min_points: int = 6):
    """``camera_from_object`` (4x4) by RANSAC PnP on the dense head's 2D-3D correspondences (each
    object cell's centre pixel and the surface point it shows), or None when too few cells agree.
    Returns ``(camera_from_object, inlier count)``."""
    import cv2
    columns, rows = dense_grid_px(spec.input_size_px, spec.dense_stride)
    on_object = mask_logits > 0
    if on_object.sum() < min_points:
        return None, 0
    image_points = np.stack([columns[on_object], rows[on_object]], axis=1).astype(np.float64)
    object_points = (coordinates[:, on_object].T * spec.object_diameter_m / 2).astype(np.float64)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(object_points, image_points, K, None, iterationsCount=100,
                                                 reprojectionError=0.75 * spec.dense_stride,
                                                 flags=cv2.SOLVEPNP_EPNP)
    if not ok or inliers is None or len(inliers) < min_points:
        return None, 0
    inliers = inliers[:, 0]
    rvec, tvec = cv2.solvePnPRefineLM(object_points[inliers], image_points[inliers], K, None, rvec, tvec)
    if tvec[2, 0] <= 0:
        return None, 0
    camera_from_object = np.eye(4)
    camera_from_object[:3, :3] = cv2.Rodrigues(rvec)[0]
    camera_from_object[:3, 3] = tvec[:, 0]
    return camera_from_object, len(inliers)


def combined_rotation(regressed: np.ndarray, dense: np.ndarray | None, agree_deg: float = 30.0) -> np.ndarray:
    """The rotation a crop network reports: the dense head's PnP rotation averaged (chordal mean) with
    the regressed one when the two agree within ``agree_deg`` (their errors are partly independent:
    12.4 vs 14.0 deg median on validation crops), PnP's alone when they do not, the regressed one
    when PnP found no pose (``dense`` None)."""
    if dense is None:
        return regressed
    cos = np.clip((np.trace(dense.T @ regressed) - 1) / 2, -1.0, 1.0)
    if np.degrees(np.arccos(cos)) >= agree_deg:
        return dense
    u, _, vt = np.linalg.svd(dense + regressed)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def reported_rotation(regressed: np.ndarray, mask_logits: np.ndarray, coordinates: np.ndarray, K: np.ndarray,
                      spec: PoseNetSpec, agree_deg: float = 30.0) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The rotation a crop network reports, the one place it is computed (training's uncertainty target,
    evaluation, the estimator): :func:`combined_rotation` of the regressed rotation and the dense head's PnP
    pose. Returns ``(rotation, PnP camera_from_object or None, RANSAC inlier count)``."""
    pnp, inliers = pose_from_dense(mask_logits, coordinates, K, spec)
    return combined_rotation(regressed, None if pnp is None else pnp[:3, :3], agree_deg), pnp, inliers


def dense_consistency(mask_logits: np.ndarray, coordinates: np.ndarray, K: np.ndarray, spec: PoseNetSpec,
                      position_m: np.ndarray, regressed_rotation: np.ndarray, surface_points_m: np.ndarray) -> dict:
    """The reported rotation of one crop and how well the crop network's heads agree with each other
    (see :mod:`discopose.estimator.trust`), all in the crop camera's frame.

    Returns ``rotation`` (reported), ``pnp_position_m`` (None without a PnP pose) and the signals
    ``pnp_found``, ``pnp_inlier_frac`` (RANSAC inliers among the mask's cells), ``mask_outside_frac``
    (mask cells whose centre is off the object's silhouette at the reported pose),
    ``pnp_rotation_deg``, ``pnp_depth_log_ratio`` (log of PnP over regressed depth) and
    ``pnp_lateral_rel`` (their lateral offset over the object's diameter).
    """
    import cv2
    rotation, pnp, inliers = reported_rotation(regressed_rotation, mask_logits, coordinates, K, spec)
    cells = mask_logits > 0
    count = int(cells.sum())
    # The object's silhouette at the reported pose: the convex hull of its projected surface points
    # (exact for convex objects, lenient for others), read at each cell's centre pixel as the mask is.
    in_camera = surface_points_m @ rotation.T + position_m
    in_camera = in_camera[in_camera[:, 2] > 1e-6]
    uv = in_camera[:, :2] / in_camera[:, 2:] * np.diag(K)[:2] + K[:2, 2]
    height, width = spec.input_size_px
    silhouette = np.zeros((height, width), np.uint8)
    if len(uv) >= 3:
        hull = cv2.convexHull(np.round(uv * 4).astype(np.int32))
        cv2.fillConvexPoly(silhouette, hull, 1, lineType=cv2.LINE_8, shift=2)
    columns, rows = dense_grid_px(spec.input_size_px, spec.dense_stride)
    outside = cells & (silhouette[rows, columns] == 0)
    signals = {"pnp_found": pnp is not None, "pnp_inlier_frac": inliers / count if count else 0.0,
               "mask_outside_frac": float(outside.sum() / count) if count else 1.0,
               "pnp_rotation_deg": 90.0, "pnp_depth_log_ratio": 1.0, "pnp_lateral_rel": 1.0}
    pnp_position = None
    if pnp is not None:
        pnp_position = pnp[:3, 3]
        cos = np.clip((np.trace(pnp[:3, :3].T @ regressed_rotation) - 1) / 2, -1.0, 1.0)
        lateral = pnp_position[:2] / pnp_position[2] - position_m[:2] / position_m[2]
        signals.update(pnp_rotation_deg=float(np.degrees(np.arccos(cos))),
                       pnp_depth_log_ratio=float(np.log(pnp_position[2] / position_m[2])),
                       pnp_lateral_rel=float(np.linalg.norm(lateral) * position_m[2] / spec.object_diameter_m))
    return {"rotation": rotation, "pnp_position_m": pnp_position, "pnp_rotation": None if pnp is None else pnp[:3, :3],
            "signals": signals}


def decode_position(position_uvz: np.ndarray, position_log_var: np.ndarray, K: np.ndarray,
                    spec: PoseNetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Position (metres) and its 3x3 covariance in the frame of the camera with intrinsics ``K`` that
    the network's image was taken with, from one sample's ``position_uvz`` and ``position_log_var``."""
    position = position_from_uvz(position_uvz, K, spec.input_size_px, spec.object_diameter_m, spec.fill_frac)
    covariance = position_covariance_from_uvz(np.exp(0.5 * position_log_var), position, K, spec.input_size_px)
    return position, covariance
