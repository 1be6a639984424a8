"""The pose network: one camera image in, the object's pose in that camera out.

A discopose estimator runs two of these (GDR-Net/CDPN's "dynamic zoom-in", done with true cameras):

* the **locator** sees the whole frame, mapped onto its fixed model camera, and finds the object
  (its centre and distance); its rotation output is a coarse guess;
* the **crop** network sees a virtual camera aimed at the located object and zoomed so the object
  fills a fixed fraction of the crop (:func:`discopose.camera.aimed_camera`): the letters get their
  pixels, and because the crop camera looks at the object the rotation it sees is allocentric.

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
import torch
from torch import nn

from discopose.camera import dense_grid_px, position_covariance_from_uvz, position_from_uvz
from discopose.geometry.rotations_torch import matrix_from_rotation_6d
from discopose.models.backbones import build_backbone

STAGES = ("locator", "crop")


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

    def __post_init__(self):
        self.input_size_px = tuple(int(v) for v in self.input_size_px)


class PoseNet(nn.Module):
    def __init__(self, spec: PoseNetSpec, pretrained: str = "none"):
        super().__init__()
        self.spec = spec
        self.channels_last = False  # set by the trainer on CUDA: NHWC convolutions are faster there
        self.backbone, dim = build_backbone(spec.backbone, pretrained)
        self.backbone.eval()  # a probe for the feature-map sizes must not touch batch-norm statistics
        with torch.no_grad():
            taps = self._trunk(torch.zeros(1, 3, *spec.input_size_px))
        self.backbone.train()
        map_h, map_w = taps[-1].shape[2:]
        if spec.dense:
            fine, middle = taps[0], taps[1]
            self.dense_top = nn.Conv2d(dim, 128, kernel_size=1)
            self.dense_middle = _conv_block(128 + middle.shape[1], 128)
            self.dense_fine = _conv_block(128 + fine.shape[1], 64)
            self.dense_out = nn.Conv2d(64, 4, kernel_size=1)  # mask logit, x, y, z
        # Flattened reduced maps keep where things are on the object (which face is where), which
        # global pooling alone throws away; soft-argmax keypoints give sub-cell positions.
        self.reduce = nn.Sequential(nn.Conv2d(dim, 64, kernel_size=1, bias=False), nn.BatchNorm2d(64),
                                    nn.ReLU(inplace=True))
        self.keypoint_maps = nn.Conv2d(dim, spec.keypoints, kernel_size=1)
        self.num_classes = len(spec.shape_rotations)
        features = dim + 64 * map_h * map_w + 2 * spec.keypoints
        self.head = nn.Sequential(nn.Linear(features, spec.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(spec.hidden, 3 + 6 + 3 + 1 + self.num_classes))
        if self.num_classes:
            self.register_buffer("shape_rotations", torch.tensor(spec.shape_rotations, dtype=torch.float32),
                                 persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        # Start at the image centre, the reference depth and the identity rotation.
        with torch.no_grad():
            self.head[-1].weight.mul_(0.01)
            self.head[-1].bias.zero_()
            self.head[-1].bias[3:9] = torch.tensor([1.0, 0, 0, 0, 1.0, 0])

    def _trunk(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's last feature maps at strides dense_stride, 2 * dense_stride and its output."""
        height = images.shape[2]
        by_stride = {}
        x = images
        for layer in self.backbone:
            x = layer(x)
            by_stride[round(height / x.shape[2])] = x
        stride = self.spec.dense_stride
        return [by_stride.get(stride, x), by_stride.get(2 * stride, x), x]

    def forward(self, images: torch.Tensor) -> dict:
        """images: (B, 3, H, W) float in [0, 1] (normalization happens here, with the stored stats)."""
        flat = (images - self.mean) / self.std
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        fine, middle, maps = self._trunk(flat)
        dense = {}
        if self.spec.dense:
            up = nn.functional.interpolate(self.dense_top(maps), size=middle.shape[2:], mode="bilinear",
                                           align_corners=False)
            up = self.dense_middle(torch.cat([up, middle], dim=1))
            up = nn.functional.interpolate(up, size=fine.shape[2:], mode="bilinear", align_corners=False)
            out_dense = self.dense_out(self.dense_fine(torch.cat([up, fine], dim=1)))
            dense = {"mask_logits": out_dense[:, 0], "coordinates": out_dense[:, 1:]}
        attention = self.keypoint_maps(maps).flatten(2).softmax(dim=-1)  # (B, K, h*w)
        height, width = maps.shape[2:]
        ys = torch.linspace(-1.0, 1.0, height, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=maps.device, dtype=maps.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        expected = torch.stack([(attention * grid_x.reshape(1, 1, -1)).sum(-1),
                                (attention * grid_y.reshape(1, 1, -1)).sum(-1)], dim=-1)
        features = torch.cat([maps.mean(dim=(2, 3)), self.reduce(maps).flatten(1), expected.flatten(1)], dim=1)
        out = self.head(features)
        rotation = matrix_from_rotation_6d(out[:, 3:9])
        extra = {}
        if self.num_classes:
            logits = out[:, 13:]
            extra = {"rotation_shape": rotation, "symmetry_logits": logits}
            rotation = rotation_from_shape_and_class(rotation, logits.argmax(dim=1), self.shape_rotations)
        return {**extra, **dense, "position_uvz": out[:, :3], "rotation": rotation,
                "position_log_var": out[:, 9:12].clamp(-30, 10), "rotation_log_var": out[:, 12].clamp(-20, 5)}


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def canonical_index(rotation: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Index k of the group element that brings ``rotation @ group[k]`` closest to the identity.

    ``rotation @ group[k]`` is the one representative of the rotation's class under the group that
    depends on the class alone (ties aside), so ``argmax_k`` is a label from ground truth only.
    (B, 3, 3), (M, 3, 3) -> (B,) long.
    """
    traces = torch.einsum("bij,mji->bm", rotation, group)  # trace(R @ S_m)
    return traces.argmax(dim=1)


def rotation_from_shape_and_class(rotation_shape: torch.Tensor, class_index: torch.Tensor,
                                  group: torch.Tensor) -> torch.Tensor:
    """Full rotation from one regressed up to the group and the class of its canonical equivalent:
    with C = R_shape @ S_canonical(R_shape) and the ground-truth canonical C = R @ S_c, R = C @ S_c^T."""
    canonical = rotation_shape @ group[canonical_index(rotation_shape, group)]
    return canonical @ group[class_index].transpose(-1, -2)


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
                      spec: PoseNetSpec, agree_deg: float = 30.0) -> np.ndarray:
    """:func:`combined_rotation` of the regressed rotation and the dense head's PnP pose."""
    pose, _ = pose_from_dense(mask_logits, coordinates, K, spec)
    return combined_rotation(regressed, None if pose is None else pose[:3, :3], agree_deg)


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
    pnp, inliers = pose_from_dense(mask_logits, coordinates, K, spec)
    rotation = combined_rotation(regressed_rotation, None if pnp is None else pnp[:3, :3])
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
