"""Wrong paths, wrong types and corrupt files: every command exits non-zero with one line that names
the offending file or field, never a traceback; library functions raise the matching error."""
import json
import logging
import subprocess
import sys
import threading
import types

import cv2
import numpy as np
import pytest
import yaml

from discopose._errors import ConfigError, DiscoposeError
from discopose.camera import CameraModel
from discopose.cli import main
from discopose.geometry.transforms import look_at

GOOD_CAMERA = {
    "format": "discopose-camera", "version": 1, "name": "left", "width_px": 17, "height_px": 11,
    "K": [[20.0, 0, 8.0], [0, 21.0, 5.0], [0, 0, 1]], "dist_coeffs": [0.1, -0.05, 0.001, 0.002, 0.01],
    "world_from_camera": look_at(np.array([0.3, 0.0, 0.2]), np.zeros(3)).tolist(), "rms_px": 0.2,
}
SCALED = np.diag([2.0, 1, 1, 1]).tolist()
MIRRORED = np.diag([-1.0, 1, 1, 1]).tolist()


def write_camera(path, **changes):
    data = {k: v for k, v in {**GOOD_CAMERA, **changes}.items() if v is not ...}  # ... leaves the field out
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``discopose ARGV`` run in this process (as the entry point runs it)."""
    code = main(list(map(str, argv)))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names: str) -> None:
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    for name in names:
        assert name in errors[0], errors[0]


# ------------------------------------------------------------------------------------------ camera files
@pytest.mark.parametrize("changes, field", [
    ({"K": "abc"}, "K must be a 3x3 matrix"),
    ({"K": [[20, 0], [0, 21]]}, "K must be a 3x3 matrix"),
    ({"K": [[0, 0, 8], [0, 21, 5], [0, 0, 1]]}, "fx=0"),
    ({"K": [[20, 0, 8], [0, 21, 5], [0, 1, 1]]}, "K's last row"),
    ({"dist_coeffs": [0.1, 0.2, 0.3]}, "dist_coeffs has 3 coefficients; OpenCV takes 4, 5, 8, 12 or 14"),
    ({"dist_coeffs": "barrel"}, "dist_coeffs must be a list of numbers"),
    ({"width_px": -5}, "width_px must be a positive whole number"),
    ({"height_px": "tall"}, "height_px must be a positive whole number"),
    ({"width_px": 17.5}, "width_px must be a positive whole number"),
    ({"world_from_camera": SCALED}, "world_from_camera is not a rigid transform"),
    ({"world_from_camera": MIRRORED}, "world_from_camera is not a rigid transform"),
    ({"world_from_camera": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}, "world_from_camera must be a 4x4 matrix"),
    ({"version": "one"}, "version must be a whole number"),
    ({"rms_px": "low"}, "rms_px must be a non-negative number"),
    ({"meta": "notes"}, "meta must be a mapping"),
    ({"K": ...}, "lacks the field 'K'"),
])
def test_each_bad_camera_field_is_named_with_the_file(tmp_path, changes, field):
    path = write_camera(tmp_path / "left.yaml", **changes)
    with pytest.raises(ConfigError, match=field) as error:
        CameraModel.load(path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("count", [4, 5, 8, 12, 14])
def test_good_camera_files_load_with_every_distortion_model_opencv_accepts(tmp_path, count):
    camera = CameraModel.load(write_camera(tmp_path / "left.json", dist_coeffs=[0.01] * count))
    assert camera.dist_coeffs.shape == (count,) and (camera.width_px, camera.height_px) == (17, 11)
    np.testing.assert_allclose(camera.world_from_camera, GOOD_CAMERA["world_from_camera"])
    # What OpenCV will be given must be what it takes.
    cv2.initUndistortRectifyMap(camera.K, camera.dist_coeffs, np.eye(3), camera.K, (17, 11), cv2.CV_32FC1)


def test_absent_distortion_means_an_ideal_lens_and_printed_rotations_are_rigid_enough(tmp_path):
    rounded = np.round(np.asarray(GOOD_CAMERA["world_from_camera"]), 5).tolist()  # as calibrate prints it
    camera = CameraModel.load(write_camera(tmp_path / "left.yaml", dist_coeffs=..., world_from_camera=rounded))
    assert (camera.dist_coeffs == 0).all() and camera.dist_coeffs.shape == (5,)


def test_cameras_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="camera 'left': dist_coeffs has 3"):
        CameraModel("left", 17, 11, GOOD_CAMERA["K"], dist_coeffs=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="camera 'left': world_from_camera is not a rigid"):
        CameraModel("left", 17, 11, GOOD_CAMERA["K"], world_from_camera=SCALED)


def test_calibrate_refuses_bad_camera_and_board_pose_files_in_one_line(tmp_path, capsys):
    from discopose.calibration.boards import BoardSpec, draw_board
    board = tmp_path / "board.png"
    cv2.imwrite(str(board), draw_board(BoardSpec.parse("chessboard:9x6:0.025"), 20, 10))
    extrinsics = ["calibrate", "extrinsics", "--image", board, "--board", "chessboard:9x6:0.025",
                  "--out", tmp_path / "out.yaml"]
    for changes, names in [({"K": "abc"}, ["bad.yaml", "K must be"]),
                           ({"dist_coeffs": [0.1, 0.2, 0.3]}, ["bad.yaml", "dist_coeffs has 3"])]:
        bad = write_camera(tmp_path / "bad.yaml", **changes)
        assert_one_line_error(*cli(capsys, *extrinsics, "--camera", bad), *names)
    good = write_camera(tmp_path / "good.yaml")
    for matrix in ("abc", SCALED):
        pose = tmp_path / "pose.yaml"
        pose.write_text(yaml.safe_dump({"world_from_board": matrix}))
        assert_one_line_error(*cli(capsys, *extrinsics, "--camera", good, "--board-pose", pose),
                              "pose.yaml", "world_from_board")
    assert not (tmp_path / "out.yaml").exists()


# ---------------------------------------------------------------------------------------- output paths
def test_outputs_get_their_folders_and_bad_output_paths_are_one_line(tmp_path, capsys):
    deep = tmp_path / "new" / "folders" / "board.png"
    assert cli(capsys, "calibrate", "board", "--px-per-square", 10, "--out", deep)[0] == 0
    assert cv2.imread(str(deep)) is not None
    assert [p.name for p in deep.parent.iterdir()] == ["board.png"]  # no temp file left behind
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for out, names in [(tmp_path, [str(tmp_path), "is a folder"]),
                       (a_file / "board.png", [str(a_file), "is a file, not a folder"])]:
        assert_one_line_error(*cli(capsys, "calibrate", "board", "--out", out), *names)
    assert_one_line_error(*cli(capsys, "calibrate", "board", "--px-per-square", 0, "--out", deep), "--px-per-square")
    assert_one_line_error(*cli(capsys, "demo", "--out", a_file, "--quick"), str(a_file), "not a folder")


def test_eval_refuses_a_bad_out_before_it_reads_any_data(tmp_path, capsys, tiny_model):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    # The data does not exist either: an --out checked only after evaluating would report that instead.
    assert_one_line_error(*cli(capsys, "eval", "--model", tiny_model, "--data", tmp_path / "no-data",
                               "--out", a_file), str(a_file), "not a folder")


def test_an_os_error_on_a_path_is_one_line_naming_the_file_in_the_way(tmp_path):
    from discopose._io import describe_path_error, output_folder
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    with pytest.raises(OSError) as error:
        (a_file / "run").mkdir(parents=True)  # what a library call that does not check its output raises
    assert describe_path_error(error.value) == f"{a_file} is a file where a folder is needed; choose another path"
    with pytest.raises(DiscoposeError, match="notes.txt is a file"):
        output_folder(a_file / "run" / "best")


def test_the_cli_turns_os_errors_about_a_path_into_one_line_and_keeps_other_tracebacks(tmp_path, capsys,
                                                                                      monkeypatch):
    import discopose.cli
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    monkeypatch.setattr(discopose.cli, "cmd_export", lambda args: (a_file / "run").mkdir(parents=True))
    assert_one_line_error(*cli(capsys, "export", "--model", "m"), str(a_file), "where a folder is needed")

    def machine_trouble(args):
        raise OSError("no file involved")
    monkeypatch.setattr(discopose.cli, "cmd_export", machine_trouble)
    with pytest.raises(OSError, match="no file involved"):
        main(["export", "--model", "m"])


# --------------------------------------------------------------------------------------------- meshes
def render_config(**overrides):
    from discopose.render.config import RenderConfig
    return RenderConfig.load(overrides=[f"{k}={v}" for k, v in overrides.items()])


def check_object(config):
    from discopose.render.objects import build_object, check_fits_cameras
    from discopose.render.sampling import nominal_cameras
    check_fits_cameras(build_object(config.object), nominal_cameras(config), config)


def test_objects_too_big_for_the_camera_distance_are_refused_with_their_size(tmp_path):
    import trimesh
    metres = tmp_path / "two_metres.ply"
    trimesh.creation.box((2.0, 2.0, 2.0)).export(metres)
    with pytest.raises(ConfigError, match=r"diameter of 3\.46 m .*--object-scale.*camera\.distance_m"):
        check_object(render_config(**{"object.mesh": metres}))
    check_object(render_config(**{"object.mesh": metres, "object.mesh_scale_to_m": 0.05}))
    check_object(render_config(**{"object.mesh": metres, "camera.distance_m": 5.0}))
    # The built-in cube: its own size field, and the near plane counts (the cube fits 40% of 5 cm).
    with pytest.raises(ConfigError, match="object.cube_size_m"):
        check_object(render_config(**{"object.cube_size_m": 1.0}))
    with pytest.raises(ConfigError, match="camera 'cam0' is 0.12 m"):
        check_object(render_config(**{"object.cube_size_m": 0.02, "camera.distance_m": 0.12,
                                      "camera.znear_m": 0.05}))
    check_object(render_config())


def test_degenerate_and_non_finite_objects_are_refused(tmp_path):
    from discopose.render.objects import check_fits_cameras, load_mesh_object, make_marked_cube
    from discopose.render.sampling import nominal_cameras
    point = tmp_path / "point.obj"
    point.write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    with pytest.raises(ConfigError, match="point.obj' has zero size"):
        load_mesh_object(str(point))
    config = render_config()
    cube = make_marked_cube()
    cube.positions = cube.positions.copy()
    cube.positions[3] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        check_fits_cameras(cube, nominal_cameras(config), config)
    cube.positions[:] = 0.01
    with pytest.raises(ConfigError, match="zero size"):
        check_fits_cameras(cube, nominal_cameras(config), config)


def test_unreadable_clutter_meshes_name_the_file(tmp_path):
    from discopose.render.renderer import _load_unit_mesh
    notes = tmp_path / "notes.txt"
    notes.write_text("not a mesh")
    with pytest.raises(ConfigError, match="clutter.meshes: .*notes.txt' cannot be read"):
        _load_unit_mesh(str(notes))


def test_render_refuses_a_two_metre_mesh_before_writing_anything(tmp_path):
    """The real entry point, as a user runs it: exit code, one stderr line, no dataset folder left."""
    import trimesh
    mesh = tmp_path / "big.ply"
    trimesh.creation.box((2.0, 2.0, 2.0)).export(mesh)
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "discopose.cli", "render", "--out", str(out), "--num", "1",
                             "--object", str(mesh)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "'big' has a diameter of 3.46 m" in result.stderr and "--object-scale" in result.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------------- camera sources
def write_frames(folder, names_and_contents):
    folder.mkdir()
    for name, content in names_and_contents:
        if content is None:
            cv2.imwrite(str(folder / name), np.full((11, 17, 3), 90, np.uint8))
        else:
            (folder / name).write_bytes(content)
    return folder


def test_a_corrupt_frame_in_a_folder_is_skipped_with_one_warning_naming_it(tmp_path, caplog):
    from discopose.estimator.sources import ImageFolderCapture
    png = cv2.imencode(".png", np.zeros((11, 17, 3), np.uint8))[1].tobytes()
    folder = write_frames(tmp_path / "frames", [("000.png", None), ("001.png", png[:40]), ("002.png", None),
                                                ("003.jpg", b"")])
    with caplog.at_level(logging.WARNING, logger="discopose.estimator.sources"):
        capture = ImageFolderCapture(str(folder))
        frames = []
        while (frame := capture.read())[0]:
            frames.append(frame[1])
    assert len(frames) == 2 and all(f.shape == (11, 17, 3) for f in frames)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "001.png" in warned[0] and "003.jpg" in warned[1]


def test_a_folder_without_a_readable_image_is_an_error(tmp_path):
    from discopose.estimator.sources import ImageFolderCapture
    folder = write_frames(tmp_path / "frames", [("000.png", b"garbage"), ("001.png", b"")])
    with pytest.raises(DiscoposeError, match="none of its 2 images can be read"):
        ImageFolderCapture(str(folder))
    with pytest.raises(DiscoposeError, match="holds no images"):
        ImageFolderCapture(str(write_frames(tmp_path / "empty", [("notes.txt", b"hi")])))


class _BrokenCapture:
    def isOpened(self):  # noqa: N802 - the cv2.VideoCapture interface
        return True

    def read(self):
        raise MemoryError("decoding a huge frame")

    def get(self, prop):
        return 0

    def release(self):
        pass


def test_a_tracking_run_ended_by_a_failed_camera_raises_instead_of_finishing_quietly():
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker
    from discopose.geometry.symmetry import Symmetry
    source = CameraSource("cam0", "folder", mode="lockstep", open_fn=lambda uri: (_BrokenCapture(), False))
    estimator = types.SimpleNamespace(object={"symmetry": Symmetry().to_dict(), "keypoints_m": np.zeros((9, 3))},
                                      model_camera=CameraModel("model", 8, 8, np.diag([8.0, 8.0, 1.0])),
                                      predict_views=lambda views, priors=None: [], refines=False)
    tracker = Tracker(estimator, {"cam0": source}, config=TrackConfig(publish=None))
    outcome = {}

    def run():
        try:
            outcome["stats"] = tracker.run()
        except DiscoposeError as exc:
            outcome["error"] = str(exc)
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the tracker waits forever on a camera whose thread died"
    assert "camera 'cam0'" in outcome["error"] and "MemoryError: decoding a huge frame" in outcome["error"]
    with pytest.raises(ConfigError, match="max_frames=-3"):
        TrackConfig(max_frames=-3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained small locator checkpoint: enough for `discopose track` to load a model."""
    from discopose.models.checkpoint import save_checkpoint
    from discopose.models.pose_net import PoseNet, PoseNetSpec
    from discopose.render.objects import make_marked_cube
    spec = PoseNetSpec(backbone="mobilenet_v3_small", stage="locator", input_size_px=(32, 32),
                       camera_K=[[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]], dense=False, hidden=16)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "best", PoseNet(spec),
                           {"object": make_marked_cube().describe()})


def test_track_refuses_unreadable_folders_and_output_folders_and_stops_its_cameras(tmp_path, capsys, tiny_model):
    frames = write_frames(tmp_path / "frames", [("000.png", None), ("001.png", None)])
    broken = write_frames(tmp_path / "broken", [("000.png", b"garbage"), ("001.png", b"")])
    track = ["track", "--model", tiny_model, "--no-publish", "--assume-nominal", "--every-frame"]
    assert_one_line_error(*cli(capsys, *track, "--camera", f"cam0={broken}"), "broken", "none of its 2 images")
    assert_one_line_error(*cli(capsys, *track, "--camera", f"cam0={frames}", "--record", tmp_path),
                          str(tmp_path), "is a folder")
    # Left running, a camera thread aborts the interpreter at exit (exit code 134, no message).
    assert not [t for t in threading.enumerate() if t.name.startswith("camera-")]


def test_corrupt_estimator_index_is_one_line_for_every_command_that_loads_it(tmp_path, capsys):
    estimator = tmp_path / "best"
    estimator.mkdir()
    (estimator / "estimator.json").write_text('{"format": "discopose-est')
    index = str(estimator / "estimator.json")
    for argv in (["export", "--model", estimator],
                 ["track", "--model", estimator, "--camera", "cam0=0", "--no-publish"]):
        assert_one_line_error(*cli(capsys, *argv), index, "truncated or corrupt")


def test_random_bytes_as_weights_are_one_line_even_without_a_recorded_hash(tmp_path, capsys, tiny_model):
    import shutil
    checkpoint = shutil.copytree(tiny_model, tmp_path / "best")
    meta = json.loads((checkpoint / "meta.json").read_text())
    del meta["weights_sha256"]  # written by older runs or edited by hand: nothing to compare against
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    (checkpoint / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(2000))
    assert_one_line_error(*cli(capsys, "export", "--model", checkpoint), "model.safetensors", "is not the weights")


def test_crop_data_the_dense_head_cannot_learn_from_is_refused(tmp_path):
    """Crops without depth, or at another size than the network's input, would leave the dense head
    untrained while inference runs PnP on it: refused before any training, naming the fix."""
    from discopose._errors import DatasetError
    from discopose.datasets.generate import generate_dataset
    from discopose.models.train import TrainConfig, train
    from discopose.render.config import RenderConfig
    crop = ["camera.aim=object", "camera.width_px=32", "camera.height_px=32", "textures.bank_size=2",
            "textures.size_px=8", "hand.prob=0", "limbs.prob=0", "table.prob=0"]
    generate_dataset(str(tmp_path / "no_depth"), 2, RenderConfig.load(overrides=crop), workers=1, progress=False)
    generate_dataset(str(tmp_path / "depth"), 2, RenderConfig.load(overrides=crop + ["output.depth=true"]), workers=1,
                     progress=False)
    tiny = dict(stage="crop", pretrained="none", backbone="mobilenet_v3_small", epochs=1, num_workers=0, hidden=8)
    with pytest.raises(DatasetError, match="no_depth has no depth/mask.*output.depth=true"):
        train(str(tmp_path / "no_depth"), str(tmp_path / "run1"), config=TrainConfig(**tiny), progress=False)
    with pytest.raises(DatasetError, match="32x32 crops but the network's input is 24x24"):
        train(str(tmp_path / "depth"), str(tmp_path / "run2"), config=TrainConfig(**tiny, input_px=24), progress=False)
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()


def test_an_estimator_missing_a_listed_stage_is_refused(tmp_path, tiny_model):
    """A copy without crop/ used to load the locator alone (orientation at chance) without a word."""
    import shutil

    import discopose
    from discopose.render.objects import make_marked_cube
    folder = tmp_path / "best"
    shutil.copytree(tiny_model, folder / "locator")
    (folder / "estimator.json").write_text(json.dumps({"format": "discopose-estimator", "version": 1,
                                                       "object": make_marked_cube().describe(),
                                                       "stages": ["locator", "crop"]}))
    with pytest.raises(DiscoposeError, match="lists the crop stage but .*crop is missing"):
        discopose.load(folder)


def test_a_camera_calibrated_at_another_aspect_ratio_is_refused(tiny_model):
    """A 16:9 calibration scaled onto a 4:3 stream is a wrong K; the same aspect at another size is fine."""
    import discopose
    est = discopose.load(tiny_model)
    image = np.zeros((120, 160, 3), np.uint8)
    wide = CameraModel("wide", 1280, 720, [[900.0, 0, 639.5], [0, 900.0, 359.5], [0, 0, 1]])
    with pytest.raises(DiscoposeError, match="calibrated at 1280x720 but the image is 160x120, another aspect ratio"):
        est.predict(image, camera=wide)
    same_aspect = CameraModel("vga", 640, 480, [[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    assert est.predict(image, camera=same_aspect).position_m.shape == (3,)


def test_the_locator_keeps_its_best_epoch_by_position_not_add():
    """The locator's rotation is near chance, so ADD would pick epochs by noise: its score is position."""
    from discopose.models.train import _validation_score
    close_but_turned = {"te_mm": {"median": 4.0}, "add_s_rel_diameter_median": 0.9}
    far_but_aligned = {"te_mm": {"median": 9.0}, "add_s_rel_diameter_median": 0.3}
    assert _validation_score(close_but_turned, "locator") < _validation_score(far_but_aligned, "locator")
    assert _validation_score(close_but_turned, "crop") > _validation_score(far_but_aligned, "crop")


def test_the_held_out_test_differs_from_training_in_looks_only():
    """Its clutter, hand, limbs and table are training's, so its score measures appearance alone."""
    from discopose.demo import HELD_OUT_LOOKS, TRAIN_LOOKS
    from discopose.render.config import RenderConfig
    train_world, held_out = RenderConfig.load(overrides=TRAIN_LOOKS), RenderConfig.load(overrides=HELD_OUT_LOOKS)
    for part in ("clutter", "hand", "limbs", "table", "camera", "pose", "noise"):
        assert getattr(train_world, part) == getattr(held_out, part), part
    assert train_world.textures.kinds != held_out.textures.kinds


def test_training_knobs_are_checked_with_what_to_use():
    from discopose.decoding import PoseNetSpec
    from discopose.models.train import TrainConfig, rotation_head_for
    with pytest.raises(ConfigError, match="rotation_head='quaternion'; use auto, 6d, patch_pnp"):
        TrainConfig(rotation_head="quaternion")
    with pytest.raises(ConfigError, match="dense_stride=5; use 4, 8 or 16"):
        TrainConfig(dense_stride=5)
    # Patch-PnP reads the dense maps, which the locator does not have.
    with pytest.raises(ConfigError, match="only the crop stage has"):
        rotation_head_for(TrainConfig(stage="locator", rotation_head="patch_pnp"), PoseNetSpec(stage="locator", dense=False))
    assert rotation_head_for(TrainConfig(), PoseNetSpec(stage="crop", dense=True)) == "patch_pnp"
    assert rotation_head_for(TrainConfig(), PoseNetSpec(stage="locator", dense=False)) == "6d"
