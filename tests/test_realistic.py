"""The realistic proxy test set: Mitsuba path tracing + webcam model (discopose.realistic.pathtraced, .webcam).

Renders are tiny (about 100 x 75 pixels, a few samples per pixel): these check geometry, labels, determinism
and errors, not looks (docs/images/realistic_samples.png shows those).
"""
import json
import sys

import cv2
import numpy as np
import pytest

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.realistic.webcam import (WebcamConfig, apply_webcam, distort_image, distorted_camera,
                                        distortion_maps, pinhole_cover, sample_webcam)

LUMA = np.array([0.2126, 0.7152, 0.0722])


def _dot_image(camera: CameraModel, point_camera_m: np.ndarray, radius_px: float = 4.0) -> np.ndarray:
    """A bright disc around a point's pinhole projection, antialiased (float32, camera-sized)."""
    u, v = (camera.K @ (point_camera_m / point_camera_m[2]))[:2]
    image = np.zeros((camera.height_px, camera.width_px), np.float32)
    cv2.circle(image, (int(round(u * 16)), int(round(v * 16))), int(radius_px * 16), 1.0, -1, cv2.LINE_AA, shift=4)
    return image


def _centroid(weights: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(weights)
    w = weights[v, u].astype(float)
    return np.array([(u * w).sum(), (v * w).sum()]) / w.sum()


def test_distortion_puts_points_where_opencv_projects_them():
    """A pinhole render remapped into the distorted camera shows each point where cv2.projectPoints (K plus
    dist_coeffs) puts it, also near the corners where barrel distortion moves points by many pixels."""
    K = np.array([[300.0, 0, 163.2], [0, 303.0, 117.9], [0, 0, 1]])  # principal point off-centre, fx != fy
    target = distorted_camera(CameraModel("cam", 320, 240, K), {"dist_coeffs": [-0.3, 0.08, 0, 0, 0]})
    source = pinhole_cover(target)
    assert source.K[0, 0] == source.K[1, 1] and source.K[0, 2] == (source.width_px - 1) / 2
    maps = distortion_maps(source, target)
    for point in ([0.0, 0.0, 1.0], [0.45, 0.3, 1.0], [-0.5, -0.33, 1.0]):
        point = np.array(point)
        image = distort_image(_dot_image(source, point), maps)
        projected, _ = cv2.projectPoints(point[None], np.zeros(3), np.zeros(3), K, target.dist_coeffs)
        pinhole = (K @ point)[:2]
        assert np.linalg.norm(_centroid(image) - projected.ravel()) < 0.15
        if np.linalg.norm(point[:2]) > 0.3:
            assert np.linalg.norm(projected.ravel() - pinhole) > 5, "the test point must be visibly distorted"
    # The pinhole cover holds every ray: no black border in the distorted image.
    assert distort_image(np.ones((source.height_px, source.width_px), np.float32), maps).min() == 1.0


def test_webcam_is_deterministic_and_degrades_the_image():
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur((rng.random((60, 80, 3)) * 255).astype(np.uint8), (0, 0), 3)
    params = sample_webcam(np.random.default_rng(0), WebcamConfig())
    first, again = apply_webcam(image, params), apply_webcam(image, params)
    np.testing.assert_array_equal(first, again)
    other = apply_webcam(image, {**params, "noise_seed": params["noise_seed"] + 1})
    assert not np.array_equal(first, other), "the noise seed draws the noise"
    assert first.shape == image.shape and first.dtype == np.uint8
    assert 1.0 < np.abs(first.astype(float) - image).mean() < 40.0
    assert json.loads(json.dumps(params)) == params


def test_missing_mitsuba_is_one_line_with_an_install_hint(monkeypatch, capsys):
    from discopose.cli import main
    monkeypatch.setitem(sys.modules, "mitsuba", None)  # import mitsuba now raises ImportError
    from discopose.realistic.pathtraced import PathTracedRenderer, realistic_render_config
    with pytest.raises(DiscoposeError) as error:
        PathTracedRenderer(realistic_render_config(width_px=64, height_px=48))
    message = str(error.value)
    assert "\n" not in message and "pip install" in message and "mitsuba" in message
    assert main(["realistic", "--out", "unused", "--num", "1"]) == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and "pip install" in printed[0]


@pytest.fixture(scope="module")
def proxy():
    pytest.importorskip("mitsuba")
    from discopose.realistic.pathtraced import PathTracedRenderer, RealisticConfig, realistic_render_config
    config = realistic_render_config(width_px=96, height_px=72, overrides=["camera.principal_point_jitter_px=6"])
    renderer = PathTracedRenderer(config, RealisticConfig(spp=4, webcam=None))
    yield renderer
    renderer.close()


def test_path_traced_silhouette_matches_the_rasterizer(proxy):
    """Mitsuba's own view of the visible object (the object glowing in a black scene) covers the pixels of
    the rasterizer's visible mask: camera axes, field of view, principal point, pixel centres, and the
    geometry of the hand and clutter in front of the object agree between the two renderers."""
    checked = 0
    for index in range(3):
        params = proxy.sample_params(index)
        mask = proxy.rasterize(params)["cam0"]["mask"]
        if mask.sum() < 200:
            continue
        coverage = proxy.visible_coverage(params)["cam0"]
        assert coverage.shape == mask.shape
        seen = coverage > 0.5
        assert (seen & mask).sum() / (seen | mask).sum() > 0.9
        checked += 1
    assert checked >= 2


def test_path_traced_markings_match_the_rasterizer(proxy):
    """The cube's texture is mapped the same way in both renderers: brightness inside the object correlates
    (a texture flipped in u or v swaps faces and letters, and the correlation drops to about zero)."""
    correlations = []
    for index in range(3):
        params = proxy.sample_params(index)
        view = proxy.rasterize(params)["cam0"]
        inner = cv2.erode(view["mask"].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        traced = proxy.trace(params)["cam0"] @ LUMA
        correlations.append(np.corrcoef(traced[inner], view["rgb"][inner] @ LUMA)[0, 1])
    assert np.mean(correlations) > 0.4, correlations


@pytest.fixture(scope="module")
def distorted_sets(tmp_path_factory):
    """Two datasets of the same seed, with a strongly distorting webcam, the object anywhere in the view and
    no hand (whose occlusion would move the visible centroid)."""
    pytest.importorskip("mitsuba")
    from discopose.realistic.pathtraced import render_realistic_dataset
    # Strong barrel distortion (k2 keeps it monotonic over the 40-degree view), to move an off-centre cube by
    # pixels even at this image size.
    webcam = WebcamConfig(k1=(-1.0, -0.9), k2=(1.0, 1.0), defocus_sigma_px=(0.3, 0.3), motion_blur_prob=0.0)
    # One distance (0.25 m): at 104x78 a cube 1 m away is a few pixels, too few to compare masks on.
    overrides = ["pose.workspace_half_extent_m=[0.07,0.07,0.02]", "output.samples_per_shard=2",
                 "camera.distance_range_m=null"]
    root = tmp_path_factory.mktemp("realistic")
    paths = [str(root / "first"), str(root / "second")]
    for path in paths:
        render_realistic_dataset(path, 4, seed=5, webcam=webcam, width_px=104, height_px=78, hand=False,
                                 progress=False, spp=2, overrides=overrides)
    return paths


def _cube_silhouette(K: np.ndarray, dist, camera_from_object: np.ndarray, shape, half_m: float = 0.0285):
    """The pixels whose centre's ray hits the cube: each pixel undistorted to its ray with OpenCV, then
    intersected with the cube (slab test), independently of the renderers and of the remapping."""
    v, u = np.mgrid[:shape[0], :shape[1]]
    pixels = np.stack([u, v], -1).reshape(-1, 1, 2).astype(np.float64)
    rays = cv2.undistortPoints(pixels, K, np.asarray(dist, float), criteria=(3, 50, 1e-12)).reshape(-1, 2)
    object_from_camera = np.linalg.inv(camera_from_object)
    origin = object_from_camera[:3, 3]
    directions = np.c_[rays, np.ones(len(rays))] @ object_from_camera[:3, :3].T
    with np.errstate(divide="ignore", invalid="ignore"):
        near, far = (-half_m - origin) / directions, (half_m - origin) / directions
    entry = np.nanmax(np.minimum(near, far), axis=1)
    leave = np.nanmin(np.maximum(near, far), axis=1)
    return (leave >= np.maximum(entry, 0.0)).reshape(shape)


def test_dataset_round_trips_with_distortion_labels(distorted_sets):
    """The dataset reads back like any other. Its labels' K and dist_coeffs, through OpenCV, put the cube
    exactly on its (distorted) mask; without dist_coeffs they miss it by pixels."""
    from discopose.datasets.reader import iter_samples, open_dataset
    info = open_dataset(distorted_sets[0])
    assert info.manifest["recipe"]["kind"] == "realistic-proxy" and info.manifest["recipe"]["spp"] == 2
    assert info.manifest["recipe"]["webcam"]["k1"] == [-1.0, -0.9]
    samples = list(iter_samples(info))
    assert [s["labels"]["index"] for s in samples] == [0, 1, 2, 3]
    checked = distorted_enough = 0
    for sample in samples:
        labels = sample["labels"]["cameras"]["cam0"]
        mask = sample["views"]["cam0"]["mask"]
        assert sample["views"]["cam0"]["rgb"].shape == (78, 104, 3) and mask.shape == (78, 104)
        assert len(labels["dist_coeffs"]) == 5
        K, dist = np.asarray(labels["K"]), np.asarray(labels["dist_coeffs"])
        camera_from_object = np.asarray(labels["camera_from_object"])
        projected, _ = cv2.projectPoints(camera_from_object[None, :3, 3], np.zeros(3), np.zeros(3), K, dist)
        np.testing.assert_allclose(labels["keypoints_px"][8], projected.ravel(), atol=1e-6)
        if labels["visible_fraction"] < 0.99:  # clutter hides a corner: the mask is not the whole cube
            continue
        expected = _cube_silhouette(K, dist, camera_from_object, mask.shape)
        assert (expected & mask).sum() / (expected | mask).sum() > 0.95
        assert np.linalg.norm(_centroid(expected) - _centroid(mask)) < 0.25
        checked += 1
        pinhole = _cube_silhouette(K, np.zeros(5), camera_from_object, mask.shape)
        if np.linalg.norm(_centroid(pinhole) - _centroid(expected)) > 1.5:
            assert np.linalg.norm(_centroid(pinhole) - _centroid(mask)) > 1.0
            distorted_enough += 1
    assert checked >= 2
    assert distorted_enough >= 1, "no sample where the distortion mattered: the test would not see it ignored"


def test_same_seed_same_bytes(distorted_sets):
    from discopose.datasets.reader import iter_samples, open_dataset
    first, second = (open_dataset(path).manifest for path in distorted_sets)
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    images = [s["views"]["cam0"]["rgb"] for s in iter_samples(open_dataset(distorted_sets[0]))]
    assert not np.array_equal(images[0], images[1]), "samples differ from each other"
