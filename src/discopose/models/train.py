"""Training (``discopose train``): single process, or DDP under ``torchrun`` with the same command."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from discopose._errors import ConfigError, DatasetError, DiscoposeError
from discopose._hardware import describe_cpu, has_native_bf16
from discopose.config import check_range
from discopose.datasets.format import FORMAT_VERSION, decode_labels
from discopose.datasets.reader import DatasetInfo, check_shards, iter_raw_samples, open_dataset
from discopose.camera import CameraModel
from discopose.datasets.loader import check_compatible, make_loader
from discopose.models.backbones import BACKBONES, preprocessing
from discopose.models.checkpoint import assemble_estimator, load_checkpoint, load_train_state, save_checkpoint
from discopose.models.evaluate import chance_levels, compute_metrics, format_head_errors, head_errors, predict_dataset
from discopose.models.losses import dense_loss, pose_loss
from discopose.geometry.rotations_torch import symmetric_geodesic_angle
from discopose.decoding import ROTATION_HEADS, STAGES, PoseNetSpec, reported_rotation
from discopose.models.pose_net import PoseNet

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Defaults are a recipe that trains in minutes on a 2-core CPU; scale epochs/batch on a GPU."""

    backbone: str = "mobilenet_v2"
    pretrained: str = "imagenet"
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    num_workers: int = 2
    shuffle_buffer: int = 500
    augment: float = 1.0
    # auto: "crop" for datasets rendered with camera.aim=object, else "locator" (see models/pose_net.py).
    stage: str = "auto"
    # Square input size; 0 = the dataset's image size.
    input_px: int = 0
    hidden: int = 256
    # auto = on for CUDA. On CPU, bf16 autocast gained nothing on the full step even with avx512_bf16 and
    # AMX (1.03x alone, 1.20x with channels-last against its 1.31x; README), so auto leaves it off there.
    amp: str = "auto"
    # auto = on: NHWC convolutions are faster on CUDA and on CPU (1.31x on AMX, 1.33x on AVX2; README).
    channels_last: str = "auto"
    # auto: Patch-PnP for the crop stage, 6D for the locator (decoding.PoseNetSpec).
    rotation_head: str = "auto"
    # Crop stage: the dense head's cell size in input pixels (8: 12x12 cells on a 96 px crop; 4: 24x24).
    dense_stride: int = 8
    seed: int = 0
    val_limit: int = 0           # 0 = the whole validation set
    # Also validate every this many steps within an epoch (0: at epoch ends only): the curve of error against
    # images seen (val_curve.jsonl) that says whether a longer run would still pay.
    val_every_steps: int = 0
    # Passes over the data that make one epoch (one validation, one checkpoint, one loader start each): more for a
    # small set, whose per-epoch costs would otherwise outweigh its few steps. The schedule is by steps either way.
    passes_per_epoch: int = 1

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
        if self.pretrained not in ("imagenet", "none"):
            raise ConfigError(f"pretrained={self.pretrained!r}; use imagenet or none")
        if self.stage not in ("auto", *STAGES):
            raise ConfigError(f"stage={self.stage!r}; use auto, locator or crop")
        if self.rotation_head not in ("auto", *ROTATION_HEADS):
            raise ConfigError(f"rotation_head={self.rotation_head!r}; use auto, {', '.join(ROTATION_HEADS)}")
        check_range("input_px", self.input_px, 0, 4096)
        if self.dense_stride not in (4, 8, 16):
            raise ConfigError(f"dense_stride={self.dense_stride}; use 4, 8 or 16 (the backbone's feature strides)")
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ConfigError(f"{name}={getattr(self, name)!r}; use auto, on or off")
        check_range("epochs", self.epochs, 1)
        check_range("val_every_steps", self.val_every_steps, 0)
        check_range("passes_per_epoch", self.passes_per_epoch, 1, 1000)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 1e-8, 1.0)
        check_range("num_workers", self.num_workers, 0, 64)
        check_range("augment", self.augment, 0.0, 2.0)

    @property
    def channels_last_enabled(self) -> bool:
        return self.channels_last in ("on", "auto")


def label_statistics(info: DatasetInfo, limit: int = 500) -> dict:
    """From the first ``limit`` samples' labels (no image decoding): camera-object distances (metres)
    and the mean object position in the camera and world frames (the mean-pose baseline)."""
    distances, in_camera, in_world = [], [], []
    for count, raw in enumerate(iter_raw_samples(info)):
        if count >= limit:
            break
        labels = decode_labels(raw)
        in_world.append(np.asarray(labels["world_from_object"])[:3, 3])
        for view in labels["cameras"].values():
            in_camera.append(np.asarray(view["camera_from_object"])[:3, 3])
            distances.append(np.linalg.norm(in_camera[-1]))
    return {"distance_m": np.array(distances), "camera_position_m_mean": np.mean(in_camera, 0),
            "world_position_m_mean": np.mean(in_world, 0)}


def network_spec(info: DatasetInfo, config: "TrainConfig") -> PoseNetSpec:
    """The network a dataset calls for: its stage, input camera and depth normalization."""
    render = info.manifest["config"]["camera"]
    stage = config.stage if config.stage != "auto" else ("crop" if render.get("aim") == "object" else "locator")
    nominal = CameraModel.from_dict(info.manifest["cameras"][0])
    size = config.input_px or min(nominal.width_px, nominal.height_px)
    diameter = float(info.manifest["object"]["diameter_m"])
    if stage == "crop":
        return PoseNetSpec(backbone=config.backbone, stage="crop", input_size_px=(size, size),
                           object_diameter_m=diameter, fill_frac=float(render.get("object_fill_frac", 0.75)),
                           hidden=config.hidden, dense=True, dense_stride=config.dense_stride,
                           **preprocessing(config.backbone))
    # The locator's camera: the dataset's first nominal camera, resampled to the input size.
    camera = nominal.scaled_to(round(nominal.width_px * size / min(nominal.width_px, nominal.height_px)),
                               round(nominal.height_px * size / min(nominal.width_px, nominal.height_px)))
    # Depth normalization: z_ref = the median training distance, so log(z / z_ref) is centred on 0.
    fill = camera.K[0, 0] * diameter / (size * float(np.median(label_statistics(info)["distance_m"])))
    return PoseNetSpec(backbone=config.backbone, stage="locator", input_size_px=(camera.height_px, camera.width_px),
                       camera_K=camera.K.tolist(), object_diameter_m=diameter, fill_frac=fill, hidden=config.hidden,
                       dense=False, **preprocessing(config.backbone))


def check_dense_targets(info: DatasetInfo, spec: PoseNetSpec, data: str) -> None:
    """Refuse crop training data the dense head cannot learn from: without depth and mask, or at another
    size than the network's input (crops are then remapped and their cells unknown), the head would
    stay untrained and PnP would run on its noise at inference."""
    if spec.stage != "crop" or not spec.dense:
        return
    keys = info.manifest.get("keys", {})
    camera = info.manifest["config"]["camera"]
    size = (int(camera["height_px"]), int(camera["width_px"]))
    fix = (f"render it with --set camera.aim=object --set output.depth=true --set camera.width_px={spec.input_size_px[1]} "
           f"--set camera.height_px={spec.input_size_px[0]}")
    if camera.get("aim") != "object":
        raise DatasetError(f"{data}: the crop stage learns from rendered zoom-in crops, this dataset has full frames; {fix}")
    if not keys.get("depth") or not keys.get("mask"):
        raise DatasetError(f"{data} has no depth/mask, which the crop network's dense head learns from; {fix}")
    if size != tuple(spec.input_size_px):
        raise DatasetError(f"{data} holds {size[1]}x{size[0]} crops but the network's input is "
                           f"{spec.input_size_px[1]}x{spec.input_size_px[0]}: its dense head would learn nothing; "
                           f"{fix} (or train with --set input_px={size[0]})")


def classified_rotations(object_description: dict) -> np.ndarray:
    """The geometry's symmetry rotations when the markings break them (object symmetry ``none``), else
    an empty array: then plain symmetry-aware regression is all there is to learn."""
    from discopose.geometry.symmetry import Symmetry
    shape = Symmetry.from_dict(object_description.get("shape_symmetry") or object_description["symmetry"])
    own = Symmetry.from_dict(object_description["symmetry"])
    if own.kind != "none" or shape.kind in ("none", "axis"):
        return np.zeros((0, 3, 3))
    return shape.matrices()


def rotation_head_for(config: TrainConfig, spec: PoseNetSpec) -> str:
    """The rotation head a network learns: ``config.rotation_head``, where ``auto`` is Patch-PnP for a crop
    network (its dense maps carry the markings; the 6D head on global features sat at chance up to the
    cube's symmetry, README) and 6D for the locator, whose rotation is a coarse guess."""
    if config.rotation_head == "patch_pnp" and not spec.dense:
        raise ConfigError("rotation_head=patch_pnp reads the dense head's maps, which only the crop stage has; "
                          "use rotation_head=6d (or auto) for the locator")
    if config.rotation_head != "auto":
        return config.rotation_head
    return "patch_pnp" if spec.dense else "6d"


def resumed_rotation_head(last: Path, config: TrainConfig, head: str) -> str:
    """The rotation head of the run ``--resume`` continues (its ``last/`` checkpoint; checkpoints without the
    field are 6D): a crop run started before Patch-PnP became ``auto`` keeps its 6D head. ``head`` (what this
    configuration would build) when there is no checkpoint to read; another head asked for explicitly is
    refused, with what to do."""
    from discopose.models.checkpoint import read_meta
    if not (last / "meta.json").is_file():
        return head
    saved = PoseNetSpec(**read_meta(last)["spec"]).rotation_head
    if config.rotation_head not in ("auto", saved):
        raise ConfigError(f"--resume: {last.parent} was started with rotation_head={saved}; resume it with "
                          f"rotation_head={saved} (or auto), or train rotation_head={config.rotation_head} in a new "
                          "run (another --out, without --resume)")
    return saved


def reported_rotation_errors(prediction: dict, target: dict, spec: PoseNetSpec, symmetries: torch.Tensor,
                             count: int = 8) -> torch.Tensor:
    """Rotation error (radians, symmetry-aware) of the rotation the estimator reports (see
    :func:`reported_rotation`) for the first ``count`` samples of a batch (RANSAC PnP on all 32 would
    cost ~15% of a CPU step), for the rotation uncertainty head to learn."""
    count = min(count, len(target["K"]))
    mask_logits = prediction["mask_logits"][:count].detach().float().cpu().numpy()
    coordinates = prediction["coordinates"][:count].detach().float().cpu().numpy()
    regressed = prediction["rotation"][:count].detach().float().cpu().numpy().astype(float)
    rotations = [reported_rotation(regressed[i], mask_logits[i], coordinates[i], K, spec)[0]
                 for i, K in enumerate(target["K"][:count].numpy().astype(float))]
    reported = torch.tensor(np.stack(rotations), dtype=torch.float32, device=symmetries.device)
    return symmetric_geodesic_angle(reported, target["rotation"][:count].to(symmetries.device), symmetries)[0]


def _regressed_error_deg(prediction: dict, target: dict, group: torch.Tensor) -> float:
    """Median error (degrees) of the regressed rotation head alone on a batch, up to ``group``."""
    regressed = prediction["rotation"].detach().float().cpu()
    angle, _ = symmetric_geodesic_angle(regressed, target["rotation"].float(), group.cpu())
    return math.degrees(float(angle.median()))


def _flat_scalars(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat_scalars(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", None if value is None else float(value)


def _ddp() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local_rank


def _validation_score(summary: dict, stage: str) -> float:
    """Lower is better. Crop: median ADD(-S) relative to the diameter, the standard single-number pose
    quality, of the pose the estimator will report. Locator: its median position error alone, because
    the locator's job is to find the object for the crop, and its near-chance rotation would dominate
    ADD and pick an epoch by noise."""
    if stage == "locator":
        return summary["te_mm"]["median"] if "te_mm" in summary else math.inf
    return summary.get("reported", summary).get("add_s_rel_diameter_median", math.inf)


def learning_rate_schedule(optimizer, max_lr: float, total_steps: int, step: int):
    """One-cycle schedule over ``total_steps``, advanced to ``step``: a resumed run (even one given more
    epochs than it started with) follows exactly the schedule a fresh run of its length would."""
    import warnings
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps + 1,
                                                    pct_start=0.15)
    with warnings.catch_warnings():  # stepping without an optimizer step is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(step, total_steps)):
            scheduler.step()
    return scheduler


def training_spec(info: DatasetInfo, config: TrainConfig) -> tuple[PoseNetSpec, np.ndarray]:
    """The network ``config`` trains on ``info``, and the rotations its classification head tells apart
    (:func:`classified_rotations`)."""
    shape_rotations = classified_rotations(info.manifest["object"])
    spec = network_spec(info, config)
    spec.shape_rotations = shape_rotations.tolist()
    spec.rotation_head = rotation_head_for(config, spec)
    return spec, shape_rotations


def _training_network(spec: PoseNetSpec, config: TrainConfig, pretrained: str, device: torch.device) -> PoseNet:
    model = PoseNet(spec, pretrained=pretrained).to(device)
    if config.channels_last_enabled:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


def _symmetry_tensors(info: DatasetInfo, shape_rotations: np.ndarray,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The object's symmetry rotations and the classified ones (None when there are none), as the losses take them."""
    symmetries = torch.tensor(info.symmetry.matrices(), dtype=torch.float32, device=device)
    shape_group = torch.tensor(shape_rotations, dtype=torch.float32, device=device) if len(shape_rotations) else None
    return symmetries, shape_group


def _optimization_step(net, optimizer, scaler, images, target: dict, spec: PoseNetSpec, symmetries: torch.Tensor,
                       shape_group: torch.Tensor | None, use_amp: bool) -> tuple[torch.Tensor, dict, float]:
    """One step of the loop: forward, every head's loss, backward, update. Returns the loss, its parts and the
    regressed rotation's error up to the shape on this batch (degrees)."""
    device = symmetries.device
    images = images.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16,
                        enabled=use_amp):
        prediction = net(images)
    prediction = {k: v.float() for k, v in prediction.items()}
    reported = reported_rotation_errors(prediction, target, spec, symmetries) if spec.dense else None
    regressed_shape_deg = _regressed_error_deg(prediction, target, shape_group if shape_group is not None else symmetries)
    loss, parts = pose_loss(prediction, target["position_uvz"].to(device), target["rotation"].to(device),
                            symmetries, shape_group, reported_rotation_error=reported)
    if "dense_mask" in target:
        dense, dense_parts = dense_loss(prediction, target["dense_mask"].to(device),
                                        target["dense_coordinates"].to(device), symmetries)
        loss = loss + dense
        parts.update(dense_parts)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, parts, regressed_shape_deg


def measure_training_rate(data: str, config: TrainConfig, windows: int = 3, steps: int = 8, warmup: int = 3) -> float:
    """Training images per second of ``config``'s loop on ``data`` on this machine (CPU): real steps (loader,
    augmentation, forward, losses, backward, update) on a throwaway copy of the network, timed in ``windows`` runs
    of ``steps`` after ``warmup`` untimed ones; the fastest window counts (other work on the machine only ever slows
    a window down). What sizes a time-budgeted run (``discopose demo``) before its schedule is fixed."""
    torch.manual_seed(config.seed)
    cpu = torch.device("cpu")
    info = open_dataset(data)
    spec, shape_rotations = training_spec(info, config)
    model = _training_network(spec, config, config.pretrained, cpu)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cpu", enabled=config.amp == "on")
    symmetries, shape_group = _symmetry_tensors(info, shape_rotations, cpu)
    loader = make_loader(info, spec, config.batch_size, train=True, num_workers=config.num_workers,
                         shuffle_buffer=config.shuffle_buffer, augment_strength=config.augment, seed=config.seed)
    rates, images_in_window, window_start = [], 0, None
    for index, (images, target) in enumerate(loader):
        if index >= warmup and (index - warmup) % steps == 0:
            if window_start is not None:
                rates.append(images_in_window / (time.perf_counter() - window_start))
            if len(rates) == windows:
                break
            images_in_window, window_start = 0, time.perf_counter()
        _optimization_step(model, optimizer, scaler, images, target, spec, symmetries, shape_group,
                           config.amp == "on")
        images_in_window += len(images)
    else:  # the data ran out first (a tiny set): its last, partial window still times the loop
        if window_start is not None and images_in_window:
            rates.append(images_in_window / (time.perf_counter() - window_start))
    if not rates:
        raise DatasetError(f"{data}: too few samples to time {warmup + steps} training steps of {config.batch_size}")
    return max(rates)


def _validate(model, val_info, train_info, meta: dict, points: np.ndarray, config: TrainConfig, device, writer,
              step: int, world: int, when: str, stage: str, out_dir: Path) -> dict:
    """Validate ``model``: log every head's error (and TensorBoard's val/ scalars at ``step``), append the row to
    ``val_curve.jsonl`` (error against images seen), and return the metrics summary."""
    predictions = predict_dataset(model, val_info, batch_size=config.batch_size, limit=config.val_limit or None,
                                  device=str(device))
    symmetries = train_info.symmetry.matrices()
    _, summary = compute_metrics(predictions, meta, points, symmetries)
    for key in ("te_mm", "re_deg", "add_mm"):
        writer.add_scalar(f"val/{key}_median", summary[key]["median"], step)
    shape = f" ({summary['re_shape_deg']['median']:.1f} deg up to the shape's symmetry)" \
        if "re_shape_deg" in summary else ""
    log.info("%s (%s): val median %.1f mm, %.1f deg%s, ADD(-S) %.3f d", when, stage, summary["te_mm"]["median"],
             summary["re_deg"]["median"], shape, summary["add_s_rel_diameter_median"])
    chance = chance_levels(predictions, meta, points, symmetries, meta["train_camera_position_m_mean"])
    summary["heads"] = head_errors(predictions, meta, chance)
    log.info("%s (%s): val heads: %s", when, stage, format_head_errors(summary["heads"]))
    for name, value in _flat_scalars(summary["heads"]):
        if value is not None:
            writer.add_scalar(f"val_heads/{name}", value, step)
    if "dense_rotation" in predictions:
        _, dense = compute_metrics({**predictions, "rotation": predictions["dense_rotation"],
                                    "position_m": predictions["dense_position_m"]}, meta, points, symmetries)
        summary["reported"] = {k: dense[k] for k in ("te_mm", "re_deg", "success", "add_s_rel_diameter_median")}
        log.info("%s (%s): val median as reported (with PnP) %.1f mm, %.1f deg, %.0f%% within 30 deg", when, stage,
                 dense["te_mm"]["median"], dense["re_deg"]["median"], 100 * dense["success"]["re<30deg"])
    row = {"step": step, "images_seen": step * config.batch_size * world, "te_mm_median": summary["te_mm"]["median"],
           "re_deg_median": summary["re_deg"]["median"],
           "reported_re_deg_median": summary.get("reported", {}).get("re_deg", {}).get("median"),
           "heads": dict(_flat_scalars(summary["heads"]))}
    with open(out_dir / "val_curve.jsonl", "a") as curve:  # append-only: a resumed run continues the curve
        curve.write(json.dumps(row) + "\n")
    return summary


def train(data: str, out: str, val: str | None = None, config: TrainConfig | None = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train a pose network on ``data`` (shards from ``discopose render``); checkpoints in ``out``.

    Returns the final metadata (including validation metrics when ``val`` is given).
    """
    config = config or TrainConfig()
    world, rank, local_rank = _ddp()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    use_amp = config.amp == "on" or (config.amp == "auto" and device.type == "cuda")
    channels_last = config.channels_last_enabled
    if device.type == "cpu" and use_amp and not has_native_bf16():
        log.warning("amp=on: this CPU has neither avx512_bf16 nor AMX, so bf16 is emulated and slower than fp32")
    log.info("training on %s: channels-last %s, %s autocast %s (%s)", device, "on" if channels_last else "off",
             "bf16" if device.type == "cpu" else "fp16", "on" if use_amp else "off", describe_cpu())
    torch.manual_seed(config.seed)
    out_dir = Path(out)
    train_info = open_dataset(data)
    val_info = open_dataset(val) if val else None
    # A missing/truncated shard is found now, not an epoch in; the (small) validation set is hashed
    # whole. Training shards are verified as they stream.
    check_shards(train_info)
    if val_info is not None:
        check_shards(val_info, verify_hashes=True)

    spec, shape_rotations = training_spec(train_info, config)
    check_dense_targets(train_info, spec, data)
    if resume:
        spec.rotation_head = resumed_rotation_head(out_dir / "last", config, spec.rotation_head)
    meta = {
        "dataset_format_version": FORMAT_VERSION, "cameras": train_info.manifest["cameras"],
        "object": train_info.manifest["object"], "train_config": asdict(config), "train_data": str(data),
        # The world the network learned: tools render test clips in it (PoseEstimator.train_render_config).
        "train_render_config": train_info.manifest["config"], "pretrained": config.pretrained,
    }
    # The mean-pose baseline is judged against what training saw, not the test set.
    stats = label_statistics(train_info)
    meta.update(train_camera_position_m_mean=stats["camera_position_m_mean"].tolist(),
                train_world_position_m_mean=stats["world_position_m_mean"].tolist())
    if val_info is not None:
        check_compatible(val_info, meta)

    model = _training_network(spec, config, config.pretrained if not resume else "none", device)
    views = train_info.num_samples * len(train_info.camera_names)
    steps_per_epoch = max(1, config.passes_per_epoch * views // (config.batch_size * world))
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    start_epoch, best_score, step = 0, math.inf, 0
    if resume:
        last = out_dir / "last"
        if not (last / "train_state.pt").is_file():
            raise DiscoposeError(f"--resume: {last} has no train_state.pt; start without --resume")
        loaded, _ = load_checkpoint(last)
        try:
            model.load_state_dict(loaded.state_dict())
        except RuntimeError as exc:  # another network than this configuration builds (size, stride, backbone)
            detail = [line.strip() for line in str(exc).splitlines() if line.strip()][-1][:200]
            raise DiscoposeError(f"--resume: {last} holds another network than this configuration builds "
                                 f"({detail}); resume with the settings the run started with, or start a new run "
                                 "without --resume") from None
        state = load_train_state(last)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_score, step = int(state["epoch"]) + 1, float(state["best_score"]), int(state["step"])
        log.info("resumed from %s at epoch %d", last, start_epoch)
    scheduler = learning_rate_schedule(optimizer, config.lr, total_steps, step)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    symmetries, shape_group = _symmetry_tensors(train_info, shape_rotations, device)

    writer = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"))
    points = np.asarray(train_info.manifest["object"]["surface_points_m"])
    summary: dict = {}
    for epoch in range(start_epoch, config.epochs):
        net.train()
        loader = make_loader(train_info, spec, config.batch_size, train=True, num_workers=config.num_workers,
                             shuffle_buffer=config.shuffle_buffer, augment_strength=config.augment,
                             seed=config.seed + epoch)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress or rank != 0)
        started, images_seen = time.perf_counter(), 0
        for batch_index, (images, target) in enumerate(loader):
            if batch_index >= steps_per_epoch:
                break
            loss, parts, regressed_shape_deg = _optimization_step(net, optimizer, scaler, images, target, spec,
                                                                  symmetries, shape_group, use_amp)
            if step < total_steps:
                scheduler.step()
            step += 1
            images_seen += len(images) * world
            rate = images_seen / (time.perf_counter() - started)
            # Every head's own error on its training batch: a head that learns nothing shows here first.
            bar.set_postfix(loss=f"{loss.item():.3f}", rot_deg=f"{math.degrees(parts['rotation_rad']):.1f}",
                            reg_shape_deg=f"{regressed_shape_deg:.1f}",
                            **({"cls": f"{parts['class_accuracy']:.2f}"} if "class_accuracy" in parts else {}),
                            **({"xyz": f"{parts['coordinates']:.3f}"} if "coordinates" in parts else {}),
                            img_s=f"{rate:.0f}")
            bar.update(1)
            if writer is not None and step % 10 == 0:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/rotation_deg", math.degrees(parts["rotation_rad"]), step)
                writer.add_scalar("train/regressed_rotation_shape_deg", regressed_shape_deg, step)
                for name in ("position", "rotation", "nll_position", "nll_rotation", "classification",
                             "class_accuracy", "mask", "coordinates"):
                    if name in parts:
                        writer.add_scalar(f"train/{name}", float(parts[name]), step)
                writer.add_scalar("train/images_per_s", rate, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            if (rank == 0 and val_info is not None and config.val_every_steps and step % config.val_every_steps == 0
                    and batch_index < steps_per_epoch - 1):  # the epoch's end validates anyway
                _validate(model, val_info, train_info, meta, points, config, device, writer, step, world,
                          f"epoch {epoch + 1} step {step}", spec.stage, out_dir)
                net.train()
        bar.close()
        if rank != 0:
            continue
        if val_info is not None:
            summary = _validate(model, val_info, train_info, meta, points, config, device, writer, step, world,
                                f"epoch {epoch + 1}", spec.stage, out_dir)
        score = _validation_score(summary, spec.stage) if summary else -epoch  # no val: the latest is the best
        epoch_meta = {**meta, "epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0],
                      "val_metrics": summary}
        if score < best_score:
            best_score = score
            save_checkpoint(out_dir / "best", model, epoch_meta)
        save_checkpoint(out_dir / "last", model, epoch_meta,
                        train_state={"optimizer": optimizer.state_dict(), "epoch": epoch, "best_score": best_score,
                                     "step": step})
    if writer is not None:
        writer.close()
        if (out_dir / "val_curve.jsonl").is_file():
            from discopose.models.report import plot_val_curve
            plot_val_curve(out_dir / "val_curve.jsonl", out_dir / "val_curve.png")
    if world > 1:
        torch.distributed.barrier()
    from discopose.models.checkpoint import read_meta
    return read_meta(out_dir / "best") if (out_dir / "best").exists() else meta


def train_estimator(frames: str, crops: str, out: str, frames_val: str | None = None, crops_val: str | None = None,
                    locator_config: TrainConfig | None = None, crop_config: TrainConfig | None = None,
                    resume: bool = False, progress: bool = True) -> dict:
    """Train both stages of an estimator: the locator on full frames (``out/locator``), the crop
    network on zoom-in crops (``out/crop``), then assemble ``out/best`` for :func:`discopose.load`."""
    out_dir = Path(out)
    # Resuming continues each stage from its last checkpoint; a stage that never started starts now.
    started = {stage: (out_dir / stage / "last" / "train_state.pt").is_file() for stage in STAGES}
    if resume and not any(started.values()):
        raise DiscoposeError(f"--resume: {out_dir} holds no started training; start without --resume")
    locator_meta = train(frames, str(out_dir / "locator"), val=frames_val, resume=resume and started["locator"],
                         progress=progress, config=locator_config or TrainConfig(stage="locator"))
    crop_meta = train(crops, str(out_dir / "crop"), val=crops_val, resume=resume and started["crop"],
                      progress=progress, config=crop_config or TrainConfig(stage="crop"))
    assemble_estimator(out_dir / "best", out_dir / "locator" / "best", out_dir / "crop" / "best")
    return {"locator": locator_meta, "crop": crop_meta}
