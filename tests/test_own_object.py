"""A user's own object end to end: units, BOP symmetries, the demo recipe on a mesh, BOP results out."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import trimesh

from discopose._errors import ConfigError
from discopose.geometry.symmetry import Symmetry
from discopose.render.objects import describe_user_object

FLIP_X = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1]  # 180 deg about x, BOP's row-major 4x4 (t in mm)


def _bop_models(folder, info: dict):
    models = folder / "models"
    models.mkdir(parents=True)
    trimesh.creation.cylinder(30, 80, sections=32).export(models / "obj_000003.ply")  # millimetres, like BOP
    (models / "models_info.json").write_text(json.dumps({"3": {"diameter": 100.0, **info}}))
    return models / "obj_000003.ply"


def test_bop_models_info_symmetries_and_units_are_read(tmp_path):
    mesh = _bop_models(tmp_path, {"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}],
                                  "symmetries_discrete": [FLIP_X]})
    user = describe_user_object(str(mesh))
    assert user.scale_to_m == 0.001 and user.diameter_m == pytest.approx(np.hypot(0.06, 0.08), rel=0.02)
    assert user.symmetry.kind == "axis" and np.allclose(user.symmetry.axis, (0, 0, 1))
    matrices = user.symmetry.matrices()
    # The flip composes with every spin: poses upside down about x count as equal too.
    assert any(np.allclose(m, np.diag([1, -1, -1])) for m in matrices) and len(matrices) == 72
    # An explicit flag wins over the file.
    assert describe_user_object(str(mesh), symmetry="none").symmetry.kind == "none"


def test_bop_symmetry_off_the_origin_and_rounded_matrices(tmp_path):
    rounded = np.round(trimesh.transformations.rotation_matrix(2 * np.pi / 3, (1, 1, 1)), 4)
    group = Symmetry.from_bop({"diameter": 100.0, "symmetries_discrete": [rounded.ravel().tolist()]})
    assert group.kind == "discrete" and len(group.matrices()) == 2
    off = Symmetry.from_bop
    with pytest.raises(ConfigError, match="12.0 mm from the model origin.*recentre"):
        off({"diameter": 100.0, "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 12]}]})
    with pytest.raises(ConfigError, match="2 continuous symmetry axes"):
        off({"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}] * 2})


def test_units_and_bad_meshes_are_settled_or_refused(tmp_path):
    box = trimesh.creation.box((100, 60, 40))
    box.export(tmp_path / "part_mm.ply")
    user = describe_user_object(str(tmp_path / "part_mm.ply"))
    assert user.scale_to_m == 0.001 and "millimetres" in user.notes[0]
    # Settings follow the size: a 10 cm part sits farther from the camera than the 57 mm cube.
    overrides = dict(item.split("=", 1) for item in user.render_overrides())
    assert float(overrides["camera.distance_m"]) == pytest.approx(0.25 * user.diameter_m / (0.057 * 3 ** 0.5), abs=1e-4)
    trimesh.creation.box((3, 2, 1)).export(tmp_path / "ambiguous.ply")
    with pytest.raises(ConfigError, match="metres or millimetres\\? give --object-scale"):
        describe_user_object(str(tmp_path / "ambiguous.ply"))
    trimesh.creation.box((0.9, 0.5, 0.4)).export(tmp_path / "crate_m.ply")
    with pytest.raises(ConfigError, match="1105 mm across.*10-500 mm objects"):
        describe_user_object(str(tmp_path / "crate_m.ply"))
    with pytest.raises(ConfigError, match="needs the rotations"):
        describe_user_object(str(tmp_path / "part_mm.ply"), symmetry="discrete")
    dense = trimesh.creation.icosphere(subdivisions=7, radius=40)  # 328k faces
    dense.export(tmp_path / "scan.ply")
    with pytest.raises(ConfigError, match="327680 triangles.*decimate"):
        describe_user_object(str(tmp_path / "scan.ply"))
    # Inside-out and open meshes load: the first turned outward, the second as it is.
    inside_out = trimesh.creation.box((80, 50, 30))
    inside_out.invert()
    inside_out.export(tmp_path / "inside_out.ply")
    from discopose.render.objects import load_mesh_object
    model = load_mesh_object(str(tmp_path / "inside_out.ply"), 0.001)
    assert trimesh.Trimesh(model.positions, model.indices).volume > 0
    holed = trimesh.creation.box((80, 50, 30))
    holed.update_faces(np.arange(len(holed.faces)) > 1)  # one side open
    holed.export(tmp_path / "holed.ply")
    assert describe_user_object(str(tmp_path / "holed.ply")).diameter_m == pytest.approx(0.0985, rel=0.01)


def test_bop_results_csv_holds_the_poses_metrics_json_scored(trained_run, pose_datasets, tmp_path):
    from discopose.datasets.bop import export_bop
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.evaluation import evaluate_checkpoint
    run, _ = trained_run
    evaluate_checkpoint(str(run / "best"), pose_datasets["test"], str(tmp_path / "eval"), limit=10, bop_results=True,
                        plots=False)
    lines = (tmp_path / "eval" / "bop_results.csv").read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time" and len(lines) == 11
    per_sample = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_sample"]
    truth = {s["labels"]["index"]: np.asarray(s["labels"]["cameras"]["cam0"]["camera_from_object"])
             for s in iter_samples(open_dataset(pose_datasets["test"]), limit=10)}
    rows = []
    for line, scored in zip(lines[1:], per_sample):
        scene, image, obj, score, r, t, seconds = line.split(",")
        rotation, t_mm = np.array(r.split(), float).reshape(3, 3), np.array(t.split(), float)
        assert (int(scene), int(image), int(obj)) == (0, scored["index"], 1)
        assert 0 <= float(score) <= 1 and float(seconds) > 0
        np.testing.assert_allclose(rotation.ravel(), scored["R"], atol=1e-7)
        np.testing.assert_allclose(t_mm, scored["t_mm"], atol=1e-3)
        # The CSV pose against the dataset's truth gives the error metrics.json reports.
        assert np.linalg.norm(t_mm / 1000 - truth[int(image)][:3, 3]) * 1000 == pytest.approx(scored["te_mm"], abs=2e-3)
        rows.append((int(image), rotation, t_mm))
    # Through BOP and back: the exported scene scores the same images with the same ids and poses.
    export_bop(pose_datasets["test"], tmp_path / "bop")
    evaluate_checkpoint(str(run / "best"), None, str(tmp_path / "eval_bop"), bop=str(tmp_path / "bop"), limit=10,
                        plots=False)
    bop_lines = (tmp_path / "eval_bop" / "bop_results.csv").read_text().splitlines()[1:]
    for line, (image, rotation, t_mm) in zip(bop_lines, rows):
        fields = line.split(",")
        assert int(fields[1]) == image
        np.testing.assert_allclose(np.array(fields[5].split(), float), t_mm, atol=0.05)


def test_a_small_mesh_in_millimetres_runs_through_the_demo_in_metres(tmp_path):
    """A 48 mm part given in millimetres, through the whole demo (render, train, calibrate, evaluate, track):
    read as millimetres, rendered and labelled in metres at distances scaled to its size, its mesh carried into
    the estimator for the refinement. That the recipe learns such a part (position below chance) takes minutes
    of training: benchmarks/own_object.py (the fourth session's measurements: 0.33-0.79 of chance, seeds 0-2)."""
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.demo import QUICK, run_demo
    from discopose.render.config import WORKING_VOLUME_M
    from discopose.render.example_objects import make_example_object
    small = make_example_object("drill", tmp_path / "small.glb", scale=0.45)  # a 48 mm part, in millimetres
    with pytest.raises(ConfigError, match="scale=0; use a factor"):
        make_example_object("drill", tmp_path / "none.glb", scale=0)
    assert not (tmp_path / "none.glb").exists()
    drill = trimesh.load(small, force="mesh")
    user = describe_user_object(str(small))
    assert user.scale_to_m == 0.001 and user.textured
    # The quick recipe, with 32 calibration frames: about an eighth fall outside the trained distances (the family
    # reaches past them) and the trust fit needs 20 inside.
    plan = replace(QUICK, frame_px=64, test_px=96, realistic=2, realistic_no_hand=2, realistic_rig3=1)
    summary = run_demo(str(tmp_path / "demo"), plan=plan, publish="tcp://127.0.0.1:0", progress=False,
                       user_object=user)
    assert summary["object"]["diameter_m"] == pytest.approx(0.048, rel=0.05)
    assert {"test", "realistic", "realistic_rig3_fused"} <= set(summary["results"])
    # Scaled settings: the small part fills the test frames about as the cube does (not a speck, not cropped), and
    # its labels are in metres, at the cube's working distances scaled by the part's size.
    near, far = (user.size_ratio * d for d in WORKING_VOLUME_M)
    fills, distances = [], []
    for sample in iter_samples(open_dataset(str(tmp_path / "demo" / "data" / "test"))):
        labels = sample["labels"]["cameras"]["cam0"]
        x0, y0, x1, y1 = labels["bbox_xyxy"]
        fills.append(max(x1 - x0, y1 - y0) / 96)
        distances.append(np.linalg.norm(np.asarray(labels["camera_from_object"])[:3, 3]))
    assert 0.15 < np.median(fills) < 0.7, np.median(fills)
    # (The object sits anywhere in the scaled workspace around the aimed-at distance: within 2x, not 1000x.)
    assert near / 2 < min(distances) and max(distances) < 2 * far, (near, far, distances)
    # The estimator folder carries the mesh, so the refinement aligns the user's part as it does the cube: on by
    # default (calibrated with it), the same geometry in metres, and still there in a packed copy.
    import discopose
    from discopose.pretrained import pack_estimator
    assert "refine" in summary["results"]["test"], sorted(summary["results"]["test"])
    packed = pack_estimator(tmp_path / "demo" / "run" / "best", tmp_path / "packed", card={}, onnx=False)
    for folder in (tmp_path / "demo" / "run" / "best", packed):
        estimator = discopose.load(folder)
        assert estimator.refines, folder
        extents = estimator.refine_model.vertices_m.max(0) - estimator.refine_model.vertices_m.min(0)
        np.testing.assert_allclose(np.sort(extents), np.sort(1e-3 * drill.extents), rtol=1e-3)


def test_an_estimators_mesh_must_be_the_one_its_data_was_rendered_from(tmp_path):
    from discopose._errors import DiscoposeError
    from discopose.models.checkpoint import OBJECT_MESH_FILE, _write_object_mesh, read_object_mesh
    from discopose.render.objects import load_mesh_object
    mesh = tmp_path / "part.ply"
    trimesh.creation.box((40, 30, 20)).export(mesh)
    meta = {"train_render_config": {"object": {"mesh": str(mesh), "mesh_scale_to_m": 0.001}},
            "object": {"name": "part", "source_sha256": load_mesh_object(str(mesh), 0.001).source_sha256}}
    assert _write_object_mesh(tmp_path, meta)
    vertices, faces = read_object_mesh(tmp_path, {"object_mesh": OBJECT_MESH_FILE})
    np.testing.assert_allclose(vertices.max(0) - vertices.min(0), [0.04, 0.03, 0.02], rtol=1e-6)
    assert faces.shape == (12, 3)
    # The built-in cube carries no mesh: it is rebuilt from its bounds.
    assert not _write_object_mesh(tmp_path / "none", {"train_render_config": {"object": {"mesh": None}}, "object": {}})
    trimesh.creation.box((40, 30, 21)).export(mesh)  # edited after its data was rendered
    with pytest.raises(DiscoposeError, match="has changed since the training data"):
        _write_object_mesh(tmp_path, meta)
    mesh.unlink()
    with pytest.raises(DiscoposeError, match="is gone"):
        _write_object_mesh(tmp_path, meta)
    (tmp_path / OBJECT_MESH_FILE).write_bytes(b"truncated")
    with pytest.raises(DiscoposeError, match="missing or corrupt"):
        read_object_mesh(tmp_path, {"object_mesh": OBJECT_MESH_FILE})


def test_fusion_counts_rotations_equal_up_to_the_objects_symmetry_as_agreeing():
    from discopose.camera import CameraModel
    from discopose.estimator.api import Pose, fuse_world_poses
    from discopose.geometry.transforms import rotation_about_axis, rotation_angle_deg
    can = Symmetry("axis", axis=(0.0, 0.0, 1.0)).matrices()
    truth = rotation_about_axis([1.0, 0.5, 0.2], 0.7)
    # Three cameras (identity extrinsics) read the can; two of them land on other spins about its axis.
    readings = [truth, truth @ rotation_about_axis([0, 0, 1], np.radians(120)),
                truth @ rotation_about_axis([0, 0, 1], np.radians(-75))]
    poses = [Pose(position_m=np.array([0.0, 0.0, 0.3]), rotation=r, position_covariance_m2=np.eye(3) * 1e-6,
                  rotation_sigma_deg=3.0, frame="camera", cameras=[f"c{i}"], valid=True, confidence=0.9)
             for i, r in enumerate(readings)]
    cameras = [CameraModel(f"c{i}", 64, 64, np.diag([50.0, 50.0, 1.0]) + np.array([[0, 0, 32], [0, 0, 32], [0, 0, 0]]),
                           world_from_camera=np.eye(4)) for i in range(3)]
    names = ["c0", "c1", "c2"]
    fused = fuse_world_poses(poses, cameras, names, symmetries=can)
    assert fused.valid and fused.extra["rotation_inliers"] == names
    # Equal to the truth up to the can's spin (the 10-degree discretisation of the axis leaves <= 5 degrees).
    assert min(rotation_angle_deg(truth, fused.rotation @ s) for s in can) < 5.0
    # Blind to the symmetry, the three readings disagree and no majority backs the rotation.
    blind = fuse_world_poses(poses, cameras, names)
    assert len(blind.extra["rotation_inliers"]) == 1 and not blind.valid
