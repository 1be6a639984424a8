"""`render --backend ray` on a real local multi-process Ray cluster (a head and a worker node started
by the test) writing to a shared fsspec target (the localhost S3 server): a worker process killed
mid-run is restarted, its shard retried, and the dataset is still exact."""
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from discopose._errors import DiscoposeError
from discopose.datasets.generate import generate_dataset
from discopose.render.config import RenderConfig
from tests.conftest import S3_BUCKET, tiny_overrides

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

NUM = 24  # 6 shards of 4
PORT = 6391


@pytest.fixture(scope="module")
def ray_cluster(s3_env):
    ray_cli = shutil.which("ray", path=str(Path(os.sys.executable).parent))
    # Short: Ray's unix sockets live under TMPDIR and their paths may not exceed 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="dpray-", dir="/tmp"))
    # A localhost test cluster: no token auth (Ray turns it on when ~/.ray/auth_token exists, and the
    # driver in this process must then agree with the nodes).
    env = {**s3_env, "PYOPENGL_PLATFORM": "egl", "TMPDIR": str(scratch), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        for role in (["--head", f"--port={PORT}", "--include-dashboard=false"], [f"--address=127.0.0.1:{PORT}"]):
            started = subprocess.run([ray_cli, "start", *role, *common], env=env, capture_output=True, text=True,
                                     timeout=180)
            assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{PORT}", scratch
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        if saved_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_mode


def _render_actors() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "RenderActor" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_killed_ray_worker_is_retried_and_the_dataset_is_exact(ray_cluster, tmp_path):
    import fsspec
    address, scratch = ray_cluster
    config = RenderConfig.load(overrides=tiny_overrides())
    reference = generate_dataset(str(tmp_path / "local"), NUM, config, workers=1, progress=False)

    # A local folder on a 2-node cluster would scatter shards over the nodes' disks: refused.
    with pytest.raises(DiscoposeError, match="local folder but the Ray cluster has 2 nodes"):
        generate_dataset(str(tmp_path / "scattered"), NUM, config, workers=2, backend="ray", address=address,
                         progress=False)

    url = f"s3://{S3_BUCKET}/ray"
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(manifest=generate_dataset(
        url, NUM, config, workers=2, backend="ray", address=address, progress=False)))
    driver.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and driver.is_alive():
        for actor in _render_actors():
            # Kill it while it builds a shard (its temp file exists), not between shards.
            if list(scratch.glob(f".shard-*.{actor.pid}.*.tmp")):
                actor.kill()
                killed = actor.pid
                break
        time.sleep(0.01)
    driver.join(timeout=300)
    assert killed is not None, "no render worker was caught mid-shard"
    assert "manifest" in result, "the render did not survive the killed worker"
    manifest = result["manifest"]
    assert [(s["name"], s["sha256"]) for s in manifest["shards"]] == \
        [(s["name"], s["sha256"]) for s in reference["shards"]]
    fs = fsspec.filesystem("s3")
    for shard in reference["shards"]:
        assert fs.cat(f"{S3_BUCKET}/ray/{shard['name']}") == (tmp_path / "local" / shard["name"]).read_bytes()
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
