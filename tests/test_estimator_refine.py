"""The refinement inside the estimator: ``load(..., refine=...)`` wires the mesh alignment through predict (one
camera and several fused), its score gate keeps the networks' pose where the image does not support the
alignment, the trust model reads its score, and eval reports what it changed. The shipped cube model on real
renders of its own training world at 320 x 240."""
import json
import math

import numpy as np
import pytest

import discopose
from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.estimator.trust import REFINE_SIGNALS, SIGNALS, TrustModel, features, fit_trust
from discopose.geometry.transforms import rotation_angle_deg
from discopose.refine import RefineConfig, refine_pose

SMALL = ["seed=5", "camera.width_px=320", "camera.height_px=240"]


@pytest.fixture(scope="module")
def estimators():
    return discopose.load("cube", refine=False), discopose.load("cube", refine=True)


def _render(estimator, count: int, extra: list[str] | None = None) -> list[dict]:
    from discopose.render.renderer import DiscoRenderer
    config = estimator.train_render_config.with_overrides(SMALL + (extra or []))
    renderer = DiscoRenderer(config)
    samples = []
    try:
        for index in range(count):
            _, views = renderer.render_index(index)
            sample = {}
            for name, view in views.items():
                labels = view["labels"]
                sample[name] = {"rgb": view["rgb"], "truth": np.asarray(labels["camera_from_object"]),
                                "camera": CameraModel(name, labels["width_px"], labels["height_px"], labels["K"],
                                                      world_from_camera=labels["world_from_camera"]),
                                "world_from_object": np.asarray(labels["world_from_camera"])
                                @ np.asarray(labels["camera_from_object"])}
            samples.append(sample)
    finally:
        renderer.close()
    return samples


@pytest.fixture(scope="module")
def frames(estimators):
    return [next(iter(sample.values())) for sample in _render(estimators[0], 8)]


def test_refine_wires_through_predict(estimators, frames):
    """Every pose says what the refinement did; where it was taken the pose is the alignment's (and, on these
    frames, nearer the truth), elsewhere exactly the networks' pose, which is what refine=False returns."""
    off, on = estimators
    assert not off.refines and on.refines and on.refine_model is not None
    applied = []
    for frame in frames:
        plain = off.predict(frame["rgb"], camera=frame["camera"])
        pose = on.predict(frame["rgb"], camera=frame["camera"])
        record = pose.extra["refine"]
        assert "refine" not in plain.extra
        assert {"applied", "score", "iterations", "time_ms", "network_frame_from_object"} <= set(record)
        assert 0.0 <= record["score"] <= 1.0 and record["time_ms"] > 0 and record["error"] is None
        np.testing.assert_allclose(record["network_frame_from_object"], plain.frame_from_object, atol=1e-6)
        assert record["applied"] == (record["score"] >= on.refine_min_score and record["hypothesis"] >= 0)
        assert set(REFINE_SIGNALS) <= set(pose.extra["signals"])
        if record["applied"]:
            assert record["iterations"] > 0
            assert not np.allclose(pose.frame_from_object, plain.frame_from_object, atol=1e-6)
            truth = frame["truth"][:3, :3]
            applied.append((rotation_angle_deg(plain.rotation, truth), rotation_angle_deg(pose.rotation, truth)))
        else:
            np.testing.assert_array_equal(pose.frame_from_object, plain.frame_from_object)
    # The shipped model's refinement is taken on all 8 of these frames (the gate's refusals: the next test).
    assert applied, "the refinement was taken on none of the frames"
    before, after = np.array(applied).T
    assert after.mean() < before.mean(), applied


def test_a_wrong_start_is_not_accepted(estimators, frames):
    """The score gate: an alignment started where the cube is not (moved 60 mm sideways, turned 40 deg) scores
    below the gate, and an image without the cube leaves the networks' pose as it was."""
    _, on = estimators
    for frame in frames[:3]:
        start = frame["truth"].copy()
        start[:3, 3] += [0.06, 0.0, 0.0]
        start[:3, :3] = start[:3, :3] @ _rotation_x(math.radians(40))
        result = refine_pose(frame["rgb"], frame["camera"], on.refine_model, start, on.refine_config)
        assert result.score < on.refine_min_score, result.score
        # Where it really is, the image supports the pose well above the gate.
        truth = refine_pose(frame["rgb"], frame["camera"], on.refine_model, frame["truth"], on.refine_config)
        assert truth.score >= on.refine_min_score, truth.score
    blank = np.full((240, 320, 3), 128, np.uint8)
    pose = on.predict(blank, camera=frames[0]["camera"])
    assert not pose.extra["refine"]["applied"]
    np.testing.assert_array_equal(pose.frame_from_object, pose.extra["refine"]["network_frame_from_object"])


def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def test_several_cameras_are_refined_jointly_in_the_world_frame(estimators):
    import copy
    off, on = estimators
    sample = _render(off, 1, ["camera.count=2"])[0]
    images = {name: view["rgb"] for name, view in sample.items()}
    cameras = {name: view["camera"] for name, view in sample.items()}
    # The same estimator without the refinement: the same trust model, so the same fusion weights (`off` judges
    # its poses with the model fitted for the networks alone, which weighs the cameras a little differently).
    unrefined = copy.copy(on)
    unrefined.refine_config = None
    plain = unrefined.predict(images, camera=cameras)
    pose = on.predict(images, camera=cameras)
    record = pose.extra["refine"]
    assert pose.frame == "world" and record["iterations"] > 0 and record["error"] is None
    np.testing.assert_allclose(record["network_frame_from_object"], plain.frame_from_object, atol=1e-6)
    # The fused pose is valid where the cameras' joint alignment supports it; fusion's own verdict is kept.
    assert pose.valid == record["applied"] and pose.extra["fusion_valid"] == plain.valid
    if record["applied"]:
        truth = next(iter(sample.values()))["world_from_object"]
        assert rotation_angle_deg(pose.rotation, truth[:3, :3]) < 5.0
    else:
        np.testing.assert_array_equal(pose.frame_from_object, plain.frame_from_object)


def test_load_validates_refine_and_takes_a_config():
    for bad in ("yes", 1, {"hypotheses": 3}):
        with pytest.raises(DiscoposeError) as error:
            discopose.load("cube", refine=bad)
        assert "\n" not in str(error.value) and "refine=" in str(error.value)
    config = RefineConfig(hypotheses=3)
    assert discopose.load("cube", refine=config).refine_config is config


def _signals(rng, good: bool, refine: bool) -> dict:
    signals = {name: 0.0 for name in SIGNALS}
    signals.update(pnp_found=True, pnp_inlier_frac=rng.uniform(0.6, 1.0), class_prob=rng.uniform(0.5, 1.0),
                   position_sigma_rel=0.01, rotation_sigma_deg=5.0, pnp_rotation_deg=rng.uniform(0, 5),
                   object_px=100.0)
    if refine:  # only the alignment tells good from bad here
        signals.update(alignment_score=rng.uniform(0.6, 1.0) if good else rng.uniform(0.0, 0.5),
                       alignment_shift_deg=rng.uniform(0, 10))
    return signals


def test_trust_reads_the_refine_score_and_older_models_keep_working():
    rng = np.random.default_rng(0)
    n = 400
    good = rng.random(n) < 0.6
    errors = np.where(good[:, None], 0.002, 0.05) * rng.normal(size=(n, 3))
    covariances = np.tile(np.eye(3) * 0.003 ** 2, (n, 1, 1))
    rotation_errors = np.where(good, 0.05, 1.0)
    args = (errors, covariances, np.zeros((n, 3)), rotation_errors, np.full(n, 0.05), np.zeros(n))
    with_refine = fit_trust(*args, [_signals(rng, g, True) for g in good])
    without = fit_trust(*args, [_signals(rng, g, False) for g in good])
    assert len(with_refine.weights) == len(features(_signals(rng, True, True))) == len(SIGNALS) + len(REFINE_SIGNALS)
    assert len(without.weights) == len(SIGNALS)  # absent signals are left out of the fit
    assert with_refine.fit_report["not_good_invalid"] > 0.9
    # A model fitted with the refinement reads a pose without it as no evidence either way: its calibration mean.
    plain = _signals(rng, True, False)
    mean_score = dict(plain, alignment_score=with_refine.feature_mean[-2],
                      alignment_shift_deg=math.expm1(with_refine.feature_mean[-1]))
    assert with_refine.confidence(plain) == pytest.approx(with_refine.confidence(mean_score))
    # Refined poses get sigmas of their own, fitted on the refined views; the networks' scales on the rest.
    refined = good & (rng.random(n) < 0.5)
    split = fit_trust(*args, [_signals(rng, g, True) for g in good], refined=refined)
    assert split.refined_rotation_sigma_deg == pytest.approx(np.degrees(0.05) / 2)
    assert len(split.refined_position_sigma_m) == 3 and with_refine.refined_rotation_sigma_deg is None
    # Models fitted before (fewer weights, like the shipped one's ten) ignore the new signals.
    old = TrustModel.from_dict({**without.to_dict(), "weights": without.weights[:10],
                                "feature_mean": without.feature_mean[:10], "feature_std": without.feature_std[:10]})
    assert old.confidence(dict(plain, alignment_score=0.1, alignment_shift_deg=30.0)) == old.confidence(plain)


def test_eval_reports_what_the_refinement_changed(estimators, tmp_path):
    from discopose.cli import build_parser
    from discopose.datasets.generate import generate_dataset
    from discopose.evaluation import evaluate_checkpoint
    off, _ = estimators
    data = tmp_path / "data"
    generate_dataset(str(data), 4, off.train_render_config.with_overrides(SMALL + ["output.samples_per_shard=4"]),
                     workers=1, progress=False)
    result = evaluate_checkpoint("cube", str(data), str(tmp_path / "eval"), refine=True)
    refine = result["summary"]["refine"]
    assert refine["frames"] == 4 and 0.0 <= refine["applied_frac"] <= 1.0 and refine["ms_median"] > 0
    assert {"worse_frac", "worse_flagged_frac", "better_frac", "network"} <= set(refine)
    assert result["summary"]["ms_per_frame"]["median"] > 0
    per_sample = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_sample"]
    assert all({"refine_applied", "refine_score"} <= set(row) for row in per_sample)
    off = tmp_path / "eval_off"
    assert "refine" not in evaluate_checkpoint("cube", str(data), str(off), refine=False, plots=False)["summary"]
    # Without plots (`discopose eval --no-plots`, the demo's quick plan): the report's tables and worst cases only.
    assert (tmp_path / "eval" / "errors_hist.png").is_file() and not (off / "errors_hist.png").exists()
    assert (off / "report.html").is_file() and (off / "worst_cases.png").is_file()
    parser = build_parser()
    assert not parser.parse_args(["eval", "--model", "cube", "--data", str(data), "--no-plots"]).plots
    assert parser.parse_args(["eval", "--model", "cube", "--data", str(data), "--refine"]).refine
    assert parser.parse_args(["track", "--model", "cube", "--camera", "cam0=0", "--refine"]).refine
    assert parser.parse_args(["eval", "--model", "cube", "--data", str(data), "--no-refine"]).refine is False
    assert parser.parse_args(["eval", "--model", "cube", "--data", str(data)]).refine is None  # as calibrated


def test_the_refinement_is_on_by_default_where_it_was_calibrated(estimators, tmp_path):
    """``load(path)`` refines exactly when the estimator's trust model was fitted to refined poses: calibrating
    with the refinement turns it on for every later load (eval, track, the demo's model), and off again."""
    import shutil

    from discopose.datasets.generate import generate_dataset
    from discopose.estimator.calibrate import calibrate_estimator
    from discopose.pretrained import resolve_model
    off, _ = estimators
    model = tmp_path / "cube"
    shutil.copytree(resolve_model("cube"), model)
    data = tmp_path / "calibration"
    # 48 frames: enough refined and followed views (20 each) for each kind's own sigmas.
    generate_dataset(str(data), 48, off.train_render_config.with_overrides(SMALL + ["seed=9"]), workers=1,
                     progress=False)
    calibrate_estimator(model, str(data), refine=True)
    assert discopose.load(model).refines
    assert not discopose.load(model, refine=False).refines
    # Switched off, it judges its poses with the model fitted for the networks alone (the refined one leans on
    # the alignment's score and, without it, would flag nearly everything).
    index = json.loads((model / "estimator.json").read_text())
    assert index["trust"]["fit_report"]["refine"] and not index["trust_networks"]["fit_report"]["refine"]
    assert discopose.load(model, refine=False).trust.weights == index["trust_networks"]["weights"]
    assert discopose.load(model).trust.weights == index["trust"]["weights"] != index["trust_networks"]["weights"]
    # The tracker's followed poses (aligned from one frame's motion off the truth, not from the networks' estimate)
    # state sigmas of their own, fitted on the same frames: tighter than the poses refined from the networks' start
    # (measured at 320x240: 1.1 deg and 0.6-2.3 mm against 4.4 deg and 1.9-14 mm).
    estimator = discopose.load(model)
    trust = estimator.trust
    assert trust.fit_report["followed"] >= 20 and trust.fit_report["refined"] >= 20, trust.fit_report
    measured = (trust.followed_position_sigma_m, trust.followed_rotation_sigma_deg, trust.refined_position_sigma_m,
                trust.refined_rotation_sigma_deg)
    assert trust.followed_rotation_sigma_deg < trust.refined_rotation_sigma_deg, measured
    assert np.median(trust.followed_position_sigma_m) < np.median(trust.refined_position_sigma_m), measured
    # ... and a followed pose states them (not the refined poses').
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.reader import iter_samples, open_dataset
    followed = []
    for sample in iter_samples(open_dataset(str(data)), limit=8):
        name, labels = next(iter(sample["labels"]["cameras"].items()))
        pose = estimator.follow([(sample["views"][name]["rgb"], camera_from_labels(name, labels))],
                                np.asarray(labels["camera_from_object"]))
        followed += [pose] if pose is not None else []
    assert followed and all(pose.extra["followed"] for pose in followed)
    assert followed[0].rotation_sigma_deg == pytest.approx(trust.followed_rotation_sigma_deg)
    np.testing.assert_allclose(followed[0].position_sigma_m, trust.followed_position_sigma_m)
    calibrate_estimator(model, str(data), refine=False)
    assert not discopose.load(model).refines and discopose.load(model, refine=True).refines
    calibrated_off = json.loads((model / "estimator.json").read_text())
    assert "trust_networks" not in calibrated_off
    # The networks-only model stored with the refined one is read off the same pass (each view's networks run
    # once): what calibrating with the refinement off fits. Catches a derived model fitted on the refined poses,
    # or with the alignment's signals left in.
    derived, direct = index["trust_networks"], calibrated_off["trust"]
    assert derived["samples"] == direct["samples"] and derived["fit_report"]["refine"] is False
    for key in ("position_scale", "position_disagreement", "rotation_scale", "rotation_disagreement", "weights", "bias",
                "feature_mean", "feature_std", "threshold"):
        assert np.allclose(derived[key], direct[key], rtol=1e-6, atol=1e-9, equal_nan=True), (key, derived[key], direct[key])
