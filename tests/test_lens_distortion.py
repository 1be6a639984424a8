"""Lens distortion through ``predict`` and ``predict_world``, with the networks replaced by an oracle.

The oracle reads the object's position off whatever image it is handed (the intensity centroid of a
white silhouette on black) and knows only the true camera-object distance, so it is right exactly when
the image it gets is an undistorted pinhole view with the camera the estimator says it is: any slip in
undistortion, intrinsics or the crop's geometry moves the pose. A webcam's barrel distortion displaces
the object by ~4 mm where it is put here.
"""
import numpy as np

from discopose.camera import CameraModel
from tests.conftest import NO_HAND, ONE_DISTANCE

DISTORTION = [-0.5, 0.2, 0.0, 0.0, 0.0]


class _Oracle:
    """Stands in for one stage's network; ``distance_m`` is the truth for the view being estimated."""

    def __init__(self, spec):
        from dataclasses import replace
        self.spec = replace(spec, dense=False)
        self.distances_m: list[float] = []

    def __call__(self, images):
        centroids = []
        for image in images:
            weight = image[..., 0].astype(float)
            rows, cols = np.indices(weight.shape)
            centroids.append([(weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum()])
        return {"centroid_px": np.array(centroids)}

    def decode(self, out, i, K):
        ray = np.linalg.solve(K, [*out["centroid_px"][i], 1.0])
        position = ray / np.linalg.norm(ray) * self.distances_m[i]
        return position, np.eye(3), np.eye(3) * 1e-6, 0.01


def _distorted_views(count: int, tmp_path, distortion=DISTORTION):
    """Rendered white-on-black object silhouettes as 320x240 webcams with lens ``distortion`` see them
    (rendered as undistorted pinholes on a larger canvas, then distorted), and their cameras."""
    import cv2

    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    focal, width, height, canvas = 260.0, 320, 240, (480, 360)
    # Off-centre (the cameras look at the workspace centre), inside the locator's field of view.
    poses = tmp_path / "pose.jsonl"
    poses.write_text('{"position_m": [0.075, 0.05, 0.0], "quat_wxyz": [0.9, 0.1, 0.3, 0.3]}\n')
    config = RenderConfig.load(overrides=[
        *NO_HAND, *ONE_DISTANCE, f"camera.count={count}", f"camera.width_px={canvas[0]}", f"camera.height_px={canvas[1]}",
        f"camera.fov_deg={np.degrees(2 * np.arctan(canvas[0] / 2 / focal))}", "camera.focal_jitter_frac=0",
        "camera.principal_point_jitter_px=0", "camera.rotation_jitter_deg=0", "camera.position_jitter_m=0",
        f"pose.poses_file={poses}",
        "clutter.occluder_prob=0", "clutter.distractor_count=[0, 0]", "textures.bank_size=2", "textures.size_px=8"])
    renderer = DiscoRenderer(config)
    try:
        _, views = renderer.render_index(0)
    finally:
        renderer.close()
    images, cameras, truths = {}, {}, {}
    for name, view in views.items():
        labels = view["labels"]
        pinhole = np.asarray(labels["K"])
        K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
        cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        ideal = cv2.undistortPoints(np.stack([cols, rows], -1).reshape(-1, 1, 2), K, np.array(distortion))[:, 0]
        map_x = (ideal[:, 0] * pinhole[0, 0] + pinhole[0, 2]).reshape(height, width).astype(np.float32)
        map_y = (ideal[:, 1] * pinhole[1, 1] + pinhole[1, 2]).reshape(height, width).astype(np.float32)
        silhouette = view["mask"].astype(np.uint8) * 255
        distorted = cv2.remap(silhouette, map_x, map_y, cv2.INTER_AREA)
        images[name] = np.repeat(distorted[..., None], 3, axis=2)
        cameras[name] = CameraModel(name, width, height, K, dist_coeffs=distortion,
                                    world_from_camera=labels["world_from_camera"])
        truths[name] = np.asarray(labels["camera_from_object"])
    return images, cameras, truths, np.asarray(views[next(iter(views))]["labels"]["camera_from_object"])


def _with_oracles(estimator, distances_m):
    estimator.locator, estimator.crop = _Oracle(estimator.locator.spec), _Oracle(estimator.crop.spec)
    estimator.locator.distances_m = estimator.crop.distances_m = distances_m
    return estimator


def test_predict_undistorts_a_webcam_frame(trained_run, tmp_path):
    """The distorted frame gives the pose the same scene gives through an ideal lens (the oracle's own
    bias, a silhouette's centroid against its centre, is the same in both and cancels)."""
    import discopose
    images, cameras, truths, _ = _distorted_views(1, tmp_path)
    pinholes, ideal_cameras, _, _ = _distorted_views(1, tmp_path, distortion=[0.0] * 5)
    image, camera, truth = images["cam0"], cameras["cam0"], truths["cam0"]
    ideal_px = camera.K @ (truth[:3, 3] / truth[2, 3])
    centre = np.array([(camera.width_px - 1) / 2, (camera.height_px - 1) / 2])
    assert np.linalg.norm(ideal_px[:2] - centre) > 70  # off-centre, where the lens bends the most
    estimator = _with_oracles(discopose.load(trained_run[0] / "best"), [float(np.linalg.norm(truth[:3, 3]))])
    through_ideal_lens = estimator.predict(pinholes["cam0"], camera=ideal_cameras["cam0"])
    assert np.linalg.norm(through_ideal_lens.position_m - truth[:3, 3]) < 0.004  # the oracle itself is close
    pose = estimator.predict(image, camera=camera)
    assert np.linalg.norm(pose.position_m - through_ideal_lens.position_m) < 0.0008
    # The distorted frame read as if the lens were ideal: millimetres off.
    misread = estimator.predict(image, camera=ideal_cameras["cam0"])
    assert np.linalg.norm(misread.position_m - through_ideal_lens.position_m) > 0.003


def test_predict_world_fuses_distorted_webcams(trained_run, tmp_path):
    import discopose
    images, cameras, truths, _ = _distorted_views(3, tmp_path)
    pinholes, ideal_cameras, _, _ = _distorted_views(3, tmp_path, distortion=[0.0] * 5)
    names = list(images)
    distances = [float(np.linalg.norm(truths[n][:3, 3])) for n in names]
    estimator = _with_oracles(discopose.load(trained_run[0] / "best"), distances)
    pose = estimator.predict(images, camera=cameras)
    through_ideal_lenses = estimator.predict(pinholes, camera=ideal_cameras)
    assert pose.frame == "world" and pose.cameras == names
    assert np.linalg.norm(pose.position_m - through_ideal_lenses.position_m) < 0.0012  # ignoring the lens: 3.5 mm
    world_from_object = cameras[names[0]].world_from_camera @ truths[names[0]]
    assert np.linalg.norm(pose.position_m - world_from_object[:3, 3]) < 0.004
