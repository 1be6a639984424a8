"""How far to trust one estimate: consistency signals -> stated uncertainty and a validity flag.

A network's variance head states how hard an image looked *to that network*; it cannot know when the
image is unlike anything it was trained on, and that is when it is confidently wrong (a mask that takes
in the fingers under the cube reads the cube as bigger, so nearer). What does show it is disagreement
between parts of the estimator that fail differently:

* the dense head's PnP pose vs the regressed pose (depth, lateral position, rotation);
* the dense mask vs the silhouette of the object at the reported pose (cells of "object" where the
  reported pose puts none: the mask has swollen onto something else);
* RANSAC's inlier share among the mask's cells;
* how far the last zoom-in step still moved the estimate (a converged estimate stays put);
* how sure the crop network is of which way the markings face (its class probability);
* the stated sigmas themselves;
* with the refinement on, how well the object's mesh aligns to the full-resolution image (its score: a wrong
  pose aligns badly) and how far the alignment turned the networks' pose.

:class:`TrustModel` turns them into (a) a covariance that grows with the disagreement,
``C = a^2 C_net + b^2 d d^T`` for the position (``d`` the PnP-minus-regressed position), likewise for
the rotation; and (b) ``confidence``, a logistic model's probability that the pose is good (within
10 mm and 15 deg), with ``valid = confidence >= threshold``. Both are fitted on held-out frames of a
family the networks did not train on (:func:`discopose.estimator.calibrate.calibrate_estimator`).

Numpy only: the inference path needs neither torch nor the renderer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from discopose.models.metrics import GOOD_POSITION_M, GOOD_ROTATION_DEG  # noqa: F401 (what "good" means)

SIGNALS = ("pnp_found", "pnp_inlier_frac", "mask_outside_frac", "pnp_rotation_deg", "pnp_depth_log_ratio",
           "pnp_lateral_rel", "refine_shift_rel", "class_prob", "position_sigma_rel", "rotation_sigma_deg",
           "object_px", "out_of_volume")
# Present only when the estimator refines (PoseEstimator(refine=...)): the mesh alignment's score of the pose
# returned (0 where it could not run) and how far it turned the networks' rotation (0 where not taken).
# (refine_shift_rel above is the networks' own last zoom-in step, not this.)
REFINE_SIGNALS = ("alignment_score", "alignment_shift_deg")
# Trust models fitted before the working volume have the first ten features' weights only; those fitted without
# the refinement, the first twelve (confidence() reads as many features as the model has weights).
_SIGNAL_DEFAULTS = {"object_px": 100.0, "out_of_volume": 0.0}
# Out of the distances the networks were trained on, a pose is never valid and its stated sigmas grow
# by exp(OUT_OF_VOLUME_SIGMA_GROWTH * how far out, in log distance): x2.2 at 1.5x the farthest.
OUT_OF_VOLUME_SIGMA_GROWTH = 2.0


def out_of_volume(distance_m: float, volume_m) -> float:
    """How far ``distance_m`` lies outside ``volume_m`` (near, far), in natural log units; 0 inside or
    without a volume."""
    if volume_m is None:
        return 0.0
    near, far = volume_m
    return max(0.0, math.log(distance_m / far), math.log(near / max(distance_m, 1e-6)))


# The signals the alignment adds (PoseEstimator._trusted_pose): absent where the estimator does not refine.
ALIGNMENT_SIGNALS = ("alignment_score", "alignment_shift_deg")


def features(signals: dict) -> np.ndarray:
    """The logistic model's inputs: each signal on a scale where its effect is roughly linear."""
    return np.array([
        float(signals["pnp_found"]),
        float(signals["pnp_inlier_frac"]),
        float(signals["mask_outside_frac"]),
        math.log1p(signals["pnp_rotation_deg"]),
        math.log1p(100 * abs(signals["pnp_depth_log_ratio"])),
        math.log1p(100 * signals["pnp_lateral_rel"]),
        math.log1p(100 * signals["refine_shift_rel"]),
        float(signals["class_prob"]),
        math.log(max(signals["position_sigma_rel"], 1e-6)),
        math.log(max(signals["rotation_sigma_deg"], 1e-3)),
        # Pixels across the object's diameter in the camera's own image: fewer, fewer readable markings.
        math.log(max(signals.get("object_px", _SIGNAL_DEFAULTS["object_px"]), 1.0)),
        signals.get("out_of_volume", _SIGNAL_DEFAULTS["out_of_volume"]),
        # Absent (refinement off): NaN, which a model fitted with them reads as its calibration mean (no
        # evidence either way), and a fit without them leaves out (fit_trust).
        float(signals.get("alignment_score", math.nan)),
        math.log1p(signals["alignment_shift_deg"]) if "alignment_shift_deg" in signals else math.nan,
    ])


@dataclass
class TrustModel:
    """Stated-uncertainty scaling and the validity model of an estimator (``estimator.json`` "trust").

    The default (an estimator never calibrated) states the networks' own sigmas and calls every pose
    valid with confidence 1: nothing is known that would justify less.
    """

    position_scale: float = 1.0
    position_disagreement: float = 0.0
    rotation_scale: float = 1.0
    rotation_disagreement: float = 0.0
    # Poses the refinement replaced (PoseEstimator(refine=...)) have sigmas of their own, fitted on the refined
    # calibration views: per camera axis (m) and rotation (deg). None: they state the networks' sigmas.
    refined_position_sigma_m: list[float] | None = None
    refined_rotation_sigma_deg: float | None = None
    # Poses the tracker followed (the mesh aligned from the last frame's pose, PoseEstimator.follow): their start is
    # one frame's motion from the truth, not the networks' estimate, so they are fitted apart (calibrate_estimator).
    # None: they state the refined poses' sigmas.
    followed_position_sigma_m: list[float] | None = None
    followed_rotation_sigma_deg: float | None = None
    # Logistic regression on standardized features(): P(good) = sigmoid(w . (x - mean) / std + bias).
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    threshold: float = 0.0
    fitted_on: str | None = None
    samples: int = 0
    fit_report: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return bool(self.weights)

    def position_covariance(self, network_covariance: np.ndarray, disagreement_m: np.ndarray | None) -> np.ndarray:
        covariance = self.position_scale ** 2 * np.asarray(network_covariance, float)
        if disagreement_m is not None:
            d = np.asarray(disagreement_m, float)
            covariance = covariance + self.position_disagreement ** 2 * np.outer(d, d)
        return covariance

    def rotation_sigma_rad(self, network_sigma_rad: float, disagreement_rad: float | None) -> float:
        variance = (self.rotation_scale * network_sigma_rad) ** 2
        if disagreement_rad is not None:
            variance += (self.rotation_disagreement * disagreement_rad) ** 2
        return math.sqrt(variance)

    def confidence(self, signals: dict | None) -> float:
        """Probability (0-1) that the pose is good, or 1.0 for an uncalibrated model or no signals."""
        if not self.calibrated or signals is None:
            return 1.0
        mean = np.asarray(self.feature_mean)
        x = features(signals)[:len(self.weights)]
        x = (np.where(np.isnan(x), mean, x) - mean) / np.asarray(self.feature_std)  # an absent signal says nothing
        return float(_sigmoid(float(np.dot(self.weights, x)) + self.bias))

    def is_valid(self, confidence: float) -> bool:
        return confidence >= self.threshold

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrustModel":
        return cls(**data) if data else cls()

    @classmethod
    def from_index(cls, index: dict) -> "TrustModel":
        """From ``estimator.json``: its "trust", or the plain scale factors older estimators stored."""
        if index.get("trust"):
            return cls.from_dict(index["trust"])
        scale = index.get("uncertainty_scale") or {}
        return cls(position_scale=float(scale.get("position", 1.0)), rotation_scale=float(scale.get("rotation", 1.0)))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularized logistic regression by Newton's method: (weights, bias) for standardized ``x``
    (N, F) and labels ``y`` in {0, 1}. The bias is not regularized."""
    n, f = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(f + 1)
    penalty = np.eye(f + 1) * l2
    penalty[-1, -1] = 0.0
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


# Refined and unrefined views each need this many calibration views for sigmas of their own.
MIN_VIEWS_PER_SIGMA_FIT = 20


def _coverage_scale(ratio: np.ndarray, quantile: float) -> float:
    """The factor that makes ``quantile`` of the (error / sigma) ratios fall within 1."""
    return float(np.quantile(ratio, quantile)) if len(ratio) else 1.0


def stated_sigmas(errors_position_m: np.ndarray, errors_rotation_rad: np.ndarray, position_coverage: float = 0.75
                  ) -> tuple[list[float], float]:
    """Sigmas of their own for a kind of pose (refined, followed) from its errors: per camera axis (m), the
    ``position_coverage`` quantile of the absolute error; rotation (deg), half the angle that 73.85% of the
    errors stay under (a 3-dof Maxwell angle is within 2 sigma that often), as the scaled sigmas are fitted."""
    position = np.quantile(np.abs(np.asarray(errors_position_m, float)), position_coverage, axis=0).tolist()
    return position, float(np.degrees(np.quantile(np.asarray(errors_rotation_rad, float), 0.7385)) / 2)


def fit_trust(errors_position_m: np.ndarray, network_covariances: np.ndarray, position_disagreements_m: np.ndarray,
              errors_rotation_rad: np.ndarray, network_rotation_sigmas_rad: np.ndarray,
              rotation_disagreements_rad: np.ndarray, signals: list[dict], good_valid_frac: float = 0.90,
              position_coverage: float = 0.75, fitted_on: str | None = None, refined=None) -> TrustModel:
    """Fit a :class:`TrustModel` on per-view estimates with their ground truth.

    ``errors_position_m`` (N, 3) signed per-axis errors in the camera frame; ``network_covariances``
    (N, 3, 3) and ``network_rotation_sigmas_rad`` (N,) as the networks state them;
    ``position_disagreements_m`` (N, 3) and ``rotation_disagreements_rad`` (N,) the PnP-vs-regressed
    differences (NaN where PnP found no pose); ``errors_rotation_rad`` (N,) symmetry-aware angles.

    Uncertainty: for each disagreement weight b on a grid, the scale a that makes ``position_coverage``
    of per-axis position errors fall within 1 sigma; the (a, b) pair with the best Gaussian likelihood
    is kept. The default, 75% rather than a Gaussian's 68.3%, leaves a margin for images further from
    training than the calibration family is (real ones): the README's realistic-proxy rows measure it.
    The rotation likewise, for the 73.9% within 2 sigma of a 3-dof isotropic Gaussian. ``refined`` (N,):
    the views whose pose the refinement replaced; the networks' sigmas are then scaled on the others (they
    describe the networks' poses) and the refined ones get constant sigmas with the same coverages (each when
    it has ``MIN_VIEWS_PER_SIGMA_FIT`` views). Validity: a logistic model of "good" (<= 10 mm and <= 15 deg)
    whose threshold keeps ``good_valid_frac`` of the good views valid.
    """
    errors_position_m = np.asarray(errors_position_m, float)
    n = len(errors_position_m)
    refined = np.zeros(n, bool) if refined is None else np.asarray(refined, bool)
    rows = ~refined if (~refined).sum() >= MIN_VIEWS_PER_SIGMA_FIT else np.ones(n, bool)
    position_errors = errors_position_m[rows]
    position_d = np.nan_to_num(np.asarray(position_disagreements_m, float))[rows]
    rotation_d = np.nan_to_num(np.asarray(rotation_disagreements_rad, float))[rows]
    network_covariances = np.asarray(network_covariances, float)[rows]
    network_variances = np.stack([np.diag(c) for c in network_covariances])
    fit: dict = {}

    best = None
    for b in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
        variance_d = b ** 2 * position_d ** 2
        # Find a by bisection on the coverage of the per-axis (diagonal) sigmas.
        low, high = 1e-3, 1e3
        for _ in range(60):
            a = math.sqrt(low * high)
            sigma = np.sqrt(a ** 2 * network_variances + variance_d)
            if (np.abs(position_errors) < sigma).mean() < position_coverage:
                low = a
            else:
                high = a
        sigma2 = a ** 2 * network_variances + variance_d
        nll = 0.5 * float(np.mean(np.log(sigma2) + position_errors ** 2 / sigma2))
        if best is None or nll < best[0]:
            best = (nll, a, b)
    _, position_scale, position_disagreement = best
    fit["position_nll"] = best[0]

    errors_rotation_rad = np.asarray(errors_rotation_rad, float)
    rotation_errors = errors_rotation_rad[rows]
    network_rotation_sigmas_rad = np.asarray(network_rotation_sigmas_rad, float)[rows]
    best = None
    for b in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
        ratio_target = 2.0
        low, high = 1e-3, 1e3
        for _ in range(60):
            a = math.sqrt(low * high)
            sigma = np.sqrt((a * network_rotation_sigmas_rad) ** 2 + (b * rotation_d) ** 2)
            if (rotation_errors < ratio_target * sigma).mean() < 0.7385:
                low = a
            else:
                high = a
        sigma2 = (a * network_rotation_sigmas_rad) ** 2 + (b * rotation_d) ** 2
        # Maxwell (3-dof) negative log-likelihood of the angle, up to constants.
        nll = float(np.mean(1.5 * np.log(sigma2) + rotation_errors ** 2 / (2 * sigma2)))
        if best is None or nll < best[0]:
            best = (nll, a, b)
    _, rotation_scale, rotation_disagreement = best
    fit["rotation_nll"] = best[0]
    refined_position_sigma = refined_rotation_sigma = None
    fit["refined"] = int(refined.sum())
    if refined.sum() >= MIN_VIEWS_PER_SIGMA_FIT:
        refined_position_sigma, refined_rotation_sigma = stated_sigmas(errors_position_m[refined],
                                                                       errors_rotation_rad[refined], position_coverage)

    good = (np.linalg.norm(errors_position_m, axis=1) <= GOOD_POSITION_M) & \
        (np.degrees(errors_rotation_rad) <= GOOD_ROTATION_DEG)
    x = np.stack([features(s) for s in signals])
    # Signals none of the views has (the refinement's, when it was off) are left out: they are the last features,
    # so the model simply has fewer weights. One some views lack reads as its mean there.
    kept = x.shape[1]
    while kept > 1 and np.isnan(x[:, kept - 1]).all():
        kept -= 1
    x = x[:, :kept]
    if np.isnan(x).any():
        x = np.where(np.isnan(x), np.nanmean(x, 0), x)
    mean, std = x.mean(0), x.std(0) + 1e-6
    fit.update(good=int(good.sum()), not_good=int((~good).sum()))
    model = TrustModel(position_scale=position_scale, position_disagreement=position_disagreement,
                       rotation_scale=rotation_scale, rotation_disagreement=rotation_disagreement,
                       refined_position_sigma_m=refined_position_sigma, refined_rotation_sigma_deg=refined_rotation_sigma,
                       fitted_on=fitted_on, samples=n, fit_report=fit)
    if good.all() or not good.any():
        # Nothing to tell apart: every pose keeps confidence 1 and stays valid.
        fit["validity"] = "not fitted: the calibration views are all good or all bad"
        return model
    weights, bias = fit_logistic((x - mean) / std, good.astype(float))
    model.weights, model.bias = weights.tolist(), bias
    model.feature_mean, model.feature_std = mean.tolist(), std.tolist()
    confidences = np.array([model.confidence(s) for s in signals])
    model.threshold = float(np.quantile(confidences[good], 1 - good_valid_frac))
    valid = confidences >= model.threshold
    fit.update(good_valid=float(valid[good].mean()), not_good_invalid=float((~valid[~good]).mean()))
    return model
