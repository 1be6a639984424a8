"""Stated uncertainty and validity: the trust model's fit, its signals on real renders, fusion, tracking."""
import json

import numpy as np
import pytest

from discopose.estimator.trust import SIGNALS, TrustModel, fit_trust
from discopose.geometry import random_rotation, rotation_about_axis, rotation_angle_deg
from tests.conftest import CROPS, NO_HAND, ONE_DISTANCE


def _signals(rng, bad: bool) -> dict:
    """Synthetic signals: bad views have PnP and regression disagreeing in depth, others agree."""
    base = {name: 0.0 for name in SIGNALS}
    base.update(pnp_found=True, pnp_inlier_frac=rng.uniform(0.6, 1.0), class_prob=rng.uniform(0.8, 1.0),
                position_sigma_rel=0.01, rotation_sigma_deg=5.0, pnp_rotation_deg=rng.uniform(0, 5),
                mask_outside_frac=rng.uniform(0, 0.05), pnp_lateral_rel=0.01, refine_shift_rel=0.01)
    base["pnp_depth_log_ratio"] = rng.uniform(0.1, 0.3) if bad else rng.normal(0, 0.01)
    return base


def test_fit_trust_states_honest_sigmas_and_flags_gross_errors():
    """Errors twice as large as the network states: the fitted scale is ~2 and 68% fall within 1 sigma;
    views whose depth signal disagrees are the gross ones and end up invalid, good ones stay valid
    (fresh draws, not the fitting set)."""
    def draw(rng, n):
        bad = rng.random(n) < 0.2
        network_sigma = rng.uniform(0.002, 0.004, (n, 3))
        errors = rng.normal(size=(n, 3)) * 2 * network_sigma
        errors[bad, 2] += rng.choice([-1, 1], bad.sum()) * rng.uniform(0.03, 0.06, bad.sum())
        covariances = np.stack([np.diag(s ** 2) for s in network_sigma])
        rotation_sigma = rng.uniform(0.03, 0.06, n)
        # Angles of a 3-dof Gaussian with 1.5x the stated sigma.
        rotation_errors = np.linalg.norm(rng.normal(size=(n, 3)), axis=1) * 1.5 * rotation_sigma
        signals = [_signals(rng, b) for b in bad]
        return bad, errors, covariances, rotation_errors, rotation_sigma, signals

    rng = np.random.default_rng(0)
    bad, errors, covariances, rotation_errors, rotation_sigma, signals = draw(rng, 800)
    no_disagreement = np.zeros((len(bad), 3))
    good = ~bad
    trust = fit_trust(errors[good], covariances[good], no_disagreement[good], rotation_errors[good],
                      rotation_sigma[good], np.zeros(good.sum()), [s for s, g in zip(signals, good) if g],
                      position_coverage=0.6827)
    assert trust.position_scale == pytest.approx(2.0, rel=0.1)
    assert trust.rotation_scale == pytest.approx(1.5, rel=0.1)

    trust = fit_trust(errors, covariances, no_disagreement, rotation_errors, rotation_sigma, np.zeros(len(bad)), signals)
    assert trust.calibrated
    bad, errors, covariances, rotation_errors, rotation_sigma, signals = draw(np.random.default_rng(1), 600)
    valid = np.array([trust.is_valid(trust.confidence(s)) for s in signals])
    assert valid[~bad].mean() > 0.9 and (~valid[bad]).mean() > 0.9, (valid[~bad].mean(), (~valid[bad]).mean())
    # A round trip through estimator.json keeps every decision.
    again = TrustModel.from_dict(json.loads(json.dumps(trust.to_dict())))
    assert [again.confidence(s) for s in signals[:20]] == [trust.confidence(s) for s in signals[:20]]


def test_an_uncalibrated_estimator_calls_every_pose_valid():
    trust = TrustModel.from_index({"uncertainty_scale": {"position": 1.7, "rotation": 2.0}})
    assert not trust.calibrated and trust.confidence(_signals(np.random.default_rng(0), True)) == 1.0
    assert trust.position_scale == 1.7 and trust.rotation_scale == 2.0


def test_dense_consistency_on_a_real_crop_flags_a_mask_swollen_onto_the_hand():
    """Dense outputs equal to the rendered truth (mask and surface coordinates from the depth) agree
    with the true pose: PnP finds it, the depths match and no mask cell lies off the silhouette. Cells
    of 'object' added below it, as when the mask takes in the fingers, are counted as outside."""
    from discopose.datasets.loader import dense_targets
    from discopose.decoding import PoseNetSpec, dense_consistency
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    config = RenderConfig.load(overrides=CROPS + ["clutter.occluder_prob=0"])
    renderer = DiscoRenderer(config)
    try:
        _, views = renderer.render_index(3)
    finally:
        renderer.close()
    view = views["cam0"]
    labels = view["labels"]
    K, camera_from_object = np.asarray(labels["K"]), np.asarray(labels["camera_from_object"])
    spec = PoseNetSpec(stage="crop", input_size_px=(64, 64), object_diameter_m=renderer.object.diameter_m,
                       dense=True, dense_stride=8)
    mask, coordinates = dense_targets(view, K, camera_from_object, spec)
    logits = np.where(mask > 0, 5.0, -5.0)
    points = renderer.object.surface_points(300)
    truth_rotation, truth_position = camera_from_object[:3, :3], camera_from_object[:3, 3]
    check = dense_consistency(logits, coordinates, K, spec, truth_position, truth_rotation, points)
    signals = check["signals"]
    assert signals["pnp_found"] and signals["pnp_inlier_frac"] > 0.8
    assert abs(signals["pnp_depth_log_ratio"]) < 0.03 and signals["pnp_rotation_deg"] < 5
    assert signals["mask_outside_frac"] < 0.05
    assert rotation_angle_deg(check["rotation"], truth_rotation) < 5

    rows = np.flatnonzero((mask > 0).any(1))
    swollen = logits.copy()
    swollen[rows[-1] + 1:, :] = 5.0  # a palm under the cube
    swollen_signals = dense_consistency(swollen, coordinates, K, spec, truth_position, truth_rotation, points)["signals"]
    assert swollen_signals["mask_outside_frac"] > 0.2, swollen_signals


def _pose(position, rotation, sigma_m, valid=True, confidence=0.9, frame="camera:cam0"):
    from discopose.estimator.api import Pose
    return Pose(position_m=np.asarray(position, float), rotation=rotation, position_covariance_m2=np.diag(sigma_m ** 2),
                rotation_sigma_deg=3.0, frame=frame, valid=valid, confidence=confidence)


def _rig(world_from_object, rng, n=3):
    from discopose.camera import CameraModel
    from discopose.geometry.transforms import invert_transform, look_at
    cameras, truths = [], []
    for i, azimuth in enumerate(np.radians(np.arange(n) * 360 / n)):
        eye = 0.3 * np.array([np.cos(azimuth), np.sin(azimuth), 0.5])
        camera = CameraModel(f"cam{i}", 64, 64, np.diag([100.0, 100.0, 1.0]), world_from_camera=look_at(eye, np.zeros(3)))
        cameras.append(camera)
        truths.append(invert_transform(camera.world_from_camera) @ world_from_object)
    return cameras, truths


def test_fusion_leaves_out_invalid_cameras_and_needs_a_consensus():
    from discopose.estimator.api import fuse_world_poses
    rng = np.random.default_rng(5)
    world_from_object = np.eye(4)
    world_from_object[:3, :3] = random_rotation(rng)
    cameras, truths = _rig(world_from_object, rng)
    sigma = np.array([0.001, 0.001, 0.01])
    names = [c.name for c in cameras]
    # cam2 is invalid and 50 mm off: it is left out, the fused pose is valid and unharmed.
    poses = [_pose(t[:3, 3], t[:3, :3], sigma) for t in truths[:2]]
    poses.append(_pose(truths[2][:3, 3] + [0.05, 0, 0], truths[2][:3, :3], sigma, valid=False, confidence=0.1))
    fused = fuse_world_poses(poses, cameras, names)
    assert fused.valid and fused.extra["valid_cameras"] == ["cam0", "cam1"]
    assert np.linalg.norm(fused.position_m - world_from_object[:3, 3]) < 1e-6
    assert fused.confidence == pytest.approx(1 - 0.1 * 0.1)
    # Two valid cameras that disagree by 90 deg: nobody can tell which is right.
    flipped = truths[1][:3, :3] @ rotation_about_axis([1, 0, 0], np.pi / 2)
    poses = [_pose(truths[0][:3, 3], truths[0][:3, :3], sigma), _pose(truths[1][:3, 3], flipped, sigma)]
    assert not fuse_world_poses(poses, cameras[:2], names[:2]).valid
    # No valid camera, but all three agree: their consensus is valid on its own.
    poses = [_pose(t[:3, 3], t[:3, :3], sigma, valid=False, confidence=0.2) for t in truths]
    fused = fuse_world_poses(poses, cameras, names)
    assert fused.valid and fused.confidence == pytest.approx(1 - 0.8 ** 3)
    # No valid camera and no two agreeing (each misread another way): invalid.
    turns = [np.eye(3), rotation_about_axis([1, 0, 0], np.pi / 2), rotation_about_axis([0, 1, 0], np.pi / 2)]
    poses = [_pose(t[:3, 3], t[:3, :3] @ turn, sigma, valid=False, confidence=0.2) for t, turn in zip(truths, turns)]
    fused = fuse_world_poses(poses, cameras, names)
    assert not fused.valid and fused.confidence == pytest.approx(0.2)


def test_fused_covariance_grows_when_cameras_scatter_more_than_they_state():
    """Each camera 3 mm off (in its lateral axes) while stating 1 mm: the fused covariance is inflated
    by the Birge ratio, so its stated sigma is of the size of the fused error, not 3x smaller."""
    from discopose.estimator.api import fuse_world_poses
    rng = np.random.default_rng(7)
    world_from_object = np.eye(4)
    cameras, truths = _rig(world_from_object, rng)
    stated = np.array([0.001, 0.001, 0.01])
    errors, sigmas = [], []
    for trial in range(200):
        poses = [_pose(t[:3, 3] + rng.normal(size=3) * np.array([0.003, 0.003, 0.03]), t[:3, :3], stated)
                 for t in truths]
        fused = fuse_world_poses(poses, cameras, [c.name for c in cameras])
        errors.append(fused.position_m - world_from_object[:3, 3])
        sigmas.append(fused.position_sigma_m)
    covered = (np.abs(errors) < np.asarray(sigmas)).mean()
    assert 0.55 < covered < 0.9, covered
    # Without the inflation the same covariance would cover far fewer.
    poses = [_pose(t[:3, 3], t[:3, :3], stated) for t in truths]
    assert np.sqrt(np.diag(fuse_world_poses(poses, cameras, ["a", "b", "c"]).position_covariance_m2)).max() < 0.0015


def test_calibrated_estimator_states_validity_and_keeps_it_on_reload(trained_run, pose_datasets):
    import discopose
    from discopose.camera import CameraModel
    from discopose.datasets.reader import iter_samples, open_dataset
    run, _ = trained_run
    index = json.loads((run / "best" / "estimator.json").read_text())
    assert index["trust"]["samples"] == 40 and index["trust"]["fitted_on"] == pose_datasets["frames_val"]
    est = discopose.load(run / "best")
    sample = next(iter_samples(open_dataset(pose_datasets["test"])))
    labels = sample["labels"]["cameras"]["cam0"]
    pose = est.predict(sample["views"]["cam0"]["rgb"], camera=CameraModel("cam0", 160, 120, labels["K"]))
    assert isinstance(pose.valid, bool) and 0.0 <= pose.confidence <= 1.0
    assert set(SIGNALS) <= set(pose.extra["signals"])
    assert pose.valid == (pose.confidence >= est.trust.threshold)
    # The stated covariance is the calibrated one: the network's, scaled, plus the disagreement term.
    expected = est.trust.position_covariance(pose.extra["network_position_covariance_m2"],
                                             pose.extra["position_disagreement_m"])
    np.testing.assert_allclose(pose.position_covariance_m2, expected, rtol=1e-9)


def test_out_of_volume_is_the_log_distance_past_the_nearer_edge():
    from discopose.estimator.trust import out_of_volume
    assert out_of_volume(0.5, (0.12, 1.3)) == 0.0 and out_of_volume(5.0, None) == 0.0
    assert out_of_volume(2.6, (0.12, 1.3)) == pytest.approx(np.log(2), rel=1e-12)
    assert out_of_volume(0.06, (0.12, 1.3)) == pytest.approx(np.log(2), rel=1e-12)


def test_a_pose_outside_the_trained_distances_is_invalid_and_states_larger_sigmas(trained_run, pose_datasets):
    """The estimator's distance gate: catches a gate that is not applied, applied on the wrong side, or
    that leaves the stated sigmas as they were."""
    import discopose
    from discopose.camera import CameraModel
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.estimator.trust import OUT_OF_VOLUME_SIGMA_GROWTH
    run, _ = trained_run
    est = discopose.load(run / "best")
    assert est.volume_m is None  # trained at one distance (ONE_DISTANCE): no gate
    sample = next(iter_samples(open_dataset(pose_datasets["test"])))
    labels = sample["labels"]["cameras"]["cam0"]
    image, camera = sample["views"]["cam0"]["rgb"], CameraModel("cam0", 160, 120, labels["K"])
    inside = est.predict(image, camera=camera)
    distance = float(np.linalg.norm(inside.position_m))
    for volume in ((2 * distance, 4 * distance), (distance / 4, distance / 2)):
        est.volume_m = volume
        outside = est.predict(image, camera=camera)
        growth = np.exp(OUT_OF_VOLUME_SIGMA_GROWTH * np.log(2))
        assert not outside.valid and outside.extra["out_of_volume"] == pytest.approx(np.log(2), rel=1e-9)
        np.testing.assert_allclose(outside.position_sigma_m, growth * inside.position_sigma_m, rtol=1e-6)
        assert outside.rotation_sigma_deg == pytest.approx(growth * inside.rotation_sigma_deg, rel=1e-6)
    est.volume_m = (distance / 2, 2 * distance)
    again = est.predict(image, camera=camera)
    assert again.valid == inside.valid and again.extra["out_of_volume"] == 0.0
    np.testing.assert_allclose(again.position_sigma_m, inside.position_sigma_m, rtol=1e-9)


class _Corrupting:
    """The real estimator, except that every third view comes back 200 mm off and marked invalid (what a
    mask swollen onto the hand looks like to the tracker)."""

    def __init__(self, estimator):
        self.estimator, self.calls = estimator, 0

    def __getattr__(self, name):
        return getattr(self.estimator, name)

    def predict_views(self, views, priors=None):
        poses = self.estimator.predict_views(views, priors)
        if not any(image.any() for image, _ in views):
            return poses  # the tracker's warm-up on blank frames
        for pose in poses:
            pose.valid, pose.confidence = True, 0.9
            if self.calls % 3 == 0:
                pose.position_m = pose.position_m + np.array([0.2, 0.0, 0.0])
                pose.valid, pose.confidence = False, 0.05
            self.calls += 1
        return poses


def test_tracker_treats_invalid_measurements_as_missing(trained_run, tmp_path):
    """Invalid raw poses never move the filter, are recorded as invalid, and the first published
    message (an invalid frame, before any valid one) is marked invalid rather than passed off as good."""
    import discopose
    from discopose.camera import CameraModel
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker
    from discopose.render.config import RenderConfig
    from discopose.render.trajectory import render_trajectory_video
    run, _ = trained_run
    config = RenderConfig.load(overrides=[*NO_HAND, *ONE_DISTANCE, "camera.width_px=160", "camera.height_px=120",
                                          "camera.fov_deg=50", "textures.bank_size=12", "textures.size_px=32"])
    clip = render_trajectory_video(config, tmp_path / "clip.mp4", num_frames=15)
    tracker = Tracker(_Corrupting(discopose.load(run / "best")),
                      {"cam0": CameraSource("cam0", str(clip.videos["cam0"]), mode="lockstep")},
                      {"cam0": CameraModel.load(clip.cameras["cam0"])},
                      TrackConfig(publish=None, record=str(tmp_path / "poses.jsonl")))
    tracker.run()
    records = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert len(records) == 15
    first = records[0]
    assert not first["raw_valid"] and not first["valid"] and first["measurement_age_s"] is None
    for record in records[1:]:
        if not record["raw_valid"]:
            assert not record["accepted"]
            # The filtered pose stays with the valid measurements, 200 mm away from this one.
            assert np.linalg.norm(np.subtract(record["position_m"], record["raw_position_m"])) > 0.1
        else:
            assert record["valid"] and record["confidence"] == pytest.approx(0.9)
