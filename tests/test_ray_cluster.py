"""`discopose render --backend ray` on a real local multi-process Ray cluster (a head and a worker
node started by the test) writing to a shared fsspec target (the localhost S3 server): a worker
process killed mid-run is restarted, its shard retried, and the dataset is still exact."""
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from discopose.datasets.generate import generate_dataset
from discopose.render.config import RenderConfig
from tests.conftest import S3_BUCKET, tiny_overrides

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

NUM = 24  # 6 shards of 4
PORT = 6391


@pytest.fixture(scope="module")
def ray_cluster(s3_env):
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    # Short: Ray's unix sockets live under TMPDIR and their paths may not exceed 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="dpray-", dir="/tmp"))
    # A localhost test cluster: no token auth (Ray turns it on when ~/.ray/auth_token exists, and the
    # drivers must then agree with the nodes).
    # Late in a full test run this process holds several GiB: a small object store per node and no
    # memory-monitor kills keep the nodes from shedding the very workers under test.
    env = {**s3_env, "PYOPENGL_PLATFORM": "egl", "TMPDIR": str(scratch), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", str(200 * 2**20)]
    try:
        for role in (["--head", f"--port={PORT}", "--include-dashboard=false"], [f"--address=127.0.0.1:{PORT}"]):
            started = subprocess.run([ray_cli, "start", *role, *common], env=env, capture_output=True, text=True,
                                     timeout=180)
            assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{PORT}", scratch, env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)


def _render_actors() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "RenderActor" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def _worker_errors(scratch: Path) -> str:
    """The last lines of the Ray workers' error logs, to say why a worker died."""
    tails = []
    for log in sorted(scratch.glob("ray/session_latest/logs/*.err")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            tails.append(f"{log.name}: " + " | ".join(lines[-3:]))
    return "\n".join(tails[-6:])


def _render(out: str, address: str, env: dict) -> subprocess.Popen:
    """``discopose render --backend ray`` as a user runs it: its own driver process."""
    args = [sys.executable, "-m", "discopose.cli", "render", "--out", out, "--num", str(NUM), "--workers", "2",
            "--backend", "ray", "--address", address, "--quiet"]
    for override in tiny_overrides():
        args += ["--set", override]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_ray_worker_is_retried_and_the_dataset_is_exact(ray_cluster, tmp_path):
    import fsspec
    address, scratch, env = ray_cluster
    config = RenderConfig.load(overrides=tiny_overrides())
    reference = generate_dataset(str(tmp_path / "local"), NUM, config, workers=1, progress=False)

    # A local folder on a 2-node cluster would scatter shards over the nodes' disks: refused.
    refused = _render(str(tmp_path / "scattered"), address, env)
    _, stderr = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "local folder but the Ray cluster has 2 nodes" in stderr, stderr[-2000:]

    driver = _render(f"s3://{S3_BUCKET}/ray", address, env)
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and driver.poll() is None:
        for actor in _render_actors():
            # Kill it while it builds a shard (its temp file exists), not between shards.
            if list(scratch.glob(f".shard-*.{actor.pid}.*.tmp")):
                actor.kill()
                killed = actor.pid
                break
        time.sleep(0.01)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, f"the render did not survive the killed worker {killed}: {stderr[-2000:]}\n" \
                                   f"{_worker_errors(scratch)}"
    assert killed is not None, "no render worker was caught mid-shard"
    fs = fsspec.filesystem("s3")
    manifest = json.loads(fs.cat(f"{S3_BUCKET}/ray/manifest.json"))
    assert manifest["complete"]
    assert [(s["name"], s["sha256"]) for s in manifest["shards"]] == \
        [(s["name"], s["sha256"]) for s in reference["shards"]]
    for shard in reference["shards"]:
        assert fs.cat(f"{S3_BUCKET}/ray/{shard['name']}") == (tmp_path / "local" / shard["name"]).read_bytes()
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
