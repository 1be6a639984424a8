"""The pose network: a shared backbone per camera, features fused in fixed camera order, a pose head.

Per camera the trunk's feature maps give two descriptors: global-average-pooled features (what is
there) and a spatial soft-argmax over learned keypoint maps (where it is, Levine et al. 2016), which
global pooling alone throws away and which position regression needs.

Outputs, for a batch of B samples each with C camera images:
* ``position_m`` (B, 3): object position in the pose frame, metres.
* ``rotation`` (B, 3, 3): object orientation in the pose frame.
* ``rotation_shape`` (B, 3, 3) and ``symmetry_logits`` (B, M): when the object's geometry has a larger
  symmetry group than the object itself (the lettered cube: 24 vs 1), the network regresses the
  orientation up to the geometry's group (6D representation; easy, it only needs edges) and classifies
  which of the M equivalents the markings show; ``rotation = rotation_shape @ S[argmax]^T``.
* ``position_log_var`` (B, 3), ``rotation_log_var`` (B,): heteroscedastic uncertainty, log of the
  variance in m^2 per axis and rad^2 (isotropic), trained by Gaussian negative log-likelihood.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from discopose.geometry.rotations_torch import matrix_from_rotation_6d
from discopose.models.backbones import build_backbone


@dataclass
class PoseNetSpec:
    """Everything needed to rebuild the network (stored in checkpoint metadata)."""

    backbone: str = "mobilenet_v2"
    camera_names: list[str] = field(default_factory=lambda: ["cam0"])
    input_size_px: tuple[int, int] = (224, 224)  # (height, width)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    pose_frame: str = "camera"  # "camera": camera_from_object of the first camera; "world": world_from_object
    position_center_m: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.35])
    position_scale_m: float = 0.05
    hidden: int = 512
    keypoints: int = 32
    # Rotations of the geometry's symmetry group to classify among (empty: plain regression).
    shape_rotations: list = field(default_factory=list)


class PoseNet(nn.Module):
    def __init__(self, spec: PoseNetSpec, pretrained: str = "none"):
        super().__init__()
        self.spec = spec
        self.channels_last = False  # set by the trainer on CUDA: NHWC convolutions are faster there
        self.backbone, dim = build_backbone(spec.backbone, pretrained)
        self.keypoint_maps = nn.Conv2d(dim, spec.keypoints, kernel_size=1)
        fused = (dim + 2 * spec.keypoints) * len(spec.camera_names)
        self.num_classes = len(spec.shape_rotations)
        self.head = nn.Sequential(nn.Linear(fused, spec.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(spec.hidden, 3 + 6 + 3 + 1 + self.num_classes))
        if self.num_classes:
            self.register_buffer("shape_rotations", torch.tensor(spec.shape_rotations, dtype=torch.float32),
                                 persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("position_center", torch.tensor(spec.position_center_m, dtype=torch.float32),
                             persistent=False)
        # Start at the identity rotation and the centre of the training poses, with unit uncertainty.
        with torch.no_grad():
            self.head[-1].weight.mul_(0.01)
            self.head[-1].bias.zero_()
            self.head[-1].bias[3:9] = torch.tensor([1.0, 0, 0, 0, 1.0, 0])

    def forward(self, images: torch.Tensor) -> dict:
        """images: (B, C, 3, H, W) float in [0, 1] (normalization happens here, with the stored stats)."""
        batch = images.shape[0]
        flat = (images.flatten(0, 1) - self.mean) / self.std
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        maps = self.backbone(flat)
        pooled = maps.mean(dim=(2, 3))
        attention = self.keypoint_maps(maps).flatten(2).softmax(dim=-1)  # (BC, K, h*w)
        height, width = maps.shape[2:]
        ys = torch.linspace(-1.0, 1.0, height, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=maps.device, dtype=maps.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        expected = torch.stack([(attention * grid_x.reshape(1, 1, -1)).sum(-1),
                                (attention * grid_y.reshape(1, 1, -1)).sum(-1)], dim=-1)  # (BC, K, 2)
        features = torch.cat([pooled, expected.flatten(1)], dim=1).reshape(batch, -1)  # cameras in spec order
        out = self.head(features)
        position = self.position_center + self.spec.position_scale_m * out[:, :3]
        rotation = matrix_from_rotation_6d(out[:, 3:9])
        extra = {}
        if self.num_classes:
            logits = out[:, 13:]
            chosen = self.shape_rotations[logits.argmax(dim=1)]
            extra = {"rotation_shape": rotation, "symmetry_logits": logits}
            rotation = rotation @ chosen.transpose(-1, -2)
        return {**extra, "position_m": position, "rotation": rotation,
                "position_log_var": out[:, 9:12].clamp(-30, 10) + 2 * torch.log(
                    torch.tensor(self.spec.position_scale_m, device=images.device)),
                "rotation_log_var": out[:, 12].clamp(-20, 5)}
