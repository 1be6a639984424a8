"""Rotation representations in torch (batched), cross-checked against the numpy functions in tests.

The network predicts the continuous 6D representation of Zhou et al. (CVPR 2019): the first two
columns of the rotation matrix, orthonormalized by Gram-Schmidt.
"""
from __future__ import annotations

import torch


def matrix_from_rotation_6d(rotation_6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3); the 6 numbers are the first and second columns, unnormalized."""
    a, b = rotation_6d[..., :3], rotation_6d[..., 3:6]
    x = torch.nn.functional.normalize(a, dim=-1)
    y = torch.nn.functional.normalize(b - (x * b).sum(-1, keepdim=True) * x, dim=-1)
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def rotation_6d_from_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns."""
    return torch.cat([rotation[..., :, 0], rotation[..., :, 1]], dim=-1)


def geodesic_angle(rotation_a: torch.Tensor, rotation_b: torch.Tensor) -> torch.Tensor:
    """Angle in radians between rotations, (..., 3, 3) x (..., 3, 3) -> (...).

    Uses atan2 of the skew and trace parts, which keeps gradients finite at 0 and pi (acos does not).
    """
    relative = rotation_a.transpose(-1, -2) @ rotation_b
    trace = relative[..., 0, 0] + relative[..., 1, 1] + relative[..., 2, 2]
    skew = torch.stack([relative[..., 2, 1] - relative[..., 1, 2], relative[..., 0, 2] - relative[..., 2, 0],
                        relative[..., 1, 0] - relative[..., 0, 1]], dim=-1)
    return torch.atan2(skew.norm(dim=-1).clamp_min(1e-12), trace - 1.0)


def symmetric_geodesic_angle(predicted: torch.Tensor, target: torch.Tensor, symmetries: torch.Tensor):
    """Minimum angle over the symmetry group: min_S angle(predicted, target @ S).

    predicted, target: (B, 3, 3); symmetries: (M, 3, 3). Returns (angle (B,), best index (B,)).
    """
    candidates = target[:, None] @ symmetries[None]  # (B, M, 3, 3)
    angles = geodesic_angle(predicted[:, None].expand_as(candidates), candidates)
    best, index = angles.min(dim=1)
    return best, index


def canonical_index(rotation: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Index k of the group element that brings ``rotation @ group[k]`` closest to the identity.

    ``rotation @ group[k]`` is the one representative of the rotation's class under the group that
    depends on the class alone (ties aside), so ``argmax_k`` is a label from ground truth only.
    (B, 3, 3), (M, 3, 3) -> (B,) long.
    """
    traces = torch.einsum("bij,mji->bm", rotation, group)  # trace(R @ S_m)
    return traces.argmax(dim=1)
