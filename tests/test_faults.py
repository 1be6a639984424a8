"""Fault tests: what survives SIGKILL, SIGTERM, bit flips, truncation, a full disk and stale temp files.

Each test names the fault, injects it for real (signals to real processes, bytes flipped in real
shards, a real size-limited tmpfs) and checks what the user is promised: nothing lost, nothing
corrupt adopted, one line that names the problem.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from discopose._errors import DatasetError, DiscoposeError
from discopose.datasets.generate import generate_dataset
from discopose.datasets.reader import check_shards, iter_samples, open_dataset
from discopose.datasets.storage import Storage
from discopose.render.config import RenderConfig
from tests.conftest import tiny_overrides

NUM = 12  # 3 shards of 4
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}


def shard_hashes(manifest):
    return [(s["name"], s["num_samples"], s["sha256"]) for s in manifest["shards"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    config = RenderConfig.load(overrides=tiny_overrides(**{"output.image_format": "jpg"}))
    manifest = generate_dataset(str(root / "ref"), NUM, config, workers=1, progress=False)
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    return root / "ref", config, manifest, config_path


def flip_byte_in_member(shard: Path, member_suffix: str) -> None:
    """Flip one byte inside the data of the first member whose name ends with ``member_suffix``
    (same size: only the content hash can tell)."""
    import tarfile
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(member_suffix))
    data = bytearray(shard.read_bytes())
    position = member.offset_data + member.size // 2
    data[position] ^= 0x5A
    shard.write_bytes(bytes(data))


def test_a_rerun_never_launders_a_bit_flipped_shard(reference, tmp_path):
    ref, config, manifest, _ = reference
    out = tmp_path / "ds"
    generate_dataset(str(out), NUM, config, workers=1, progress=False)
    flip_byte_in_member(out / "shard-000001.tar", ".json")
    # Reading it fails at that shard, naming it (the flip is inside JSON text that may still parse).
    with pytest.raises(DatasetError, match="shard-000001.tar (does not match the sha256|has no readable labels)"):
        list(iter_samples(open_dataset(str(out))))
    from discopose.cli import main
    assert main(["inspect", str(out), "--verify", "--out", str(tmp_path / "i.png")]) == 2
    # The rerun re-renders it (it used to keep it and record its new hash).
    repaired = generate_dataset(str(out), NUM, config, workers=1, progress=False)
    assert shard_hashes(repaired) == shard_hashes(manifest)
    assert (out / "shard-000001.tar").read_bytes() == (ref / "shard-000001.tar").read_bytes()


def test_without_its_manifest_old_shards_are_never_adopted(reference, tmp_path):
    _, config, manifest, _ = reference
    out = tmp_path / "ds"
    generate_dataset(str(out), NUM, config, workers=1, progress=False)
    (out / "manifest.json").unlink()
    other = RenderConfig.from_dict({**config.to_dict(), "seed": 7})
    again = generate_dataset(str(out), NUM, other, workers=1, progress=False)
    # Every shard was rendered anew for seed 7: none of the seed-0 bytes survive under the new manifest.
    assert not set(h for *_, h in shard_hashes(again)) & set(h for *_, h in shard_hashes(manifest))
    check_shards(open_dataset(str(out)), verify_hashes=True)


def _render_command(out: Path, config_path: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "discopose.cli", "render", "--out", str(out), "--num", str(NUM),
            "--config", str(config_path), "--workers", str(workers), "--quiet"]


def _wait_for_workers(proc: subprocess.Popen, count: int, out: Path, timeout_s: float = 120) -> list[psutil.Process]:
    """The render's worker processes, once ``count`` of them are rendering (a temp shard exists)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        children = [c for c in psutil.Process(proc.pid).children(recursive=True) if _is_pool_worker(c)]
        if len(children) >= count and len(list(out.glob(".shard-*.tmp"))) >= 1:
            return children
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the render never started its workers")


def _is_pool_worker(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:  # exited or a zombie already
        return False
    return "multiprocessing" in command and "resource_tracker" not in command


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_render_leaves_no_orphan_workers_and_resumes_byte_identical(reference, tmp_path, sig):
    ref, config, manifest, config_path = reference
    out = tmp_path / "ds"
    proc = subprocess.Popen(_render_command(out, config_path, workers=2), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers = _wait_for_workers(proc, 2, out)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGTERM:
        assert code == 143
        assert "terminated; rerun the same command to resume" in proc.stderr.read()
    # Workers die with their parent, even when it had no chance to clean up (SIGKILL).
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned render workers: {[p.pid for p in alive]}"
    resumed = generate_dataset(str(out), NUM, config, workers=2, progress=False)
    assert shard_hashes(resumed) == shard_hashes(manifest)
    for shard in manifest["shards"]:
        assert (out / shard["name"]).read_bytes() == (ref / shard["name"]).read_bytes()
    assert not list(out.glob(".*.tmp")), "temp files of the killed run are cleaned up"


def test_corrupt_shards_stop_training_and_eval_with_one_line_naming_the_shard(reference, tmp_path):
    import shutil

    from discopose.datasets.loader import make_loader
    from discopose.models.train import TrainConfig, network_spec, train
    ref, config, _, _ = reference
    out = tmp_path / "ds"
    shutil.copytree(ref, out)
    info = open_dataset(str(out))
    spec = network_spec(info, TrainConfig(stage="locator"))
    # A flipped byte inside a JPEG: same size, still decodes. The loader worker names the shard.
    flip_byte_in_member(out / "shard-000002.tar", ".rgb.jpg")
    with pytest.raises(DatasetError) as caught:
        for _ in make_loader(info, spec, batch_size=4, train=False, num_workers=1):
            pass
    message = str(caught.value)
    assert "\n" not in message and "shard-000002.tar does not match the sha256" in message
    # A truncated shard: training refuses before it builds a model, naming the shard and the fix.
    shard = out / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="shard-000001.tar is 5000 bytes but the manifest says .* inspect --verify"):
        train(str(out), str(tmp_path / "run"), config=TrainConfig(epochs=1), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def small_disk(reference, tmp_path):
    """A real size-limited file system with room for the manifest and two of the three shards."""
    _, _, manifest, _ = reference
    size_kib = (2 * manifest["shards"][0]["bytes"] + 40 * 1024) // 1024
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount, size_kib * 1024
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_is_a_clear_error_and_leaves_no_partial_shard(reference, small_disk):
    ref, config, manifest, _ = reference
    disk, disk_bytes = small_disk
    assert sum(s["bytes"] for s in manifest["shards"]) > disk_bytes
    with pytest.raises(DiscoposeError, match="disk full while writing .*rerun the same command to resume"):
        generate_dataset(str(disk / "ds"), NUM, config, workers=1, progress=False)
    out = disk / "ds"
    # What is visible is whole: each shard is byte-identical to the reference (one may be committed but
    # not yet listed when the manifest update hit the full disk: a rerun re-renders it), every shard the
    # manifest lists verifies, and no temp file is left.
    visible = sorted(out.glob("shard-*.tar"))
    assert visible and all(p.read_bytes() == (ref / p.name).read_bytes() for p in visible)
    info = open_dataset(str(out), require_complete=False)
    assert info.manifest["shards"]
    check_shards(info, verify_hashes=True)
    assert not list(out.glob(".*.tmp"))


def test_stale_temps_of_dead_runs_go_and_a_live_runs_temps_stay(tmp_path):
    storage = Storage(str(tmp_path))
    live = Path(storage.temp_path("shard-000000.tar"))  # owned by this (live) process
    live.write_bytes(b"in progress")
    sleeper = subprocess.Popen([sys.executable, "-c", "pass"])
    sleeper.wait()
    dead = Path(str(live).replace(f".{os.getpid()}.", f".{sleeper.pid}."))
    dead.write_bytes(b"abandoned")
    foreign_recent = tmp_path / ".shard-000001.tar.otherhost.123.abcdef12.tmp"
    foreign_recent.write_bytes(b"another machine's run")
    foreign_old = tmp_path / ".shard-000002.tar.otherhost.123.abcdef13.tmp"
    foreign_old.write_bytes(b"another machine's run, long gone")
    os.utime(foreign_old, (time.time() - 2 * 86400,) * 2)
    assert storage.remove_stale_temps() == 2
    assert live.exists() and foreign_recent.exists()
    assert not dead.exists() and not foreign_old.exists()
