import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from discopose._errors import ConfigError, DiscoposeError
from discopose.calibration.boards import BoardSpec, detect_board
from discopose.calibration.intrinsics import calibrate_extrinsics, calibrate_intrinsics, calibrate_on_detections
from discopose.calibration.synthetic import board_poses, render_board_views
from discopose.camera import CameraModel
from discopose.geometry.transforms import invert_transform

TRUE_K = np.array([[600.0, 0, 318.3], [0, 605.0, 242.7], [0, 0, 1]])
SIZE = (640, 480)


def write_views(folder, board, count, seed=0):
    views = render_board_views(board, TRUE_K, SIZE, board_poses(count, np.random.default_rng(seed), board))
    folder.mkdir(exist_ok=True)
    paths = []
    for i, view in enumerate(views):
        paths.append(folder / f"view{i:02d}.png")
        cv2.imwrite(str(paths[-1]), view)
    return paths


@pytest.mark.parametrize("spec", ["chessboard:9x6:0.025", "charuco:7x5:0.04:0.03"])
def test_intrinsics_recovered_from_rendered_boards(tmp_path, spec):
    board = BoardSpec.parse(spec)
    paths = write_views(tmp_path / "views", board, 12)
    result = calibrate_intrinsics(str(tmp_path / "views" / "*.png"), board, name="left")
    K = result.camera.K
    assert abs(K[0, 0] / TRUE_K[0, 0] - 1) < 0.005 and abs(K[1, 1] / TRUE_K[1, 1] - 1) < 0.005
    # The principal point is the least constrained parameter with a dozen views.
    assert abs(K[0, 2] - TRUE_K[0, 2]) < 2.0 and abs(K[1, 2] - TRUE_K[1, 2]) < 2.0
    assert result.camera.rms_px < 0.5
    assert (result.camera.width_px, result.camera.height_px) == SIZE
    # Same detections through OpenCV's own calibrateCamera: the same answer.
    rms, K_cv, _, _ = calibrate_on_detections([detect_board(board, cv2.imread(str(p))) for p in paths], SIZE)
    np.testing.assert_allclose(K, K_cv, rtol=1e-6)
    # The camera file round-trips.
    result.camera.save(tmp_path / "left.yaml")
    assert np.allclose(CameraModel.load(tmp_path / "left.yaml").K, K)


def test_bad_views_are_rejected_with_reasons_and_too_few_views_refused(tmp_path):
    board = BoardSpec.parse("chessboard:9x6:0.025")
    write_views(tmp_path / "views", board, 6)
    cv2.imwrite(str(tmp_path / "views" / "blank.png"), np.full((480, 640), 128, np.uint8))
    result = calibrate_intrinsics(str(tmp_path / "views" / "*.png"), board)
    assert result.rejected[str(tmp_path / "views" / "blank.png")] == "board not found"
    with pytest.raises(DiscoposeError, match="only 3 usable views of 3.*need at least 5"):
        calibrate_intrinsics(sorted(map(str, (tmp_path / "views").glob("view0[0-2].png"))), board)
    with pytest.raises(DiscoposeError, match="no images match"):
        calibrate_intrinsics(str(tmp_path / "nothing" / "*.png"), board)


def test_extrinsics_recover_the_camera_pose(tmp_path):
    board = BoardSpec.parse("charuco:7x5:0.04:0.03")
    camera_from_board = board_poses(1, np.random.default_rng(5), board)[0]
    view = render_board_views(board, TRUE_K, SIZE, [camera_from_board])[0]
    cv2.imwrite(str(tmp_path / "board.png"), view)
    world_from_board = np.eye(4)
    world_from_board[:3, 3] = [0.1, -0.2, 0.0]
    camera = calibrate_extrinsics(CameraModel("top", *SIZE, TRUE_K), str(tmp_path / "board.png"), board,
                                  world_from_board)
    expected = world_from_board @ invert_transform(camera_from_board)
    np.testing.assert_allclose(camera.world_from_camera[:3, 3], expected[:3, 3], atol=0.002)
    np.testing.assert_allclose(camera.world_from_camera[:3, :3], expected[:3, :3], atol=0.005)


def test_board_specs_validate():
    assert str(BoardSpec.parse("chessboard:9x6:0.025")) == "chessboard:9x6:0.025"
    for bad in ("chessboard:9:0.025", "charuco:7x5:0.04:0.05", "circles:4x4:0.02", "charuco:7x5:0.04:0.03:DICT_NOPE"):
        with pytest.raises(ConfigError):
            BoardSpec.parse(bad)


def test_cli_board_and_intrinsics(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "discopose.cli", "calibrate", *a],  # noqa: E731
                                    capture_output=True, text=True)
    result = run("board", "--type", "charuco", "--out", str(tmp_path / "board.png"))
    assert result.returncode == 0, result.stderr
    board_image = cv2.imread(str(tmp_path / "board.png"), cv2.IMREAD_GRAYSCALE)
    assert detect_board(BoardSpec.parse("charuco:7x5:0.04:0.03"), board_image) is not None
    write_views(tmp_path / "views", BoardSpec.parse("chessboard:9x6:0.025"), 6)
    result = run("intrinsics", "--images", str(tmp_path / "views" / "*.png"), "--board", "chessboard:9x6:0.025",
                 "--name", "left", "--out", str(tmp_path / "left.json"))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "left.json").read_text())
    assert saved["format"] == "discopose-camera" and saved["name"] == "left" and saved["rms_px"] < 0.5
