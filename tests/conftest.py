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
