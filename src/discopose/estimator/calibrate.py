"""Calibrate what an estimator says about itself: its stated uncertainty and its validity flag.

Run on held-out frames of a family the networks were not trained on (other textures and lights,
stronger sensor effects, the hand): calibrating on in-family frames makes the sigmas right where the
networks are already right, and too small everywhere else. The fitted
:class:`~discopose.estimator.trust.TrustModel` is stored in ``estimator.json`` ("trust").
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from discopose._errors import DiscoposeError
from discopose._io import atomic_write_json
from discopose.estimator.trust import (ALIGNMENT_SIGNALS, MIN_VIEWS_PER_SIGMA_FIT, TrustModel, fit_trust,
                                       stated_sigmas)
from discopose.geometry.transforms import rotation_about_axis

log = logging.getLogger(__name__)

# One frame's motion, where the tracker follows from the last frame's pose: a hand turning the cube at up to
# 90 deg/s and moving it at up to 0.15 m/s, seen at 30 fps. The followed poses' sigmas are fitted from it.
FOLLOW_MOTION_DEG = 3.0
FOLLOW_MOTION_M = 0.005


def one_frame_motion(camera_from_object: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``camera_from_object`` turned about the object's origin by up to ``FOLLOW_MOTION_DEG`` and moved by up
    to ``FOLLOW_MOTION_M``, each in a uniformly random direction."""
    moved = np.array(camera_from_object, float)
    axis, step = rng.normal(size=3), rng.normal(size=3)
    moved[:3, :3] = rotation_about_axis(axis / np.linalg.norm(axis),
                                        np.radians(rng.uniform(0, FOLLOW_MOTION_DEG))) @ moved[:3, :3]
    moved[:3, 3] += step / np.linalg.norm(step) * rng.uniform(0, FOLLOW_MOTION_M)
    return moved


def collect_views(estimator, data: str, limit: int | None = None, batch: int = 16) -> dict:
    """Every camera view of ``data`` through ``estimator.predict_views`` (each with its own camera),
    with what the networks stated before calibration, the consistency signals, whether the refinement replaced
    the pose (``refined``; always False for an estimator that does not refine) and the truth. An estimator that
    refines also follows each view from one frame's motion off the truth (:func:`one_frame_motion`): the error
    of what it followed (``followed_error_*``; NaN where it would have run the networks instead), and what the
    same views give with the refinement off, read off the same pass (``network_error_*``, ``network_signals``: the
    networks' pose, and the signals without the alignment's)."""
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.geometry.symmetry import Symmetry
    from discopose.models.metrics import re

    symmetries = Symmetry.from_dict(estimator.object["symmetry"]).matrices()
    rows = {k: [] for k in ("error_position_m", "network_covariance", "position_disagreement_m", "error_rotation_rad",
                            "network_rotation_sigma_rad", "rotation_disagreement_rad", "signals", "position_sigma_m",
                            "rotation_sigma_rad", "confidence", "valid", "refined", "followed_error_position_m",
                            "followed_error_rotation_rad", "network_error_position_m", "network_error_rotation_rad",
                            "network_signals")}
    pending: list = []
    rng = np.random.default_rng(0)
    shape_group = symmetries if len(symmetries) > 1 else None

    def rotation_error_rad(rotation: np.ndarray, truth: np.ndarray) -> float:
        return np.radians(re(rotation, truth[:3, :3], shape_group))

    def flush():
        poses = estimator.predict_views([(image, camera) for image, camera, _ in pending])
        for pose, (_, _, truth) in zip(poses, pending):
            extra = pose.extra
            if "signals" not in extra:
                raise DiscoposeError("calibrating needs a two-stage estimator with a dense crop head (its consistency "
                                     "signals); this one has none")
            rows["error_position_m"].append(pose.position_m - truth[:3, 3])
            rows["network_covariance"].append(extra["network_position_covariance_m2"])
            disagreement = extra["position_disagreement_m"]
            rows["position_disagreement_m"].append(np.full(3, np.nan) if disagreement is None else disagreement)
            rows["error_rotation_rad"].append(rotation_error_rad(pose.rotation, truth))
            rows["network_rotation_sigma_rad"].append(extra["network_rotation_sigma_rad"])
            angle = extra["rotation_disagreement_rad"]
            rows["rotation_disagreement_rad"].append(np.nan if angle is None else angle)
            rows["signals"].append(extra["signals"])
            rows["position_sigma_m"].append(pose.position_sigma_m)
            rows["rotation_sigma_rad"].append(np.radians(pose.rotation_sigma_deg))
            rows["confidence"].append(pose.confidence)
            rows["valid"].append(pose.valid)
            rows["refined"].append(bool(extra.get("refine", {}).get("applied", False)))
            network = extra["refine"]["network_frame_from_object"] if "refine" in extra else pose.frame_from_object
            rows["network_error_position_m"].append(network[:3, 3] - truth[:3, 3])
            rows["network_error_rotation_rad"].append(rotation_error_rad(network[:3, :3], truth))
            rows["network_signals"].append({k: v for k, v in extra["signals"].items() if k not in ALIGNMENT_SIGNALS})
        for image, camera, truth in pending:
            followed = estimator.follow_alignment([(image, camera)], one_frame_motion(truth, rng))
            if followed is None:
                rows["followed_error_position_m"].append(np.full(3, np.nan))
                rows["followed_error_rotation_rad"].append(np.nan)
                continue
            aligned = followed.frame_from_object
            rows["followed_error_position_m"].append(aligned[:3, 3] - truth[:3, 3])
            rows["followed_error_rotation_rad"].append(rotation_error_rad(aligned[:3, :3], truth))
        pending.clear()

    for sample in iter_samples(open_dataset(data), limit=limit):
        for name, labels in sample["labels"]["cameras"].items():
            pending.append((sample["views"][name]["rgb"], camera_from_labels(name, labels), np.asarray(labels["camera_from_object"], float)))
            if len(pending) >= batch:
                flush()
    if pending:
        flush()
    if not rows["signals"]:
        raise DiscoposeError(f"{data} holds no samples to calibrate on")
    return {k: (v if k.endswith("signals") else np.asarray(v)) for k, v in rows.items()}


def calibrate_estimator(folder: str | Path, data: str, limit: int | None = 400, refine=False) -> TrustModel:
    """Fit the trust model of the estimator in ``folder`` on the frames of ``data`` and store it.

    ``refine`` (True or a :class:`~discopose.refine.RefineConfig`): calibrate the estimator as it runs with the
    refinement on: the alignment's score joins the validity model's signals and refined poses get sigmas of
    their own; ``load()`` then refines by default. A second model, fitted on the same frames with the refinement
    off, is stored beside it ("trust_networks") for an estimator loaded with ``refine=False``: the refined model
    leans on the alignment's score, and without it would call nearly every pose invalid."""
    trust, networks = _fit_trust(folder, data, limit, refine)
    index_path = Path(folder) / "estimator.json"
    index = json.loads(index_path.read_text())
    index.pop("uncertainty_scale", None)
    index.pop("trust_networks", None)
    if networks is not None:
        index["trust_networks"] = networks.to_dict()
    atomic_write_json(index_path, {**index, "trust": trust.to_dict()})
    report = trust.fit_report
    log.info("trust calibrated on %s (%d views): position sigma x%.2f + %.2f x disagreement, rotation sigma x%.2f + "
             "%.2f x disagreement; %s good views valid, %s of the others flagged", data, trust.samples,
             trust.position_scale, trust.position_disagreement, trust.rotation_scale, trust.rotation_disagreement,
             f"{100 * report['good_valid']:.0f}%" if "good_valid" in report else "all",
             f"{100 * report['not_good_invalid']:.0f}%" if "not_good_invalid" in report else "none")
    return trust


def _fit_trust(folder: str | Path, data: str, limit: int | None, refine) -> tuple[TrustModel, TrustModel | None]:
    """The trust model of the estimator in ``folder`` as it runs with ``refine``, fitted on ``data``; where it
    refines, also the model for the networks alone (from the same pass: each view's networks run once)."""
    from discopose.estimator.api import load
    estimator = load(folder, refine=refine)
    estimator.trust = TrustModel()  # what the networks state, uncalibrated
    views = collect_views(estimator, data, limit)
    # Estimates outside the trained distances are invalid whatever the model says (PoseEstimator), so
    # the fit is on the others: they would only teach the model what the distance gate already knows. (The
    # distance is the networks' before any refinement, so the same views are kept for both models.)
    inside = np.array([s.get("out_of_volume", 0.0) == 0.0 for s in views["signals"]])
    if inside.sum() < max(20, 0.25 * len(inside)):
        raise DiscoposeError(f"{data}: only {int(inside.sum())} of {len(inside)} views are estimated within the "
                             f"distances the estimator was trained on ({estimator.volume_m} m); render the "
                             "calibration frames over those distances (camera.distance_range_m)")
    views = {k: ([s for s, keep in zip(v, inside) if keep] if k.endswith("signals") else v[inside])
             for k, v in views.items()}

    def fit(error_position_m, error_rotation_rad, signals, refined) -> TrustModel:
        trust = fit_trust(error_position_m, views["network_covariance"], views["position_disagreement_m"],
                          error_rotation_rad, views["network_rotation_sigma_rad"], views["rotation_disagreement_rad"],
                          signals, fitted_on=str(data), refined=refined)
        trust.fit_report["refine"] = refined is not None
        return trust
    trust = fit(views["error_position_m"], views["error_rotation_rad"], views["signals"],
                views["refined"] if estimator.refines else None)
    followed = np.isfinite(views["followed_error_rotation_rad"])
    trust.fit_report["followed"] = int(followed.sum())
    if followed.sum() >= MIN_VIEWS_PER_SIGMA_FIT:
        trust.followed_position_sigma_m, trust.followed_rotation_sigma_deg = stated_sigmas(
            views["followed_error_position_m"][followed], views["followed_error_rotation_rad"][followed])
    if not estimator.refines:
        return trust, None
    networks = fit(views["network_error_position_m"], views["network_error_rotation_rad"], views["network_signals"],
                   None)
    networks.fit_report["followed"] = 0  # the tracker follows only where it refines
    return trust, networks
