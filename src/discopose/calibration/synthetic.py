"""Rendered images of a calibration board with a known camera: ground truth for calibration tests
and for checking that the renderer's and OpenCV's camera models agree."""
from __future__ import annotations

import numpy as np

from discopose.calibration.boards import BoardSpec, draw_board
from discopose.geometry.transforms import invert_transform, look_at, opengl_from_opencv, rotation_about_axis


def board_poses(count: int, rng: np.random.Generator, board: BoardSpec, distance_m=(0.35, 0.6),
                tilt_deg: float = 35.0) -> list[np.ndarray]:
    """``camera_from_board`` poses that view the board's centre from varied angles."""
    width, height = board.size_m
    centre = np.array([width / 2, height / 2, 0.0])
    poses = []
    for _ in range(count):
        # Camera on the printed side (board -z), tilted around the board centre.
        direction = rotation_about_axis(rng.normal(size=3), np.radians(rng.uniform(5, tilt_deg))) @ [0, 0, -1.0]
        eye = centre + rng.uniform(*distance_m) * direction
        board_from_camera = look_at(eye, centre + rng.normal(0, 0.01, 3), up=(0, -1, 0))
        roll = np.eye(4)
        roll[:3, :3] = rotation_about_axis([0, 0, 1], np.radians(rng.uniform(-20, 20)))
        poses.append(invert_transform(board_from_camera @ roll))
    return poses


def render_board_views(board: BoardSpec, K: np.ndarray, size: tuple[int, int], poses: list[np.ndarray],
                       margin_squares: float = 0.5) -> list[np.ndarray]:
    """Grayscale uint8 renders of the printed board (with a white margin) for each ``camera_from_board``."""
    from discopose.render.gl import import_pyrender, make_offscreen_renderer, release_offscreen_renderer
    pr = import_pyrender()
    px = 100
    margin_px = int(margin_squares * px)
    image = draw_board(board, px_per_square=px, margin_px=margin_px)
    margin_m = margin_squares * board.square_m
    width_m, height_m = board.size_m
    x0, y0, x1, y1 = -margin_m, -margin_m, width_m + margin_m, height_m + margin_m
    positions = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], np.float32)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # pyrender's v points up the image
    texture = pr.Texture(source=np.repeat(image[..., None], 3, 2), source_channels="RGB")
    primitive = pr.Primitive(positions=positions, normals=np.tile([0, 0, -1.0], (4, 1)).astype(np.float32),
                             texcoord_0=uvs, indices=np.array([[0, 2, 1], [0, 3, 2]], np.int32),
                             material=pr.MetallicRoughnessMaterial(baseColorTexture=texture, doubleSided=True))
    scene = pr.Scene(bg_color=(0.3, 0.3, 0.3, 1.0), ambient_light=(1.0, 1.0, 1.0))
    board_node = scene.add(pr.Mesh([primitive]))
    camera = pr.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=0.01, zfar=10.0)
    camera_node = scene.add(camera, pose=np.eye(4))
    renderer = make_offscreen_renderer(*size)
    views = []
    try:
        for camera_from_board in poses:
            scene.set_pose(board_node, np.eye(4))
            scene.set_pose(camera_node, opengl_from_opencv(invert_transform(camera_from_board)))
            color, _ = renderer.render(scene, flags=pr.RenderFlags.FLAT)
            views.append(color[..., 0].copy())
    finally:
        release_offscreen_renderer(renderer)
    return views
