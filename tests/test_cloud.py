"""Datasets on an object store, end to end, against a real S3 API server on localhost (moto's
server mode): render writes the bucket, inspect verifies it, training and evaluation stream from it."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from discopose.datasets.generate import generate_dataset
from discopose.datasets.reader import open_dataset
from discopose.render.config import RenderConfig
from tests.conftest import tiny_overrides

from tests.conftest import S3_BUCKET as BUCKET

NUM = 8


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "discopose.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_render_inspect_train_and_eval_stream_from_a_bucket(s3_env, tmp_path):
    import fsspec
    import torch

    from discopose.datasets.loader import make_loader
    from discopose.models.train import TrainConfig, network_spec, train

    url = f"s3://{BUCKET}/ds"
    overrides = tiny_overrides(**{"output.depth": "true"})
    args = ["render", "--out", url, "--num", str(NUM), "--workers", "2", "--quiet"]
    for override in overrides:
        args += ["--set", override]
    result = cli(*args, env=s3_env)
    assert result.returncode == 0, result.stderr[-3000:]

    # The bucket holds the same bytes a local render writes, and nothing else (no temp objects).
    local = generate_dataset(str(tmp_path / "local"), NUM, RenderConfig.load(overrides=overrides), workers=1,
                             progress=False)
    fs = fsspec.filesystem("s3")
    assert sorted(Path(p).name for p in fs.ls(f"{BUCKET}/ds")) == \
        sorted(["manifest.json"] + [s["name"] for s in local["shards"]])
    for shard in local["shards"]:
        assert fs.cat(f"{BUCKET}/ds/{shard['name']}") == (tmp_path / "local" / shard["name"]).read_bytes()

    result = cli("inspect", url, "--verify", "--num", "2", "--out", str(tmp_path / "sheet.png"), env=s3_env)
    assert result.returncode == 0 and "verified    2 shards" in result.stdout, result.stderr[-3000:]

    # Readers keep the protocol: the loader streams the bucket (in a loader worker process), not a
    # local path named like it, and sees exactly the local dataset's tensors.
    info = open_dataset(url)
    assert all(u.startswith("s3://") for u in info.shard_urls)
    spec = network_spec(info, TrainConfig(stage="locator"))
    remote = [batch for batch in make_loader(info, spec, batch_size=4, train=False, num_workers=1)]
    here = [batch for batch in make_loader(open_dataset(str(tmp_path / "local")), spec, batch_size=4, train=False,
                                           num_workers=0)]
    assert len(remote) == len(here) == NUM // 4
    for (images_remote, target_remote), (images_here, target_here) in zip(remote, here):
        assert torch.equal(images_remote, images_here)
        assert torch.equal(target_remote["position_uvz"], target_here["position_uvz"])

    meta = train(url, str(tmp_path / "run"), val=url, progress=False,
                 config=TrainConfig(stage="locator", epochs=1, batch_size=4, num_workers=1, pretrained="none",
                                    backbone="mobilenet_v3_small"))
    assert meta["step"] == NUM // 4 and np.isfinite(meta["val_metrics"]["te_mm"]["median"])


def test_a_corrupt_object_in_the_bucket_is_named(s3_env, tmp_path):
    import fsspec

    from discopose.datasets.reader import iter_samples
    from discopose._errors import DatasetError
    url = f"s3://{BUCKET}/corrupt"
    generate_dataset(url, NUM, RenderConfig.load(overrides=tiny_overrides()), workers=1, progress=False)
    fs = fsspec.filesystem("s3")
    data = bytearray(fs.cat(f"{BUCKET}/corrupt/shard-000001.tar"))
    data[len(data) // 3] ^= 0xFF
    fs.pipe(f"{BUCKET}/corrupt/shard-000001.tar", bytes(data))
    with pytest.raises(DatasetError, match=f"s3://{BUCKET}/corrupt/shard-000001.tar"):
        list(iter_samples(open_dataset(url)))
