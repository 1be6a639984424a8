import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from discopose._errors import DatasetError, DiscoposeError
from discopose.datasets.generate import generate_dataset
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.render.config import RenderConfig
from tests.conftest import tiny_overrides

NUM = 10  # 3 shards of 4, 4, 2


def shard_hashes(manifest):
    return [(s["name"], s["num_samples"], s["sha256"]) for s in manifest["shards"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    config = RenderConfig.load(overrides=tiny_overrides(**{"output.depth": "true"}))
    manifest = generate_dataset(str(out), NUM, config, workers=1, progress=False)
    return out, config, manifest


def test_writer_round_trips_through_reader(reference):
    out, config, manifest = reference
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4, 2]
    info = open_dataset(str(out))
    samples = list(iter_samples(info))
    assert [s["labels"]["index"] for s in samples] == list(range(NUM))
    for sample in samples:
        assert "." not in sample["key"]
        view = sample["views"]["cam0"]
        assert view["rgb"].shape == (29, 41, 3) and view["mask"].shape == (29, 41)
        labels = sample["labels"]["cameras"]["cam0"]
        assert view["mask"].sum() == labels["visible_px"]
        # Depth was stored at 0.1 mm: it matches the keypoint depth range of the object.
        object_depth = view["depth_m"][view["mask"]]
        if object_depth.size:
            kp_depth = np.asarray(labels["keypoints_depth_m"])
            assert kp_depth[:8].min() - 1e-3 <= object_depth.min() and object_depth.max() <= kp_depth[:8].max() + 1e-3
        assert sample["labels"]["params"]["seed"] == sample["labels"]["seed"]
    assert info.manifest["object"]["symmetry"]["kind"] == "none"
    assert info.manifest["config"] == config.to_dict()
    assert "INCOMPLETE" not in info.summary()


def test_same_dataset_for_any_worker_count(reference, tmp_path):
    _, config, manifest = reference
    again = generate_dataset(str(tmp_path / "two"), NUM, config, workers=2, progress=False)
    assert shard_hashes(again) == shard_hashes(manifest)


def test_resume_after_killed_run_is_identical(reference, tmp_path):
    _, config, manifest = reference
    out = tmp_path / "killed"
    config_path = tmp_path / "cfg.json"
    config_path.write_text(json.dumps(config.to_dict()))
    # Slow the run down with many samples per shard so it can be killed mid-shard.
    proc = subprocess.Popen([sys.executable, "-m", "discopose.cli", "render", "--out", str(out), "--num", str(NUM),
                             "--config", str(config_path), "--workers", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "shard-000000.tar").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "shard-000000.tar").exists()
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(str(out))
    resumed = generate_dataset(str(out), NUM, config, workers=1, progress=False)
    assert shard_hashes(resumed) == shard_hashes(manifest)
    assert not list(out.glob(".*.tmp")), "no temp files left behind"


def test_corrupt_shard_is_detected_and_rerendered(reference, tmp_path):
    _, config, manifest = reference
    out = tmp_path / "corrupt"
    generate_dataset(str(out), NUM, config, workers=1, progress=False)
    shard = out / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated mid-member
    info = open_dataset(str(out))
    # Cut inside a member's data, tarfile raises; cut at a member boundary it ends early and the sha256 check
    # catches it (where the cut falls depends on the rendered images' sizes): either way, named and refused.
    with pytest.raises(DatasetError, match="shard-000001.tar (is truncated or corrupt|does not match the sha256)"):
        list(iter_samples(info))
    from discopose.cli import main
    assert main(["inspect", str(out), "--verify", "--out", str(tmp_path / "i.png")]) == 2
    repaired = generate_dataset(str(out), NUM, config, workers=1, progress=False)
    assert shard_hashes(repaired) == shard_hashes(manifest)


def test_changed_config_refuses_to_mix_into_existing_dataset(reference, tmp_path):
    out, config, _ = reference
    other = RenderConfig.from_dict({**config.to_dict(), "seed": 99})
    with pytest.raises(DiscoposeError, match="different config"):
        generate_dataset(str(out), NUM, other, workers=1, progress=False)


def test_unwritable_output_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/discopose-cannot-write-here"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "ds")
    with pytest.raises(DiscoposeError, match="not writable"):
        generate_dataset(target, 2, RenderConfig(), progress=False)


def test_worker_crash_names_the_sample_seed(tmp_path):
    # Asking for more samples than the pose file holds makes sample 2 fail inside a worker.
    poses = tmp_path / "poses.jsonl"
    poses.write_text("\n".join(json.dumps({"position_m": [0, 0, 0], "quat_wxyz": [1, 0, 0, 0]}) for _ in range(2)))
    config = RenderConfig.load(overrides=tiny_overrides(**{"pose.poses_file": str(poses)}))
    with pytest.raises(DiscoposeError, match="has 2 poses but sample 2"):
        generate_dataset(str(tmp_path / "ds"), 4, config, workers=2, progress=False)
    # Nothing was committed, so the fixed command may use other settings in the same folder.
    fixed = generate_dataset(str(tmp_path / "ds"), 2, config, workers=1, progress=False)
    assert fixed["complete"] and fixed["num_samples"] == 2


def test_render_failure_names_sample_index_and_seed(tmp_path, monkeypatch):
    from discopose.render.renderer import DiscoRenderer
    from discopose.render.sampling import sample_seed
    original = DiscoRenderer.render

    def failing_render(self, params):  # fault injection: the GL driver fails on one sample
        if params["index"] == 5:
            raise RuntimeError("GL_OUT_OF_MEMORY")
        return original(self, params)
    monkeypatch.setattr(DiscoRenderer, "render", failing_render)
    config = RenderConfig.load(overrides=tiny_overrides())
    with pytest.raises(DiscoposeError, match=f"sample 5 \\(seed {sample_seed(0, 5)}\\) failed to render: "
                                             "RuntimeError: GL_OUT_OF_MEMORY"):
        generate_dataset(str(tmp_path / "ds"), 8, config, workers=1, progress=False)
    # The shard before the failure is complete and kept; nothing half-written remains.
    assert (tmp_path / "ds" / "shard-000000.tar").exists()
    assert not (tmp_path / "ds" / "shard-000001.tar").exists()
    assert not list((tmp_path / "ds").glob(".*.tmp"))


def test_ray_backend_matches_local(reference, tmp_path):
    pytest.importorskip("ray")
    _, config, manifest = reference
    result = generate_dataset(str(tmp_path / "ray"), NUM, config, workers=2, backend="ray", progress=False)
    assert shard_hashes(result) == shard_hashes(manifest)


def test_cli_render_preview_and_inspect(tmp_path, reference):
    out, _, _ = reference
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    preview = tmp_path / "preview.png"
    args = [sys.executable, "-m", "discopose.cli", "render", "--preview", "3", "--out", str(preview)]
    for override in tiny_overrides(**{"camera.count": 2}):
        args += ["--set", override]
    subprocess.run(args, check=True, env=env, capture_output=True)
    import cv2
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape[0] > 29 and sheet.shape[1] >= 2 * 41
    result = subprocess.run([sys.executable, "-m", "discopose.cli", "inspect", str(out), "--num", "4", "--verify",
                             "--out", str(tmp_path / "inspect.png")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "verified    3 shards" in result.stdout and (tmp_path / "inspect.png").stat().st_size > 1000


def test_cli_bad_input_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "discopose.cli", "render", "--out", str(tmp_path / "x"),
                             "--set", "camera.count=-1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "camera.count=-1 is out of range" in result.stderr


def test_missing_opengl_platform_says_what_to_install(tmp_path):
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl", "EGL_PLATFORM": "surfaceless",
           "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json"), "LIBGL_ALWAYS_SOFTWARE": "1"}
    result = subprocess.run([sys.executable, "-c", "from discopose.cli import main\n"
                             "import sys; sys.argv=['discopose','render','--preview','1','--out','"
                             f"{tmp_path / 'p.png'}']\nsys.exit(main())"], env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri" in result.stderr
