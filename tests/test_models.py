import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from discopose._errors import DatasetError, DiscoposeError
from discopose.geometry import random_rotation, rotation_angle_deg
from discopose.geometry.rotations_torch import (geodesic_angle, matrix_from_rotation_6d, rotation_6d_from_matrix,
                                                symmetric_geodesic_angle)
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
    position = torch.zeros(8, 3)
    prediction = {"rotation": equivalent, "position_m": position, "position_log_var": torch.zeros(8, 3),
                  "rotation_log_var": torch.zeros(8)}
    loss, parts = pose_loss(prediction, position, target, cube, 0.05)
    assert parts["rotation_rad"] < 1e-3 and parts["position"] == 0


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


def test_overfit_one_batch():
    """Catches sign, normalization and representation bugs: one fixed batch is memorized."""
    from discopose.models.pose_net import PoseNet, PoseNetSpec
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = PoseNetSpec(backbone="mobilenet_v2", input_size_px=(48, 48), position_center_m=[0, 0, 0.35],
                       position_scale_m=0.05, hidden=128)
    model = PoseNet(spec, pretrained="imagenet")
    images = torch.rand(8, 1, 3, 48, 48)
    rotation = torch.tensor(np.stack([random_rotation(rng) for _ in range(8)]), dtype=torch.float32)
    position = torch.tensor([0, 0, 0.35]) + 0.04 * torch.randn(8, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    symmetries = torch.eye(3)[None]
    model.train()
    for _ in range(250):
        out = model(images)
        loss, parts = pose_loss(out, position, rotation, symmetries, 0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Judged in training mode: with one batch memorized, BatchNorm's running statistics lag the
    # still-moving weights, which says nothing about sign or normalization bugs.
    with torch.no_grad():
        out = model(images)
    angle, _ = symmetric_geodesic_angle(out["rotation"], rotation, symmetries)
    assert np.degrees(angle.max().item()) < 5.0
    assert (out["position_m"] - position).norm(dim=1).mean() < 0.006
    assert parts["position"] < 0.05


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


def test_short_training_beats_mean_pose_baseline(trained_run, pose_datasets):
    from discopose.models.evaluate import evaluate_checkpoint
    run, meta = trained_run
    _, val = pose_datasets
    result = evaluate_checkpoint(str(run / "best"), val, str(run / "eval"), limit=100)
    summary, baseline = result["summary"], result["baseline"]
    # Position is learned first; the lettered cube's full orientation needs a far larger budget than a
    # test has (README: measured accuracy), so only the position bar is asserted here.
    assert summary["te_mm"]["median"] < 0.85 * baseline["te_mm_median"], (summary["te_mm"], baseline)
    report = (run / "eval" / "report.html").read_text()
    for image in ("errors_hist.png", "errors_cdf.png", "errors_vs_conditions.png", "worst_cases.png"):
        assert image in report and (run / "eval" / image).stat().st_size > 1000
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    assert 0 <= saved["summary"]["uncertainty"]["position_within_1sigma"] <= 1
    assert (run / "tensorboard").is_dir() and any((run / "tensorboard").iterdir())


def test_checkpoint_round_trip_two_line_api_and_onnx_parity(trained_run, pose_datasets):
    import discopose
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.models.export import PARITY_ATOL, export_onnx, onnx_parity
    from discopose.models.checkpoint import load_checkpoint
    run, meta = trained_run
    est = discopose.load(run / "best")
    sample = next(iter_samples(open_dataset(pose_datasets[1])))
    image = sample["views"]["cam0"]["rgb"]
    pose = est.predict(image)
    assert image.shape == (128, 128, 3)
    assert pose.frame == "camera:cam0" and pose.position_m.shape == (3,) and pose.quat_wxyz.shape == (4,)
    assert (pose.position_sigma_m > 0).all() and pose.rotation_sigma_deg > 0
    # Same weights, same preprocessing: a fresh load predicts the same.
    again = discopose.load(run / "best").predict([image, image])
    np.testing.assert_allclose(again[1].position_m, pose.position_m, atol=1e-6)
    # A different image size is resized by the estimator, not the caller.
    assert discopose.load(run / "best").predict(np.ascontiguousarray(np.repeat(np.repeat(image, 2, 0), 2, 1))).frame
    path = export_onnx(run / "best")
    model, _ = load_checkpoint(run / "best")
    assert onnx_parity(model, path, np.random.default_rng(0).random((3, 1, 3, 128, 128), dtype=np.float32)) < PARITY_ATOL
    onnx_pose = discopose.load(run / "best", backend="onnx").predict(image)
    np.testing.assert_allclose(onnx_pose.position_m, pose.position_m, atol=PARITY_ATOL)
    with pytest.raises(DiscoposeError, match="expected an HxWx3 RGB uint8 image"):
        est.predict(image.astype(np.float32))


def test_mismatched_dataset_and_model_is_refused(trained_run, tmp_path):
    from discopose.datasets.generate import generate_dataset
    from discopose.models.evaluate import evaluate_checkpoint
    from discopose.render.config import RenderConfig
    run, _ = trained_run
    other = generate_dataset(str(tmp_path / "two-cams"), 2, RenderConfig.load(overrides=[
        "camera.count=2", "camera.width_px=32", "camera.height_px=32", "textures.bank_size=2"]), workers=1,
        progress=False)
    assert other["complete"]
    with pytest.raises(DatasetError, match=r"cameras \['cam0', 'cam1'\] but the model expects \['cam0'\]"):
        evaluate_checkpoint(str(run / "best"), str(tmp_path / "two-cams"), str(tmp_path / "eval"))


def test_bop_export_round_trip_gives_identical_evaluation(trained_run, pose_datasets, tmp_path):
    from discopose.datasets.bop import export_bop
    from discopose.models.evaluate import evaluate_checkpoint
    run, _ = trained_run
    _, val = pose_datasets
    export_bop(val, tmp_path / "bop")
    scene_gt = json.loads((tmp_path / "bop" / "000000" / "scene_gt.json").read_text())
    assert len(scene_gt) == 100 and len(scene_gt["0"][0]["cam_R_m2c"]) == 9
    direct = evaluate_checkpoint(str(run / "best"), val, str(tmp_path / "e1"))["summary"]
    via_bop = evaluate_checkpoint(str(run / "best"), None, str(tmp_path / "e2"), bop=str(tmp_path / "bop"))["summary"]
    assert via_bop["count"] == direct["count"]
    assert via_bop["te_mm"]["median"] == pytest.approx(direct["te_mm"]["median"], abs=1e-3)
    assert via_bop["re_deg"]["median"] == pytest.approx(direct["re_deg"]["median"], abs=1e-2)


def test_resume_continues_from_last_epoch(pose_datasets, tmp_path):
    from discopose.models.train import TrainConfig, train
    train_data, _ = pose_datasets
    config = TrainConfig(epochs=1, batch_size=32, num_workers=0, pretrained="none", backbone="mobilenet_v3_small")
    first = train(train_data, str(tmp_path), config=config, progress=False)
    assert first["epoch"] == 1
    config.epochs = 2
    second = train(train_data, str(tmp_path), config=config, resume=True, progress=False)
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]


@pytest.mark.slow
def test_torchrun_ddp_two_processes(pose_datasets, tmp_path):
    train_data, _ = pose_datasets
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                             "-m", "discopose.cli", "train", "--data", train_data, "--out", str(tmp_path / "ddp"),
                             "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--pretrained", "none",
                             "--backbone", "mobilenet_v3_small", "--quiet"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp" / "best" / "meta.json").read_text())
    # 1600 samples, batch 16 per rank, 2 ranks: 50 steps per epoch.
    assert meta["step"] == 1600 // (16 * 2)
