"""Streaming training/evaluation loader: webdataset shards -> augmented tensors for the pose network.

Shards are shuffled, samples pass a shuffle buffer, decoding and augmentation run in DataLoader
workers. Every image is first mapped onto the camera the model sees (:func:`model_view`) with its own
K, so jittered intrinsics are seen, not ignored. Augmentations are photometric only (colour, blur,
noise, JPEG, dropout): geometry comes from the cameras.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import torch

from discopose._errors import DatasetError
from discopose.camera import CameraModel, dense_grid_px, jittered_aim, uvz_from_position
from discopose.datasets.format import FORMAT_VERSION, decode_sample
from discopose.datasets.reader import DatasetInfo
from discopose.decoding import network_batch, stage_camera, stage_view


def check_compatible(info: DatasetInfo, meta: dict) -> None:
    """Refuse a dataset whose format or object differ from what the model was trained on."""
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


def make_augmentation(strength: float = 1.0, seed: int | None = None):
    """Webcam-realism augmentation (albumentations); ``strength`` 0 disables it. A ``seed`` makes it
    reproducible (albumentations otherwise seeds itself from the OS). Kept mild enough that the
    cube's letters (a few pixels wide strokes) stay legible: they are what orientation is read from."""
    if strength <= 0:
        return None
    import albumentations as A
    # Webcams: auto-exposure and tone curves (gamma), white balance (per-channel gains), soft optics and
    # motion, sensor noise, JPEG. Measured against a path-traced webcam proxy, not guessed (README).
    return A.Compose([
        A.ColorJitter(brightness=0.3 * strength, contrast=0.3 * strength, saturation=0.3 * strength,
                      hue=0.05 * strength, p=0.8),
        A.RandomGamma(gamma_limit=(100 - 30 * strength, 100 + 40 * strength), p=0.3),
        A.MultiplicativeNoise(multiplier=(1 - 0.15 * strength, 1 + 0.15 * strength), per_channel=True,
                              elementwise=False, p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 5)),
                 A.Downscale(scale_range=(0.5, 0.8))], p=0.3 * strength),
        A.OneOf([A.GaussNoise(std_range=(0.01, 0.04 * strength)), A.ISONoise(intensity=(0.1, 0.4 * strength))],
                p=0.4),
        A.ImageCompression(quality_range=(40, 95), p=0.4),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                        p=0.1 * strength),
    ], seed=seed)


@dataclass
class CropJitter:
    """How far off-centre and off-scale crops cut from full frames are (see :func:`jittered_aim`)."""

    offset_frac: float = 0.08
    scale_jitter_frac: float = 0.12


def model_view(rgb: np.ndarray, labels: dict, spec, rng: np.random.Generator | None = None,
               jitter: CropJitter | None = None):
    """One camera's image and label mapped onto the camera the model sees, with that image's own K.

    Locator: the model's fixed camera (``spec.camera_K``). Crop: a rendered crop (``camera.aim=object``,
    principal point at the centre, the model's size) is used as it is; a full frame is cut into a crop
    aimed at the labelled object, off by ``jitter`` drawn from ``rng`` when given.
    Returns ``(image HxWx3 uint8, K 3x3, camera_from_object 4x4, remapped)`` in the model's camera.
    """
    height, width = spec.input_size_px
    source = CameraModel("image", int(labels["width_px"]), int(labels["height_px"]), labels["K"])
    camera_from_object = np.asarray(labels["camera_from_object"], float)
    if spec.stage == "crop" and _is_crop(source, width, height):
        return rgb, source.K, camera_from_object, False
    if spec.stage == "crop" and rng is not None:
        jitter = jitter or CropJitter()
        target, rotation = jittered_aim(camera_from_object[:3, 3], spec.object_diameter_m, width, spec.fill_frac,
                                        jitter.offset_frac, jitter.scale_jitter_frac, rng)
    else:
        target, rotation = stage_camera(spec, aim_m=camera_from_object[:3, 3])
    image = stage_view(rgb, source, target, rotation)
    if image is rgb:
        return rgb, source.K, camera_from_object, False
    rotate = np.eye(4)
    rotate[:3, :3] = rotation
    return image, target.K, rotate @ camera_from_object, True


def dense_targets(view: dict, K: np.ndarray, camera_from_object: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray]:
    """Per dense-grid cell: object there (1), not (0) or unknown (-1), and the object-frame surface
    point it shows over half the diameter, from the view's rendered depth and visible mask."""
    columns, rows = dense_grid_px(spec.input_size_px, spec.dense_stride)
    if "depth_m" not in view or "mask" not in view:
        return np.full(rows.shape, -1.0, np.float32), np.zeros((3, *rows.shape), np.float32)
    mask = view["mask"][rows, columns]
    depth = view["depth_m"][rows, columns].astype(float)
    rays = np.stack([(columns - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones(rows.shape)], axis=-1)
    in_camera = rays * depth[..., None]
    in_object = (in_camera - camera_from_object[:3, 3]) @ camera_from_object[:3, :3]
    coordinates = np.where(mask[..., None], in_object / (spec.object_diameter_m / 2), 0.0)
    return mask.astype(np.float32), coordinates.transpose(2, 0, 1).astype(np.float32)


def _is_crop(camera: CameraModel, width: int, height: int) -> bool:
    return (camera.width_px, camera.height_px) == (width, height) and \
        np.allclose(camera.K[:2, 2], [(width - 1) / 2, (height - 1) / 2], atol=1e-6)


class SampleToTensors:
    """Decoded sample -> a list of (image (3, H, W) float32 in [0, 1], target dict), one per camera:
    the network sees one camera at a time. Picklable for DataLoader workers."""

    def __init__(self, spec, augment_strength: float = 0.0, seed: int = 0, jitter_crops: bool = False):
        self.spec = spec
        self.augment_strength = augment_strength
        self.seed = seed
        self.jitter_crops = jitter_crops
        self._augment = None

    def __call__(self, raw: dict) -> list:
        if self._augment is None and self.augment_strength > 0:
            worker = torch.utils.data.get_worker_info()
            # One stream per loader worker (and epoch, via the seed): reproducible training runs.
            self._augment = make_augmentation(self.augment_strength,
                                              seed=self.seed * 1000 + (worker.id if worker else 0))
        sample = decode_sample(raw)
        labels = sample["labels"]
        rng = np.random.default_rng([self.seed, labels["index"]]) if self.jitter_crops else None
        out = []
        for camera_index, (name, view_labels) in enumerate(labels["cameras"].items()):
            view = sample["views"][name]
            rgb, K, camera_from_object, remapped = model_view(view["rgb"], view_labels, self.spec, rng)
            if self._augment is not None:
                rgb = self._augment(image=rgb)["image"]
            uvz = uvz_from_position(camera_from_object[:3, 3], K, self.spec.input_size_px,
                                    self.spec.object_diameter_m, self.spec.fill_frac)
            target = {
                "position_uvz": torch.tensor(uvz, dtype=torch.float32),
                "rotation": torch.tensor(camera_from_object[:3, :3], dtype=torch.float32),
                "position_m": torch.tensor(camera_from_object[:3, 3], dtype=torch.float32),
                "K": torch.tensor(K, dtype=torch.float32),
                "index": labels["index"], "camera_index": camera_index,
                "visible_fraction": float(view_labels["visible_fraction"]),
                "distance_m": float(np.linalg.norm(camera_from_object[:3, 3])),
            }
            if self.spec.dense:
                # Remapped views have no depth of their own: their dense cells count as unknown.
                mask, coordinates = dense_targets({} if remapped else view, K, camera_from_object, self.spec)
                target.update(dense_mask=torch.from_numpy(mask), dense_coordinates=torch.from_numpy(coordinates))
            image = torch.from_numpy(network_batch([rgb])[0])
            out.append((image, target))
        return out


class ShardStream(torch.utils.data.IterableDataset):
    """The dataset's views as an iterable for a torch DataLoader: shards split across DDP ranks, then
    across loader workers; each shard stream-verified against the manifest's sha256. Training: endless
    (a fresh shard order per pass) through a shuffle buffer; evaluation: every view once, in order."""

    def __init__(self, info: DatasetInfo, to_tensors: SampleToTensors, train: bool, shuffle_buffer: int, seed: int):
        self.url = info.url
        self.shards = [(shard["name"], shard.get("sha256")) for shard in info.manifest["shards"]]
        self.to_tensors = to_tensors
        self.train = train
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed

    def __iter__(self):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        mine = self.shards[rank::world][worker_id::workers]
        rng = np.random.default_rng([self.seed, rank, worker_id])
        samples = self._samples(mine, rng)
        if self.train:
            samples = _shuffled(samples, self.shuffle_buffer, rng)
        for raw in samples:
            yield from self.to_tensors(raw)

    def _samples(self, shards: list, rng: np.random.Generator):
        from discopose.datasets.reader import shard_samples
        from discopose.datasets.storage import Storage
        storage = Storage(self.url)
        while True:
            order = rng.permutation(len(shards)) if self.train else range(len(shards))
            for i in order:
                yield from shard_samples(storage, *shards[i])
            if not self.train:
                return


def _shuffled(items, buffer_size: int, rng: np.random.Generator):
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(rng.integers(len(buffer)))
        buffer[slot], item = item, buffer[slot]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class Batches:
    """Iterates a DataLoader; a :class:`DatasetError` raised in a loader worker comes out as the
    worker's own one-line message (torch wraps it in a traceback that hides the shard's name)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        try:
            yield from self._started()
        except DatasetError as exc:
            raise DatasetError(_worker_message(str(exc))) from None

    def _started(self):
        """The loader's iterator, its workers forked with every object this process holds frozen: a forked worker
        never collects what it inherited. Garbage the parent had not collected yet (an ONNX Runtime session from
        an earlier estimator) would otherwise run its destructor in the worker, where the threads it waits for do
        not exist, and hang it in pthread_cond_destroy (seen in the test suite). Freezing costs nothing; the full
        collection before each fork it replaces took 0.25 s (20 s of a 40-epoch test training)."""
        if not self.loader.num_workers:
            return iter(self.loader)
        gc.freeze()
        try:
            return iter(self.loader)  # starts the workers
        finally:
            gc.unfreeze()  # the parent goes on collecting its own garbage, where its threads live


def _worker_message(text: str) -> str:
    prefix = f"{DatasetError.__module__}.{DatasetError.__name__}: "
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix):]
    return text


def make_loader(info: DatasetInfo, spec, batch_size: int, train: bool, num_workers: int = 2,
                shuffle_buffer: int = 1000, augment_strength: float = 1.0, seed: int = 0) -> Batches:
    """Batches of the dataset's camera views. Training: shuffled, augmented, split across DDP ranks
    and workers by shard, endless; evaluation: every view once, in order (one loader worker at most)."""
    shards = info.manifest["shards"]
    if not shards:
        raise DatasetError(f"{info.url} has no shards; render it first with `discopose render`")
    if train:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if len(shards) < world:
            raise DatasetError(f"{info.url} has {len(shards)} shards for {world} training processes; every process "
                               "needs one: render with a smaller output.samples_per_shard")
        # Every worker gets a shard. Endless: the trainer takes the same number of steps on every rank,
        # so uneven shards (6 on 4 ranks) never leave one rank waiting in an all-reduce.
        workers = max(1, min(num_workers, len(shards) // world))
        stream = ShardStream(info, SampleToTensors(spec, augment_strength, seed, jitter_crops=True), True,
                             shuffle_buffer, seed)
    else:
        workers = min(num_workers, 1)
        stream = ShardStream(info, SampleToTensors(spec, 0.0), False, 0, seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, drop_last=train,
                                         num_workers=workers if num_workers > 0 else 0,
                                         persistent_workers=False, pin_memory=torch.cuda.is_available())
    return Batches(loader)

