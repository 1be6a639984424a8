"""Whole-pipeline evaluation (``discopose eval``): the estimator, as users call it, over a dataset or a BOP
folder, scored with the pose metrics of :mod:`discopose.models.evaluate`, into ``metrics.json``,
``report.html`` and, for bop_toolkit, ``bop_results.csv``. Sits above the estimator; the network-level
evaluation used while training stays in ``models/evaluate.py``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from discopose._errors import DiscoposeError
from discopose._io import atomic_write_text
from discopose.datasets.reader import DatasetInfo
from discopose.geometry.transforms import make_transform
from discopose.models.evaluate import VOLUME_THIRDS_M, by_distance, chance_levels, compute_metrics, head_errors


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
    when given, collects each sample's first-camera image and labels by index (for overlays). With an estimator
    that refines, also the networks' pose before the refinement (``network_position_m``, ``network_rotation``)
    and the alignment's ``refine_score``, ``refine_applied``, ``refine_hypothesis`` and ``refine_ms``.
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
        heads = pose.extra.get("head_rotations")
        if heads is not None:  # one camera's pose: each rotation head alone, for per-head errors
            out.setdefault("regressed_rotation", []).append(heads["regressed"])
            out.setdefault("pnp_rotation", []).append(np.full((3, 3), np.nan) if heads["pnp"] is None else heads["pnp"])
        refined = pose.extra.get("refine")
        if refined is not None:
            network = refined["network_frame_from_object"]
            for key, value in (("network_position_m", network[:3, 3]), ("network_rotation", network[:3, :3]),
                               ("refine_score", refined["score"]), ("refine_applied", refined["applied"]),
                               ("refine_hypothesis", -2 if refined["hypothesis"] is None else refined["hypothesis"]),
                               ("refine_ms", refined["time_ms"])):
                out.setdefault(key, []).append(value)
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


def refine_summary(predictions: dict, symmetries: np.ndarray, worse_deg: float = 5.0) -> dict:
    """What the refinement did, against the networks' own pose on the same frames: how often it was taken, the
    networks' errors (what ``refine=False`` gives), and the share of frames it made worse (rotation error up by
    more than ``worse_deg``) with the share of those flagged invalid, beside the share it made better."""
    from discopose.models.metrics import re
    sym = symmetries if len(symmetries) > 1 else None
    truth_rotation, truth_position = predictions["true_rotation"], predictions["true_position_m"]
    network_re = np.array([re(r, t, sym) for r, t in zip(predictions["network_rotation"], truth_rotation)])
    final_re = np.array([re(r, t, sym) for r, t in zip(predictions["rotation"], truth_rotation)])
    network_te = 1000 * np.linalg.norm(predictions["network_position_m"] - truth_position, axis=1)
    final_te = 1000 * np.linalg.norm(predictions["position_m"] - truth_position, axis=1)
    worse = final_re > network_re + worse_deg
    valid = predictions["valid"].astype(bool)
    return {
        "frames": int(len(final_re)), "applied_frac": float(np.mean(predictions["refine_applied"])),
        "score_median": float(np.median(predictions["refine_score"])),
        "ms_median": float(np.median(predictions["refine_ms"])),
        "ms_p90": float(np.percentile(predictions["refine_ms"], 90)),
        "network": {"te_mm_median": float(np.median(network_te)), "te_mm_p90": float(np.percentile(network_te, 90)),
                    "re_deg_median": float(np.median(network_re)), "re_deg_p90": float(np.percentile(network_re, 90))},
        "worse_deg": worse_deg, "worse_frac": float(worse.mean()),
        "worse_flagged_frac": float((~valid[worse]).mean()) if worse.any() else None,
        "better_frac": float((final_re < network_re - worse_deg).mean()),
        "worse_position_5mm_frac": float((final_te > network_te + 5).mean()),
    }


def evaluate_checkpoint(model_path: str, data: str | None, out: str, bop: str | None = None, limit: int | None = None,
                        worst: int = 16, fuse: bool = True, visible_range: tuple[float, float] | None = None,
                        bop_results: bool = False, refine=None, plots: bool = True) -> dict:
    """``discopose eval``: metrics.json + report.html for an estimator on a dataset or a BOP folder.

    Images enter through :meth:`PoseEstimator.predict` with each image's own intrinsics, exactly as a
    user's images would. ``refine`` (True or a :class:`~discopose.refine.RefineConfig`; None: as the estimator
    was calibrated, see :func:`~discopose.estimator.api.load`) evaluates the estimator with its refinement on;
    ``summary["refine"]`` then says what it did (:func:`refine_summary`). Without ``plots`` the report holds its
    tables and worst cases only.
    ``visible_range`` scores only samples whose visible fraction lies in it. With ``bop`` (a BOP folder to
    evaluate on) or ``bop_results``, ``bop_results.csv`` (BOP19 format) is written beside ``metrics.json``,
    whose ``per_sample`` list holds the same poses with their errors.
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
    estimator = load(model_path, refine=refine)
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
    milliseconds = 1000 * predictions["seconds"]
    summary["ms_per_frame"] = {"median": float(np.median(milliseconds)), "mean": float(np.mean(milliseconds)),
                               "p90": float(np.percentile(milliseconds, 90))}
    if "refine_score" in predictions:
        summary["refine"] = refine_summary(predictions, symmetries)
    summary["by_distance"] = by_distance(errors, predictions)
    summary["by_volume_third"] = by_distance(errors, predictions, VOLUME_THIRDS_M)
    train_mean = meta.get("train_world_position_m_mean" if multi else "train_camera_position_m_mean")
    baseline = chance_levels(predictions, meta, points, symmetries,
                             train_mean if train_mean is not None else predictions["true_position_m"].mean(0))
    baseline["positions_from"] = "training labels" if train_mean is not None else "this test set"
    if "pnp_rotation" in predictions and len(predictions["pnp_rotation"]) == len(predictions["rotation"]):
        summary["heads"] = head_errors({**predictions, "rotation": predictions["regressed_rotation"],
                                        "dense_rotation": predictions["rotation"]}, meta, baseline)

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
    if "refine_score" in predictions:  # what the refinement did on each sample
        for i, row in enumerate(per_sample):
            row.update(refine_applied=bool(predictions["refine_applied"][i]),
                       refine_score=float(predictions["refine_score"][i]))
    write_report(out, errors, summary, predictions, meta, title=f"discopose eval: {model_path} on {bop or data}",
                 worst_views=overlays, baseline=baseline, per_sample=per_sample, plots=plots)
    if bop or bop_results:
        write_bop_results(Path(out) / "bop_results.csv", predictions, obj_id)
    return {"summary": summary, "baseline": baseline, "frame": frame, "count": len(predictions["index"])}
