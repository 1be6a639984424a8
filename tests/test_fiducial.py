"""The fiducial baseline: an ArUco cube rendered by our renderer and read back by OpenCV's aruco module."""
from __future__ import annotations

import numpy as np

from discopose.baselines.aruco_cube import ArucoCube, marker_corners_m, write_aruco_cube
from discopose.geometry.transforms import rotation_angle_deg
from discopose.render.objects import CUBE_FACES


def test_markers_lie_centred_on_their_faces():
    for marker_id, corners in marker_corners_m(0.057).items():
        normal = np.asarray(CUBE_FACES[marker_id][1], float)
        assert np.allclose(corners @ normal, 0.0285)  # on the face plane
        assert np.allclose(corners.mean(0), 0.0285 * normal)  # centred
        # Seen from outside, TL -> TR -> BR is clockwise on the image, i.e. counter-clockwise about the normal.
        assert np.cross(corners[1] - corners[0], corners[2] - corners[1]) @ normal < 0


def test_the_rendered_aruco_cube_is_read_to_a_millimetre(tmp_path):
    from discopose.datasets.format import camera_from_labels
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    mesh = write_aruco_cube(tmp_path / "aruco_cube.glb")
    config = RenderConfig.load(overrides=[f"object.mesh={mesh}", "object.appearance=original", "hand.prob=0",
                                          "limbs.prob=0", "clutter.occluder_prob=0", "camera.width_px=320",
                                          "camera.height_px=240", "noise.blur_prob=0"])
    renderer = DiscoRenderer(config)
    reader = ArucoCube()
    errors, seen = [], 0
    try:
        for seed in range(10):
            view = renderer.render(renderer.sample_params(seed))["cam0"]
            camera = camera_from_labels("cam0", view["labels"])
            estimate, markers = reader.estimate(view["rgb"], camera)
            if estimate is None:
                continue
            seen += 1
            truth = np.asarray(view["labels"]["camera_from_object"])
            errors.append((np.linalg.norm(estimate[:3, 3] - truth[:3, 3]) * 1000,
                           rotation_angle_deg(estimate[:3, :3], truth[:3, :3])))
    finally:
        renderer.close()
    assert seen >= 7, seen
    position_mm, rotation_deg = np.median(np.array(errors), axis=0)
    assert position_mm < 3.0 and rotation_deg < 3.0, errors
