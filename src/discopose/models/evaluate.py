"""Run a model over a dataset and compute the pose metrics (``discopose eval``)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from discopose._errors import DiscoposeError
from discopose._io import atomic_write_text
from discopose.datasets.loader import make_loader
from discopose.datasets.reader import DatasetInfo
from discopose.geometry.transforms import make_transform
from discopose.models.metrics import pose_errors, summarize
from discopose.decoding import decode_position, reported_rotation

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
    loader = make_loader(info, spec, batch_size, train=False, num_workers=num_workers)
    out: dict = {k: [] for k in ("position_m", "rotation", "position_sigma_m", "rotation_sigma_rad",
                                 "true_position_m", "true_rotation", "index", "visible_fraction", "distance_m",
                                 "dense_rotation", "dense_position_m")}
    seen = 0
    for images, target in loader:
        prediction = {k: v.float().cpu().numpy() for k, v in model(images.to(device)).items()}
        for i, K in enumerate(target["K"].numpy().astype(float)):
            position, covariance = decode_position(prediction["position_uvz"][i], prediction["position_log_var"][i],
                                                   K, spec)
            out["position_m"].append(position)
            out["position_sigma_m"].append(np.sqrt(np.diag(covariance)))
            if spec.dense:
                # What the estimator reports: the position above, the rotation with the dense head's PnP.
                out["dense_rotation"].append(reported_rotation(prediction["rotation"][i].astype(float),
                                                               prediction["mask_logits"][i],
                                                               prediction["coordinates"][i], K, spec))
                out["dense_position_m"].append(position)
        out["rotation"].append(prediction["rotation"])
        out["rotation_sigma_rad"].append(np.exp(0.5 * prediction["rotation_log_var"]))
        out["true_position_m"].append(target["position_m"].numpy())
        out["true_rotation"].append(target["rotation"].numpy())
        for k in ("index", "visible_fraction", "distance_m"):
            out[k].append(np.asarray(target[k]))
        seen += len(images)
        if limit and seen >= limit:
            break
    stacked = {k: np.stack(v) if k in ("position_m", "position_sigma_m", "dense_rotation", "dense_position_m")
               else np.concatenate(v) for k, v in out.items() if v}
    return {k: v[:limit] for k, v in stacked.items()}


def _bop_scene_image(labels: dict) -> tuple[int, int]:
    """(scene_id, im_id) of a sample: its BOP source image's for imported BOP scenes, else scene 0 and the
    sample index, the ids ``discopose bop-export`` gives it."""
    source = (labels.get("params") or {}).get("bop")
    if source:
        path = Path(source)
        try:
            return int(path.parent.parent.name), int(path.stem)
        except ValueError:
            pass
    return 0, int(labels["index"])


def write_bop_results(path: str | Path, predictions: dict, obj_id: int) -> Path:
    """A BOP19 results file (``scene_id,im_id,obj_id,score,R,t,time``: R row-major, t in mm, time in s per
    image) of camera-frame poses; score is the estimator's confidence."""
    lines = ["scene_id,im_id,obj_id,score,R,t,time"]
    for (scene, image), rotation, position, confidence, seconds in zip(
            predictions["bop_scene_image"], predictions["rotation"], predictions["position_m"],
            predictions["confidence"], predictions["seconds"]):
        r = " ".join(f"{v:.8f}" for v in np.asarray(rotation).ravel())
        t = " ".join(f"{v:.4f}" for v in np.asarray(position) * 1000)
        lines.append(f"{int(scene)},{int(image)},{obj_id},{float(confidence):.6f},{r},{t},{float(seconds):.4f}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def predict_with_estimator(estimator, info: DatasetInfo, limit: int | None = None, fuse: bool = True,
                           views_out: dict | None = None) -> dict:
    """The estimator's predictions on every sample (full frames, each camera's own K), with the truth.

    One camera: camera-frame poses. Several: with ``fuse`` the world-frame pose fused from all cameras
    with their labelled extrinsics, else the first camera's own camera-frame pose. ``views_out``,
    when given, collects each sample's first-camera image and labels by index (for overlays).
    """
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.reader import iter_samples
    from discopose.geometry.transforms import invert_transform
    keys = ("position_m", "rotation", "position_sigma_m", "rotation_sigma_rad", "true_position_m", "true_rotation",
            "index", "visible_fraction", "distance_m", "valid", "confidence", "seconds", "bop_scene_image")
    out: dict = {k: [] for k in keys}
    for sample in iter_samples(info, limit=limit):
        start = time.perf_counter()
        labels = sample["labels"]
        names = list(labels["cameras"])
        cameras = {name: camera_from_labels(name, cam) for name, cam in labels["cameras"].items()}
        first = labels["cameras"][names[0]]
        if fuse and len(names) > 1:
            pose = estimator.predict({n: sample["views"][n]["rgb"] for n in names}, camera=cameras)
            truth = np.asarray(labels["world_from_object"], float)
        else:
            pose = estimator.predict(sample["views"][names[0]]["rgb"], camera=cameras[names[0]])
            truth = np.asarray(first["camera_from_object"], float)
        out["seconds"].append(time.perf_counter() - start)
        out["bop_scene_image"].append(_bop_scene_image(labels))
        out["position_m"].append(pose.position_m)
        out["rotation"].append(pose.rotation)
        out["position_sigma_m"].append(pose.position_sigma_m)
        out["rotation_sigma_rad"].append(np.radians(pose.rotation_sigma_deg))
        out["valid"].append(bool(pose.valid))
        out["confidence"].append(float(pose.confidence))
        out["true_position_m"].append(truth[:3, 3])
        out["true_rotation"].append(truth[:3, :3])
        out["index"].append(labels["index"])
        out["visible_fraction"].append(float(first["visible_fraction"]))
        out["distance_m"].append(float(np.linalg.norm(np.asarray(first["camera_from_object"])[:3, 3])))
        if views_out is not None:
            camera_from_frame = invert_transform(np.asarray(first["world_from_camera"])) \
                if pose.frame == "world" else np.eye(4)
            views_out[labels["index"]] = (sample["views"][names[0]]["rgb"], first, camera_from_frame)
    return {k: np.asarray(v) for k, v in out.items()}


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


def validity_summary(errors: list[dict], valid: np.ndarray, confidence: np.ndarray) -> dict:
    """How well ``valid`` separates good poses (<= 10 mm and <= 15 deg) from gross errors (> 25 mm or
    > 30 deg), and the errors of the poses it lets through."""
    from discopose.estimator.trust import GOOD_POSITION_M, GOOD_ROTATION_DEG, GROSS_POSITION_M, GROSS_ROTATION_DEG
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


def evaluate_checkpoint(model_path: str, data: str | None, out: str, bop: str | None = None, limit: int | None = None,
                        worst: int = 16, fuse: bool = True, visible_range: tuple[float, float] | None = None,
                        bop_results: bool = False) -> dict:
    """``discopose eval``: metrics.json + report.html for an estimator on a dataset or a BOP folder.

    Images enter through :meth:`PoseEstimator.predict` with each image's own intrinsics, exactly as a
    user's images would. ``visible_range`` scores only samples whose visible fraction lies in it. With
    ``bop`` (a BOP folder to evaluate on) or ``bop_results``, ``bop_results.csv`` (BOP19 format) is written
    beside ``metrics.json``, whose ``per_sample`` list holds the same poses with their errors.
    Returns ``{"summary", "baseline", "frame", "count"}``.
    """
    import tempfile

    from discopose._io import output_folder
    from discopose.datasets.loader import check_compatible
    from discopose.datasets.reader import check_shards, open_dataset
    from discopose.estimator.api import load
    from discopose.geometry.symmetry import Symmetry
    from discopose.models.report import overlay_prediction, write_report

    output_folder(out)  # a bad ``out`` is refused before the evaluation, not after it
    estimator = load(model_path)
    meta = {**estimator.locator.meta, "object": estimator.object}
    tmp = None
    if bop:
        from discopose.datasets.bop import bop_to_shards
        tmp = tempfile.TemporaryDirectory(prefix="discopose-bop-")
        data = bop_to_shards(bop, tmp.name, "bop", meta["object"])
    try:
        info = open_dataset(data)
        check_shards(info)
        check_compatible(info, {**meta, "dataset_format_version": info.manifest["format_version"]} if bop else meta)
        if (bop or bop_results) and fuse and len(info.camera_names) > 1:
            raise DiscoposeError(f"{data} has {len(info.camera_names)} cameras; BOP results are per image in one "
                                 "camera's frame: add --single-camera (scores the first camera)")
        obj_id = int(info.manifest.get("bop_obj_id") or 1)
        views: dict = {}
        predictions = predict_with_estimator(estimator, info, limit=limit, fuse=fuse, views_out=views)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if visible_range is not None:
        # Score only the views whose (first camera's) visible fraction is in range, e.g. hand-occluded ones.
        low, high = visible_range
        keep = (predictions["visible_fraction"] >= low) & (predictions["visible_fraction"] <= high)
        if not keep.any():
            raise DiscoposeError(f"no sample of {data} has a visible fraction in [{low}, {high}]")
        predictions = {k: v[keep] for k, v in predictions.items()}
    multi = fuse and len(info.camera_names) > 1
    symmetries = Symmetry.from_dict(meta["object"]["symmetry"]).matrices()
    points = np.asarray(meta["object"]["surface_points_m"])
    errors, summary = compute_metrics(predictions, meta, points, symmetries)
    train_mean = meta.get("train_world_position_m_mean" if multi else "train_camera_position_m_mean")
    baseline = chance_levels(predictions, meta, points, symmetries,
                             train_mean if train_mean is not None else predictions["true_position_m"].mean(0))
    baseline["positions_from"] = "training labels" if train_mean is not None else "this test set"

    order = np.argsort([-e["adds_mm" if len(symmetries) > 1 else "add_mm"] for e in errors])[:worst]
    keypoints = np.asarray(meta["object"]["keypoints_m"])
    overlays = []
    for i in order:
        rgb, labels, camera_from_frame = views[int(predictions["index"][i])]
        predicted = camera_from_frame @ make_transform(predictions["rotation"][i], predictions["position_m"][i])
        caption = (f"{errors[i]['te_mm']:.0f} mm {errors[i]['re_deg']:.0f} deg off, "
                   f"stated {1000 * float(np.linalg.norm(predictions['position_sigma_m'][i])):.0f} mm; "
                   f"{'valid' if predictions['valid'][i] else 'INVALID'} {predictions['confidence'][i]:.2f}")
        overlays.append(overlay_prediction(rgb, labels, predicted, keypoints, caption))
    frame = "world (cameras fused)" if multi else "camera"
    per_sample = [{"index": int(predictions["index"][i]), "scene_id": int(predictions["bop_scene_image"][i][0]),
                   "im_id": int(predictions["bop_scene_image"][i][1]), "te_mm": error["te_mm"], "re_deg": error["re_deg"],
                   "valid": bool(predictions["valid"][i]), "confidence": float(predictions["confidence"][i]),
                   "R": np.asarray(predictions["rotation"][i]).ravel().tolist(),
                   "t_mm": (np.asarray(predictions["position_m"][i]) * 1000).tolist()} for i, error in enumerate(errors)]
    write_report(out, errors, summary, predictions, meta, title=f"discopose eval: {model_path} on {bop or data}",
                 worst_views=overlays, baseline=baseline, per_sample=per_sample)
    if bop or bop_results:
        write_bop_results(Path(out) / "bop_results.csv", predictions, obj_id)
    return {"summary": summary, "baseline": baseline, "frame": frame, "count": len(predictions["index"])}
