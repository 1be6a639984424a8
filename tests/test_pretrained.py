"""Shipped estimators: packing (fp16, model card, size cap), loading by name, and the shipped cube itself."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

import discopose
from discopose._errors import DiscoposeError
from discopose.pretrained import MAX_SHIPPED_MB, SHIPPED_DIR, folder_mb, model_card, pack_estimator, resolve_model

CARD = {"name": "test", "trained_by": "pytest", "seed": 0, "code_version": "test", "figures": {}}


def _first_frames(dataset: str, count: int):
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.reader import iter_samples, open_dataset
    for i, sample in enumerate(iter_samples(open_dataset(dataset))):
        if i == count:
            return
        yield sample["views"]["cam0"]["rgb"], camera_from_labels("cam0", sample["labels"]["cameras"]["cam0"])


def test_packing_halves_the_weights_and_keeps_the_poses(trained_run, pose_datasets, tmp_path):
    run, _ = trained_run
    packed = pack_estimator(run / "best", tmp_path / "packed", CARD)
    for stage in ("locator", "crop"):
        half_size = (packed / stage / "model.safetensors").stat().st_size
        assert half_size < 0.6 * (run / "best" / stage / "model.safetensors").stat().st_size
        # The ONNX graph carries fp16 weights too (an fp32 one would be twice the fp16 safetensors).
        assert (packed / stage / "model.onnx").stat().st_size < 1.2 * half_size
    assert json.loads((packed / "crop" / "meta.json").read_text())["weights_dtype"] == "float16"
    assert model_card(packed) == CARD
    full, half = discopose.load(run / "best", backend="torch"), discopose.load(packed, backend="torch")
    # fp16 weights round at ~1e-3 relative: the crop network's outputs on the same crops move by at most 0.5% of
    # their largest value (measured, every output); a wrong, dropped or mis-cast weight moves them by its whole size.
    rng = np.random.default_rng(0)
    crops = list(rng.integers(0, 256, (8, *half.crop.spec.input_size_px, 3), np.uint8))
    full_outputs, half_outputs = full.crop(crops), half.crop(crops)
    for name, value in full_outputs.items():
        assert np.abs(half_outputs[name] - value).max() < 0.02 * np.abs(value).max(), name
    moved_mm = []
    for image, camera in _first_frames(pose_datasets["test"], 8):
        a, b = full.predict(image, camera=camera), half.predict(image, camera=camera)
        moved_mm.append(1000 * np.linalg.norm(a.position_m - b.position_m))
    # Through the whole estimator the position moves by far less than its own error (~15 mm): the rounding shifts
    # the locator's aim a little, and this briefly trained crop network does not yet follow a shifted crop exactly
    # (measured: median 0.4-0.7 mm, at most 1.3-2.3 mm; 0.6 mm at most after twice the training). The reported
    # rotation is not compared frame by frame: on this briefly trained model near-tied RANSAC inlier sets turn it by
    # a median of ~5 deg on either side of the rounding (the shipped model's set-level figures through fp16 equal
    # its fp32 ones: README).
    assert max(moved_mm) < 5.0 and np.median(moved_mm) < 1.0, moved_mm
    # The packed ONNX networks run where neither torch nor pyrender can be imported, and agree with torch:
    # the networks' outputs to float noise, the position to millimetres. (The reported rotation
    # is not compared: near-tied RANSAC inlier sets can turn it by degrees on noise of 1e-5, on any backend.)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "K.npy", camera.K)
    np.save(tmp_path / "crop_input.npy", rng.integers(0, 256, (2, *half.crop.spec.input_size_px, 3), np.uint8))
    script = (f"import sys, json, numpy as np\n"
              f"sys.modules.update(torch=None, torchvision=None, pyrender=None)\n"
              f"import discopose\n"
              f"est = discopose.load({str(packed)!r}, backend='onnx')\n"
              f"pose = est.predict(np.load({str(tmp_path / 'image.npy')!r}), camera=np.load({str(tmp_path / 'K.npy')!r}))\n"
              f"out = est.crop(list(np.load({str(tmp_path / 'crop_input.npy')!r})))\n"
              f"print(json.dumps({{'position': pose.position_m.tolist(), "
              f"'outputs': {{k: v.tolist() for k, v in out.items()}}}}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    onnx_side = json.loads(result.stdout.strip().splitlines()[-1])
    # Position within 3 mm: the locator's outputs differ by ~1e-3 between the backends' float32 kernels and the
    # crop is aimed from them (measured on this briefly trained model: 0.1-1.7 mm over 8 frames, median 0.6); a
    # wrong or missing weight moves it by centimetres.
    assert np.linalg.norm(np.array(onnx_side["position"]) - half.predict(image, camera=camera.K).position_m) < 3e-3
    # The graph carries the outputs inference decodes; torch also returns training-only ones (rotation_shape).
    torch_outputs = half.crop(list(np.load(tmp_path / "crop_input.npy")))
    assert {"position_uvz", "rotation"} <= set(onnx_side["outputs"]) <= set(torch_outputs)
    # ONNX Runtime fuses and reorders the float32 arithmetic: log-variances near -7 differ by up to 8e-4 relative,
    # mask logits of order 1 by up to 1.8e-3 (measured); a wrong or missing weight by orders of magnitude more.
    for name, value in onnx_side["outputs"].items():
        np.testing.assert_allclose(np.array(value), torch_outputs[name], rtol=2e-3, atol=5e-3, err_msg=name)


def test_packing_over_the_size_cap_writes_nothing(trained_run, tmp_path, monkeypatch):
    """The cap counts the whole packed folder, ONNX graphs included, and a refusal leaves nothing behind.

    The export is stood in for by a graph file the size of the stage's fp16 weights (what a real fp16 graph
    weighs: test_packing_halves_the_weights_and_keeps_the_poses, which runs the real export and parity check);
    two real dynamo exports cost ~20 s and say nothing about the cap. The cap sits between the fp16 weights
    alone and weights plus graphs, so only a check that counts the graphs refuses."""
    import discopose.models.export as export
    run, _ = trained_run
    graphs_written = []

    def export_onnx(stage):
        graph = stage / "model.onnx"
        graph.write_bytes(bytes((stage / "model.safetensors").stat().st_size))
        graphs_written.append(graph)
        return graph
    monkeypatch.setattr(export, "export_onnx", export_onnx)
    monkeypatch.setattr(export, "halve_onnx_weights", lambda graph: graph)
    monkeypatch.setattr(export, "check_onnx_parity", lambda stage, graph: None)
    fp16_weights_mb = sum((run / "best" / stage / "model.safetensors").stat().st_size
                          for stage in ("locator", "crop")) / 2 / 2 ** 20
    monkeypatch.setattr("discopose.pretrained.MAX_SHIPPED_MB", 1.5 * fp16_weights_mb)
    with pytest.raises(DiscoposeError, match=r"over the \d+ MB a shipped model may take"):
        pack_estimator(run / "best", tmp_path / "packed", CARD)
    assert len(graphs_written) == 2  # the refusal came after both graphs were in the folder it measured
    assert not (tmp_path / "packed").exists() and not list(tmp_path.glob(".packed*"))
    # The same cap without the graphs is not exceeded: the refusal above was the graphs' weight.
    assert pack_estimator(run / "best", tmp_path / "weights_only", CARD, onnx=False).is_dir()


def test_an_unknown_model_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DiscoposeError, match="neither an estimator folder nor a shipped model.*cube"):
        resolve_model("cubes")
    # A local folder of the same name as a shipped model is the user's own, and wins.
    (tmp_path / "cube").mkdir()
    assert resolve_model("cube").resolve() == tmp_path / "cube"


def test_the_shipped_cube_reads_the_cube(tmp_path):
    """The model inside the package: within its size cap, documented, and it finds the cube on fresh renders."""
    from discopose.datasets.generate import generate_dataset
    from discopose.evaluation import evaluate_checkpoint
    assert folder_mb(SHIPPED_DIR / "cube") <= MAX_SHIPPED_MB
    card = model_card("cube")
    assert {"trained_by", "seed", "code_version", "figures"} <= set(card)
    assert {"test", "realistic", "realistic_rig3_fused"} <= set(card["figures"])
    estimator = discopose.load("cube")
    assert estimator.object["name"] == "cube"
    # Frames of the world it was trained in, over the near half of the working volume (at 224 px a cube at 1 m is a
    # dozen pixels: millimetres there say little about whether this is the right model).
    config = estimator.train_render_config.with_overrides(["camera.width_px=224", "camera.height_px=224", "seed=9107",
                                                           "camera.distance_range_m=[0.15, 0.5]"])
    generate_dataset(str(tmp_path / "frames"), 16, config, workers=1, progress=False)
    result = evaluate_checkpoint("cube", str(tmp_path / "frames"), str(tmp_path / "eval"), plots=False)
    summary, chance = result["summary"], result["baseline"]
    # The model card's in-family median is 5 mm (2-5 mm under 0.5 m); chance is ~100 mm / ~130 deg. A broken or
    # wrong model fails.
    assert summary["te_mm"]["median"] < 15, summary["te_mm"]
    assert summary["re_deg"]["median"] < 45 < chance["re_deg_median"], (summary["re_deg"], chance)


# Network outputs of the two backends on the same crop (fp16 weights in both; ONNX Runtime fuses BatchNorm at
# load): 1.03e-4 apart at most measured with the model shipped on 2026-12-05 (3e-6 with the one before, 0.006 deg
# of rotation either way); with BatchNorm fused before the fp16 rounding they were 5e-3 apart.
BACKEND_OUTPUTS_ATOL = 5e-4
# The markings' class probability through the whole estimator: 8e-4 apart at most on these frames (measured);
# before the graph carried symmetry_logits, 1.0 on ONNX against 0.06-0.93 on torch.
CLASS_PROB_ATOL = 0.01
# Confidence from each backend's own signals with the same RANSAC PnP outcome: 5e-4 apart at most (measured);
# 0.09 on the first frame with the graphs shipped before.
CONFIDENCE_ATOL = 0.005
PNP_SIGNALS = ("pnp_found", "pnp_inlier_frac", "mask_outside_frac", "pnp_rotation_deg", "pnp_depth_log_ratio",
               "pnp_lateral_rel")


def test_both_backends_compute_the_same_validity_on_the_shipped_cube(tmp_path):
    """The shipped graphs carry every output the export lists (the markings' class probability, a trust signal,
    included); on the crops of real frames the two backends' networks agree to float noise, and the estimator
    states the same class probability on both and, from the same consistency signals, the same validity and
    confidence.

    The RANSAC PnP signals are taken from the torch side for the comparison: a difference in the last float
    bits of the dense maps can tip RANSAC to another inlier set (1e-6 of noise moved its pose by up to 14 mm,
    measured), which changes those signals between any two float implementations, torch on two CPUs as much
    as torch and ONNX Runtime: on 24 frames of this model the two backends' full predictions differed in
    validity on 2 (0.12/0.18 and 0.13/0.24 confidence) and in confidence by up to 0.25 (measured)."""
    import onnxruntime as ort

    from discopose.datasets.generate import generate_dataset
    from discopose.decoding import stage_camera, stage_view
    from discopose.models.export import output_names
    # The networks' backends compared alone: the refinement, run from each backend's pose, is another matter.
    on_torch = discopose.load("cube", backend="torch", refine=False)
    on_onnx = discopose.load("cube", backend="onnx", refine=False)
    for stage in ("locator", "crop"):
        graph = ort.InferenceSession(str(SHIPPED_DIR / "cube" / stage / "model.onnx"),
                                     providers=["CPUExecutionProvider"])
        assert [o.name for o in graph.get_outputs()] == list(output_names(getattr(on_onnx, stage).spec)), stage
    assert "symmetry_logits" in output_names(on_onnx.crop.spec)
    # Frames of the world the model was trained in (its own render config, another seed).
    config = on_torch.train_render_config.with_overrides(["camera.width_px=224", "camera.height_px=224", "seed=9108"])
    # 20 frames: the model shipped on 2026-12-05 calls 2 of the first 12 invalid, and both kinds must be seen.
    generate_dataset(str(tmp_path / "frames"), 20, config, workers=2, progress=False)
    rows = []
    for image, camera in _first_frames(str(tmp_path / "frames"), 20):
        a, b = on_torch.predict(image, camera=camera), on_onnx.predict(image, camera=camera)
        crop, crop_from_camera = stage_camera(on_torch.crop.spec, aim_m=a.position_m)
        view = stage_view(image, camera, crop, crop_from_camera)
        torch_out, onnx_out = on_torch.crop([view]), on_onnx.crop([view])
        for name, value in onnx_out.items():
            np.testing.assert_allclose(value, torch_out[name], rtol=0, atol=BACKEND_OUTPUTS_ATOL, err_msg=name)
        signals = {**b.extra["signals"], **{k: a.extra["signals"][k] for k in PNP_SIGNALS}}
        confidence = on_onnx.trust.confidence(signals)
        rows.append((a.extra["signals"]["class_prob"], b.extra["signals"]["class_prob"], a.valid,
                     on_onnx.trust.is_valid(confidence) and a.extra["out_of_volume"] == 0.0, a.confidence, confidence))
    assert sum(row[2] for row in rows) >= 3 and sum(not row[2] for row in rows) >= 3, rows  # both kinds seen
    for class_torch, class_onnx, valid_torch, valid_onnx, confidence_torch, confidence_onnx in rows:
        assert abs(class_torch - class_onnx) < CLASS_PROB_ATOL, rows
        assert abs(confidence_torch - confidence_onnx) < CONFIDENCE_ATOL, rows
        # The same verdict, except for a confidence within float noise of the threshold, which either may tip.
        assert valid_torch == valid_onnx or abs(confidence_torch - on_onnx.trust.threshold) < CONFIDENCE_ATOL, rows


def test_onnx_threads_reach_the_sessions_and_a_bad_count_is_refused():
    """``load(..., onnx_threads=)`` sets ONNX Runtime's threads per network call (one thread: no spinning), and the
    default is one thread on machines with at most two cores (measured there: README, Tracking)."""
    from discopose._hardware import usable_cores
    estimator = discopose.load("cube", onnx_threads=1)
    for network in (estimator.locator, estimator.crop):
        options = network.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert discopose.load("cube", onnx_threads=3).crop.session.get_session_options().intra_op_num_threads == 3
    default = discopose.load("cube").locator.session.get_session_options().intra_op_num_threads
    assert (default == 1) == (usable_cores() <= 2), default
    with pytest.raises(DiscoposeError, match="onnx_threads=-1"):
        discopose.load("cube", onnx_threads=-1)


def test_several_cameras_networks_side_by_side_give_the_same_poses(tmp_path):
    """``view_threads=2`` runs half the cameras' networks on a helper thread (3: a group each): the poses are those of
    one thread, each on its own camera (a split that misordered the groups, dropped a camera or shared a batch
    between threads would move them), an error on the helper reaches the caller, and a count below 1 is refused."""
    from discopose.datasets.format import camera_from_labels
    from discopose.datasets.generate import generate_dataset
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.render.config import RenderConfig
    generate_dataset(str(tmp_path / "rig"), 2, RenderConfig.load(overrides=[
        "camera.width_px=320", "camera.height_px=240", "camera.count=3", "seed=77"]), workers=1, progress=False)
    estimator = discopose.load("cube", refine=False)
    errors_m = []
    for sample in iter_samples(open_dataset(str(tmp_path / "rig"))):
        views = [(sample["views"][name]["rgb"], camera_from_labels(name, labels))
                 for name, labels in sample["labels"]["cameras"].items()]
        alone = estimator.predict_views(views, view_threads=1)
        side_by_side = estimator.predict_views(views, view_threads=2)
        assert len(side_by_side) == 3
        for one, two, three, (_, camera) in zip(alone, side_by_side, estimator.predict_views(views, view_threads=3),
                                                views):
            np.testing.assert_allclose(two.frame_from_object, one.frame_from_object, atol=1e-9)
            np.testing.assert_allclose(three.frame_from_object, one.frame_from_object, atol=1e-9)
            truth = np.asarray(sample["labels"]["cameras"][camera.name]["camera_from_object"])
            errors_m.append(np.linalg.norm(two.position_m - truth[:3, 3]))
    # Poses of the cube, not of nothing: the model card's median is a few mm; chance is ~100 mm.
    assert np.median(errors_m) < 0.03, errors_m
    # A forked child (a data loader's worker, say) gets a helper thread of its own, not the parent's dead copy.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=lambda: results.put([p.position_m for p in
                                                        estimator.predict_views(views, view_threads=2)]))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the forked child did not finish"
    np.testing.assert_allclose(results.get(timeout=5), [p.position_m for p in side_by_side], atol=1e-9)
    broken = [(views[0][0][:10], views[0][1]), views[1], views[2]]  # the helper's half gets the bad image
    with pytest.raises(DiscoposeError):
        estimator.predict_views(broken, view_threads=2)
    with pytest.raises(DiscoposeError, match="view_threads=0"):
        discopose.load("cube", view_threads=0)
