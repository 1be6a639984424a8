import json
import os
import subprocess
import time
import sys

import numpy as np
import pytest
import torch

from discopose._errors import DatasetError, DiscoposeError
from discopose.geometry import random_rotation, rotation_angle_deg
from discopose.geometry.rotations_torch import (canonical_index, geodesic_angle, matrix_from_rotation_6d,
                                                rotation_6d_from_matrix, symmetric_geodesic_angle)
from discopose.geometry.symmetry import Symmetry
from discopose.models import metrics
from discopose.models.losses import pose_loss


def test_rotation_6d_round_trip_and_geodesic_matches_numpy():
    rng = np.random.default_rng(0)
    rotations = torch.tensor(np.stack([random_rotation(rng) for _ in range(64)]), dtype=torch.float64)
    torch.testing.assert_close(matrix_from_rotation_6d(rotation_6d_from_matrix(rotations)), rotations)
    # Any 6 numbers map to a proper rotation.
    arbitrary = matrix_from_rotation_6d(torch.randn(32, 6, dtype=torch.float64))
    torch.testing.assert_close(arbitrary @ arbitrary.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(32, 3, 3))
    assert torch.allclose(torch.det(arbitrary), torch.ones(32, dtype=torch.float64))
    angles = geodesic_angle(rotations[:32], rotations[32:])
    expected = [rotation_angle_deg(a, b) for a, b in zip(rotations[:32].numpy(), rotations[32:].numpy())]
    np.testing.assert_allclose(np.degrees(angles.numpy()), expected, atol=1e-6)


def test_geodesic_gradient_is_finite_at_zero_and_pi():
    rotation = torch.eye(3, dtype=torch.float64, requires_grad=True)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    for target in (torch.eye(3, dtype=torch.float64), flip):
        geodesic_angle(rotation[None], target[None]).sum().backward()
        assert torch.isfinite(rotation.grad).all()


def test_symmetric_loss_is_zero_for_equivalent_poses():
    rng = np.random.default_rng(1)
    cube = torch.tensor(Symmetry("cube").matrices(), dtype=torch.float32)
    target = torch.tensor(np.stack([random_rotation(rng) for _ in range(8)]), dtype=torch.float32)
    equivalent = target @ cube[torch.randint(1, 24, (8,))]
    angle, _ = symmetric_geodesic_angle(equivalent, target, cube)
    assert angle.max() < 1e-3
    plain, _ = symmetric_geodesic_angle(equivalent, target, cube[:1])
    assert plain.min() > 1.0  # without the symmetry these are 90+ degrees apart
    uvz = torch.zeros(8, 3)
    prediction = {"rotation": equivalent, "position_uvz": uvz, "position_log_var": torch.zeros(8, 3),
                  "rotation_log_var": torch.zeros(8)}
    loss, parts = pose_loss(prediction, uvz, target, cube)
    assert parts["rotation_rad"] < 1e-3 and parts["position"] == 0


def test_marking_class_is_labelled_from_ground_truth_alone():
    """Whatever equivalent the geometry regression lands on, (its canonical form, the ground-truth
    class) gives back the true rotation; and the label does not depend on the prediction."""
    from discopose.models.pose_net import rotation_from_shape_and_class
    rng = np.random.default_rng(2)
    cube = torch.tensor(Symmetry("cube").matrices(), dtype=torch.float32)
    truth = torch.tensor(np.stack([random_rotation(rng) for _ in range(16)]), dtype=torch.float32)
    label = canonical_index(truth, cube)
    for k in range(24):
        regressed = truth @ cube[k]
        torch.testing.assert_close(rotation_from_shape_and_class(regressed, label, cube), truth, atol=1e-5, rtol=0)
    # The label is the class of the rotation, not of a prediction: equivalent truths share no label...
    assert len(set(canonical_index(truth[:1] @ cube, cube).tolist())) == 24
    # ...and a wrong class is a genuinely different orientation (90 deg or more away).
    wrong = rotation_from_shape_and_class(truth, (label + 1) % 24, cube)
    assert np.degrees(geodesic_angle(wrong, truth).min().item()) > 89


def test_dense_loss_is_symmetry_aware_and_ignores_unknown_cells():
    from discopose.models.losses import dense_loss
    cube = torch.tensor(Symmetry("cube").matrices(), dtype=torch.float32)
    coordinates = torch.rand(2, 3, 4, 4) - 0.5
    mask = torch.ones(2, 4, 4)
    # The same surface seen under an equivalent pose R @ S shows the point S^T p.
    equivalent = torch.einsum("ji,bjhw->bihw", cube[5], coordinates)
    prediction = {"mask_logits": torch.full((2, 4, 4), 10.0), "coordinates": equivalent}
    _, parts = dense_loss(prediction, mask, coordinates, cube)
    assert parts["coordinates"] < 1e-6
    _, plain = dense_loss(prediction, mask, coordinates, cube[:1])
    assert plain["coordinates"] > 0.1
    unknown = torch.full((2, 4, 4), -1.0)
    _, parts = dense_loss(prediction, unknown, coordinates, cube[:1])
    assert parts["mask"] == 0 and parts["coordinates"] == 0


def test_metrics_match_hand_computed_values():
    points = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0]])
    identity = np.eye(3)
    # A pure 3-4-5 translation error: te = ADD = 5 mm.
    errors = metrics.pose_errors(identity, [0.003, 0.004, 0], identity, [0, 0, 0], points)
    assert errors["te_mm"] == pytest.approx(5.0) and errors["add_mm"] == pytest.approx(5.0)
    # 180 degrees about z maps this point set onto itself: ADD = 200 mm on average, ADD-S = 0.
    flip = np.diag([-1.0, -1.0, 1.0])
    errors = metrics.pose_errors(flip, [0, 0, 0], identity, [0, 0, 0], points)
    assert errors["re_deg"] == pytest.approx(180.0)
    assert errors["add_mm"] == pytest.approx(200.0) and errors["adds_mm"] == pytest.approx(0.0)
    symmetric = metrics.pose_errors(flip, [0, 0, 0], identity, [0, 0, 0], points, symmetries=np.stack([identity, flip]))
    assert symmetric["re_deg"] == pytest.approx(0.0, abs=1e-6)
    summary = metrics.summarize([{"te_mm": 1, "re_deg": 1, "add_mm": 5, "adds_mm": 1},
                                 {"te_mm": 20, "re_deg": 1, "add_mm": 50, "adds_mm": 2}], diameter_m=0.1, symmetric=False)
    assert summary["success"]["add(-s)<10%d"] == 0.5 and summary["success"]["5mm5deg"] == 0.5
    assert summary["te_mm"]["median"] == pytest.approx(10.5)


@pytest.mark.parametrize("rotation_head", ["6d", "patch_pnp"])
def test_overfit_one_batch_full_orientation_of_the_lettered_cube(small_crops, rotation_head):
    """Each rotation path memorizes 16 real crops of the default cube, full orientation (no symmetry discount):
    the 6D + class path (the locator's, old checkpoints', rotation_head=6d) and Patch-PnP (the crop default);
    with each, the dense head's PnP and the rotation the estimator reports (decoding.reported_rotation). Catches
    label, sign, normalization and representation bugs: every bar is far below chance (125 deg on these crops,
    the class 1 in 24) and holds on both CPU classes (OVERFIT_BARS)."""
    from discopose.datasets.loader import make_loader
    from discopose.datasets.reader import open_dataset
    from discopose.models.losses import dense_loss
    from discopose.decoding import pose_from_dense, reported_rotation
    from discopose.models.pose_net import PoseNet
    from discopose.models.train import TrainConfig, training_spec
    torch.manual_seed(0)
    info = open_dataset(small_crops["depth"])
    spec, _ = training_spec(info, TrainConfig(stage="crop", hidden=128, rotation_head=rotation_head))
    assert len(spec.shape_rotations) == 24 and spec.rotation_head == rotation_head
    images, target = next(iter(make_loader(info, spec, OVERFIT_CROPS, train=False, num_workers=0)))
    model = PoseNet(spec, pretrained="imagenet")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    group = torch.tensor(spec.shape_rotations, dtype=torch.float32)
    identity = torch.eye(3)[None]
    model.train()
    for _ in range(OVERFIT_STEPS):
        out = model(images)
        loss, parts = pose_loss(out, target["position_uvz"], target["rotation"], identity, group)
        dense, _ = dense_loss(out, target["dense_mask"], target["dense_coordinates"], identity)
        optimizer.zero_grad()
        (loss + dense).backward()
        optimizer.step()
    # Judged in training mode: with one batch memorized, BatchNorm's running statistics lag the
    # still-moving weights, which says nothing about sign or normalization bugs.
    with torch.no_grad():
        out = model(images)
    # The rotation head alone: 6D up to the shape + the markings' class, or Patch-PnP's full rotation.
    angle = np.degrees(geodesic_angle(out["rotation"], target["rotation"]).numpy())
    classified = (out["symmetry_logits"].argmax(1) == canonical_index(target["rotation"], group)).float().mean()
    position_error = (out["position_uvz"] - target["position_uvz"]).abs().mean(0)
    dense_angles, reported_angles = [], []
    for i in range(OVERFIT_CROPS):
        K = target["K"][i].numpy().astype(float)
        pose, _ = pose_from_dense(out["mask_logits"][i].numpy(), out["coordinates"][i].numpy(), K, spec)
        if pose is not None:
            dense_angles.append(rotation_angle_deg(pose[:3, :3], target["rotation"][i].numpy()))
        reported, _, _ = reported_rotation(out["rotation"][i].numpy().astype(float), out["mask_logits"][i].numpy(),
                                           out["coordinates"][i].numpy(), K, spec)
        reported_angles.append(rotation_angle_deg(reported, target["rotation"][i].numpy()))
    measured = {"head": float(np.median(angle)), "class": float(classified), "pnp": float(np.median(dense_angles)),
                "pnp_found": len(dense_angles), "reported": float(np.median(reported_angles)),
                "reported_within_30": float(np.mean(np.array(reported_angles) < 30))}
    assert measured["head"] < OVERFIT_BARS["head"] and measured["class"] >= OVERFIT_BARS["class"], measured
    assert (position_error < 0.4 * target["position_uvz"].std(0)).all(), position_error
    assert measured["pnp_found"] >= OVERFIT_BARS["pnp_found"] and measured["pnp"] < OVERFIT_BARS["pnp"], measured
    assert measured["reported"] < OVERFIT_BARS["reported"], measured
    assert measured["reported_within_30"] >= OVERFIT_BARS["reported_within_30"], measured


OVERFIT_CROPS = 16
OVERFIT_STEPS = 80
# Medians in degrees (the rotation head alone, the dense head's PnP where it finds a pose, the reported rotation),
# the class's share right, how many crops PnP finds a pose on, the share reported within 30 deg. Measured after 80
# steps on the avx512 CPU (native) and with torch held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2):
#   6d:        head 1.1 / 3.6, class 1.00 / 0.94, PnP 4.7 / 7.2 (13 / 12 found), reported 2.2 / 4.1,
#              within 30 deg 0.94 / 0.94
#   patch_pnp: head 9.2 / 10.0, class 1.00 / 1.00, PnP 3.3 / 4.1 (12 / 13 found), reported 4.7 / 6.8,
#              within 30 deg 0.88 / 0.81
# so the degree bars hold with a margin of 2.8x or more on both, the shares with 0.19 or more and PnP's count with
# 4 crops (the position error is at most 0.25 of its spread, the bar 0.4). Chance: 125 deg, a class in 24.
OVERFIT_BARS = {"head": 30.0, "class": 0.75, "pnp": 20.0, "pnp_found": 8, "reported": 20.0, "reported_within_30": 0.6}


@pytest.fixture(scope="module")
def head_check_crops(tmp_path_factory):
    """A small fixed crop set to train on and held-out crops of the same world (64 px, without the hand)."""
    from discopose.datasets.generate import generate_dataset
    from discopose.render.config import RenderConfig
    from tests.conftest import CROPS
    root = tmp_path_factory.mktemp("head-check")
    for name, count, seed in (("train", HEAD_CHECK_CROPS, 21), ("held_out", 64, 22)):
        generate_dataset(str(root / name), count, RenderConfig.load(overrides=CROPS + [f"seed={seed}"]), workers=2,
                         progress=False)
    return {name: str(root / name) for name in ("train", "held_out")}


# The budget the bars need, on both CPU classes (fraction of chance on the training crops, regressed rotation in full /
# up to the shape; "AVX2" is torch held to the slow class's kernels, ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2):
# 30 passes left the Patch-PnP head unconverged in one run of seven (seed 0 with AVX2 kernels: 0.45 / 0.92 against
# bars of 0.4 / 0.85; seeds 0-3 otherwise 0.19-0.22 / 0.58-0.64); 40 passes read seed 0 at 0.12 / 0.36 with AVX2
# kernels and 0.13 / 0.38 with avx512 ones (PnP and reported 0.11-0.13 / 0.32-0.40, class 22x chance), a margin of
# 3x / 2.2x. At half the budget the heads are not yet far below chance (15 passes: 0.66 / 1.0; 30 passes over 128
# crops: 0.57 / 0.94). The 40 passes run as 10 epochs of 4 (TrainConfig.passes_per_epoch), the same steps and
# schedule with a quarter of the validations, checkpoints and loader starts: seed 0 reads 0.125 / 0.376 (avx512) and
# 0.126 / 0.379 (AVX2 kernels), PnP and reported 0.10-0.13 / 0.31-0.38, class 23x, held-out position 0.54 of chance;
# its training took 94 s against 201 s as 40 epochs of one pass (fifth session, avx512).
HEAD_CHECK_CROPS = 256
HEAD_CHECK_PASSES = 40
HEAD_CHECK_PASSES_PER_EPOCH = 4


def test_every_head_beats_chance_in_the_real_training_loop(head_check_crops, tmp_path):
    """The real loop (its loss weights, one-cycle schedule, augmentation, channels-last) on 256 crops, 40
    passes in 10 epochs: every head ends far below chance on its own training crops, and each logs its error per epoch.
    The overfit test above passed for releases while the 6D rotation head stayed near chance in every real
    training. A regressed rotation that gets no gradient fails it (measured with the head's output detached in the
    loss: 1.0 of chance in full and up to the shape, against the bar's 0.4 / 0.85). What it no longer tells apart is
    the 6D head's slowness: at 30 passes that head stayed at 0.55 of chance, at 40 it memorizes its 256 crops too
    (0.12 / 0.31); the 6D head's failure is on unseen crops. Held-out crops: position and mask generalize at this
    budget; rotation needs ~25k crop views (measured, 2.5x this test), so it is checked by every training's
    validation line (benchmarks/rotation_heads.py)."""
    from discopose.datasets.reader import open_dataset
    from discopose.models.checkpoint import load_checkpoint
    from discopose.models.evaluate import chance_levels, head_errors, predict_dataset
    from discopose.models.train import TrainConfig, train
    # The per-epoch validation reads 16 of the held-out crops (val_limit): the log lines and their keys are what is
    # checked of it, and the held-out figures asserted below come from all 64 after training.
    train(head_check_crops["train"], str(tmp_path / "run"), val=head_check_crops["held_out"], progress=False,
          config=TrainConfig(stage="crop", epochs=HEAD_CHECK_PASSES // HEAD_CHECK_PASSES_PER_EPOCH, num_workers=2,
                             seed=0, val_limit=16, passes_per_epoch=HEAD_CHECK_PASSES_PER_EPOCH))
    model, meta = load_checkpoint(tmp_path / "run" / "last")
    assert meta["step"] == HEAD_CHECK_PASSES * HEAD_CHECK_CROPS // 32  # every pass, 4 to an epoch
    logged = meta["val_metrics"]["heads"]
    assert {"regressed", "pnp", "reported", "class_accuracy", "mask_iou", "coordinates_mm"} <= set(logged)
    measured = {}
    for name, path in head_check_crops.items():
        info = open_dataset(path)
        predictions = predict_dataset(model, info)
        truth = predictions["true_position_m"]
        chance_mm = 1000 * np.median(np.linalg.norm(truth - truth.mean(0), axis=1))
        chance = chance_levels(predictions, meta, np.asarray(meta["object"]["surface_points_m"]),
                               info.symmetry.matrices(), meta["train_camera_position_m_mean"])
        measured[name] = (head_errors(predictions, meta, chance), chance_mm)
    report = {name: heads for name, (heads, _) in measured.items()}
    # Far below chance on the crops the network trained on (measured with Patch-PnP, seed 0, both CPU classes:
    # position 0.12-0.15 of chance, rotations 0.11-0.13 in full and 0.32-0.40 up to the cube's symmetry, class 22x).
    heads, chance_mm = measured["train"]
    chance = heads["chance"]
    assert heads["position_te_mm"] < 0.5 * chance_mm, report
    for rotation in ("regressed", "pnp", "reported"):
        assert heads[rotation]["re_deg"] < 0.4 * chance["re_deg"], (rotation, report)
        assert heads[rotation]["re_shape_deg"] < 0.85 * chance["re_shape_deg"], (rotation, report)
    assert heads["class_accuracy"] > 5 * chance["class_accuracy"], report
    assert heads["mask_iou"] > 0.6 and heads["coordinates_mm"] < 20, report
    # Held out: position and mask (0.53 of chance and IoU 0.80 measured).
    heads, chance_mm = measured["held_out"]
    assert heads["position_te_mm"] < 0.8 * chance_mm and heads["mask_iou"] > 0.6, report


def test_missing_imagenet_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    from discopose.models.backbones import build_backbone
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("DISCOPOSE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: fail fast, like no network
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(DiscoposeError, match="resnet18-f37072fd.pth.*--pretrained none"):
        build_backbone("resnet18", "imagenet")


def test_corrupt_local_weights_fail_the_hash_check(tmp_path, monkeypatch):
    from discopose.models.backbones import build_backbone
    (tmp_path / "mobilenet_v2-b0353104.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("DISCOPOSE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(DiscoposeError, match="fails its hash check"):
        build_backbone("mobilenet_v2", "imagenet")


def test_imagenet_weights_load_and_classify_consistently():
    """The offline checkpoint is torchvision's: loading it changes the network from its random init."""
    from discopose.models.backbones import build_backbone, load_imagenet_state_dict
    state = load_imagenet_state_dict("mobilenet_v2")
    backbone, dim = build_backbone("mobilenet_v2", "imagenet")
    assert dim == 1280
    torch.testing.assert_close(backbone[0][0].weight, state["features.0.0.weight"])


def test_short_training_beats_the_mean_pose_baseline(trained_run, pose_datasets):
    from discopose.evaluation import evaluate_checkpoint
    run, _ = trained_run
    result = evaluate_checkpoint(str(run / "best"), pose_datasets["test"], str(run / "eval"))
    summary, baseline = result["summary"], result["baseline"]
    assert baseline["positions_from"] == "training labels"
    # Position is learned first (0.35 of the baseline with avx512 kernels, 0.39 with torch held to AVX2 ones). The
    # full orientation of the lettered cube on unseen frames needs ~25k crop views, far more than this run's 4.8k:
    # measured 111 and 127 deg, chance 128, so any orientation bar here would pass or fail by the CPU. That the
    # rotation heads learn is asserted where it holds on both: test_every_head_beats_chance_in_the_real_training_loop,
    # and per rotation path (6D + class, Patch-PnP; each with PnP and the reported rotation) in
    # test_overfit_one_batch_full_orientation_of_the_lettered_cube.
    assert summary["te_mm"]["median"] < 0.7 * baseline["te_mm_median"], (summary["te_mm"], baseline)
    report = (run / "eval" / "report.html").read_text()
    for image in ("errors_hist.png", "errors_cdf.png", "errors_vs_conditions.png", "worst_cases.png"):
        assert image in report and (run / "eval" / image).stat().st_size > 1000
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    # Each rotation head is judged alone too, in metrics.json and the report.
    heads = saved["summary"]["heads"]
    assert {"regressed", "pnp", "reported", "chance"} <= set(heads) and "Rotation per head" in report
    assert heads["reported"]["re_deg"] == pytest.approx(summary["re_deg"]["median"], abs=1e-6)
    assert sum(row["count"] for row in saved["summary"]["by_distance"]) == summary["count"]
    uncertainty = saved["summary"]["uncertainty"]
    # Stated sigmas are neither zero nor vacuous: they cover some errors but not all.
    assert 0.2 < uncertainty["position_within_2sigma"] < 1.0
    assert (run / "locator" / "tensorboard").is_dir() and any((run / "crop" / "tensorboard").iterdir())


def test_two_line_api_needs_the_camera(trained_run, pose_datasets):
    """(The ONNX backend's agreement with torch through the same two lines: test_pretrained's packing test,
    which exports the graphs once for the suite.)"""
    import discopose
    from discopose.camera import CameraModel
    from discopose.datasets.reader import iter_samples, open_dataset
    run, _ = trained_run
    est = discopose.load(run / "best")
    sample = next(iter_samples(open_dataset(pose_datasets["test"])))
    image, labels = sample["views"]["cam0"]["rgb"], sample["labels"]["cameras"]["cam0"]
    assert image.shape == (120, 160, 3)
    camera = CameraModel("cam0", 160, 120, labels["K"])
    pose = est.predict(image, camera=camera)
    assert pose.frame == "camera:cam0" and pose.position_m.shape == (3,) and pose.quat_wxyz.shape == (4,)
    assert (pose.position_sigma_m > 0).all() and pose.rotation_sigma_deg > 0
    # A camera file and a bare K are the same camera.
    camera_file = camera.save(run / "cam0.yaml")
    np.testing.assert_allclose(est.predict(image, camera=camera_file).position_m, pose.position_m, atol=1e-9)
    np.testing.assert_allclose(est.predict([image], camera=np.asarray(labels["K"]))[0].position_m, pose.position_m,
                               atol=1e-9)
    # Without its camera an image of another size is refused, with what to pass.
    with pytest.raises(DiscoposeError, match="without its camera.*camera="):
        est.predict(image)
    # The explicit opt-in assumes the model's camera rescaled - a different lens here, so another pose.
    guessed = est.predict(image, assume_nominal=True)
    assert np.linalg.norm(guessed.position_m - pose.position_m) > 0.005
    with pytest.raises(DiscoposeError, match="expected an HxWx3 RGB uint8 image"):
        est.predict(image.astype(np.float32), camera=camera)


def test_estimator_knows_the_world_it_was_trained_in(trained_run):
    """The locator's training render config travels with the checkpoint, so a test clip can be rendered in
    that world (the demo's model learned without the hand; a clip with one is another task)."""
    import discopose
    from discopose._errors import ConfigError
    from discopose.render.config import RenderConfig
    from tests.conftest import FRAMES
    run, _ = trained_run
    world = discopose.load(run / "best").train_render_config
    assert world == RenderConfig.load(overrides=FRAMES + ["seed=0"])  # the frames set, not the crops
    clip_world = world.with_overrides(["camera.width_px=50", "seed=9"])
    assert (clip_world.camera.width_px, clip_world.seed, clip_world.hand.prob) == (50, 9, 0.0)
    assert world.camera.width_px == 96, "with_overrides leaves the original alone"
    with pytest.raises(ConfigError, match="camera.width_px"):
        world.with_overrides(["camera.width_px=-1"])


def test_same_scenes_through_two_cameras_give_the_same_poses(trained_run, tmp_path):
    """The same scenes rendered with two different intrinsics (size, aspect, field of view) are
    estimated alike through predict(camera=...) and through BOP folders with per-image cam_K."""
    from discopose.datasets.bop import export_bop
    from discopose.datasets.generate import generate_dataset
    from discopose.evaluation import evaluate_checkpoint
    from discopose.render.config import RenderConfig
    run, _ = trained_run
    # One distance, cameras aimed at the workspace centre: in the volume each camera's turn depends on its field
    # of view, so the two intrinsics would not show the same scenes.
    looks = ["textures.bank_size=12", "textures.size_px=32", "noise.gaussian_sigma=[0, 0]", "noise.blur_prob=0",
             "seed=7", "camera.distance_range_m=null"]
    cameras = {"a": ["camera.width_px=160", "camera.height_px=120", "camera.fov_deg=50"],
               "b": ["camera.width_px=144", "camera.height_px=144", "camera.fov_deg=36"]}
    import discopose
    from discopose.datasets.reader import open_dataset
    from discopose.evaluation import predict_with_estimator
    estimator = discopose.load(run / "best")
    positions = {}
    for name, overrides in cameras.items():
        generate_dataset(str(tmp_path / name), 12, RenderConfig.load(overrides=overrides + looks), workers=1,
                         progress=False)
        positions[name] = predict_with_estimator(estimator, open_dataset(str(tmp_path / name)))
        # (Without the reports' plots: ~1 s a report, and the figures are test_short_training's to check.)
        direct = evaluate_checkpoint(str(run / "best"), str(tmp_path / name), str(tmp_path / f"eval_{name}"),
                                     plots=False)
        export_bop(str(tmp_path / name), tmp_path / f"bop_{name}")
        via_bop = evaluate_checkpoint(str(run / "best"), None, str(tmp_path / f"eval_bop_{name}"),
                                      bop=str(tmp_path / f"bop_{name}"), plots=False)
        assert via_bop["summary"]["count"] == direct["summary"]["count"] == 12
        assert via_bop["summary"]["te_mm"]["median"] == pytest.approx(direct["summary"]["te_mm"]["median"], abs=1e-3)
    a, b = positions["a"], positions["b"]
    np.testing.assert_allclose(a["true_position_m"], b["true_position_m"], atol=1e-9)  # the same scenes
    disagreement_mm = 1000 * np.median(np.linalg.norm(a["position_m"] - b["position_m"], axis=1))
    error_mm = 1000 * np.median(np.linalg.norm(a["position_m"] - a["true_position_m"], axis=1))
    # Ignoring K would put the two ~40% apart in depth (~100 mm); read right they agree closely.
    assert disagreement_mm < 0.5 * error_mm + 3.0, (disagreement_mm, error_mm)


def test_mismatched_dataset_and_model_is_refused(trained_run, tmp_path):
    from discopose.datasets.generate import generate_dataset
    from discopose.evaluation import evaluate_checkpoint
    from discopose.render.config import RenderConfig
    run, _ = trained_run
    generate_dataset(str(tmp_path / "big-cube"), 2, RenderConfig.load(overrides=[
        "object.cube_size_m=0.08", "camera.width_px=32", "camera.height_px=32", "textures.bank_size=2"]), workers=1,
        progress=False)
    with pytest.raises(DatasetError, match=r"shows object .* but the model was trained on"):
        evaluate_checkpoint(str(run / "best"), str(tmp_path / "big-cube"), str(tmp_path / "eval"))


def _lr_curve(run) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"))  # purges a killed run's steps that were redone
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/lr")}


def test_training_killed_by_sigkill_resumes_like_a_clean_run(pose_datasets, tmp_path):
    """SIGKILL during epoch 2 of 3, then --resume: the same step count and learning-rate curve as an
    uninterrupted run (one-cycle back down to ~0 at the end, not restarted or stretched). On the 40 validation
    frames seen 3 times an epoch in batches of 8: 45 steps, 4 logged learning rates, a few seconds a run."""
    from discopose.models.checkpoint import load_train_state
    from discopose.models.train import TrainConfig, train
    data = pose_datasets["frames_val"]
    config = TrainConfig(epochs=3, batch_size=8, num_workers=0, pretrained="none", backbone="mobilenet_v3_small",
                         stage="locator", passes_per_epoch=3)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "discopose.cli", "train", "--data", data, "--out", str(killed),
                             "--epochs", "3", "--batch-size", "8", "--num-workers", "0", "--pretrained", "none",
                             "--backbone", "mobilenet_v3_small", "--set", "stage=locator", "--set", "passes_per_epoch=3",
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (killed / "last" / "train_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert load_train_state(killed / "last")["epoch"] == 0, "the kill came after epoch 2's checkpoint"
    resumed = train(data, str(killed), config=config, resume=True, progress=False)
    fresh = train(data, str(tmp_path / "fresh"), config=config, progress=False)
    assert resumed["epoch"] == fresh["epoch"] == 3 and resumed["step"] == fresh["step"] == 45
    assert resumed["lr"] == pytest.approx(fresh["lr"], rel=1e-9) and resumed["lr"] < 0.01 * config.lr
    curve, clean_curve = _lr_curve(killed), _lr_curve(tmp_path / "fresh")
    assert sorted(curve) == sorted(clean_curve) and len(curve) >= 4
    assert [curve[step] for step in sorted(curve)] == pytest.approx([clean_curve[s] for s in sorted(curve)], rel=1e-6)


@pytest.mark.slow
def test_torchrun_ddp_two_processes(pose_datasets, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                             "-m", "discopose.cli", "train", "--data", pose_datasets["frames"], "--out",
                             str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "16", "--num-workers", "0",
                             "--pretrained", "none", "--backbone", "mobilenet_v3_small", "--quiet"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp" / "best" / "meta.json").read_text())
    # 600 samples in 3 shards on 2 ranks (uneven: 400 vs 200), batch 16 per rank: 18 steps on every rank,
    # so no rank waits in an all-reduce the other never reaches.
    assert meta["step"] == 600 // (16 * 2)


def test_corrupt_checkpoints_are_refused_with_a_clear_error(trained_run, tmp_path):
    import shutil

    import discopose
    run, _ = trained_run
    copy = tmp_path / "best"
    shutil.copytree(run / "best", copy)
    weights = copy / "crop" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)  # 4 KiB zeroed mid-weights: still loadable
    weights.write_bytes(bytes(data))
    with pytest.raises(DiscoposeError, match="does not match the sha256 in meta.json"):
        discopose.load(copy, backend="torch")
    shutil.copy(run / "best" / "crop" / "model.safetensors", weights)
    if (copy / "crop" / "model.onnx").is_file():  # exported by an earlier test: its graph is checked the same way
        graph = copy / "crop" / "model.onnx"
        graph.write_bytes(graph.read_bytes()[:-4096] + bytes(4096))
        with pytest.raises(DiscoposeError, match="model.onnx does not match the sha256"):
            discopose.load(copy, backend="onnx")
        shutil.copy(run / "best" / "crop" / "model.onnx", graph)
    meta = copy / "locator" / "meta.json"
    meta.write_text(meta.read_text()[:100])
    with pytest.raises(DiscoposeError, match="meta.json is truncated or corrupt"):
        discopose.load(copy)


def test_a_crash_between_the_checkpoint_renames_loses_nothing(trained_run, tmp_path):
    """swap_folder sets the old version aside before renaming the new one in; a crash in between
    leaves no best/, and the next reader puts the set-aside version back."""
    import shutil

    import discopose
    run, _ = trained_run
    shutil.copytree(run / "best", tmp_path / ".best.deadbeef.old")  # as left by a crash
    assert not (tmp_path / "best").exists()
    est = discopose.load(tmp_path / "best")
    assert (tmp_path / "best" / "estimator.json").is_file() and est.crop is not None
    assert not list(tmp_path.glob(".best.*.old"))


def test_errors_validity_and_coverage_by_distance_bin():
    """Each sample lands in its distance bin; medians, 1 sigma coverage and the flag's shares are per bin."""
    from discopose.models.evaluate import by_distance
    distance = np.array([0.22, 0.24, 0.26, 0.45, 0.46, 1.2])
    te_mm = np.array([2.0, 4.0, 30.0, 8.0, 50.0, 5.0])
    re_deg = np.array([3.0, 5.0, 7.0, 40.0, 2.0, 1.0])
    errors = [{"te_mm": t, "re_deg": r} for t, r in zip(te_mm, re_deg)]
    truth = np.zeros((6, 3))
    estimate = truth + np.c_[te_mm / 1000, np.zeros(6), np.zeros(6)]  # the whole error along x
    sigma = np.full((6, 3), 0.005)  # covers x for errors under 5 mm; y and z always
    predictions = {"distance_m": distance, "position_m": estimate, "true_position_m": truth,
                   "position_sigma_m": sigma, "valid": np.array([True, True, True, False, True, True]),
                   "confidence": np.full(6, 0.5)}
    rows = by_distance(errors, predictions)
    assert [row["distance_m"] for row in rows] == [[0.2, 0.3], [0.4, 0.5], [1.0, 1.3]]
    assert [row["count"] for row in rows] == [3, 2, 1]
    near, middle, far = rows
    assert near["te_mm_median"] == 4.0 and near["re_deg_median"] == 5.0
    # The error as a share of each sample's own distance: 2/0.22, 4/0.24, 30/0.26 mm per m -> median 4/0.24.
    assert near["te_rel_median"] == pytest.approx(4.0 / 240.0, rel=1e-9)
    assert near["position_within_1sigma"] == pytest.approx((2 + 3 + 3) / 9)
    # Near: one gross error (30 mm) left valid; middle: two gross errors, one flagged (40 deg) one not (50 mm).
    assert near["gross_count"] == 1 and near["gross_invalid_frac"] == 0.0 and near["good_valid_frac"] == 1.0
    assert middle["gross_count"] == 2 and middle["gross_invalid_frac"] == 0.5 and middle["good_valid_frac"] is None
    assert far["gross_invalid_frac"] is None and far["te_mm_median"] == 5.0


def test_an_unknown_rotation_head_is_a_config_error():
    from discopose._errors import ConfigError
    from discopose.decoding import PoseNetSpec
    with pytest.raises(ConfigError, match="rotation_head='6D'.*6d, patch_pnp"):
        PoseNetSpec(rotation_head="6D")


@pytest.mark.parametrize("arguments, message", [
    (["--crops", "missing-crops"], "--crops and --val go together"),
    (["--val", "missing-val"], "--crops and --val go together"),
    (["--crops", "missing-crops", "--val", "missing-val", "--variants", "patch_pnp+strid4"],
     r"unknown knob\(s\) \+strid4"),
    (["--crops", "missing-crops", "--val", "missing-val", "--variants", "6d,pnp"], "rotation head 'pnp' is unknown"),
])
def test_rotation_heads_benchmark_checks_its_arguments_before_training(arguments, message, tmp_path):
    """A bad argument stops the benchmark at once with its usage error, not after hours of training (a missing
    --val crashed in open_dataset(None) once every variant had trained; a mistyped knob was ignored)."""
    import re
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "rotation_heads.py")
    result = subprocess.run([sys.executable, script, *arguments, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_estimator_ab_takes_turns_at_going_first():
    """Two identical models timed on a machine where a call on the item the previous call touched is warm
    (0.5 ms) and any other cold (2 ms): each model goes first on half the views, so their times are the
    same. Always running A first made B 4x faster here (B read the image A had just warmed)."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "estimator_ab.py")
    spec = importlib.util.spec_from_file_location("estimator_ab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    machine = {"now_s": 0.0, "last": None}

    def predict(view):
        machine["now_s"] += 0.5e-3 if machine["last"] == view else 2e-3
        machine["last"] = view

    times = module.time_alternating({"a": predict, "b": predict}, list(range(40)), passes=3,
                                    clock=lambda: machine["now_s"])
    assert len(times["a"]) == len(times["b"]) == 120
    assert sorted(times["a"]) == pytest.approx(sorted(times["b"]))
    assert np.median(times["a"]) == pytest.approx(np.median(times["b"]))


@pytest.fixture(scope="module")
def small_crops(tmp_path_factory):
    """Tiny crop sets (64 px, no hand): 40 with depth (the dense head's truth), 8 rendered without depth (its truth
    unknown, which the compatibility check accepts) and 8 of the cube declared symmetric under its 24 turns."""
    from discopose.datasets.generate import generate_dataset
    from discopose.render.config import RenderConfig
    from tests.conftest import CROPS
    root = tmp_path_factory.mktemp("small-crops")
    sets = {"depth": (40, [], 41), "no_depth": (8, ["output.depth=false"], 42),
            "symmetric": (8, ["object.symmetry.kind=cube"], 43)}
    for name, (count, extra, seed) in sets.items():
        generate_dataset(str(root / name), count, RenderConfig.load(overrides=CROPS + extra + [f"seed={seed}"]),
                         workers=2, progress=False)
    return {name: str(root / name) for name in sets}


class _ReplayNet(torch.nn.Module):
    """Stands in for a crop network: returns the given outputs batch by batch, in the evaluation loader's order."""

    def __init__(self, spec, batches: list[dict]):
        super().__init__()
        self.spec, self.batches = spec, list(batches)

    def forward(self, images):
        return self.batches.pop(0)


def _truth_as_outputs(info, spec, batch_size: int, coordinates_from=lambda c: c) -> list[dict]:
    """Network outputs equal to the truth of every batch (mask logits +-5, ``coordinates_from`` of the true
    surface points), as predict_dataset's loader yields them."""
    from discopose.datasets.loader import make_loader
    outputs = []
    for images, target in make_loader(info, spec, batch_size, train=False, num_workers=0):
        count = len(images)
        outputs.append({"position_uvz": target["position_uvz"].float(), "position_log_var": torch.zeros(count, 3),
                        "rotation": target["rotation"].float(), "rotation_log_var": torch.zeros(count),
                        "mask_logits": torch.where(target["dense_mask"] > 0.5, 5.0, -5.0),
                        "coordinates": coordinates_from(target["dense_coordinates"].float())})
    return outputs


def test_dense_truth_unknown_is_reported_unknown_not_as_a_score(small_crops, tmp_path):
    """Crops rendered without depth have no known mask cell: their mask IoU and surface-point error are unknown
    (None in the heads, absent from TensorBoard, no NaN in meta.json), not a perfect 1.0 and a NaN."""
    from discopose.datasets.reader import open_dataset
    from discopose.models.evaluate import chance_levels, head_errors, predict_dataset
    from discopose.models.train import TrainConfig, network_spec
    info = open_dataset(small_crops["no_depth"])
    spec = network_spec(info, TrainConfig(stage="crop"))
    predictions = predict_dataset(_ReplayNet(spec, _truth_as_outputs(info, spec, 4)), info, batch_size=4)
    meta = {"object": info.manifest["object"]}
    chance = chance_levels(predictions, meta, np.asarray(meta["object"]["surface_points_m"]),
                           info.symmetry.matrices(), predictions["true_position_m"].mean(0))
    heads = head_errors(predictions, meta, chance)
    assert heads["mask_iou"] is None and heads["coordinates_mm"] is None, heads
    json.dumps(heads, allow_nan=False)
    # Through the real training loop, validating on such crops.
    from discopose.models.train import train
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def no_nan(value):
        raise AssertionError(f"{value} in meta.json")
    train(small_crops["depth"], str(tmp_path / "run"), val=small_crops["no_depth"], progress=False,
          config=TrainConfig(stage="crop", epochs=1, batch_size=4, num_workers=0, pretrained="none"))
    meta_json = json.loads((tmp_path / "run" / "last" / "meta.json").read_text(), parse_constant=no_nan)
    logged = meta_json["val_metrics"]["heads"]
    assert logged["mask_iou"] is None and logged["coordinates_mm"] is None, logged
    tags = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload().Tags()["scalars"]
    assert "val_heads/position_te_mm" in tags and not {"val_heads/mask_iou", "val_heads/coordinates_mm"} & set(tags)
    # Every loss term has its own scalar (README: `train/*` per loss term).
    assert {"train/position", "train/rotation", "train/nll_position", "train/nll_rotation", "train/classification",
            "train/mask", "train/coordinates"} <= set(tags), tags


def test_surface_point_error_takes_the_minimum_over_the_objects_symmetry(small_crops):
    """For an object declared symmetric, surface points read under an equivalent pose (S^T p) are right, as
    dense_loss trains them: their reported error is ~0, not the distance to the one labelled equivalent."""
    from discopose.datasets.reader import open_dataset
    from discopose.geometry.symmetry import Symmetry
    from discopose.models.evaluate import predict_dataset
    from discopose.models.train import TrainConfig, network_spec
    info = open_dataset(small_crops["symmetric"])
    assert info.symmetry.kind == "cube"
    spec = network_spec(info, TrainConfig(stage="crop"))
    turn = torch.tensor(Symmetry("cube").matrices()[7], dtype=torch.float32)
    equivalent = lambda coordinates: torch.einsum("ji,bjhw->bihw", turn, coordinates)  # noqa: E731
    predictions = predict_dataset(_ReplayNet(spec, _truth_as_outputs(info, spec, 4, equivalent)), info, batch_size=4)
    assert np.max(predictions["coordinates_mm"]) < 0.01, predictions["coordinates_mm"]
    # Against the labelled equivalent alone the same points are 43-62 mm off (what was reported before).
    truth = _truth_as_outputs(info, spec, 8)[0]
    cells = truth["mask_logits"] > 0
    turned = equivalent(truth["coordinates"])
    plain_mm = (turned - truth["coordinates"]).norm(dim=1)[cells].mean() * spec.object_diameter_m / 2 * 1000
    assert plain_mm > 20, plain_mm


def test_resuming_a_crop_run_started_before_patch_pnp_keeps_its_head(small_crops, tmp_path):
    """A crop run whose checkpoint predates the rotation_head field (6D) resumes with ``auto`` (the demo's
    --resume) on its own head, where ``auto`` now builds Patch-PnP and torch raised "Missing key(s)
    ... patch_pnp"; asking to resume it with another head is a one-line error that says what to do."""
    from discopose._errors import ConfigError
    from discopose.models.checkpoint import read_meta
    from discopose.models.train import TrainConfig, train
    run = tmp_path / "run"
    common = dict(stage="crop", batch_size=8, num_workers=0, pretrained="none")
    train(small_crops["depth"], str(run), config=TrainConfig(epochs=1, rotation_head="6d", **common), progress=False)
    meta_path = run / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["spec"]["rotation_head"]  # as written before the head change
    meta_path.write_text(json.dumps(meta, indent=1))
    with pytest.raises(ConfigError, match="started with rotation_head=6d; resume it with rotation_head=6d"):
        train(small_crops["depth"], str(run), config=TrainConfig(epochs=2, rotation_head="patch_pnp", **common),
              resume=True, progress=False)
    # Any other mismatch (here the dense head's stride) is one line too, not torch's list of keys.
    with pytest.raises(DiscoposeError, match="holds another network than this configuration builds.*without --resume"):
        train(small_crops["depth"], str(run), config=TrainConfig(epochs=2, dense_stride=4, **common), resume=True,
              progress=False)
    resumed = train(small_crops["depth"], str(run), config=TrainConfig(epochs=2, **common), resume=True,
                    progress=False)
    assert resumed["epoch"] == 2 and read_meta(run / "last")["spec"]["rotation_head"] == "6d"


def test_per_head_errors_read_the_same_in_the_validation_line_report_and_demo():
    """One rendering of the per-head dict: the validation line, report.html's table and the demo's summary show
    the same cells; a head with no pose on most samples reads "none found", an unknown dense figure "unknown"."""
    from discopose.demo import format_summary
    from discopose.models.evaluate import format_head_errors
    from discopose.models.report import _head_table, rotation_head_cells
    heads = {"position_te_mm": 6.4, "regressed": {"re_deg": 19.1, "re_shape_deg": 18.9, "found_frac": 1.0},
             "pnp": {"re_deg": None, "re_shape_deg": None, "found_frac": 0.4},
             "reported": {"re_deg": 17.7, "re_shape_deg": 17.7, "found_frac": 1.0},
             "chance": {"re_deg": 134.2, "re_shape_deg": 43.1, "class_accuracy": 1 / 24}, "class_accuracy": 0.75,
             "mask_iou": None, "coordinates_mm": None}
    line, table = format_head_errors(heads), _head_table(heads)
    assert ("regressed 19.1 deg (18.9 up to shape), pnp none found deg (none found up to shape), reported 17.7 deg "
            "(17.7 up to shape) [chance 134.2 (43.1)]") in line
    assert "mask IoU unknown, surface points unknown mm" in line and "PnP found 40%" in line
    chance = {"te_mm_median": 39.0, "re_deg_median": 134.2, "re<30deg": 0.01}
    row = {"te_mm_median": 7.4, "re_deg_median": 16.7, "te_mm_p90": 24.0, "re_deg_p90": 116.0, "re_within_30deg": 0.8,
           "chance": chance, "heads": heads}
    summary = {"total_seconds": 60.0, "seconds": {}, "plan": {"seed": 0}, "results": {"test": row}, "artefacts": {},
               "tracking": {"hz": 30.0, "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "messages": 1,
                            "subscriber_received": 1,
                            "quality": {k: {"te_mm_median": 1.0, "re_deg_median": 1.0, "jitter_mm": 0.1}
                                        for k in ("raw", "filtered")}}}
    demo_line = next(text for text in format_summary(summary).splitlines() if "rotation per head" in text)
    for name, full, shape, found in rotation_head_cells(heads):
        assert f"{name} {full} deg ({shape} up to shape)" in line + demo_line or name == "chance"
        assert f"<td>{name}</td><td>{full}</td><td>{shape}</td><td>{found}</td>" in table
    assert demo_line.endswith(line.split(", class")[0].split("mm, ", 1)[1])


def test_validation_within_epochs_draws_the_curve_of_error_against_images_seen(trained_run):
    """TrainConfig.val_every_steps: the shared run's crop stage validates every 25 steps besides each epoch's end;
    each validation is a row of val_curve.jsonl in the order of images seen, with every head, and it is plotted."""
    run, _ = trained_run
    rows = [json.loads(line) for line in (run / "crop" / "val_curve.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps)) and all(row["images_seen"] == 32 * row["step"] for row in rows)
    per_epoch = steps[-1] // 4  # the epochs' ends: 4 of them, equally long
    ends = {per_epoch * (epoch + 1) for epoch in range(4)}
    assert set(steps) == ends | set(range(25, steps[-1], 25)), steps
    assert all(0 < row["heads"]["regressed/re_deg"] < 180 and row["te_mm_median"] > 0 for row in rows)
    assert (run / "crop" / "val_curve.png").stat().st_size > 10_000
