import pytest

from discopose._errors import ConfigError
from discopose.camera import CameraModel
from discopose.render.config import RenderConfig


def test_defaults_are_valid_and_round_trip():
    config = RenderConfig()
    assert RenderConfig.from_dict(config.to_dict()) == config
    assert config.camera_names == ["cam0"]


@pytest.mark.parametrize("override, message", [
    ("camera.cont=3", "unknown config key 'camera.cont'.*valid keys are: count"),
    ("lighting.ambient=[0.5, 0.1]", r"lighting.ambient=\[0.5, 0.1\] is reversed"),
    ("camera.count=0", "camera.count=0 is out of range"),
    ("camera.fov_deg=wide", "camera.fov_deg must be a number"),
    ("textures.kinds=[plaid]", "textures.kinds: 'plaid' is unknown"),
    ("object.appearance=shiny", "object.appearance='shiny' is unknown"),
    ("object.mesh=/nope/model.ply", "object.mesh='/nope/model.ply' does not exist"),
    ("pose.workspace_half_extent_m=[1, 2]", "must have 3 elements"),
    ("output.image_format=bmp", "output.image_format='bmp'"),
    ("camera", "must look like section.key=value"),
    ("camera.distance_range_m=[1.0, 0.2]", r"camera.distance_range_m=\[1.0, 0.2\] is reversed"),
    ("camera.distance_range_m=[0.001, 1.0]", r"camera.distance_range_m=.* is out of range"),
    ("camera.distance_range_m=[0.2]", "must have 2 elements"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        RenderConfig.load(overrides=[override])


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 7\ncamera:\n  count: 2\n  names: [left, right]\n")
    config = RenderConfig.load(path, ["camera.width_px=64"])
    assert config.seed == 7 and config.camera_names == ["left", "right"] and config.camera.width_px == 64
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        RenderConfig.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        RenderConfig.load(tmp_path / "missing.yaml")


def test_camera_file_round_trip_yaml_and_json(tmp_path):
    camera = CameraModel.from_fov("left", 640, 480, 60.0)
    for suffix in (".yaml", ".json"):
        path = camera.save(tmp_path / f"left{suffix}")
        loaded = CameraModel.load(path)
        assert loaded.name == "left" and (loaded.width_px, loaded.height_px) == (640, 480)
        assert (loaded.K == camera.K).all()
    (tmp_path / "bad.yaml").write_text("format: something-else\n")
    with pytest.raises(ConfigError, match="not a discopose camera file"):
        CameraModel.load(tmp_path / "bad.yaml")


def test_camera_files_without_pose_are_rejected_for_rendering(tmp_path):
    from discopose.render.sampling import nominal_cameras
    path = CameraModel.from_fov("left", 64, 48, 60.0).save(tmp_path / "left.yaml")
    config = RenderConfig.load(overrides=[f"camera.files=[{path}]"])
    with pytest.raises(ConfigError, match="no world_from_camera.*calibrate extrinsics"):
        nominal_cameras(config)
