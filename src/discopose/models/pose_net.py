"""The pose network: one camera image in, the object's pose in that camera out.

A discopose estimator runs two of these (GDR-Net/CDPN's "dynamic zoom-in", done with true cameras):

* the **locator** sees the whole frame, mapped onto its fixed model camera, and finds the object
  (its centre and distance); its rotation output is a coarse guess;
* the **crop** network sees a virtual camera aimed at the located object and zoomed so the object
  fills a fixed fraction of the crop (:func:`discopose.camera.aimed_camera`): the letters get their
  pixels, and because the crop camera looks at the object the rotation it sees is allocentric.

What the outputs mean, and their decoding into poses, is :mod:`discopose.decoding` (no torch there).
"""
from __future__ import annotations

import torch
from torch import nn

from discopose._errors import ConfigError
from discopose.geometry.rotations_torch import canonical_index, matrix_from_rotation_6d
from discopose.decoding import PoseNetSpec
from discopose.models.backbones import build_backbone

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
        if spec.rotation_head == "patch_pnp":
            if not spec.dense:
                raise ConfigError("rotation_head=patch_pnp reads the dense head's maps: it needs dense=True")
            self.patch_pnp = PatchPnP(tuple(fine.shape[2:]))
        # Flattened reduced maps keep where things are on the object (which face is where), which
        # global pooling alone throws away; soft-argmax keypoints give sub-cell positions.
        self.reduce = nn.Sequential(nn.Conv2d(dim, 64, kernel_size=1, bias=False), nn.BatchNorm2d(64),
                                    nn.ReLU(inplace=True))
        self.keypoint_maps = nn.Conv2d(dim, spec.keypoints, kernel_size=1)
        self.num_classes = len(spec.shape_rotations)
        features = dim + 64 * map_h * map_w + 2 * spec.keypoints
        self.rotation_size = spec.rotation_size
        self.head = nn.Sequential(nn.Linear(features, spec.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(spec.hidden, 3 + self.rotation_size + 3 + 1 + self.num_classes))
        if self.num_classes:
            self.register_buffer("shape_rotations", torch.tensor(spec.shape_rotations, dtype=torch.float32),
                                 persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        # Start at the image centre, the reference depth and the identity rotation.
        with torch.no_grad():
            self.head[-1].weight.mul_(0.01)
            self.head[-1].bias.zero_()
            if spec.rotation_head == "6d":
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
        end = 3 + self.rotation_size
        common = {**dense, "position_uvz": out[:, :3], "position_log_var": out[:, end:end + 3].clamp(-30, 10),
                  "rotation_log_var": out[:, end + 3].clamp(-20, 5)}
        logits = out[:, end + 4:]
        if self.spec.rotation_head == "patch_pnp":
            # Detached: the rotation loss through Patch-PnP slowed the dense head itself (at 24k crop views
            # surface points 29.9 vs 16.1 mm, PnP 100 vs 35 deg; README), so each learns from its own loss.
            rotation = matrix_from_rotation_6d(self.patch_pnp(dense["mask_logits"].detach(),
                                                              dense["coordinates"].detach()))
            return {**common, "rotation": rotation, **({"symmetry_logits": logits} if self.num_classes else {})}
        rotation = matrix_from_rotation_6d(out[:, 3:end])
        extra = {}
        if self.num_classes:
            extra = {"rotation_shape": rotation, "symmetry_logits": logits}
            rotation = rotation_from_shape_and_class(rotation, logits.argmax(dim=1), self.shape_rotations)
        return {**extra, **common, "rotation": rotation}


class PatchPnP(nn.Module):
    """The full rotation (6D) from the dense head's maps, after GDR-Net's Patch-PnP (Wang et al., CVPR 2021):
    strided convolutions over each cell's surface point (weighted by its mask probability), mask
    probability and image position. The surface points carry the markings (they are the object's own
    coordinates), so the target has no symmetry to jump across."""

    def __init__(self, grid: tuple[int, int], width: int = 64):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(6, width, kernel_size=3, stride=2, padding=1, bias=False), nn.GroupNorm(8, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1, bias=False), nn.GroupNorm(8, width),
            nn.ReLU(inplace=True))
        with torch.no_grad():
            cells = self.convs(torch.zeros(1, 6, *grid)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(cells, 256), nn.ReLU(inplace=True), nn.Linear(256, 6))
        ys = torch.linspace(-1.0, 1.0, grid[0])
        xs = torch.linspace(-1.0, 1.0, grid[1])
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("positions", torch.stack([grid_x, grid_y])[None], persistent=False)
        with torch.no_grad():  # start at the identity rotation
            self.fc[-1].weight.mul_(0.01)
            self.fc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))

    def forward(self, mask_logits: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        probability = mask_logits.sigmoid()[:, None]
        positions = self.positions.expand(mask_logits.shape[0], -1, -1, -1).to(coordinates.dtype)
        return self.fc(self.convs(torch.cat([coordinates * probability, probability, positions], dim=1)))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def rotation_from_shape_and_class(rotation_shape: torch.Tensor, class_index: torch.Tensor,
                                  group: torch.Tensor) -> torch.Tensor:
    """Full rotation from one regressed up to the group and the class of its canonical equivalent:
    with C = R_shape @ S_canonical(R_shape) and the ground-truth canonical C = R @ S_c, R = C @ S_c^T."""
    canonical = rotation_shape @ group[canonical_index(rotation_shape, group)]
    return canonical @ group[class_index].transpose(-1, -2)
