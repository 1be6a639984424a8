"""Rotation-head ablation: the demo's crop stage trained once per variant, every head judged alone.

    python benchmarks/rotation_heads.py [--crops DIR --val DIR] [--num 12000] [--epochs 5]
                                        [--variants 6d,patch_pnp,patch_pnp+stride4] [--out runs/rotation_heads]

Renders the default demo's crops (the hand world, 96 px, seed 2; validation seed 3) unless given. Each variant
trains the crop network with the demo's recipe (batch 32, one-cycle, augmentation, ImageNet init, seed 0) for
the same number of crop views; its wall time is printed beside it, so "equal budget" can be read both ways.
Each head is scored on the validation crops and on the first 300 training crops (a head that does not beat
chance on its own training data is dead, not undertrained): position, the regressed rotation, the dense
head's PnP rotation and the reported one (full, and up to the cube's symmetry), the markings' class, the
dense mask and surface points. Variants: a rotation head (``6d``, ``patch_pnp``), optionally ``+stride4``
(the dense head at stride 4: 24x24 cells on a 96 px crop).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from discopose._hardware import describe_cpu


def render_crops(root: Path, count: int, val: int) -> tuple[str, str]:
    from discopose.datasets.generate import generate_dataset
    from discopose.demo import TRAIN_LOOKS
    from discopose.render.config import RenderConfig
    crop = ["camera.aim=object", "output.depth=true", "camera.width_px=96", "camera.height_px=96", *TRAIN_LOOKS]
    for name, num, seed in (("crops", count, 2), ("crops_val", val, 3)):
        if not (root / name / "manifest.json").is_file():
            generate_dataset(str(root / name), num, RenderConfig.load(overrides=crop + [f"seed={seed}"]))
    return str(root / "crops"), str(root / "crops_val")


KNOBS = ("stride4",)


def parse_variants(parser: argparse.ArgumentParser, args) -> dict[str, tuple[str, list[str]]]:
    """``{variant: (rotation head, knobs)}`` from ``--variants``, with every argument checked before the first
    training starts (``parser.error`` exits with the usage line), not after hours of it."""
    from discopose.decoding import ROTATION_HEADS
    if bool(args.crops) != bool(args.val):
        parser.error("--crops and --val go together (the validation crops of the same world), or neither: "
                     "both are then rendered")
    variants = {}
    for variant in args.variants.split(","):
        head, *knobs = variant.split("+")
        if head not in ROTATION_HEADS:
            parser.error(f"variant {variant!r}: rotation head {head!r} is unknown; use one of "
                         f"{', '.join(ROTATION_HEADS)}")
        unknown = [knob for knob in knobs if knob not in KNOBS]
        if unknown:
            parser.error(f"variant {variant!r}: unknown knob(s) {', '.join('+' + k for k in unknown)}; "
                         f"known: {', '.join('+' + k for k in KNOBS)}")
        variants[variant] = (head, knobs)
    return variants


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops")
    parser.add_argument("--val")
    parser.add_argument("--num", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default="6d,patch_pnp,patch_pnp+stride4")
    parser.add_argument("--out", default="runs/rotation_heads")
    args = parser.parse_args(argv)
    variants = parse_variants(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from discopose.datasets.reader import open_dataset
    from discopose.models.checkpoint import load_checkpoint
    from discopose.models.evaluate import chance_levels, format_head_errors, head_errors, predict_dataset
    from discopose.models.train import TrainConfig, train
    out = Path(args.out)
    crops, val = (args.crops, args.val) if args.crops else render_crops(out / "data", args.num, 300)
    print(f"# rotation heads: crop stage, {os.cpu_count()} CPU cores ({describe_cpu()}), torch {torch.__version__}")
    results = {}
    for variant, (head, knobs) in variants.items():
        config = TrainConfig(stage="crop", epochs=args.epochs, seed=0, rotation_head=head,
                             dense_stride=4 if "stride4" in knobs else 8)
        started = time.perf_counter()
        train(crops, str(out / variant), val=val, config=config, progress=False)
        minutes = (time.perf_counter() - started) / 60
        model, meta = load_checkpoint(out / variant / "last")
        row = {"minutes": minutes}
        for name, path in (("train", crops), ("val", val)):
            info = open_dataset(path)
            predictions = predict_dataset(model, info, limit=300)
            chance = chance_levels(predictions, meta, np.asarray(meta["object"]["surface_points_m"]),
                                   info.symmetry.matrices(), meta["train_camera_position_m_mean"])
            row[name] = head_errors(predictions, meta, chance)
            print(f"{variant} ({minutes:.1f} min) on {name} crops: {format_head_errors(row[name])}", flush=True)
        results[variant] = row
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
