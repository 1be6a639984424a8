"""The camera layer every image passes through: remapping, aimed (zoom-in) cameras, position coding."""
import numpy as np
import pytest

from discopose.camera import (CameraModel, aimed_camera, aimed_field_camera, area_average, jittered_aim,
                              position_covariance_from_uvz, position_from_uvz, remap_image, uvz_from_position)
from discopose.geometry.transforms import project_points


def test_uvz_round_trip_and_meaning():
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = np.array([[rng.uniform(50, 900), 0, rng.uniform(10, 300)], [0, rng.uniform(50, 900), rng.uniform(10, 200)],
                      [0, 0, 1]])
        size = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
        position = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.1, 1.0)])
        uvz = uvz_from_position(position, K, size, 0.1, 0.7)
        np.testing.assert_allclose(position_from_uvz(uvz, K, size, 0.1, 0.7), position, rtol=1e-12)
        # du, dv: the projected centre's offset from the principal point in units of the image size.
        pixel, _ = project_points(K, np.eye(4), position)
        np.testing.assert_allclose(uvz[:2] * min(size), pixel[0] - K[:2, 2], rtol=1e-9)
    # At z_ref the object spans fill_frac of the image: log ratio 0.
    K = np.array([[200.0, 0, 50], [0, 200.0, 50], [0, 0, 1]])
    z_ref = 200.0 * 0.1 / (0.7 * 100)
    assert uvz_from_position([0, 0, z_ref], K, (100, 100), 0.1, 0.7)[2] == pytest.approx(0.0)


def test_position_covariance_matches_sampling():
    rng = np.random.default_rng(1)
    K = np.array([[300.0, 0, 60], [0, 310.0, 50], [0, 0, 1]])
    uvz = np.array([0.1, -0.05, 0.2])
    sigma = np.array([0.01, 0.02, 0.05])
    samples = np.array([position_from_uvz(uvz + sigma * rng.normal(size=3), K, (100, 120), 0.1, 0.7)
                        for _ in range(20000)])
    expected = position_covariance_from_uvz(sigma, position_from_uvz(uvz, K, (100, 120), 0.1, 0.7), K, (100, 120))
    measured = np.cov(samples.T)
    np.testing.assert_allclose(np.diag(measured), np.diag(expected), rtol=0.05)
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    np.testing.assert_allclose(measured / scale, expected / scale, atol=0.03)  # correlations


def test_aimed_camera_centres_and_zooms_onto_the_point():
    point = np.array([0.05, -0.03, 0.3])
    crop, crop_from_camera = aimed_camera(point, diameter_m=0.1, size_px=64, fill_frac=0.5)
    np.testing.assert_allclose(crop_from_camera @ crop_from_camera.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(crop_from_camera) == pytest.approx(1.0)
    in_crop = crop_from_camera @ point
    np.testing.assert_allclose(in_crop[:2], 0.0, atol=1e-12)  # on the optical axis
    # A 0.1 m segment across the viewing ray at the point spans fill_frac * size pixels.
    ends = np.array([in_crop + [-0.05, 0, 0], in_crop + [0.05, 0, 0]])
    pixels, _ = project_points(crop.K, np.eye(4), ends)
    assert pixels[1, 0] - pixels[0, 0] == pytest.approx(32.0, rel=1e-9)
    np.testing.assert_allclose(pixels.mean(0), [31.5, 31.5])
    # Image "down" stays down: the camera's +y maps onto the crop's lower half.
    below, _ = project_points(crop.K, np.eye(4), crop_from_camera @ (point + [0, 0.01, 0]))
    assert below[0, 1] > 31.5


def test_aimed_field_camera_spans_its_field_on_a_wide_image():
    # The locator's second look: a 4:3 view aimed at a far point, field_m wide at the point's distance.
    point = np.array([-0.3, 0.2, 0.9])
    view, view_from_camera = aimed_field_camera(point, field_m=0.3, width_px=128, height_px=96)
    assert (view.width_px, view.height_px) == (128, 96)
    in_view = view_from_camera @ point
    np.testing.assert_allclose(in_view[:2], 0.0, atol=1e-12)
    ends = np.array([in_view + [-0.15, 0, 0], in_view + [0.15, 0, 0]])
    pixels, _ = project_points(view.K, np.eye(4), ends)
    assert pixels[1, 0] - pixels[0, 0] == pytest.approx(128.0, rel=1e-9)
    np.testing.assert_allclose(pixels.mean(0), [63.5, 47.5])
    # The square crop camera is the same construction.
    crop, crop_from_camera = aimed_camera(point, diameter_m=0.1, size_px=64, fill_frac=0.5)
    same, same_from_camera = aimed_field_camera(point, 0.2, 64, 64)
    np.testing.assert_allclose(crop.K, same.K)
    np.testing.assert_allclose(crop_from_camera, same_from_camera)


def test_jittered_aim_stays_within_its_bounds():
    rng = np.random.default_rng(2)
    point = np.array([0.02, 0.01, 0.25])
    for _ in range(200):
        crop, crop_from_camera = jittered_aim(point, 0.1, 96, 0.75, offset_frac=0.1, scale_jitter_frac=0.2, rng=rng)
        pixel, _ = project_points(crop.K, np.eye(4), crop_from_camera @ point)
        assert np.linalg.norm(pixel[0] - 47.5) <= 0.1 * 96 + 0.5
        exact_focal = 0.75 * 96 * np.linalg.norm(point) / 0.1
        assert 1 / 1.2 - 1e-9 <= crop.K[0, 0] / exact_focal <= 1.2 + 1e-9


def _render_with_cameras(cameras: list[dict]):
    """One sampled scene (noise off) rendered through the given camera dicts."""
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer
    config = RenderConfig.load(overrides=["textures.bank_size=4", "textures.size_px=16", "noise.blur_prob=0",
                                          "noise.gaussian_sigma=[0, 0]", "clutter.occluder_prob=0"])
    renderer = DiscoRenderer(config)
    try:
        params = renderer.sample_params(3)
        base = params["cameras"][0]
        views = []
        for camera in cameras:
            params["cameras"] = [{**base, **camera}]
            views.append(renderer.render(params)[base["name"]])
        return base, views
    finally:
        renderer.close()


def test_remap_matches_a_render_through_the_target_camera():
    """A zoom-in crop cut from a sharp frame by remap_image equals the renderer's own image through
    the aimed camera: catches transposed rotations, K mix-ups and half-pixel offsets."""
    base, (frame,) = _render_with_cameras([{"width_px": 448, "height_px": 448,
                                             "K": CameraModel.from_fov("f", 448, 448, 40.0).K.tolist()}])
    frame_camera = CameraModel("f", 448, 448, frame["labels"]["K"])
    camera_from_object = np.asarray(frame["labels"]["camera_from_object"])
    crop, crop_from_camera = aimed_camera(camera_from_object[:3, 3] + [0.01, -0.005, 0], 0.0987, 64, 0.75)
    world_from_crop = np.asarray(base["world_from_camera"]).copy()
    world_from_crop[:3, :3] = world_from_crop[:3, :3] @ crop_from_camera.T
    _, (rendered,) = _render_with_cameras([{"width_px": 64, "height_px": 64, "K": crop.K.tolist(),
                                           "world_from_camera": world_from_crop.tolist()}])
    remapped = remap_image(frame["rgb"], frame_camera, crop, crop_from_camera)
    # Compared where the frame reaches (the crop may look past its border: black there).
    covered = remap_image(np.full_like(frame["rgb"], 255), frame_camera, crop, crop_from_camera)[..., 0] == 255
    assert covered.mean() > 0.7
    difference = np.abs(remapped.astype(float) - rendered["rgb"].astype(float))[covered].mean()
    assert difference < 4.0, difference
    # The object's silhouette lands on the same pixels.
    rendered_mask = rendered["mask"]
    remapped_mask = remap_image(frame["mask"].astype(np.uint8)[..., None].repeat(3, 2) * 255, frame_camera, crop,
                                crop_from_camera)[..., 0] > 127
    overlap = (rendered_mask & remapped_mask).sum() / (rendered_mask | remapped_mask).sum()
    assert overlap > 0.9, overlap
    # A crop aimed 10 px off is visibly different: the comparison above has teeth.
    off, off_from_camera = aimed_camera(camera_from_object[:3, 3] + [0.03, 0.0, 0], 0.0987, 64, 0.75)
    assert np.abs(remap_image(frame["rgb"], frame_camera, off, off_from_camera).astype(float)
                  - rendered["rgb"].astype(float))[covered].mean() > 2 * difference


def test_remap_refuses_an_image_of_another_size():
    from discopose._errors import ConfigError
    camera = CameraModel.from_fov("c", 40, 30, 40.0)
    with pytest.raises(ConfigError, match="40x30 but the image is 30x40"):
        remap_image(np.zeros((40, 30, 3), np.uint8), camera, camera)


def test_dense_targets_give_back_the_pose_by_pnp(tmp_path):
    """Ground-truth dense targets of rendered crops, through the same PnP the estimator runs, return the
    labelled pose: the grid's pixel convention, the depth back-projection and the object frame agree."""
    from discopose.datasets.generate import generate_dataset
    from discopose.datasets.loader import make_loader
    from discopose.datasets.reader import open_dataset
    from discopose.geometry.transforms import rotation_angle_deg
    from discopose.decoding import PoseNetSpec, pose_from_dense
    from discopose.render.config import RenderConfig
    config = RenderConfig.load(overrides=["camera.aim=object", "camera.width_px=48", "camera.height_px=48",
                                          "output.depth=true", "textures.bank_size=4", "textures.size_px=16"])
    generate_dataset(str(tmp_path / "crops"), 6, config, workers=1, progress=False)
    spec = PoseNetSpec(stage="crop", input_size_px=(48, 48), object_diameter_m=config_diameter(tmp_path / "crops"),
                       fill_frac=0.75, dense=True)
    images, target = next(iter(make_loader(open_dataset(str(tmp_path / "crops")), spec, 6, train=False,
                                           num_workers=0)))
    assert target["dense_mask"].shape == (6, 6, 6) and target["dense_mask"].sum() > 30
    checked = 0
    for i in range(6):
        if target["dense_mask"][i].sum() < 6:  # mostly occluded: too few cells for a pose
            continue
        checked += 1
        logits = target["dense_mask"][i].numpy() * 20 - 10
        pose, inliers = pose_from_dense(logits, target["dense_coordinates"][i].numpy(),
                                        target["K"][i].numpy().astype(float), spec, min_points=4)
        assert pose is not None and inliers >= 4
        assert rotation_angle_deg(pose[:3, :3], target["rotation"][i].numpy()) < 0.5
        np.testing.assert_allclose(pose[:3, 3], target["position_m"][i].numpy(), atol=5e-4)
    assert checked >= 4


def config_diameter(dataset) -> float:
    from discopose.datasets.reader import open_dataset
    return float(open_dataset(str(dataset)).manifest["object"]["diameter_m"])


def test_training_and_inference_prepare_a_view_the_same_way():
    """The loader's evaluation view and the estimator's view come from the same functions; an image already on
    the model's camera is passed through untouched (a resample would blur it), a distorted one is not."""
    from discopose.datasets.loader import model_view
    from discopose.decoding import PoseNetSpec, stage_camera, stage_view
    rng = np.random.default_rng(3)
    K = np.array([[160.0, 0, 63.5], [0, 160.0, 47.5], [0, 0, 1]])
    image = rng.integers(0, 256, (96, 128, 3), np.uint8)
    locator = PoseNetSpec(stage="locator", input_size_px=(96, 128), camera_K=K.tolist(), object_diameter_m=0.1)
    on_model = CameraModel("cam", 128, 96, K)
    model_camera, rotation = stage_camera(locator)
    assert stage_view(image, on_model, model_camera, rotation) is image
    distorted = CameraModel("cam", 128, 96, K, dist_coeffs=[-0.2, 0.05, 0, 0, 0])
    assert np.abs(stage_view(image, distorted, model_camera, rotation).astype(int) - image).mean() > 5
    # A crop of a full frame, as evaluation cuts it: the camera the estimator aims at that position,
    # with the object on its optical axis.
    crop = PoseNetSpec(stage="crop", input_size_px=(64, 64), object_diameter_m=0.1)
    camera_from_object = np.eye(4)
    camera_from_object[:3, 3] = [0.05, -0.03, 0.5]
    labels = {"width_px": 128, "height_px": 96, "K": K, "camera_from_object": camera_from_object}
    view, view_K, crop_from_object, remapped = model_view(image, labels, crop)
    aimed, crop_from_camera = stage_camera(crop, aim_m=camera_from_object[:3, 3])
    assert remapped and view.shape == (64, 64, 3)
    np.testing.assert_allclose(view_K, aimed.K)
    np.testing.assert_array_equal(view, stage_view(image, on_model, aimed, crop_from_camera))
    np.testing.assert_allclose(crop_from_object[:2, 3], 0, atol=1e-12)


def test_area_average_is_opencvs_area_resize_for_every_factor():
    """The box-filter path for odd factors gives cv2.resize(INTER_AREA)'s numbers exactly (a filter anchored at the
    block's centre, or rounding of its own, would shift or change them), on sharp noise and on smooth images, on a
    strided patch of a frame as remap_image passes it."""
    import cv2
    rng = np.random.default_rng(3)
    for factor in (2, 3, 4, 5, 7):
        for smooth in (False, True):
            frame = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
            if smooth:
                frame = cv2.GaussianBlur(frame, (0, 0), 3)
            h, w = (113 - 5) // factor * factor, (150 - 9) // factor * factor
            patch = frame[5:5 + h, 9:9 + w]
            expected = cv2.resize(patch, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
            shrunk = area_average(patch, factor)
            assert shrunk.shape == expected.shape and shrunk.flags.c_contiguous
            np.testing.assert_array_equal(shrunk, expected, err_msg=f"factor {factor}, smooth {smooth}")
