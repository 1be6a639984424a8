"""Training losses: pose error (symmetry-aware geodesic + position) and uncertainty (Gaussian NLL)."""
from __future__ import annotations

import torch

from discopose.geometry.rotations_torch import symmetric_geodesic_angle


def pose_loss(prediction: dict, position_m: torch.Tensor, rotation: torch.Tensor, symmetries: torch.Tensor,
              position_scale_m: float, shape_rotations: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Returns (loss, parts). The pose terms drive the pose; the NLL terms see detached errors, so the
    uncertainty heads learn how large the errors are without letting them down-weight hard samples."""
    angle, _ = symmetric_geodesic_angle(prediction["rotation"], rotation, symmetries)
    classify = "symmetry_logits" in prediction
    regressed = prediction["rotation_shape"] if classify else prediction["rotation"]
    group = shape_rotations if classify else symmetries
    # Geodesic angle to the nearest equivalent under the group (exact, constant pull to the optimum)
    # plus the chordal distance, whose smooth gradient keeps early training off the geodesic's plateaus.
    regressed_angle, nearest_index = symmetric_geodesic_angle(regressed, rotation, group)
    nearest = rotation @ group[nearest_index]
    chordal = ((regressed - nearest) ** 2).sum((-1, -2))
    position_error = prediction["position_m"] - position_m
    # Smooth L1 in units of the position scale: robust early, quadratic near the optimum.
    position_term = torch.nn.functional.smooth_l1_loss(position_error / position_scale_m,
                                                       torch.zeros_like(position_error), beta=0.1)
    rotation_term = regressed_angle.mean() + 0.25 * chordal.mean()
    log_var_p = prediction["position_log_var"]
    nll_position = 0.5 * (position_error.detach() ** 2 * torch.exp(-log_var_p) + log_var_p).sum(-1).mean()
    log_var_r = prediction["rotation_log_var"]
    # Rotation error as a 3-dof isotropic Gaussian on the axis-angle vector.
    nll_rotation = (0.5 * angle.detach() ** 2 * torch.exp(-log_var_r) + 1.5 * log_var_r).mean()
    loss = position_term + rotation_term + 0.01 * (nll_position + nll_rotation)
    parts = {"position": position_term.detach(), "rotation_rad": angle.mean().detach(),
             "nll_position": nll_position.detach(), "nll_rotation": nll_rotation.detach()}
    if classify:
        # Which equivalent the markings show: regressed ~ rotation @ S_k, so rotation = regressed @ S_k^T.
        classification = torch.nn.functional.cross_entropy(prediction["symmetry_logits"], nearest_index)
        loss = loss + 0.5 * classification
        parts["classification"] = classification.detach()
    return loss, parts
