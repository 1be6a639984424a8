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
    shape = meta["object"].get("shape_symmetry")
    if shape and shape["kind"] not in ("none", meta["object"]["symmetry"]["kind"]) and errors:
        from discopose.geometry.symmetry import Symmetry
        from discopose.models.metrics import re
        group = Symmetry.from_dict(shape).matrices()
        # The error if the markings were ignored: how well the geometry alone was read.
        shape_errors = np.array([re(r, g, group) for r, g in zip(predictions["rotation"], predictions["true_rotation"])])
        summary["re_shape_deg"] = {"mean": float(shape_errors.mean()), "median": float(np.median(shape_errors)),
                                   "p90": float(np.percentile(shape_errors, 90))}
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


def evaluate_checkpoint(model_path: str, data: str | None, out: str, bop: str | None = None, limit: int | None = None,
                        batch_size: int = 32, worst: int = 16) -> dict:
    """``discopose eval``: metrics.json + report.html for a checkpoint on a dataset or a BOP folder."""
    import tempfile

    from discopose.datasets.loader import check_compatible
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.geometry.symmetry import Symmetry
    from discopose.models.checkpoint import load_checkpoint
    from discopose.models.report import overlay_prediction, predicted_transforms, write_report

    model, meta = load_checkpoint(model_path)
    tmp = None
    if bop:
        if len(meta["camera_names"]) != 1 or meta["pose_frame"] != "camera":
            from discopose._errors import DiscoposeError
            raise DiscoposeError("BOP evaluation needs a one-camera model predicting in the camera frame "
                                 "(train with one camera and pose_frame auto or camera)")
        from discopose.datasets.bop import bop_to_shards
        tmp = tempfile.TemporaryDirectory(prefix="discopose-bop-")
        data = bop_to_shards(bop, tmp.name, meta["camera_names"][0], meta["object"])
    info = open_dataset(data)
    check_compatible(info, {**meta, "dataset_format_version": info.manifest["format_version"]} if bop else meta)
    predictions = predict_dataset(model, info, batch_size=batch_size, limit=limit)
    symmetries = Symmetry.from_dict(meta["object"]["symmetry"]).matrices()
    points = np.asarray(meta["object"]["surface_points_m"])
    errors, summary = compute_metrics(predictions, meta, points, symmetries)
    baseline_pose = mean_pose_baseline(predictions["true_position_m"], len(errors))
    _, baseline = compute_metrics({**baseline_pose, "true_position_m": predictions["true_position_m"],
                                   "true_rotation": predictions["true_rotation"]}, meta, points, symmetries)
    baseline = {"te_mm_median": baseline["te_mm"]["median"], "re_deg_median": baseline["re_deg"]["median"]}

    order = np.argsort([-e["adds_mm" if len(symmetries) > 1 else "add_mm"] for e in errors])[:worst]
    wanted = {int(predictions["index"][i]): i for i in order}
    transforms = predicted_transforms(predictions)
    keypoints = np.asarray(meta["object"]["keypoints_m"])
    views = {}
    for sample in iter_samples(info):
        i = wanted.get(sample["labels"]["index"])
        if i is not None:
            camera = meta["camera_names"][0]
            views[i] = overlay_prediction(sample["views"][camera]["rgb"], sample["labels"], camera, transforms[i],
                                          meta["pose_frame"], keypoints)
        if len(views) == len(wanted):
            break
    write_report(out, errors, summary, predictions, meta, title=f"discopose eval: {model_path} on {bop or data}",
                 worst_views=[views[i] for i in order if i in views], baseline=baseline)
    if tmp is not None:
        tmp.cleanup()
    return {"summary": summary, "baseline": baseline}
