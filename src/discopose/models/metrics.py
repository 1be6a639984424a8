"""Pose error metrics, following bop_toolkit's ``pose_error.py`` definitions (numpy, per sample).

Rotations are 3x3, translations in metres; reported errors are in millimetres and degrees.
* ``te``: ||t_est - t_gt||.
* ``re``: geodesic angle, symmetry-aware: min over S of angle(R_est, R_gt S).
* ``add``: mean over model points of ||(R_est p + t_est) - (R_gt p + t_gt)|| (ADD, Hinterstoisser 2012).
* ``adi`` (ADD-S): mean over ground-truth points of the distance to the closest estimated point.
"""
from __future__ import annotations

import numpy as np

from discopose.geometry.transforms import rotation_angle_deg

# A pose counts as good within these (what the validity flag is trained to recognise, README).
GOOD_POSITION_M = 0.010
GOOD_ROTATION_DEG = 15.0
# Gross errors, which a valid flag must not cover.
GROSS_POSITION_M = 0.025
GROSS_ROTATION_DEG = 30.0


def transform_points(rotation: np.ndarray, translation: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ np.asarray(rotation).T + np.asarray(translation).reshape(1, 3)


def te(t_est, t_gt) -> float:
    return float(np.linalg.norm(np.asarray(t_est) - np.asarray(t_gt)))


def re(r_est, r_gt, symmetries: np.ndarray | None = None) -> float:
    if symmetries is None:
        return rotation_angle_deg(r_est, r_gt)
    return min(rotation_angle_deg(r_est, r_gt @ s) for s in symmetries)


def rotation_errors_deg(rotations: np.ndarray, true_rotations: np.ndarray, symmetries: np.ndarray | None = None
                        ) -> np.ndarray:
    """Per-sample :func:`re` (degrees) of (N, 3, 3) rotations against the truth; inf where a rotation is
    missing (NaN: a head that found no pose), so that a head failing on most samples has no finite median."""
    errors = np.full(len(true_rotations), np.inf)
    for i, (r_est, r_gt) in enumerate(zip(rotations, true_rotations)):
        if not np.isnan(r_est).any():
            errors[i] = re(r_est, r_gt, symmetries)
    return errors


def add(r_est, t_est, r_gt, t_gt, points) -> float:
    return float(np.linalg.norm(transform_points(r_est, t_est, points) - transform_points(r_gt, t_gt, points),
                                axis=1).mean())


def adi(r_est, t_est, r_gt, t_gt, points) -> float:
    estimated = transform_points(r_est, t_est, points)
    truth = transform_points(r_gt, t_gt, points)
    # Brute force in chunks: exact, and fast enough for the ~1000-point models used here.
    closest = np.empty(len(truth))
    for start in range(0, len(truth), 256):
        chunk = truth[start:start + 256]
        closest[start:start + 256] = np.sqrt(((chunk[:, None, :] - estimated[None]) ** 2).sum(-1)).min(1)
    return float(closest.mean())


def pose_errors(r_est, t_est, r_gt, t_gt, points, symmetries=None) -> dict:
    """All per-sample errors: te_mm, re_deg, add_mm, adds_mm."""
    return {"te_mm": 1000 * te(t_est, t_gt), "re_deg": re(r_est, r_gt, symmetries),
            "add_mm": 1000 * add(r_est, t_est, r_gt, t_gt, points),
            "adds_mm": 1000 * adi(r_est, t_est, r_gt, t_gt, points)}


def summarize(errors: list[dict], diameter_m: float, symmetric: bool) -> dict:
    """Mean/median/p90 of each error, success rates, and ADD(-S) relative to the diameter.

    ADD(-S) uses ADD-S for symmetric objects and ADD otherwise, as in the BOP/LINEMOD convention.
    """
    if not errors:
        return {"count": 0}
    table = {key: np.array([e[key] for e in errors], float) for key in errors[0]}
    summary: dict = {"count": len(errors)}
    for key, values in table.items():
        summary[key] = {"mean": float(values.mean()), "median": float(np.median(values)),
                        "p90": float(np.percentile(values, 90))}
    add_s = table["adds_mm"] if symmetric else table["add_mm"]
    diameter_mm = diameter_m * 1000
    summary["add_s_rel_diameter_median"] = float(np.median(add_s) / diameter_mm)
    summary["success"] = {
        "add(-s)<10%d": float((add_s < 0.1 * diameter_mm).mean()),
        "5mm5deg": float(((table["te_mm"] < 5) & (table["re_deg"] < 5)).mean()),
        "10mm10deg": float(((table["te_mm"] < 10) & (table["re_deg"] < 10)).mean()),
        "re<30deg": float((table["re_deg"] < 30).mean()),
    }
    return summary
