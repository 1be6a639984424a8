"""Streaming training/evaluation loader: webdataset shards -> augmented tensors for the pose network.

Shards are shuffled, samples pass a shuffle buffer, decoding and augmentation run in DataLoader
workers. Augmentations are photometric only (colour, blur, noise, JPEG, dropout): geometric ones
would need the pose labels transformed consistently, and the camera model is fixed by calibration.
"""
from __future__ import annotations

import numpy as np

from discopose._errors import DatasetError
from discopose.datasets.format import FORMAT_VERSION, decode_sample
from discopose.datasets.reader import DatasetInfo


def check_compatible(info: DatasetInfo, meta: dict) -> None:
    """Refuse a dataset whose format, object or cameras differ from what the model was trained on."""
    manifest = info.manifest
    if manifest["format_version"] != meta.get("dataset_format_version", FORMAT_VERSION):
        raise DatasetError(f"{info.url} is dataset format v{manifest['format_version']} but the model expects "
                           f"v{meta['dataset_format_version']}; re-render it with this discopose version")
    model_object, data_object = meta["object"], manifest["object"]
    if model_object["name"] != data_object["name"] or \
            abs(model_object["diameter_m"] - data_object["diameter_m"]) > 1e-4:
        raise DatasetError(f"{info.url} shows object {data_object['name']!r} ({data_object['diameter_m'] * 1000:.1f} mm) "
                           f"but the model was trained on {model_object['name']!r} "
                           f"({model_object['diameter_m'] * 1000:.1f} mm); use a dataset of the same object")
    if info.camera_names != meta["camera_names"]:
        raise DatasetError(f"{info.url} has cameras {info.camera_names} but the model expects "
                           f"{meta['camera_names']} (same names, same order); render with matching camera.names")


def make_augmentation(strength: float = 1.0, seed: int | None = None):
    """Webcam-realism augmentation (albumentations); ``strength`` 0 disables it. A ``seed`` makes it
    reproducible (albumentations otherwise seeds itself from the OS)."""
    if strength <= 0:
        return None
    import albumentations as A
    return A.Compose([
        A.ColorJitter(brightness=0.3 * strength, contrast=0.3 * strength, saturation=0.3 * strength,
                      hue=0.05 * strength, p=0.8),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.3 * strength),
        A.GaussNoise(std_range=(0.01, 0.05 * strength), p=0.3),
        A.ImageCompression(quality_range=(40, 95), p=0.3),
        A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2),
                        p=0.2 * strength),
    ], seed=seed)


def pose_target(labels: dict, pose_frame: str, camera_names: list[str]) -> np.ndarray:
    """The 4x4 ``frame_from_object`` that the model predicts."""
    if pose_frame == "world":
        return np.asarray(labels["world_from_object"], float)
    return np.asarray(labels["cameras"][camera_names[0]]["camera_from_object"], float)


class SampleToTensors:
    """Decoded sample -> (images (C, 3, H, W) float32 in [0, 1], target dict). Picklable for workers."""

    def __init__(self, spec, augment_strength: float = 0.0, seed: int = 0):
        self.spec = spec
        self.augment_strength = augment_strength
        self.seed = seed
        self._augment = None

    def __call__(self, raw: dict):
        import cv2
        import torch
        if self._augment is None and self.augment_strength > 0:
            worker = torch.utils.data.get_worker_info()
            # One stream per loader worker (and epoch, via the seed): reproducible training runs.
            self._augment = make_augmentation(self.augment_strength,
                                              seed=self.seed * 1000 + (worker.id if worker else 0))
        sample = decode_sample(raw)
        height, width = self.spec.input_size_px
        images = []
        for name in self.spec.camera_names:
            rgb = sample["views"][name]["rgb"]
            if rgb.shape[:2] != (height, width):
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            if self._augment is not None:
                rgb = self._augment(image=rgb)["image"]
            images.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        labels = sample["labels"]
        frame_from_object = pose_target(labels, self.spec.pose_frame, self.spec.camera_names)
        first = labels["cameras"][self.spec.camera_names[0]]
        target = {
            "position_m": torch.tensor(frame_from_object[:3, 3], dtype=torch.float32),
            "rotation": torch.tensor(frame_from_object[:3, :3], dtype=torch.float32),
            "index": labels["index"],
            "visible_fraction": float(first["visible_fraction"]),
            "distance_m": float(np.linalg.norm(np.asarray(first["camera_from_object"])[:3, 3])),
        }
        return torch.stack(images).float() / 255.0, target


def make_loader(info: DatasetInfo, spec, batch_size: int, train: bool, num_workers: int = 2,
                shuffle_buffer: int = 1000, augment_strength: float = 1.0, seed: int = 0):
    """A DataLoader over the dataset's shards. Training: shuffled, augmented, split across DDP ranks
    and workers by shard; evaluation: every sample once, in order (use num_workers <= 1 for order)."""
    import torch
    import webdataset as wds

    urls = info.shard_urls
    if not urls:
        raise DatasetError(f"{info.url} has no shards; render it first with `discopose render`")
    if train:
        workers = max(1, min(num_workers, len(urls)))
        dataset = (wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, nodesplitter=wds.split_by_node,
                                  workersplitter=wds.split_by_worker, empty_check=False)
                   .shuffle(shuffle_buffer, seed=seed)
                   .map(SampleToTensors(spec, augment_strength, seed)))
    else:
        workers = min(num_workers, 1)
        dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node,
                                 empty_check=False).map(SampleToTensors(spec, 0.0))
    batches = dataset.batched(batch_size, partial=not train, collation_fn=torch.utils.data.default_collate)
    return torch.utils.data.DataLoader(batches, batch_size=None,
                                       num_workers=workers if num_workers > 0 else 0,
                                       persistent_workers=False, pin_memory=torch.cuda.is_available())
