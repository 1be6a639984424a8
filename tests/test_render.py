import ctypes
import json

import numpy as np
import pytest

from discopose.geometry.transforms import invert_transform, project_points
from discopose.render.config import RenderConfig
from discopose.render.renderer import DiscoRenderer
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def clean_renderer():
    """No clutter, no jitter-free shortcuts: the object alone in a room, at a size where pixels are precise."""
    config = RenderConfig.load(overrides=tiny_overrides(**{
        "camera.width_px": 97, "camera.height_px": 61, "camera.principal_point_jitter_px": 6,
        "clutter.distractor_count": "[0, 0]", "clutter.occluder_prob": 0, "noise.gaussian_sigma": "[0, 0]",
        "noise.blur_prob": 0, "hand.prob": 0, "limbs.prob": 0, "table.prob": 0,
        "camera.distance_range_m": "null"}))  # one distance (0.25 m): the cube large enough to count pixels on
    renderer = DiscoRenderer(config)
    yield renderer
    renderer.close()


def test_silhouette_is_the_hull_of_projected_corners(clean_renderer):
    """A pixel is covered exactly when its centre is inside the hull of the cube's projected corners.

    Exact to rasterization: catches half-pixel offsets, swapped axes and OpenGL/OpenCV sign errors.
    """
    import cv2
    checked = 0
    for index in range(10):
        _, views = clean_renderer.render_index(index)
        labels, mask = views["cam0"]["labels"], views["cam0"]["mask"]
        if labels["visible_fraction"] < 0.999:
            continue
        hull = cv2.convexHull(np.asarray(labels["keypoints_px"])[:8].astype(np.float32))
        height, width = mask.shape
        v, u = np.mgrid[:height, :width]
        distance = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), True)
                             for x, y in zip(u.ravel(), v.ravel())]).reshape(mask.shape)
        # pyrender renders with 4x MSAA and resolves depth from one sample: edges are exact to ~0.4 px.
        assert mask[distance > 0.5].all(), "pixels well inside the projected cube are rendered"
        assert not mask[distance < -0.5].any(), "pixels well outside the projected cube are empty"
        assert labels["bbox_xyxy"] is not None
        checked += 1
    assert checked >= 5


def test_depth_agrees_with_camera_from_object(clean_renderer):
    """Back-projected object pixels land on the cube's surface in the object frame."""
    _, views = clean_renderer.render_index(3)
    view = views["cam0"]
    labels = view["labels"]
    K = np.asarray(labels["K"])
    v, u = np.nonzero(view["mask"])
    z = view["depth_m"][v, u]
    points_camera = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)
    object_from_camera = invert_transform(np.asarray(labels["camera_from_object"]))
    points_object = points_camera @ object_from_camera[:3, :3].T + object_from_camera[:3, 3]
    half = clean_renderer.config.object.cube_size_m / 2
    chebyshev = np.abs(points_object).max(1)
    assert len(chebyshev) > 50
    assert np.median(np.abs(chebyshev - half)) < 0.001
    assert np.percentile(np.abs(chebyshev - half), 95) < 0.004


def test_same_params_give_same_pixels_and_params_survive_json(clean_renderer):
    params, views = clean_renderer.render_index(5)
    clean_renderer.render_index(6)  # change the scene in between
    again = clean_renderer.render(json.loads(json.dumps(params)))
    np.testing.assert_array_equal(again["cam0"]["rgb"], views["cam0"]["rgb"])
    assert again["cam0"]["labels"] == views["cam0"]["labels"]


def test_scene_iterates_nodes_in_insertion_order(tiny_config):
    """pyrender sums lights, and breaks ties between meshes at equal distance, in the order it iterates
    its node sets. Plain sets order nodes by address, which the allocator decides, so the same params
    could render one intensity step apart in another process. Nodes here are added in reverse order of
    creation (address order, usually), which a plain set would undo."""
    from discopose.render.gl import import_pyrender, make_scene_deterministic
    pr = import_pyrender()
    scene = pr.Scene()
    make_scene_deterministic(scene)
    lights = [pr.Node(light=pr.PointLight(intensity=i)) for i in range(8)]
    meshes = [pr.Node(mesh=pr.Mesh.from_points(np.zeros((1, 3)))) for _ in range(8)]
    for node in [*reversed(lights), *reversed(meshes)]:
        scene.add_node(node)
    assert list(scene.light_nodes) == lights[::-1]
    assert list(scene.mesh_nodes) == meshes[::-1]
    scene.remove_node(lights[3])
    assert list(scene.point_light_nodes) == [n for n in lights[::-1] if n is not lights[3]]

    renderer = DiscoRenderer(RenderConfig.from_dict({**tiny_config.to_dict(),
                                                     "lighting": {"count": [4, 4], "types": ["point"]}}))
    for index in range(3):
        params = renderer.sample_params(index)
        renderer.render(params)
        assert [n.light.intensity for n in renderer.scene.light_nodes] == [
            light["intensity"] for light in params["lights"]]
    renderer.close()


def test_skipping_unchanged_uniforms_and_hidden_nodes_keeps_every_pixel(tiny_config):
    """The renderer's GL context skips uniform uploads that would not change a value and leaves
    invisible nodes out of pyrender's sort. Pixels must equal pyrender's own path: a cache keyed too
    loosely (by name across programs, or kept past a material change) shows up here as wrong colours."""
    from discopose.render.gl import import_pyrender
    config = RenderConfig.from_dict({**tiny_config.to_dict(), "lighting": {"count": [1, 4]}})
    fast, plain = DiscoRenderer(config), DiscoRenderer(config)
    plain._gl = import_pyrender().OffscreenRenderer(config.camera.width_px, config.camera.height_px)
    for index in range(8):
        params = fast.sample_params(index)
        np.testing.assert_array_equal(fast.render(params)["cam0"]["rgb"], plain.render(params)["cam0"]["rgb"])
    assert type(fast._gl._renderer._program_cache.get_program).__name__ == "function"  # the fast path ran
    fast.close()
    plain.close()


def test_msaa_off_changes_only_edge_pixels(clean_renderer):
    """camera.msaa_samples=0 must take effect (the object's outline loses its blended colours) and change
    no face's inside: there, shading is computed at the pixel centre either way."""
    import cv2
    config = RenderConfig.from_dict({**clean_renderer.config.to_dict(),
                                     "camera": {**clean_renderer.config.to_dict()["camera"], "msaa_samples": 0}})
    aliased = DiscoRenderer(config)
    ring = np.ones((5, 5), np.uint8)
    corners_m = clean_renderer.object.keypoints_m[:8]
    gaps = np.linalg.norm(corners_m[:, None] - corners_m[None], axis=2)
    cube_edges = np.argwhere(np.isclose(gaps, clean_renderer.config.object.cube_size_m))
    for index in range(3):
        params = clean_renderer.sample_params(index)
        smooth = clean_renderer.render(params)["cam0"]
        rough = aliased.render(params)["cam0"]
        changed = np.any(smooth["rgb"] != rough["rgb"], axis=2)
        silhouette = smooth["mask"].astype(np.uint8)
        outline = (cv2.dilate(silhouette, ring) - cv2.erode(silhouette, ring)) > 0
        inside = cv2.erode(silhouette, ring)
        corners_px = np.round(np.asarray(smooth["labels"]["keypoints_px"])[:8]).astype(int)
        for a, b in cube_edges:  # the edges between faces are geometry edges too
            cv2.line(inside, tuple(map(int, corners_px[a])), tuple(map(int, corners_px[b])), 0, 5)
        inside = inside > 0
        assert changed[outline].mean() > 0.05
        assert inside.sum() > 100 and not changed[inside].any()
        assert changed.mean() < 0.1
    aliased.close()


@pytest.mark.parametrize("light_type", ["directional", "spot"])
def test_shadow_on_the_table_is_the_objects_outline_cast_from_the_light(light_type):
    """With one light and a matte table, the pixels that shadows darken are the cube's corners cast along
    the light's rays onto the table top. Catches shadow maps fitted to the whole scene (pyrender's fit:
    acne stripes and no shadow from a directional light, a blurred one from a spot) and maps that
    repeat beyond their edge (the 10 cm map leaves most of the table outside it)."""
    import cv2
    from discopose.geometry.transforms import look_at
    config = RenderConfig.load(overrides=tiny_overrides(**{
        "camera.width_px": 96, "camera.height_px": 96, "clutter.distractor_count": "[0, 0]",
        "clutter.occluder_prob": 0, "clutter.room_prob": 0, "noise.gaussian_sigma": "[0, 0]", "noise.blur_prob": 0,
        "hand.prob": 0, "limbs.prob": 0, "table.prob": 1, "table.gap_m": "[0, 0]", "table.tilt_deg": 0,
        "table.offset_frac": "[0, 0]", "lighting.shadow_radius_m": 0.1}))
    renderer = DiscoRenderer(config)
    try:
        for index in range(2):
            params = renderer.sample_params(index)
            world_from_object = np.asarray(params["world_from_object"])
            center = world_from_object[:3, 3]
            light_position = center + np.array([0.6, 0.2, 0.7]) * 0.6
            params.update(ambient=[0.1, 0.1, 0.1], lights=[{
                "type": light_type, "color": [1.0, 1.0, 1.0], "intensity": 4.0 if light_type == "directional" else 2.0,
                "world_from_light": look_at(light_position, center).tolist(), "inner_cone_rad": 0.5,
                "outer_cone_rad": 0.7}])
            params["table"]["material"] = {"texture": None, "tint": [0.6] * 3, "metallic": 0.0, "roughness": 1.0}
            camera = params["cameras"][0]
            camera["world_from_camera"] = look_at(center + [-0.05, 0.3, 0.3], center + [-0.05, 0.0, -0.03]).tolist()
            lit = renderer.render({**params, "shadows": False})["cam0"]
            shaded = renderer.render({**params, "shadows": True})["cam0"]

            table = params["table"]
            top_z = np.asarray(table["world_from_shape"])[2, 3] + table["scale_m"][2] / 2
            corners = renderer.object.keypoints_m[:8] @ world_from_object[:3, :3].T + center
            if light_type == "directional":
                toward_light = (light_position - center) / np.linalg.norm(light_position - center)
                cast = corners - ((corners[:, 2] - top_z) / toward_light[2])[:, None] * toward_light
            else:
                cast = light_position + (corners - light_position) * (
                    (top_z - light_position[2]) / (corners[:, 2] - light_position[2]))[:, None]
            cast_px, _ = project_points(np.asarray(camera["K"]),
                                        invert_transform(np.asarray(camera["world_from_camera"])), cast)
            expected = np.zeros(lit["mask"].shape, np.uint8)
            cv2.fillConvexPoly(expected, cv2.convexHull(np.round(cast_px).astype(np.int32)), 1)
            near_expected = cv2.dilate(expected, np.ones((7, 7), np.uint8)).astype(bool)
            expected = expected.astype(bool)

            darkened = shaded["rgb"].astype(float).sum(2) < 0.6 * lit["rgb"].astype(float).sum(2)
            table_px = ~lit["mask"]  # the object hides part of its shadow
            overlap = (darkened & expected & table_px).sum() / (darkened | expected)[table_px].sum()
            assert overlap > 0.65, f"sample {index}: shadow overlaps its expected outline by {overlap:.2f}"
            assert (darkened & table_px & ~near_expected).sum() < 0.05 * expected.sum(), "shadow where none falls"
    finally:
        renderer.close()


def test_full_randomization_multi_camera_labels(tiny_config):
    config = RenderConfig.load(overrides=tiny_overrides(**{"camera.count": 3, "clutter.occluder_prob": 1.0,
                                                         "lighting.shadows_prob": 0.5}))
    renderer = DiscoRenderer(config)
    try:
        fractions = []
        for index in range(6):
            params, views = renderer.render_index(index)
            assert set(views) == {"cam0", "cam1", "cam2"}
            for view in views.values():
                assert view["rgb"].shape == (29, 41, 3) and view["rgb"].dtype == np.uint8
                assert view["mask"].shape == (29, 41)
                labels = view["labels"]
                camera_from_object = np.asarray(labels["camera_from_object"])
                np.testing.assert_allclose(
                    np.asarray(labels["world_from_camera"]) @ camera_from_object, params["world_from_object"],
                    atol=1e-9)
                kp, depth = project_points(np.asarray(labels["K"]), camera_from_object, renderer.object.keypoints_m)
                np.testing.assert_allclose(kp, labels["keypoints_px"])
                assert labels["visible_px"] == view["mask"].sum() <= labels["object_px"]
                assert labels["visible_fraction"] == pytest.approx(labels["visible_px"] / max(labels["object_px"], 1))
                fractions.append(labels["visible_fraction"])
            assert len(params["occluders"]) == 1
        assert min(fractions) < 0.999, "occluders in front of the object hide part of it in some view"
    finally:
        renderer.close()


def test_markings_mode_keeps_letters_while_colours_change(clean_renderer):
    from discopose.render.objects import colorize_cube
    cube = clean_renderer.object
    a = colorize_cube(cube, np.full((6, 3), 0.9), np.full((6, 3), 0.1)).mean(-1)
    b = colorize_cube(cube, np.full((6, 3), 0.2), np.full((6, 3), 0.8)).mean(-1)
    # Same marking pixels, inverted contrast.
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < -0.99


def test_user_mesh_with_scale_and_pose_file(tmp_path):
    import trimesh
    mesh_path = tmp_path / "part.ply"
    trimesh.creation.cylinder(radius=20, height=50, sections=16).export(mesh_path)  # millimetres
    poses = tmp_path / "poses.jsonl"
    poses.write_text("\n".join(json.dumps({"position_m": [0.01 * i, 0, 0], "quat_wxyz": [1, 0, 0, 0]})
                               for i in range(3)))
    config = RenderConfig.load(overrides=tiny_overrides(**{
        "object.mesh": str(mesh_path), "object.mesh_scale_to_m": 0.001, "object.symmetry.kind": "axis",
        "pose.poses_file": str(poses)}))
    renderer = DiscoRenderer(config)
    try:
        assert renderer.object.diameter_m == pytest.approx(np.hypot(0.04, 0.05), rel=0.02)
        params, views = renderer.render_index(2)
        np.testing.assert_allclose(np.asarray(params["world_from_object"])[:3, 3], [0.02, 0, 0])
        assert views["cam0"]["labels"]["object_px"] > 0
        with pytest.raises(ValueError, match="has 3 poses but sample 3"):
            renderer.render_index(3)
    finally:
        renderer.close()


def test_bad_meshes_give_clear_errors(tmp_path):
    from discopose._errors import ConfigError
    from discopose.render.objects import load_mesh_object
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    with pytest.raises(ConfigError, match="broken.ply"):
        load_mesh_object(str(broken))
    import trimesh
    tiny = tmp_path / "huge.obj"
    trimesh.creation.box((500, 500, 500)).export(tiny)
    with pytest.raises(ConfigError, match="mesh_scale_to_m"):
        load_mesh_object(str(tiny))


def test_image_textures_are_used_with_their_stated_probability(tmp_path):
    import cv2
    import numpy as np
    from discopose.render.config import RenderConfig
    from discopose.render.sampling import nominal_cameras, sample_scene
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"t{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    for probability, expected in ((1.0, 1.0), (0.0, 0.0), (0.5, 0.5)):
        config = RenderConfig.load(overrides=[f"textures.image_dir={tmp_path}", f"textures.image_prob={probability}",
                                              "textures.bank_size=6"])
        rng = np.random.default_rng(0)
        materials = []
        for _ in range(40):
            params = sample_scene(config, rng, nominal_cameras(config), bank_size=8, object_diameter_m=0.1)
            materials += [d["material"] for d in params["distractors"]]
            materials += params["room"]["walls"] if params["room"] else []
        share = np.mean([m["texture"] >= 6 for m in materials])
        assert abs(share - expected) < 0.1, (probability, share)


def test_cameras_span_the_working_volume_log_uniformly_with_the_object_anywhere_in_view():
    """Each sample's camera sits at a log-uniform distance in ``camera.distance_range_m`` from the object,
    which lands anywhere in the image with its bounding sphere inside. Catches a uniform draw (median
    0.71 m instead of 0.39), distances from the workspace centre instead of the object, a camera turned the
    wrong way (object off the image) and the object pinned to the image centre."""
    from discopose.render.sampling import nominal_cameras, sample_scene
    config = RenderConfig.load(overrides=["camera.width_px=64", "camera.height_px=48", "camera.rotation_jitter_deg=0",
                                          "camera.principal_point_jitter_px=0", "camera.focal_jitter_frac=0"])
    near, far = config.camera.distance_range_m
    cameras = nominal_cameras(config)
    rng = np.random.default_rng(0)
    diameter = 0.0987
    distances, centres, inside = [], [], []
    for _ in range(400):
        params = sample_scene(config, rng, cameras, bank_size=4, object_diameter_m=diameter)
        camera = params["cameras"][0]
        camera_from_object = invert_transform(np.asarray(camera["world_from_camera"])) @ np.asarray(params["world_from_object"])
        position = camera_from_object[:3, 3]
        K = np.asarray(camera["K"])
        distances.append(np.linalg.norm(position))
        u, v = (K @ position / position[2])[:2]
        centres.append((u, v))
        # The bounding sphere's image radius (to first order) must fit between the centre and each border.
        radius_px = K[0, 0] * (diameter / 2) / np.sqrt(position[2] ** 2 - (diameter / 2) ** 2)
        if radius_px < 0.9 * 24:  # the sphere can fit in the 48-px height (near ones fill the image, centred)
            inside.append(min(u, 63 - u, v, 47 - v) >= 0.9 * radius_px - 1.0)
    distances, centres = np.array(distances), np.array(centres)
    assert distances.min() >= near - 1e-9 and distances.max() <= far + 1e-9
    assert np.median(distances) == pytest.approx(np.sqrt(near * far), rel=0.1)
    # Equal shares per factor of distance: each third in log distance holds about a third.
    thirds = np.histogram(np.log(distances), bins=np.linspace(np.log(near), np.log(far), 4))[0] / len(distances)
    np.testing.assert_allclose(thirds, 1 / 3, atol=0.07)
    assert len(inside) > 250 and np.mean(inside) > 0.98, (len(inside), np.mean(inside))
    # Anywhere: the centres spread over the image, far from all sitting at its middle.
    assert centres[:, 0].std() > 6 and centres[:, 1].std() > 4, centres.std(0)


def test_crops_of_distant_objects_hold_only_their_source_cameras_pixels():
    """A crop stands for a source camera (``camera.source_focal_px``): where that camera has fewer pixels on
    the object than the crop, the crop is rendered at the source's resolution and enlarged, so it loses the
    fine detail. Catches the focal ratio inverted (near crops blurred, far ones sharp) and the enlargement
    skipped or left at the small size."""
    import cv2
    overrides = ["camera.aim=object", "camera.width_px=64", "camera.height_px=64", "noise.gaussian_sigma=[0, 0]",
                 "noise.blur_prob=0", "hand.prob=0", "limbs.prob=0", "table.prob=0", "camera.source_focal_px=[450, 450]",
                 "textures.bank_size=6", "textures.size_px=32"]
    detail = {}
    for name, volume in (("near", "[0.15, 0.16]"), ("far", "[1.25, 1.3]")):
        config = RenderConfig.load(overrides=overrides + [f"camera.distance_range_m={volume}"])
        renderer = DiscoRenderer(config)
        try:
            params = renderer.sample_params(0)
            camera = params["cameras"][0]
            # Same optical centre, so source pixels per crop pixel is the ratio of the focal lengths.
            assert camera["source_scale"] == pytest.approx(min(1.0, 450 / camera["K"][0][0]), rel=1e-9)
            rgb = renderer.render(params)["cam0"]["rgb"]
            sharp = renderer.render({**params, "cameras": [{**camera, "source_scale": 1.0}]})["cam0"]["rgb"]
        finally:
            renderer.close()
        assert rgb.shape == (64, 64, 3)
        energy = lambda image: float(np.abs(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F)).mean())  # noqa: E731
        detail[name] = (camera["source_scale"], energy(rgb) / energy(sharp))
    assert detail["near"][0] == 1.0 and detail["near"][1] == pytest.approx(1.0, abs=1e-6), detail
    # Far: 450 px focal against the crop's ~600-700: two thirds of the pixels across, half the fine detail gone.
    assert detail["far"][0] < 0.8 and detail["far"][1] < 0.7, detail


def test_a_renderer_dropped_unclosed_leaves_the_others_rendering(tiny_config):
    """A renderer nobody closed is finalized by the garbage collector, in any order of its parts and possibly in
    the middle of another renderer's frame: it must neither terminate the EGL display they share (pyrender's
    OffscreenRenderer finalizer does), nor delete GL objects by name in the other's context (its inner Renderer's
    finalizer deletes framebuffer 1 in whatever context is current), nor leave the other without its current
    context. Each failed the suite's in-process rendering with GL_INVALID_OPERATION in glBindFramebuffer."""
    import gc
    kept, dropped = DiscoRenderer(tiny_config), DiscoRenderer(tiny_config)
    from OpenGL.EGL import eglGetCurrentContext  # after pyrender has chosen the platform
    _, before = kept.render_index(0)
    dropped.render_index(1)
    kept.render_index(0)  # the kept renderer's context is current, as in the middle of a frame
    current = ctypes.cast(eglGetCurrentContext(), ctypes.c_void_p).value
    dropped._gl._renderer.__del__()  # the inner Renderer finalized first, while the kept context is current
    del dropped
    gc.collect()
    assert ctypes.cast(eglGetCurrentContext(), ctypes.c_void_p).value == current
    _, after = kept.render_index(0)
    np.testing.assert_array_equal(after["cam0"]["rgb"], before["cam0"]["rgb"])
    kept.close()
