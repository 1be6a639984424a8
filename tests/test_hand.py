"""The hand holding the object, limbs at the frame edges and the table: geometry, rendering, config."""
import json

import numpy as np
import pytest

from discopose._errors import ConfigError
from discopose.geometry.transforms import invert_transform, make_transform, random_rotation
from discopose.render.config import RenderConfig
from discopose.render.hand import box_distance, polyline_points
from discopose.render.sampling import move_object, nominal_cameras, sample_scene
from tests.conftest import tiny_overrides

# An odd, off-centre box: catches a hand built around the origin or around a cube.
LOW, HIGH = np.array([-0.012, -0.03, -0.02]), np.array([0.028, 0.01, 0.045])
DIAMETER = float(np.linalg.norm(HIGH - LOW))
NO_CLUTTER = {"clutter.distractor_count": "[0, 0]", "clutter.occluder_prob": 0, "noise.gaussian_sigma": "[0, 0]",
              "noise.blur_prob": 0}


def scenes(overrides: list[str], count: int, seed: int = 0):
    config = RenderConfig.load(overrides=overrides)
    cameras = nominal_cameras(config)
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        world_from_object = make_transform(random_rotation(rng), rng.uniform(-0.03, 0.03, 3))
        yield world_from_object, sample_scene(config, rng, cameras, 8, DIAMETER, world_from_object,
                                              np.stack([LOW, HIGH]))


def axis_points(item: dict, world_from_object: np.ndarray) -> tuple[np.ndarray, float]:
    """Points (object frame) on the axis of a joint or rod item, and its radius."""
    pose = np.asarray(item["world_from_shape"])
    half_length = item["scale_m"][2] / 2 if item["shape"] == "rod" else 0.0
    ends = [pose[:3, 3] - half_length * pose[:3, 2], pose[:3, 3] + half_length * pose[:3, 2]]
    points = polyline_points(ends, 200)
    object_from_world = invert_transform(world_from_object)
    return points @ object_from_world[:3, :3].T + object_from_world[:3, 3], item["scale_m"][0] / 2


def test_fingertips_touch_the_box_and_no_part_cuts_into_it():
    fingers = 0
    for world_from_object, params in scenes(["hand.prob=1", "hand.edge_prob=0.5"], 40):
        hand = params["hand"]
        radius = hand["finger_radius_m"]
        tips = np.asarray(hand["fingertips_object_m"]).reshape(-1, 3)
        fingers += len(tips)
        # Each fingertip sphere touches the box: its centre is exactly one radius out.
        np.testing.assert_allclose(box_distance(tips, LOW, HIGH), radius, rtol=1e-9)
        joints = [item for item in hand["parts"] if item["shape"] == "joint"]
        for tip in tips:
            tip_world = world_from_object[:3, :3] @ tip + world_from_object[:3, 3]
            assert any(np.allclose(np.asarray(j["world_from_shape"])[:3, 3], tip_world, atol=1e-12)
                       and j["scale_m"][0] == pytest.approx(2 * radius) for j in joints), "a sphere sits on each tip"
        for item in hand["parts"]:
            if item["shape"] == "slab":  # the palm: the whole box is on the object's side of its top face
                object_from_palm = invert_transform(world_from_object) @ np.asarray(item["world_from_shape"])
                corners = np.array([[x, y, z] for x in (LOW[0], HIGH[0]) for y in (LOW[1], HIGH[1])
                                    for z in (LOW[2], HIGH[2])])
                corners_in_palm = (corners - object_from_palm[:3, 3]) @ object_from_palm[:3, :3]
                assert corners_in_palm[:, 2].min() >= item["scale_m"][2] / 2 - 1e-9
                continue
            points, part_radius = axis_points(item, world_from_object)
            assert box_distance(points, LOW, HIGH).min() >= part_radius * 0.98, "fingers and wrist stay outside"
    assert fingers >= 40 * 2 * 0.9, "few fingers are dropped for want of a clear path"


def test_hand_prob_zero_gives_no_hand_and_leaves_the_rest_of_the_sample_alone():
    off = ["hand.prob=0", "limbs.prob=0", "table.prob=0"]
    on = ["hand.prob=1", "limbs.prob=1", "table.prob=1"]
    for (_, without), (_, with_all) in zip(scenes(off, 20), scenes(on, 20)):
        assert without["hand"] is None and without["limbs"] == [] and without["table"] is None
        assert with_all["hand"] is not None and with_all["limbs"]
        # Hands, limbs and tables are drawn last: the rest of a sample is what it was without them.
        for key in without:
            if key not in ("hand", "limbs", "table"):
                assert without[key] == with_all[key], key


def test_limbs_stay_out_of_every_sight_line_to_the_object_and_the_table_stays_below():
    limbs = tables = 0
    for world_from_object, params in scenes(["hand.prob=1", "limbs.prob=1", "limbs.count=[2, 2]", "table.prob=1",
                                             "camera.count=3"], 30):
        center = world_from_object[:3, :3] @ (LOW + HIGH) / 2 + world_from_object[:3, 3]
        for limb in params["limbs"]:
            limbs += 1
            for item in limb["parts"]:
                points, radius = axis_points(item, np.eye(4))
                for camera in params["cameras"]:
                    eye = np.asarray(camera["world_from_camera"])[:3, 3]
                    along = center - eye
                    t = np.clip((points - eye) @ along / (along @ along), 0, 1)
                    gap = np.linalg.norm(points - (eye + t[:, None] * along), axis=1)
                    assert gap.min() > radius, "a limb never hides the object's centre from any camera"
        table = params["table"]
        if table is None:
            continue
        tables += 1
        world_from_table = np.asarray(table["world_from_shape"])
        up, top = world_from_table[:3, 2], world_from_table[:3, 3] @ world_from_table[:3, 2] + table["scale_m"][2] / 2
        corners = np.array([[x, y, z] for x in (LOW[0], HIGH[0]) for y in (LOW[1], HIGH[1]) for z in (LOW[2], HIGH[2])])
        held = [corners @ world_from_object[:3, :3].T + world_from_object[:3, 3]]
        for item in params["hand"]["parts"]:
            pose = np.asarray(item["world_from_shape"])
            unit = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
            held.append((unit * item["scale_m"]) @ pose[:3, :3].T + pose[:3, 3])
        assert min(float((points @ up).min()) for points in held) >= top - 1e-9, "the table is below object and hand"
        for camera in params["cameras"]:
            assert np.asarray(camera["world_from_camera"])[:3, 3] @ up > top, "cameras look down on the table"
    assert limbs >= 30 and tables >= 20


def test_moving_the_object_carries_its_hand():
    (world_from_object, params), = scenes(["hand.prob=1"], 1)
    new_pose = make_transform(random_rotation(np.random.default_rng(1)), [0.01, -0.02, 0.03])
    moved = move_object(params, new_pose)
    tips = np.asarray(params["hand"]["fingertips_object_m"])
    centers = np.array([np.asarray(item["world_from_shape"])[:3, 3] for item in moved["hand"]["parts"]])
    for tip in tips:
        assert np.linalg.norm(centers - (new_pose[:3, :3] @ tip + new_pose[:3, 3]), axis=1).min() < 1e-12
    assert params["world_from_object"] == world_from_object.tolist(), "the original params are left alone"


@pytest.fixture(scope="module")
def hand_renderer():
    from discopose.render.renderer import DiscoRenderer
    config = RenderConfig.load(overrides=tiny_overrides(**{
        **NO_CLUTTER, "camera.width_px": 96, "camera.height_px": 96, "hand.prob": 1, "limbs.prob": 1,
        "table.prob": 1, "lighting.shadows_prob": 0.5}))
    renderer = DiscoRenderer(config)
    yield renderer
    renderer.close()


def test_hand_hides_part_of_the_object_but_not_its_silhouette(hand_renderer):
    hidden = 0
    for index in range(8):
        params, views = hand_renderer.render_index(index)
        bare = hand_renderer.render({**params, "hand": None, "limbs": [], "table": None})
        with_hand, without = views["cam0"]["labels"], bare["cam0"]["labels"]
        # The silhouette comes from the object-only pass: the hand must not be in it.
        assert with_hand["object_px"] == without["object_px"]
        assert not (views["cam0"]["mask"] & ~bare["cam0"]["mask"]).any()
        hidden += with_hand["visible_px"] < without["visible_px"]
    assert hidden >= 4, "fingers and palm cover part of the object in most views"


def test_hand_limbs_and_table_rerender_bit_exactly_from_json(hand_renderer):
    params, views = hand_renderer.render_index(3)
    assert params["hand"] and params["limbs"] and params["table"]
    hand_renderer.render_index(4)  # another hand, limbs and table in between
    for again in (hand_renderer.render(params), hand_renderer.render(json.loads(json.dumps(params)))):
        np.testing.assert_array_equal(again["cam0"]["rgb"], views["cam0"]["rgb"])
        np.testing.assert_array_equal(again["cam0"]["mask"], views["cam0"]["mask"])


def test_joint_states_file_places_the_fingertips(tmp_path):
    from discopose.render.renderer import DiscoRenderer
    states = tmp_path / "states.jsonl"
    tips = [[0.0285 + 0.009, 0.0, 0.01], [0.0, -0.0285 - 0.009, 0.0], [-0.01, 0.0, 0.0285 + 0.009]]
    states.write_text(json.dumps({"fingertips_object_m": tips, "palm_object_m": [0.0, 0.0, -0.06]}) + "\n\n"
                      + json.dumps({"fingertips_object_m": []}) + "\n")
    renderer = DiscoRenderer(RenderConfig.load(overrides=tiny_overrides(**{
        "hand.joint_states_file": str(states), "hand.prob": 0})))
    try:
        params = renderer.sample_params(0)
        world_from_object = np.asarray(params["world_from_object"])
        np.testing.assert_allclose(params["hand"]["fingertips_object_m"], tips, atol=1e-12)
        centers = np.array([np.asarray(item["world_from_shape"])[:3, 3] for item in params["hand"]["parts"]])
        for tip in tips:
            tip_world = world_from_object[:3, :3] @ tip + world_from_object[:3, 3]
            assert np.linalg.norm(centers - tip_world, axis=1).min() < 1e-12
        palm = np.asarray(params["hand"]["world_from_palm"])[:3, 3]
        palm_world = world_from_object[:3, :3] @ [0, 0, -0.06] + world_from_object[:3, 3]
        np.testing.assert_allclose(palm, palm_world, atol=1e-12)
        assert renderer.sample_params(1)["hand"] is None, "an empty line of fingertips is a frame without a hand"
        with pytest.raises(ConfigError, match="hand.joint_states_file has 2 states but sample 2"):
            renderer.sample_params(2)
    finally:
        renderer.close()
    states.write_text('{"fingertips_object_m": [[1, 2]]}\n')
    with pytest.raises(ConfigError, match="hand.joint_states_file=.*is malformed"):
        DiscoRenderer(RenderConfig.load(overrides=[f"hand.joint_states_file={states}"]))


@pytest.mark.parametrize("override, message", [
    ("hand.prob=1.5", r"hand.prob=1.5 is out of range"),
    ("hand.finger_count=[4, 2]", r"hand.finger_count=\[4, 2\] is reversed"),
    ("hand.finger_count=[1, 6]", r"hand.finger_count=.* is out of range; allowed \[1, 5\]"),
    ("hand.segments_per_finger=[0, 2]", "hand.segments_per_finger"),
    ("hand.style_weights={plastic: 1}", "hand.style_weights: 'plastic' is unknown; use skin, robot, disco"),
    ("hand.style_weights={skin: 0}", "gives no style a positive weight"),
    ("hand.style_weights={skin: lots}", "hand.style_weights.skin must be a number"),
    ("hand.joint_states_file=/nope/states.jsonl", "hand.joint_states_file='/nope/states.jsonl' does not exist"),
    ("limbs.reach_frac=[0.1, 0.9]", "limbs.reach_frac=.* is out of range"),
    ("limbs.style_weights={robot: 1}", "limbs.style_weights: 'robot' is unknown; use skin, clothing, disco"),
    ("table.tilt_deg=90", "table.tilt_deg=90.0 is out of range"),
    ("table.gap_m=[-0.1, 0.1]", "table.gap_m=.* is out of range"),
])
def test_bad_hand_limb_and_table_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        RenderConfig.load(overrides=[override])
