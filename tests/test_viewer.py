"""track --view: a Rerun recording of a short rendered two-camera clip holds what the tracker believed."""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("rerun")


def _rows_per_entity(rrd: Path) -> tuple[Counter, dict]:
    """Rows logged per entity and its columns, read back by the Rerun CLI from the file itself."""
    rerun = shutil.which("rerun") or str(Path(__import__("sys").executable).with_name("rerun"))
    printed = subprocess.run([rerun, "rrd", "print", str(rrd)], capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    rows, columns = Counter(), {}
    for match in re.finditer(r"with (\d+) rows .*? - (/\S+) - data columns: \[(.*?)\]", printed.stdout):
        rows[match.group(2)] += int(match.group(1))
        columns.setdefault(match.group(2), set()).update(match.group(3).split())
    return rows, columns


def test_track_view_records_cameras_frames_pose_and_series(trained_run, tmp_path):
    import discopose
    from discopose.camera import CameraModel
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker
    from discopose.render.config import RenderConfig
    from discopose.render.trajectory import render_trajectory_video
    run, _ = trained_run
    config = RenderConfig.load(overrides=["camera.count=2", "camera.width_px=160", "camera.height_px=120",
                                          "camera.distance_range_m=null",  # the model learned one distance
                                          "hand.prob=0", "limbs.prob=0", "textures.bank_size=8",
                                          "textures.size_px=32"])
    frames = 12
    clip = render_trajectory_video(config, tmp_path / "clip.mp4", num_frames=frames)
    sources = {name: CameraSource(name, str(video), mode="lockstep") for name, video in clip.videos.items()}
    calibrations = {name: CameraModel.load(path) for name, path in clip.cameras.items()}
    rrd = tmp_path / "track.rrd"
    tracker = Tracker(discopose.load(run / "best"), sources, calibrations,
                      TrackConfig(publish=None, view=str(rrd)))
    stats = tracker.run()
    assert stats["messages"] == frames
    rows, columns = _rows_per_entity(rrd)
    names = sorted(clip.videos)
    for name in names:
        # Each camera: its calibrated pose and pinhole once, then every frame and the projected box.
        assert rows[f"/world/{name}"] == 1 and "Transform3D:translation" in columns[f"/world/{name}"]
        assert "Pinhole:image_from_camera" in columns[f"/world/{name}/image"]
        assert rows[f"/world/{name}/image"] == frames + 1  # the pinhole, then one image per frame
        assert rows[f"/world/{name}/image/cube"] <= frames and rows[f"/world/{name}/image/cube"] > 0
    assert rows["/world/object"] == frames and rows["/world/uncertainty"] == frames
    assert "Ellipsoids3D:half_sizes" in columns["/world/uncertainty"]
    for series in ("valid", "confidence", "latency_ms"):
        assert rows[f"/plots/{series}"] == frames
    assert rows["/plots/rate_hz"] == frames - 1


def test_view_needs_an_rrd_path(trained_run, tmp_path):
    from discopose._errors import DiscoposeError
    from discopose.estimator.viewer import RerunView
    import discopose
    with pytest.raises(DiscoposeError, match="give a .rrd file"):
        RerunView(str(tmp_path / "track.mp4"), discopose.load(trained_run[0] / "best").object)
