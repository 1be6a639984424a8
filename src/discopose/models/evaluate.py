"""A network over a dataset (used while training) and the pose metrics, summaries and chance levels that
every evaluation shares; the whole estimator's evaluation (``discopose eval``) is :mod:`discopose.evaluation`."""
from __future__ import annotations


import numpy as np
import torch

from discopose.datasets.loader import make_loader
from discopose.datasets.reader import DatasetInfo
from discopose.decoding import decode_position, reported_rotation
from discopose.geometry.rotations_torch import canonical_index
from discopose.models.metrics import pose_errors, rotation_errors_deg, summarize
from discopose.render.config import WORKING_VOLUME_M

# P(angle < k sigma) for the norm of a 3-dof isotropic Gaussian (chi distribution, 3 dof).
CHI3_WITHIN = {1: 0.1987, 2: 0.7385}
NORMAL_WITHIN = {1: 0.6827, 2: 0.9545}


@torch.no_grad()
def predict_dataset(model, info: DatasetInfo, batch_size: int = 32, limit: int | None = None,
                    device: str = "cpu", num_workers: int = 1) -> dict:
    """The network's predictions on every camera view (in index order) as the network sees it (its
    model view: the locator's camera or an exact crop), decoded to metres, with the ground truth."""
    model.eval()
    spec = model.spec
    views = info.num_samples * len(info.camera_names)
    # A worker process overlaps decoding with the network; for a batch or two (a training's per-epoch validation
    # of val_limit views) its start costs more than it saves.
    small = min(views, limit or views) <= 2 * batch_size
    loader = make_loader(info, spec, batch_size, train=False, num_workers=0 if small else num_workers)
    out: dict = {k: [] for k in ("position_m", "rotation", "position_sigma_m", "rotation_sigma_rad",
                                 "true_position_m", "true_rotation", "index", "visible_fraction", "distance_m",
                                 "dense_rotation", "dense_position_m", "pnp_rotation", "class_correct",
                                 "mask_iou", "coordinates_mm")}
    group = torch.tensor(spec.shape_rotations, dtype=torch.float32)
    symmetries = info.symmetry.matrices()  # the surface points' error is the minimum over them, as trained
    seen = 0
    for images, target in loader:
        prediction = {k: v.float().cpu().numpy() for k, v in model(images.to(device)).items()}
        if len(group):  # the markings' class, labelled as training labels it
            out["class_correct"].extend((prediction["symmetry_logits"].argmax(1) ==
                                         canonical_index(target["rotation"].float(), group).numpy()).tolist())
        for i, K in enumerate(target["K"].numpy().astype(float)):
            position, covariance = decode_position(prediction["position_uvz"][i], prediction["position_log_var"][i],
                                                   K, spec)
            out["position_m"].append(position)
            out["position_sigma_m"].append(np.sqrt(np.diag(covariance)))
            if spec.dense:
                # What the estimator reports: the position above, the rotation with the dense head's PnP.
                rotation, pnp, _ = reported_rotation(prediction["rotation"][i].astype(float),
                                                     prediction["mask_logits"][i], prediction["coordinates"][i],
                                                     K, spec)
                out["dense_rotation"].append(rotation)
                out["dense_position_m"].append(position)
                out["pnp_rotation"].append(np.full((3, 3), np.nan) if pnp is None else pnp[:3, :3])
                out["mask_iou"].append(_mask_iou(prediction["mask_logits"][i], target["dense_mask"][i].numpy()))
                out["coordinates_mm"].append(_coordinates_error_mm(prediction["coordinates"][i],
                                                                   target["dense_coordinates"][i].numpy(),
                                                                   target["dense_mask"][i].numpy(), spec, symmetries))
        out["rotation"].append(prediction["rotation"])
        out["rotation_sigma_rad"].append(np.exp(0.5 * prediction["rotation_log_var"]))
        out["true_position_m"].append(target["position_m"].numpy())
        out["true_rotation"].append(target["rotation"].numpy())
        for k in ("index", "visible_fraction", "distance_m"):
            out[k].append(np.asarray(target[k]))
        seen += len(images)
        if limit and seen >= limit:
            break
    stacked = {k: np.asarray(v) if k in ("class_correct", "mask_iou", "coordinates_mm")
               else np.stack(v) if k in ("position_m", "position_sigma_m", "dense_rotation", "dense_position_m",
                                         "pnp_rotation")
               else np.concatenate(v) for k, v in out.items() if v}
    return {k: v[:limit] for k, v in stacked.items()}


def _mask_iou(mask_logits: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the predicted object cells with the true ones, over cells whose truth is known; NaN (unknown)
    when no cell's truth is known (crops rendered without depth, remapped views), never a score."""
    known = mask >= 0
    if not known.any():
        return float("nan")
    predicted, true = (mask_logits > 0) & known, (mask > 0.5) & known
    union = (predicted | true).sum()
    return float((predicted & true).sum() / union) if union else 1.0


def _coordinates_error_mm(coordinates: np.ndarray, true_coordinates: np.ndarray, mask: np.ndarray, spec,
                          symmetries: np.ndarray) -> float:
    """Mean distance (mm) between the predicted and true surface points over the true object cells, the
    minimum over the object's ``symmetries`` (M, 3, 3) as :func:`discopose.models.losses.dense_loss` trains it
    (under an equivalent pose R @ S a point p shows as S^T p); NaN (unknown) without any such cell."""
    cells = mask > 0.5
    if not cells.any():
        return float("nan")
    candidates = np.einsum("mji,jn->min", symmetries, true_coordinates[:, cells])  # S^T p for every S
    distance = np.linalg.norm(coordinates[None, :, cells] - candidates, axis=1).mean(1).min()
    return float(distance * spec.object_diameter_m / 2 * 1000)


def _known_median(values) -> float | None:
    """Median of the known (finite) values; None when none is known."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def head_errors(predictions: dict, meta: dict, chance: dict) -> dict:
    """Each head of a network judged alone on ``predictions`` (from :func:`predict_dataset`), beside ``chance``
    (:func:`chance_levels` of the same samples): position; the regressed rotation, the dense head's PnP rotation
    and the reported one (their combination), each in full and up to the shape's symmetry (what the geometry
    alone tells); the markings' class; the dense mask (IoU) and surface coordinates (mm), None where no
    sample's dense truth is known. A PnP that finds no pose counts as an infinite error, so a head that fails
    shows in its median. Medians; degrees and millimetres."""
    from discopose.geometry.symmetry import Symmetry
    own = Symmetry.from_dict(meta["object"]["symmetry"]).matrices()
    shape_description = meta["object"].get("shape_symmetry") or meta["object"]["symmetry"]
    shape = Symmetry.from_dict(shape_description).matrices()
    truth = predictions["true_rotation"]

    def rotation_medians(rotations: np.ndarray) -> dict:
        # More failures than successes: the median is no angle at all (None in JSON).
        finite_or_none = lambda value: float(value) if np.isfinite(value) else None  # noqa: E731
        return {"re_deg": finite_or_none(np.median(rotation_errors_deg(rotations, truth, own))),
                "re_shape_deg": finite_or_none(np.median(rotation_errors_deg(rotations, truth, shape))),
                "found_frac": float((~np.isnan(rotations).any(axis=(1, 2))).mean())}

    heads = {"position_te_mm": float(np.median(np.linalg.norm(predictions["position_m"] -
                                                              predictions["true_position_m"], axis=1)) * 1000),
             "regressed": rotation_medians(predictions["rotation"]),
             # A fixed rotation's error; up to the shape, that error under the shape's group where it differs.
             "chance": {"re_deg": chance["re_deg_median"],
                        "re_shape_deg": chance.get("re_shape_deg_median", chance["re_deg_median"])}}
    if "pnp_rotation" in predictions:
        heads["pnp"] = rotation_medians(predictions["pnp_rotation"])
        heads["reported"] = rotation_medians(predictions["dense_rotation"])
    if "mask_iou" in predictions:
        heads["mask_iou"] = _known_median(predictions["mask_iou"])
        heads["coordinates_mm"] = _known_median(predictions["coordinates_mm"])
    if "class_correct" in predictions:
        heads["class_accuracy"] = float(np.mean(predictions["class_correct"]))
        heads["chance"]["class_accuracy"] = 1.0 / len(shape)
    return heads


def format_head_errors(heads: dict) -> str:
    """One line: every head's error, chance in brackets."""
    from discopose.models.report import format_rotation_heads
    chance = heads["chance"]
    parts = [f"position {heads['position_te_mm']:.1f} mm", format_rotation_heads(heads)]
    if "class_accuracy" in heads:
        parts.append(f"class {100 * heads['class_accuracy']:.0f}% [chance {100 * chance['class_accuracy']:.0f}%]")
    if "mask_iou" in heads:
        known = lambda value, digits: "unknown" if value is None else f"{value:.{digits}f}"  # noqa: E731
        parts.append(f"mask IoU {known(heads['mask_iou'], 2)}, surface points {known(heads['coordinates_mm'], 1)} mm")
    if "pnp" in heads:
        parts.append(f"PnP found {100 * heads['pnp']['found_frac']:.0f}%")
    return ", ".join(parts)


def mean_pose_baseline(train_positions: np.ndarray, count: int) -> dict:
    """The pose a model that ignores the image would predict: the mean *training* position and the
    identity rotation (under uniform random rotations every fixed rotation is equally good: chance)."""
    return {"position_m": np.repeat(np.asarray(train_positions, float).reshape(1, 3), count, 0),
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
        group = Symmetry.from_dict(shape).matrices()
        # The error if the markings were ignored: how well the geometry alone was read.
        shape_errors = rotation_errors_deg(predictions["rotation"], predictions["true_rotation"], group)
        summary["re_shape_deg"] = {"mean": float(shape_errors.mean()), "median": float(np.median(shape_errors)),
                                   "p90": float(np.percentile(shape_errors, 90))}
    if "position_sigma_m" in predictions and errors:
        abs_error = np.abs(predictions["position_m"] - predictions["true_position_m"])
        sigma = predictions["position_sigma_m"]
        angle = np.radians([e["re_deg"] for e in errors])
        rot_sigma = predictions["rotation_sigma_rad"]
        low = predictions["visible_fraction"] < 0.5
        summary["uncertainty"] = {
            "position_within_1sigma": float((abs_error < sigma).mean()),
            "position_within_1sigma_per_axis": (abs_error < sigma).mean(0).tolist(),
            "position_within_2sigma": float((abs_error < 2 * sigma).mean()),
            "position_expected": NORMAL_WITHIN,
            "rotation_within_1sigma": float((angle < rot_sigma).mean()),
            "rotation_within_2sigma": float((angle < 2 * rot_sigma).mean()),
            "rotation_expected": CHI3_WITHIN,
            "median_position_sigma_mm": float(np.median(sigma) * 1000),
            "median_rotation_sigma_deg": float(np.degrees(np.median(rot_sigma))),
            # Stated uncertainty should rise where the object is hard to see.
            "median_position_sigma_mm_visible_lt_0.5": float(np.median(sigma[low]) * 1000) if low.any() else None,
            "median_position_sigma_mm_visible_ge_0.5": float(np.median(sigma[~low]) * 1000) if (~low).any() else None,
        }
    if "valid" in predictions and errors:
        summary["validity"] = validity_summary(errors, predictions["valid"], predictions["confidence"])
    return errors, summary


# Camera-object distance bins (metres) for errors, validity and coverage by distance: the rig's 0.25 m and how
# people and robot cells place webcams, out to beyond the 1 m a user might try.
# 0.25, 0.6 and 1.0 m each sit in a bin; 0.12-0.15 and 1.0-1.3 are trained on but outside the working volume.
DISTANCE_BINS_M = (0.0, 0.12, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.85, 1.0, 1.3, float("inf"))
# Near, middle and far thirds of the working volume, equal in log distance.
VOLUME_THIRDS_M = tuple(float(v) for v in np.geomspace(*WORKING_VOLUME_M, 4))


def by_distance(errors: list[dict], predictions: dict, bins_m=DISTANCE_BINS_M) -> list[dict]:
    """Per non-empty distance bin (the first camera's distance to the object): count, median errors, and,
    where the predictions carry them, how often the position 1 sigma covers the error (the three axes'
    shares averaged) and the validity flag's shares (good poses kept valid, gross errors flagged)."""
    distance = np.asarray(predictions["distance_m"], float)
    te_mm = np.array([e["te_mm"] for e in errors])
    re_deg = np.array([e["re_deg"] for e in errors])
    rows = []
    for low, high in zip(bins_m[:-1], bins_m[1:]):
        inside = (distance >= low) & (distance < high)
        if not inside.any():
            continue
        row = {"distance_m": [low, None if np.isinf(high) else high], "count": int(inside.sum()),
               "te_mm_median": float(np.median(te_mm[inside])), "re_deg_median": float(np.median(re_deg[inside])),
               "te_mm_p90": float(np.percentile(te_mm[inside], 90)),
               # Position error as a share of the distance: what a camera farther away can be asked for.
               "te_rel_median": float(np.median(te_mm[inside] / (1000 * distance[inside])))}
        if "position_sigma_m" in predictions:
            abs_error = np.abs(predictions["position_m"][inside] - predictions["true_position_m"][inside])
            row["position_within_1sigma"] = float((abs_error < predictions["position_sigma_m"][inside]).mean())
        if "valid" in predictions:
            validity = validity_summary([e for e, keep in zip(errors, inside) if keep],
                                        np.asarray(predictions["valid"])[inside],
                                        np.asarray(predictions["confidence"])[inside])
            row.update({k: validity[k] for k in ("valid_frac", "good_valid_frac", "gross_invalid_frac", "gross_count")})
        rows.append(row)
    return rows


def validity_summary(errors: list[dict], valid: np.ndarray, confidence: np.ndarray) -> dict:
    """How well ``valid`` separates good poses (<= 10 mm and <= 15 deg) from gross errors (> 25 mm or
    > 30 deg), and the errors of the poses it lets through."""
    from discopose.models.metrics import GOOD_POSITION_M, GOOD_ROTATION_DEG, GROSS_POSITION_M, GROSS_ROTATION_DEG
    te_mm = np.array([e["te_mm"] for e in errors])
    re_deg = np.array([e["re_deg"] for e in errors])
    valid = np.asarray(valid, bool)
    good = (te_mm <= 1000 * GOOD_POSITION_M) & (re_deg <= GOOD_ROTATION_DEG)
    gross = (te_mm > 1000 * GROSS_POSITION_M) | (re_deg > GROSS_ROTATION_DEG)
    share = lambda mask: float(mask.mean()) if mask.size else None  # noqa: E731
    return {
        "valid_frac": share(valid), "good_count": int(good.sum()), "gross_count": int(gross.sum()),
        "good_valid_frac": share(valid[good]), "gross_invalid_frac": share(~valid[gross]),
        "confidence_median": float(np.median(confidence)),
        "valid_te_mm_median": float(np.median(te_mm[valid])) if valid.any() else None,
        "valid_te_mm_p90": float(np.percentile(te_mm[valid], 90)) if valid.any() else None,
        "valid_re_deg_median": float(np.median(re_deg[valid])) if valid.any() else None,
        "valid_re_deg_p90": float(np.percentile(re_deg[valid], 90)) if valid.any() else None,
    }


def chance_levels(predictions: dict, meta: dict, points_m: np.ndarray, symmetries: np.ndarray,
                  train_position_m) -> dict:
    """What knowing nothing scores on these samples: the mean-pose baseline (mean training position,
    a fixed rotation). Its rotation error is chance for uniformly random orientations."""
    baseline_pose = mean_pose_baseline(train_position_m, len(predictions["true_position_m"]))
    _, baseline = compute_metrics({**baseline_pose, "true_position_m": predictions["true_position_m"],
                                   "true_rotation": predictions["true_rotation"],
                                   "visible_fraction": predictions["visible_fraction"]}, meta, points_m, symmetries)
    levels = {"te_mm_median": baseline["te_mm"]["median"], "re_deg_median": baseline["re_deg"]["median"],
              "re<30deg": baseline["success"]["re<30deg"]}
    if "re_shape_deg" in baseline:
        levels["re_shape_deg_median"] = baseline["re_shape_deg"]["median"]
    return levels
