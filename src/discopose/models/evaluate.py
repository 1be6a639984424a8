"""Run a model over a dataset and compute the pose metrics (``discopose eval``)."""
from __future__ import annotations

import numpy as np
import torch

from discopose.datasets.loader import make_loader
from discopose.datasets.reader import DatasetInfo
from discopose.models.metrics import pose_errors, summarize

# P(angle < k sigma) for the norm of a 3-dof isotropic Gaussian (chi distribution, 3 dof).
CHI3_WITHIN = {1: 0.1987, 2: 0.7385}
NORMAL_WITHIN = {1: 0.6827, 2: 0.9545}


@torch.no_grad()
def predict_dataset(model, info: DatasetInfo, batch_size: int = 32, limit: int | None = None,
                    device: str = "cpu", num_workers: int = 1) -> dict:
    """Predictions and ground truth for every sample (in index order), as numpy arrays."""
    model.eval()
    loader = make_loader(info, model.spec, batch_size, train=False, num_workers=num_workers)
    keys = ("position_m", "rotation", "position_log_var", "rotation_log_var")
    out: dict = {k: [] for k in keys + ("true_position_m", "true_rotation", "index", "visible_fraction",
                                         "distance_m")}
    seen = 0
    for images, target in loader:
        prediction = model(images.to(device))
        for k in keys:
            out[k].append(prediction[k].float().cpu().numpy())
        out["true_position_m"].append(target["position_m"].numpy())
        out["true_rotation"].append(target["rotation"].numpy())
        for k in ("index", "visible_fraction", "distance_m"):
            out[k].append(np.asarray(target[k]))
        seen += len(images)
        if limit and seen >= limit:
            break
    arrays = {k: np.concatenate(v)[:limit] if v else np.zeros((0,)) for k, v in out.items()}
    arrays["position_sigma_m"] = np.exp(0.5 * arrays.pop("position_log_var"))
    arrays["rotation_sigma_rad"] = np.exp(0.5 * arrays.pop("rotation_log_var"))
    return arrays


def mean_pose_baseline(train_positions: np.ndarray, count: int) -> dict:
    """The pose a model that ignores the image would predict: mean position, identity rotation (under
    uniform random rotations every fixed rotation has the same error distribution)."""
    return {"position_m": np.repeat(train_positions.mean(0, keepdims=True), count, 0),
            "rotation": np.repeat(np.eye(3)[None], count, 0)}


def compute_metrics(predictions: dict, meta: dict, points_m: np.ndarray, symmetries: np.ndarray) -> tuple[list, dict]:
    """Per-sample errors and the summary (incl. how well the predicted uncertainty is calibrated)."""
    symmetric = len(symmetries) > 1
    errors = [pose_errors(r_est, t_est, r_gt, t_gt, points_m, symmetries if symmetric else None)
              for r_est, t_est, r_gt, t_gt in zip(predictions["rotation"], predictions["position_m"],
                                                  predictions["true_rotation"], predictions["true_position_m"])]
    summary = summarize(errors, meta["object"]["diameter_m"], symmetric)
    if "position_sigma_m" in predictions and errors:
        abs_error = np.abs(predictions["position_m"] - predictions["true_position_m"])
        sigma = predictions["position_sigma_m"]
        angle = np.radians([e["re_deg"] for e in errors])
        rot_sigma = predictions["rotation_sigma_rad"]
        summary["uncertainty"] = {
            "position_within_1sigma": float((abs_error < sigma).mean()),
            "position_within_2sigma": float((abs_error < 2 * sigma).mean()),
            "position_expected": NORMAL_WITHIN,
            "rotation_within_1sigma": float((angle < rot_sigma).mean()),
            "rotation_within_2sigma": float((angle < 2 * rot_sigma).mean()),
            "rotation_expected": CHI3_WITHIN,
            "median_position_sigma_mm": float(np.median(sigma) * 1000),
            "median_rotation_sigma_deg": float(np.degrees(np.median(rot_sigma))),
        }
    return errors, summary
