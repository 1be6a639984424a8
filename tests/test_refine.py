"""The refinement (discopose.refine): the cube's mesh aligned to real renders, its score, its projection
geometry against OpenCV, and its one-line errors."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.geometry.transforms import rotation_about_axis, rotation_angle_deg
from discopose.refine import RefineConfig, RefineModel, refine_pose, refine_world_pose
from discopose.refine.model import sample_along_edges, visible_edges
from discopose.refine.projection import distorted_pixels, line_jacobian, object_delta_transform

# Plain scenes (no hand, no occluders) at 320 x 240 with the cube 0.2-0.5 m away: fast renders on which the
# refinement's basin is measured (benchmarks/refine.py has the harder worlds).
SCENE = ["hand.prob=0", "limbs.prob=0", "table.prob=0", "clutter.occluder_prob=0", "camera.distance_range_m=[0.2,0.5]",
         "camera.width_px=320", "camera.height_px=240"]


def _render(count: int, seed: int, extra: list[str] | None = None) -> list[dict]:
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    renderer = DiscoRenderer(RenderConfig.load(overrides=SCENE + [f"seed={seed}"] + (extra or [])))
    frames = []
    try:
        for index in range(count):
            _, views = renderer.render_index(index)
            for name, view in views.items():
                labels = view["labels"]
                camera = CameraModel(name, labels["width_px"], labels["height_px"], labels["K"],
                                     world_from_camera=labels["world_from_camera"])
                frames.append({"rgb": view["rgb"], "camera": camera,
                               "camera_from_object": np.asarray(labels["camera_from_object"])})
    finally:
        renderer.close()
    return frames


@pytest.fixture(scope="module")
def frames():
    return _render(12, seed=2)


def _perturbed(pose: np.ndarray, deg: float, mm: float, rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    out = pose.copy()
    out[:3, :3] = rotation_about_axis(rng.normal(size=3), np.radians(deg)) @ pose[:3, :3]
    out[:3, 3] += direction / np.linalg.norm(direction) * mm / 1000
    return out


def _errors(pose: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return rotation_angle_deg(pose[:3, :3], truth[:3, :3]), 1000 * float(np.linalg.norm(pose[:3, 3] - truth[:3, 3]))


def test_refine_recovers_a_perturbed_rendered_pose(frames):
    # Measured on these 12 frames and four other seeds: 75-100% within 5 deg / 5 mm, median 0.3-0.8 deg and
    # 0.7-1.9 mm (from 10 deg / 8 mm).
    rng = np.random.default_rng(0)
    model = RefineModel.cube()
    errors = []
    for frame in frames:
        start = _perturbed(frame["camera_from_object"], 10.0, 8.0, rng)
        result = refine_pose(frame["rgb"], frame["camera"], model, start)
        errors.append(_errors(result.camera_from_object, frame["camera_from_object"]))
        assert 0.0 <= result.score <= 1.0 and result.iterations > 0 and result.lines > 0
        assert result.frame == f"camera:{frame['camera'].name}"
        np.testing.assert_allclose(result.start_from_object, start)
    errors = np.array(errors)
    good = (errors[:, 0] < 5) & (errors[:, 1] < 5)
    assert good.mean() >= 0.5, errors.round(1)
    assert np.median(errors[:, 0]) < 3.0 and np.median(errors[:, 1]) < 3.0, errors.round(1)


def test_score_separates_the_true_pose_from_a_wrong_one(frames):
    # Scored where they are (no iterations): the rendered truth against the same pose turned 20 deg and moved
    # 10 mm. Measured: true 0.86-1.0, wrong 0.06-0.35.
    rng = np.random.default_rng(1)
    model = RefineModel.cube()
    score_only = RefineConfig(iterations=(0, 0, 0, 0))
    true_scores, wrong_scores = [], []
    for frame in frames:
        truth = frame["camera_from_object"]
        true_scores.append(refine_pose(frame["rgb"], frame["camera"], model, truth, score_only).score)
        wrong = _perturbed(truth, 20.0, 10.0, rng)
        wrong_scores.append(refine_pose(frame["rgb"], frame["camera"], model, wrong, score_only).score)
    true_scores, wrong_scores = np.array(true_scores), np.array(wrong_scores)
    assert (true_scores > wrong_scores).mean() >= 0.9, (true_scores.round(2), wrong_scores.round(2))
    assert np.median(true_scores) - np.median(wrong_scores) > 0.3, (true_scores.round(2), wrong_scores.round(2))


def test_correspondence_lines_read_the_contour_where_the_image_puts_it(frames):
    # The projection moved sideways by 3 px: the image's contour then lies -3 n_x px along each line's outward
    # normal n. Measured on these frames at scale 1: median |error| 0.2-1.05 px shifted (0-0.5 at the truth),
    # against 2-4 px for a posterior that ignored the image or read it the wrong way round.
    from discopose.refine.image import ViewImage
    from discopose.refine.region import ColorHistograms, contour_lines, region_terms
    model, config = RefineModel.cube(), RefineConfig()
    errors, mirrored = [], []
    for frame in frames:
        truth, camera = frame["camera_from_object"], frame["camera"]
        K = np.asarray(camera.K, float)
        view = ViewImage(frame["rgb"], camera)
        for shift_px in (0.0, 3.0, -3.0):
            pose = truth.copy()
            pose[0, 3] += shift_px * truth[2, 3] / K[0, 0]
            edges = visible_edges(model, pose, K, config.edge_min_facing)
            terms = region_terms(view, ColorHistograms(config.histogram_bins), model, edges, pose, 1, config)
            normals = contour_lines(model, edges, pose, K, config.lines)[2]
            assert terms.count == len(normals) > 50 and (terms.variance_px2 >= 0).all()
            errors.append(np.median(np.abs(terms.mean_px + shift_px * normals[:, 0])))
            if shift_px:
                mirrored.append(np.median(np.abs(terms.mean_px - shift_px * normals[:, 0])))
    errors, mirrored = np.array(errors), np.array(mirrored)
    assert np.median(errors) < 0.75 and (errors < 1.5).mean() >= 0.9, errors.round(2)
    assert np.median(mirrored) > 2.0, mirrored.round(2)


def test_hypotheses_are_scored_and_the_best_kept(frames):
    frame = frames[0]
    start = _perturbed(frame["camera_from_object"], 10.0, 5.0, np.random.default_rng(2))
    config = RefineConfig(hypotheses=7, hypotheses_kept=2)
    result = refine_pose(frame["rgb"], frame["camera"], RefineModel.cube(), start, config)
    assert len(result.hypothesis_scores) == 7 and 0.0 <= result.score <= 1.0
    finalists = np.argsort(result.hypothesis_scores)[::-1][:2]
    assert result.hypothesis in finalists or result.hypothesis == -1
    everything = refine_pose(frame["rgb"], frame["camera"], RefineModel.cube(), start,
                             RefineConfig(hypotheses=7, hypothesis_screen_levels=0))
    assert len(everything.hypothesis_scores) == 7
    assert everything.score == max(everything.hypothesis_scores) or everything.hypothesis == -1


def test_the_start_keeps_its_symmetric_equivalent(frames):
    # The bare cube looks the same turned 90 deg about a face axis: the refinement fixes the geometry and
    # keeps the equivalent nearest its start (the network's letters chose it).
    frame = frames[1]
    truth = frame["camera_from_object"]
    turned = truth.copy()
    turned[:3, :3] = truth[:3, :3] @ rotation_about_axis([0, 0, 1], np.pi / 2)
    start = _perturbed(turned, 5.0, 3.0, np.random.default_rng(3))
    result = refine_pose(frame["rgb"], frame["camera"], RefineModel.cube(), start)
    assert _errors(result.camera_from_object, turned)[0] < 10.0
    assert _errors(result.camera_from_object, truth)[0] > 80.0


def test_cameras_refined_jointly_in_the_world_frame():
    views = _render(3, seed=5, extra=["camera.count=2"])
    rng = np.random.default_rng(4)
    for first, second in zip(views[::2], views[1::2]):
        world_from_object = first["camera"].world_from_camera @ first["camera_from_object"]
        start = _perturbed(world_from_object, 8.0, 6.0, rng)
        result = refine_world_pose([(first["rgb"], first["camera"]), (second["rgb"], second["camera"])],
                                   RefineModel.cube(), start)
        assert result.frame == "world"
        rotation_error, position_error = _errors(result.frame_from_object, world_from_object)
        assert rotation_error < 4.0 and position_error < 4.0, (rotation_error, position_error)


def test_silhouette_is_the_hull_of_the_projected_corners_as_opencv_projects_them():
    model = RefineModel.cube(0.057)
    K = np.array([[500.0, 0, 160.5], [0, 510.0, 118.0], [0, 0, 1]])
    rng = np.random.default_rng(5)
    for _ in range(5):
        pose = np.eye(4)
        pose[:3, :3] = rotation_about_axis(rng.normal(size=3), rng.uniform(0, np.pi))
        pose[:3, 3] = [rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.2, 0.5)]
        edges = visible_edges(model, pose, K)
        points, pixels, _ = sample_along_edges(model, edges.silhouette, pose, K, count=64)
        rvec, _ = cv2.Rodrigues(pose[:3, :3])
        expected, _ = cv2.projectPoints(points, rvec, pose[:3, 3], K, None)
        np.testing.assert_allclose(pixels, expected.reshape(-1, 2), atol=1e-6)
        # Every contour sample lies on the convex hull of the 8 corners as OpenCV projects them, and the
        # outward normals point away from the hull's inside.
        corners, _ = cv2.projectPoints(model.vertices_m, rvec, pose[:3, 3], K, None)
        hull = cv2.convexHull(corners.reshape(-1, 2).astype(np.float32))
        distance = [cv2.pointPolygonTest(hull, (float(u), float(v)), True) for u, v in pixels]
        np.testing.assert_allclose(distance, 0.0, atol=1e-2)
        for (u, v), normal in zip(pixels[::8], _normals_at(edges, model, pose, K, points)[::8]):
            assert cv2.pointPolygonTest(hull, (float(u + 2 * normal[0]), float(v + 2 * normal[1])), False) < 0
            assert cv2.pointPolygonTest(hull, (float(u - 2 * normal[0]), float(v - 2 * normal[1])), False) > 0


def _normals_at(edges, model, pose, K, points):
    from discopose.refine.region import contour_lines
    _, _, normals = contour_lines(model, edges, pose, K, len(points))
    return normals


def test_pixel_indices_read_the_distorted_pixel_and_flag_those_outside():
    """A line sample is read where the lens puts it, clamped into the image and flagged outside when it lies
    beyond (a look-up that skipped the distortion, or flagged by the unclamped pixel, fails)."""
    from discopose.refine.image import ViewImage
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    dist = np.array([-0.23, 0.08, 0.001, -0.002, 0.01])
    view = ViewImage(np.zeros((480, 640, 3), np.uint8), CameraModel("lens", 640, 480, K, dist))
    rng = np.random.default_rng(8)
    ideal = np.column_stack([rng.uniform(-80, 720, 400), rng.uniform(-60, 540, 400)]).reshape(20, 20, 2)
    expected = distorted_pixels(K, dist, ideal.reshape(-1, 2)).reshape(20, 20, 2)
    u, v = np.rint(expected[..., 0]), np.rint(expected[..., 1])
    for margin in (0, 1):
        indices, inside = view.pixel_indices(ideal, margin=margin)
        within = (u >= margin) & (u <= 639 - margin) & (v >= margin) & (v <= 479 - margin)
        assert within.any() and (~within).any()
        np.testing.assert_array_equal(inside, within)
        np.testing.assert_array_equal(indices, np.clip(v, margin, 479 - margin).astype(int) * 640
                                      + np.clip(u, margin, 639 - margin).astype(int))


def test_median_is_numpys():
    from discopose.refine.edges import median
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 300, 301):
        values = rng.normal(size=n)
        assert median(values) == np.median(values)


def test_lens_distortion_and_jacobian_match_opencv_and_finite_differences():
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    dist = np.array([-0.23, 0.08, 0.001, -0.002, 0.01])
    rng = np.random.default_rng(6)
    points_camera = np.column_stack([rng.uniform(-0.1, 0.1, 50), rng.uniform(-0.08, 0.08, 50),
                                     rng.uniform(0.2, 0.6, 50)])
    ideal = points_camera[:, :2] / points_camera[:, 2:] * 600.0 + [319.5, 239.5]
    expected, _ = cv2.projectPoints(points_camera, np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(distorted_pixels(K, dist, ideal), expected.reshape(-1, 2), atol=1e-6)
    # d(n . pixel)/d(delta) against central differences of the projection of the moved object.
    pose = np.eye(4)
    pose[:3, :3] = rotation_about_axis([1, 2, 3], 0.7)
    pose[:3, 3] = [0.01, -0.02, 0.3]
    points = rng.uniform(-0.03, 0.03, (20, 3))
    normals = rng.normal(size=(20, 2))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    analytic = line_jacobian(K, pose, points, normals)
    numeric = np.zeros_like(analytic)
    for k in range(6):
        step = np.zeros(6)
        step[k] = 1e-6
        ahead, behind = (pose @ object_delta_transform(s) for s in (step, -step))
        project = [(p[:, :2] / p[:, 2:]) * 600.0 for p in (points @ T[:3, :3].T + T[:3, 3] for T in (ahead, behind))]
        numeric[:, k] = ((project[0] - project[1]) * normals).sum(1) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-3)


def test_a_users_mesh_is_welded_and_its_creases_found():
    from discopose.render.objects import make_marked_cube
    cube = make_marked_cube(0.05)  # 24 vertices: each corner repeated per face for flat shading
    model = RefineModel.from_mesh(cube.positions, cube.indices, name="own")
    assert len(model.vertices_m) == 8 and len(model.faces) == 12 and model.crease.sum() == 12 and model.convex
    assert ((model.face_normals * model.face_centers_m).sum(1) > 0).all()  # outward
    # An L-shaped prism (not convex): its inner corner is a crease too, and it is not mistaken for convex.
    outline = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], float) * 0.02
    vertices = np.vstack([np.column_stack([outline, np.zeros(6)]), np.column_stack([outline, np.full(6, 0.02)])])
    bottom = [[0, 2, 1], [0, 3, 2], [0, 5, 3], [3, 5, 4]]
    top = [[6 + a, 6 + c, 6 + b] for a, b, c in bottom]
    sides = []
    for i in range(6):
        j = (i + 1) % 6
        sides += [[i, j, 6 + j], [i, 6 + j, 6 + i]]
    model = RefineModel.from_mesh(vertices, np.array(bottom + top + sides))
    assert not model.convex and model.crease.sum() == 18 and len(model.shape_symmetries) == 1


def test_a_users_non_convex_mesh_is_refined_on_its_renders(tmp_path):
    # The example drill (164 faces, not convex: its grip hides part of its body). Measured on three seeds:
    # 88-100% within 5 deg / 5 mm from 8 deg / 5 mm, median 0.4-0.6 deg and 1.4-2.4 mm.
    from discopose.render.example_objects import make_example_object
    from discopose.render.objects import build_object
    from discopose.render.config import RenderConfig
    drill = make_example_object("drill", tmp_path / "drill.glb")
    extra = [f"object.mesh={drill}", "object.mesh_scale_to_m=0.001"]
    obj = build_object(RenderConfig.load(overrides=SCENE + extra).object)
    model = RefineModel.from_mesh(obj.positions, obj.indices, name="drill")
    assert not model.convex
    rng = np.random.default_rng(7)
    errors = []
    for frame in _render(8, seed=2, extra=extra):
        start = _perturbed(frame["camera_from_object"], 8.0, 5.0, rng)
        result = refine_pose(frame["rgb"], frame["camera"], model, start)
        errors.append(_errors(result.camera_from_object, frame["camera_from_object"]))
    errors = np.array(errors)
    assert ((errors[:, 0] < 5) & (errors[:, 1] < 5)).mean() >= 0.6, errors.round(1)
    assert np.median(errors[:, 0]) < 3.0 and np.median(errors[:, 1]) < 4.0, errors.round(1)


def test_the_estimators_object_description_gives_the_cube():
    meta = {"name": "cube", "bounds_m": [[-0.0285] * 3, [0.0285] * 3],
            "shape_symmetry": {"kind": "cube", "rotations": [], "axis": [0, 0, 1]}}
    model = RefineModel.from_object_meta(meta)
    np.testing.assert_allclose(np.abs(model.vertices_m), 0.0285)
    assert len(model.shape_symmetries) == 24 and np.allclose(model.shape_symmetries[0], np.eye(3))
    with pytest.raises(DiscoposeError, match="mesh"):
        RefineModel.from_object_meta({"name": "drill", "bounds_m": meta["bounds_m"]})


@pytest.mark.parametrize("image, camera_size, pose_fix, match", [
    (np.zeros((29, 41, 3), np.float32), (41, 29), None, "uint8"),
    (np.zeros((29, 41), np.uint8), (41, 29), None, "HxWx3"),
    (np.zeros((41, 29, 3), np.uint8), (41, 29), None, "41x29"),
    (np.zeros((29, 41, 3), np.uint8), (41, 29), "scale", "rigid"),
    (np.zeros((29, 41, 3), np.uint8), (41, 29), "behind", "in front"),
    (np.zeros((29, 41, 3), np.uint8), (41, 29), "shape", "4x4"),
])
def test_bad_input_is_one_line_error(image, camera_size, pose_fix, match):
    camera = CameraModel.from_fov("odd", *camera_size, 40.0)
    pose = np.eye(4)
    pose[2, 3] = 0.3
    if pose_fix == "scale":
        pose[:3, :3] *= 2
    elif pose_fix == "behind":
        pose[2, 3] = -0.3
    elif pose_fix == "shape":
        pose = pose[:3]
    with pytest.raises(DiscoposeError, match=match) as raised:
        refine_pose(image, camera, RefineModel.cube(), pose)
    assert "\n" not in str(raised.value)


def test_refine_needs_neither_torch_nor_the_renderer():
    code = ("import sys, numpy as np; from discopose.refine import refine_pose, RefineModel; "
            "from discopose.camera import CameraModel; cam = CameraModel.from_fov('c', 64, 48, 40.0); "
            "pose = np.eye(4); pose[2, 3] = 0.3; "
            "refine_pose(np.zeros((48, 64, 3), np.uint8), cam, RefineModel.cube(), pose); "
            "bad = [m for m in ('torch', 'pyrender', 'trimesh', 'onnxruntime', 'discopose.render', "
            "'discopose.estimator', 'discopose.models') if m in sys.modules]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
