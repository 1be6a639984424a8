"""Procedural "disco" textures. Pure numpy: every function takes an explicit Generator."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from discopose._errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def random_color(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1] with uniformly random hue, saturation and value."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(20, 255)]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(float) / 255.0


def _grid(size: int):
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords)


def _two_color(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a, b = random_color(rng), random_color(rng)
    return mask[..., None] * a + (1 - mask[..., None]) * b


def _oriented(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    angle = rng.uniform(0, np.pi)
    return x * np.cos(angle) + y * np.sin(angle)


def _value_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    total = np.zeros((size, size), np.float32)
    weight = 1.0
    for cells in (2, 4, 8, 16, 32):
        cells = min(cells, size)
        coarse = rng.random((cells, cells)).astype(np.float32)
        total += weight * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        weight *= rng.uniform(0.3, 0.7)
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


BLENDABLE = ("gradient", "stripes", "checker", "noise")


def make_texture(kind: str, size: int, rng: np.random.Generator, blendable=BLENDABLE) -> np.ndarray:
    """One ``size`` x ``size`` RGB uint8 texture of the given kind; ``blend`` mixes two of ``blendable``."""
    if kind == "solid":
        image = np.broadcast_to(random_color(rng), (size, size, 3)).copy()
    elif kind == "gradient":
        t = _oriented(size, rng)
        image = _two_color((t - t.min()) / max(np.ptp(t), 1e-6), rng)
    elif kind == "stripes":
        t = _oriented(size, rng) * rng.uniform(2, 16) * 2 * np.pi
        wave = 0.5 + 0.5 * np.sin(t)
        image = _two_color(wave if rng.random() < 0.5 else (wave > 0.5).astype(float), rng)
    elif kind == "checker":
        x, y = _grid(size)
        cells = rng.integers(2, 12)
        image = _two_color(((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float), rng)
    elif kind == "noise":
        image = _two_color(_value_noise(size, rng), rng)
        if rng.random() < 0.5:
            image += rng.normal(0, rng.uniform(0.02, 0.15), image.shape)
    elif kind == "blend":
        first, second = (make_texture(k, size, rng).astype(float) / 255
                         for k in rng.choice(list(blendable) or ["solid"], 2))
        mask = _value_noise(size, rng)[..., None]
        image = mask * first + (1 - mask) * second
    else:
        raise ConfigError(f"unknown texture kind {kind!r}")
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def load_image_textures(folder: str, size: int) -> list[np.ndarray]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"textures.image_dir={folder!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigError(f"texture image {str(path)!r} cannot be read; remove or replace it")
        images.append(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
    return images


def make_texture_bank(kinds: list[str], count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` procedural textures cycling through ``kinds`` (deterministic for a given rng). Blends
    mix only listed kinds, so a held-out kind never leaks into training through them."""
    blendable = [k for k in BLENDABLE if k in kinds]
    return [make_texture(kinds[i % len(kinds)], size, rng, blendable) for i in range(count)]
