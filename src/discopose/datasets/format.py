"""The on-disk dataset format (``docs/dataset_format.md``): webdataset tar shards plus a manifest.

::

    data/train/
      manifest.json            format, version, config, object + symmetry, seed, shards (count, sha256)
      shard-000000.tar         samples 0 .. samples_per_shard-1
        000000000.json         labels + every sampled parameter (see below)
        000000000.cam0.rgb.jpg RGB (or .png), one per camera
        000000000.cam0.mask.png  visible object pixels (255), optional
        000000000.cam0.depth.png uint16 depth in units of ``depth_unit_m`` (0 = nothing), optional
      shard-000001.tar ...

Sample keys are 9-digit indices (no dots, as webdataset splits key and extension at the first dot).
"""
from __future__ import annotations

import json

import cv2
import numpy as np

from discopose._errors import DatasetError

FORMAT = "discopose-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEPTH_UNIT_M = 1e-4  # uint16 depth covers 0 .. 6.5535 m at 0.1 mm resolution


def shard_name(shard_index: int) -> str:
    return f"shard-{shard_index:06d}.tar"


def sample_key(index: int) -> str:
    return f"{index:09d}"


def _encode_image(image: np.ndarray, ext: str, jpeg_quality: int = 95) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buffer = cv2.imencode(f".{ext}", image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {ext}")
    return buffer.tobytes()


def encode_sample(params: dict, views: dict, output) -> dict:
    """webdataset sample dict (all values bytes) from a rendered sample."""
    labels = {"index": params["index"], "seed": params["seed"],
              "world_from_object": params["world_from_object"],
              "cameras": {name: view["labels"] for name, view in views.items()},
              "params": params}
    sample = {"__key__": sample_key(params["index"]), "json": json.dumps(labels).encode()}
    for name, view in views.items():
        sample[f"{name}.rgb.{output.image_format}"] = _encode_image(view["rgb"], output.image_format, output.jpeg_quality)
        if output.mask:
            sample[f"{name}.mask.png"] = _encode_image(view["mask"].astype(np.uint8) * 255, "png")
        if output.depth:
            depth = np.clip(np.round(view["depth_m"] / DEPTH_UNIT_M), 0, 65535).astype(np.uint16)
            sample[f"{name}.depth.png"] = _encode_image(depth, "png")
    return sample


def decode_labels(raw: dict) -> dict:
    """A raw sample's labels (its JSON member), without decoding any image."""
    try:
        labels = json.loads(raw["json"])
        labels["cameras"]
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{_where(raw)} has no readable labels ({type(exc).__name__}: {exc}); the shard is "
                           "corrupt: run `discopose inspect --verify`, then rerun the `discopose render` command "
                           "that made it") from None
    return labels


def decode_sample(raw: dict) -> dict:
    """Decode a raw sample (``{"__key__", "json": bytes, "cam0.rgb.jpg": bytes, ...}``).

    Returns ``{"key", "labels": dict, "views": {camera: {"rgb": HxWx3 uint8 RGB, "mask": HxW bool,
    "depth_m": HxW float32}}}`` with the optional entries present only when stored.
    """
    labels = decode_labels(raw)
    views: dict = {name: {} for name in labels["cameras"]}
    for field, data in raw.items():
        parts = field.split(".")
        if len(parts) != 3 or parts[0] not in views:
            continue
        camera, kind, _ = parts
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"{_where(raw)}: {field} is not a readable image; the shard is corrupt: run "
                               "`discopose inspect --verify`, then rerun the `discopose render` command that made it")
        if kind == "rgb":
            views[camera]["rgb"] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif kind == "mask":
            views[camera]["mask"] = image > 127
        elif kind == "depth":
            views[camera]["depth_m"] = image.astype(np.float32) * DEPTH_UNIT_M
    return {"key": raw["__key__"], "labels": labels, "views": views}


def _where(raw: dict) -> str:
    return f"sample {raw.get('__key__')} of {raw.get('__url__', 'an unnamed shard')}"


def camera_from_labels(name: str, labels: dict):
    """The :class:`~discopose.camera.CameraModel` a sample's per-camera labels describe: its size, K, lens
    distortion (the realistic proxy's webcams label it; rendered cameras have none) and world pose."""
    import numpy as np

    from discopose.camera import CameraModel
    return CameraModel(name, int(labels["width_px"]), int(labels["height_px"]), labels["K"],
                       dist_coeffs=labels.get("dist_coeffs") or np.zeros(5),
                       world_from_camera=labels.get("world_from_camera"))

