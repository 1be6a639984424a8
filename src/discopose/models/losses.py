"""Training losses: pose error (symmetry-aware geodesic + position) and uncertainty (Gaussian NLL)."""
from __future__ import annotations

import torch

from discopose.geometry.rotations_torch import canonical_index, symmetric_geodesic_angle

# Scale of the position_uvz errors the smooth L1 works in: 2% of the image, or 2% of depth.
POSITION_SCALE = 0.02


def dense_loss(prediction: dict, mask: torch.Tensor, coordinates: torch.Tensor,
               symmetries: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Object mask (BCE over known cells) and surface coordinates (L1 over object cells, the minimum
    over the object's symmetry group: under an equivalent pose R @ S a point p shows as S^T p)."""
    known = mask >= 0
    mask_term = torch.nn.functional.binary_cross_entropy_with_logits(
        prediction["mask_logits"][known], mask[known]) if known.any() else mask.new_zeros(())
    on_object = (mask > 0.5).float()  # (B, h, w)
    candidates = torch.einsum("mji,bjhw->bmihw", symmetries, coordinates)  # S^T p for every S
    per_pixel = (prediction["coordinates"][:, None] - candidates).abs().sum(2)  # (B, M, h, w)
    per_sample = (per_pixel * on_object[:, None]).sum((-1, -2)) / on_object.sum((-1, -2))[:, None].clamp_min(1)
    has_object = on_object.flatten(1).any(1)
    coordinate_term = per_sample.min(1).values[has_object].mean() if has_object.any() else mask.new_zeros(())
    return mask_term + 3.0 * coordinate_term, {"mask": mask_term.detach(), "coordinates": coordinate_term.detach()}


def pose_loss(prediction: dict, position_uvz: torch.Tensor, rotation: torch.Tensor, symmetries: torch.Tensor,
              shape_rotations: torch.Tensor | None = None,
              reported_rotation_error: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Returns (loss, parts). The pose terms drive the pose; the NLL terms see detached errors, so the
    uncertainty heads learn how large the errors are without letting them down-weight hard samples.
    ``reported_rotation_error`` (radians, for the first samples of the batch): the error of the rotation
    the estimator will report, when that is not this head's own (the dense head's PnP), for the
    rotation uncertainty to describe."""
    log_var_r = prediction["rotation_log_var"]
    if reported_rotation_error is not None:  # given for the first samples of the batch
        angle = reported_rotation_error
        log_var_r = log_var_r[:len(angle)]
    else:
        angle, _ = symmetric_geodesic_angle(prediction["rotation"], rotation, symmetries)
    classify = "symmetry_logits" in prediction
    group = shape_rotations if classify else symmetries
    # A 6D head regresses up to the shape's group (with the class); Patch-PnP regresses the full rotation.
    shape_head = "rotation_shape" in prediction
    regressed = prediction["rotation_shape"] if shape_head else prediction["rotation"]
    equivalents = shape_rotations if shape_head else symmetries
    # Geodesic angle to the nearest equivalent under the group (exact, constant pull to the optimum)
    # plus the chordal distance, whose smooth gradient keeps early training off the geodesic's plateaus.
    regressed_angle, nearest_index = symmetric_geodesic_angle(regressed, rotation, equivalents)
    nearest = rotation @ equivalents[nearest_index]
    chordal = ((regressed - nearest) ** 2).sum((-1, -2))
    rotation_term = regressed_angle.mean() + 0.25 * chordal.mean()
    position_error = prediction["position_uvz"] - position_uvz
    # Smooth L1: robust early, quadratic near the optimum.
    position_term = torch.nn.functional.smooth_l1_loss(position_error / POSITION_SCALE,
                                                       torch.zeros_like(position_error), beta=0.1)
    log_var_p = prediction["position_log_var"]
    nll_position = 0.5 * (position_error.detach() ** 2 * torch.exp(-log_var_p) + log_var_p).sum(-1).mean()
    # Rotation error as a 3-dof isotropic Gaussian on the axis-angle vector.
    nll_rotation = (0.5 * angle.detach() ** 2 * torch.exp(-log_var_r) + 1.5 * log_var_r).mean()
    loss = position_term + rotation_term + 0.05 * (nll_position + nll_rotation)
    parts = {"position": position_term.detach(), "rotation": rotation_term.detach(),
             "rotation_rad": angle.mean().detach(), "nll_position": nll_position.detach(),
             "nll_rotation": nll_rotation.detach()}
    if classify:
        # Which canonical equivalent the markings show, from the ground truth alone.
        label = canonical_index(rotation, group)
        classification = torch.nn.functional.cross_entropy(prediction["symmetry_logits"], label)
        loss = loss + classification
        parts["classification"] = classification.detach()
        parts["class_accuracy"] = (prediction["symmetry_logits"].argmax(1) == label).float().mean().detach()
    return loss, parts
