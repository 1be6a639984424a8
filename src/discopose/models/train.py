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

from discopose._errors import ConfigError, DiscoposeError
from discopose.config import check_range
from discopose.datasets.format import FORMAT_VERSION
from discopose.datasets.reader import DatasetInfo, iter_raw_samples, open_dataset
from discopose.datasets.loader import check_compatible, make_loader, pose_target
from discopose.models.backbones import BACKBONES, preprocessing
from discopose.models.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from discopose.models.evaluate import compute_metrics, predict_dataset
from discopose.models.losses import pose_loss
from discopose.models.pose_net import PoseNet, PoseNetSpec

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
    # auto: the first camera's frame for one camera (BOP-style), the world frame for several.
    pose_frame: str = "auto"
    hidden: int = 512
    amp: str = "auto"            # auto = on for CUDA
    channels_last: str = "auto"  # auto = on for CUDA
    seed: int = 0
    val_limit: int = 0           # 0 = the whole validation set

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
        if self.pretrained not in ("imagenet", "none"):
            raise ConfigError(f"pretrained={self.pretrained!r}; use imagenet or none")
        if self.pose_frame not in ("auto", "camera", "world"):
            raise ConfigError(f"pose_frame={self.pose_frame!r}; use auto, camera or world")
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ConfigError(f"{name}={getattr(self, name)!r}; use auto, on or off")
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 1e-8, 1.0)
        check_range("num_workers", self.num_workers, 0, 64)
        check_range("augment", self.augment, 0.0, 2.0)


def position_stats(info: DatasetInfo, pose_frame: str, camera_names: list[str], limit: int = 500):
    """Mean and scale of target positions from the first ``limit`` samples' labels (no image decoding)."""
    positions = []
    for raw in iter_raw_samples(info):
        positions.append(pose_target(json.loads(raw["json"]), pose_frame, camera_names)[:3, 3])
        if len(positions) >= limit:
            break
    positions = np.array(positions)
    return positions.mean(0), max(float(positions.std(0).mean()), 0.005), positions


def classified_rotations(object_description: dict) -> np.ndarray:
    """The geometry's symmetry rotations when the markings break them (object symmetry ``none``), else
    an empty array: then plain symmetry-aware regression is all there is to learn."""
    from discopose.geometry.symmetry import Symmetry
    shape = Symmetry.from_dict(object_description.get("shape_symmetry") or object_description["symmetry"])
    own = Symmetry.from_dict(object_description["symmetry"])
    if own.kind != "none" or shape.kind in ("none", "axis"):
        return np.zeros((0, 3, 3))
    return shape.matrices()


def _ddp() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local_rank


def _validation_score(summary: dict) -> float:
    # Lower is better: median ADD(-S) relative to the diameter, the standard single-number pose quality.
    return summary.get("add_s_rel_diameter_median", math.inf)


def train(data: str, out: str, val: str | None = None, config: TrainConfig | None = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train a pose network on ``data`` (shards from ``discopose render``); checkpoints in ``out``.

    Returns the final metadata (including validation metrics when ``val`` is given).
    """
    config = config or TrainConfig()
    world, rank, local_rank = _ddp()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    use_amp = config.amp == "on" or (config.amp == "auto" and device.type == "cuda")
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    torch.manual_seed(config.seed)
    out_dir = Path(out)
    train_info = open_dataset(data)
    val_info = open_dataset(val) if val else None

    pose_frame = config.pose_frame
    if pose_frame == "auto":
        pose_frame = "camera" if len(train_info.camera_names) == 1 else "world"
    center, scale, _ = position_stats(train_info, pose_frame, train_info.camera_names)
    shape_rotations = classified_rotations(train_info.manifest["object"])
    sample_camera = train_info.manifest["cameras"][0]
    spec = PoseNetSpec(backbone=config.backbone, camera_names=train_info.camera_names,
                       input_size_px=(sample_camera["height_px"], sample_camera["width_px"]),
                       pose_frame=pose_frame, position_center_m=center.tolist(), position_scale_m=scale,
                       hidden=config.hidden, shape_rotations=shape_rotations.tolist(),
                       **preprocessing(config.backbone))
    meta = {
        "dataset_format_version": FORMAT_VERSION, "camera_names": spec.camera_names,
        "cameras": train_info.manifest["cameras"], "object": train_info.manifest["object"],
        "pose_frame": pose_frame, "train_config": asdict(config), "train_data": str(data),
        "pretrained": config.pretrained,
    }
    if val_info is not None:
        check_compatible(val_info, meta)

    model = PoseNet(spec, pretrained=config.pretrained if not resume else "none").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    steps_per_epoch = max(1, train_info.num_samples // (config.batch_size * world))
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps + 1,
                                                    pct_start=0.15)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    start_epoch, best_score, step = 0, math.inf, 0
    if resume:
        last = out_dir / "last"
        if not (last / "train_state.pt").is_file():
            raise DiscoposeError(f"--resume: {last} has no train_state.pt; start without --resume")
        loaded, _ = load_checkpoint(last)
        model.load_state_dict(loaded.state_dict())
        state = load_train_state(last)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # Resuming with more epochs than the run started with stretches the one-cycle schedule to the new end.
        scheduler.total_steps = total_steps + 1
        start_epoch, best_score, step = int(state["epoch"]) + 1, float(state["best_score"]), int(state["step"])
        log.info("resumed from %s at epoch %d", last, start_epoch)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    symmetries = torch.tensor(train_info.symmetry.matrices(), dtype=torch.float32, device=device)
    shape_group = torch.tensor(shape_rotations, dtype=torch.float32, device=device) if len(shape_rotations) else None

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
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16,
                                enabled=use_amp):
                prediction = net(images)
            prediction = {k: v.float() for k, v in prediction.items()}
            loss, parts = pose_loss(prediction, target["position_m"].to(device), target["rotation"].to(device),
                                    symmetries, spec.position_scale_m, shape_group)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if step < total_steps:
                scheduler.step()
            step += 1
            images_seen += len(images) * world
            rate = images_seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item():.3f}", rot_deg=f"{math.degrees(parts['rotation_rad']):.1f}",
                            img_s=f"{rate:.0f}")
            bar.update(1)
            if writer is not None and step % 10 == 0:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/rotation_deg", math.degrees(parts["rotation_rad"]), step)
                writer.add_scalar("train/position_norm", parts["position"].item(), step)
                writer.add_scalar("train/images_per_s", rate, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
        bar.close()
        if rank != 0:
            continue
        if val_info is not None:
            predictions = predict_dataset(model, val_info, batch_size=config.batch_size,
                                          limit=config.val_limit or None, device=str(device))
            _, summary = compute_metrics(predictions, meta, points, train_info.symmetry.matrices())
            for key in ("te_mm", "re_deg", "add_mm"):
                writer.add_scalar(f"val/{key}_median", summary[key]["median"], step)
            shape = f" ({summary['re_shape_deg']['median']:.1f} deg up to the shape's symmetry)" \
                if "re_shape_deg" in summary else ""
            log.info("epoch %d: val median %.1f mm, %.1f deg%s, ADD(-S) %.3f d", epoch + 1, summary["te_mm"]["median"],
                     summary["re_deg"]["median"], shape, summary["add_s_rel_diameter_median"])
        score = _validation_score(summary) if summary else -epoch  # no val: the latest is the best
        epoch_meta = {**meta, "epoch": epoch + 1, "step": step, "val_metrics": summary}
        if score < best_score:
            best_score = score
            save_checkpoint(out_dir / "best", model, epoch_meta)
        save_checkpoint(out_dir / "last", model, epoch_meta,
                        train_state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "epoch": epoch, "best_score": best_score, "step": step})
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.barrier()
    from discopose.models.checkpoint import read_meta
    return read_meta(out_dir / "best") if (out_dir / "best").exists() else meta
