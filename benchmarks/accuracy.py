"""Accuracy of the default recipe on a stated CPU budget, and the two ablations, in one run.

    python benchmarks/accuracy.py [--train 3000] [--epochs 6] [--size 128] [--out bench_accuracy]

Runs, all with the same budget (images x epochs):
  A. ImageNet init, full randomization          (the default recipe)
  B. scratch init,  full randomization          (ablation 1: what ImageNet initialization buys)
  C. ImageNet init, little randomization        (ablation 2: what domain randomization buys)
Test sets: "in-family" (the full randomizer, another seed) and "held-out" (an appearance family no
training set contains: value-noise textures only, white point lights, no clutter) - the DR claim, measured.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from discopose.datasets.generate import generate_dataset
from discopose.models.evaluate import evaluate_checkpoint
from discopose.models.train import TrainConfig, train
from discopose.render.config import RenderConfig

FULL = ["textures.kinds=[solid, gradient, stripes, checker, blend]"]
LITTLE = ["textures.kinds=[solid]", "lighting.count=[1, 1]", "lighting.types=[directional]",
          "lighting.color_saturation_max=0", "clutter.distractor_count=[0, 0]", "clutter.occluder_prob=0",
          "noise.gaussian_sigma=[0, 0]", "noise.blur_prob=0", "camera.position_jitter_m=0",
          "camera.rotation_jitter_deg=0", "camera.focal_jitter_frac=0", "camera.principal_point_jitter_px=0"]
HELD_OUT = ["textures.kinds=[noise]", "lighting.types=[point]", "lighting.color_saturation_max=0",
            "clutter.distractor_count=[0, 2]", "clutter.occluder_prob=0"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", default="bench_accuracy")
    parser.add_argument("--runs", default="A,B,C")
    args = parser.parse_args()
    root = Path(args.out)
    size = [f"camera.width_px={args.size}", f"camera.height_px={args.size}"]
    started = time.perf_counter()
    sets = {"train_full": (FULL, 0, args.train), "train_little": (LITTLE, 0, args.train),
            "val": (FULL, 1, args.test), "test_in_family": (FULL, 2, args.test), "test_held_out": (HELD_OUT, 3, args.test)}
    for name, (overrides, seed, count) in sets.items():
        generate_dataset(str(root / name), count, RenderConfig.load(overrides=size + overrides + [f"seed={seed}"]),
                         progress=False)
    render_s = time.perf_counter() - started
    runs = {"A": ("imagenet", "train_full"), "B": ("none", "train_full"), "C": ("imagenet", "train_little")}
    rows = []
    for key in args.runs.split(","):
        pretrained, data = runs[key]
        t0 = time.perf_counter()
        train(str(root / data), str(root / f"run_{key}"), val=str(root / "val"),
              config=TrainConfig(pretrained=pretrained, epochs=args.epochs), progress=False)
        minutes = (time.perf_counter() - t0) / 60
        for test in ("test_in_family", "test_held_out"):
            result = evaluate_checkpoint(str(root / f"run_{key}" / "best"), str(root / test),
                                         str(root / f"run_{key}" / f"eval_{test}"))
            s = result["summary"]
            rows.append((key, pretrained, data, test, s["te_mm"]["median"], s["re_deg"]["median"],
                         s["success"]["add(-s)<10%d"], result["baseline"], minutes))
    print(f"# accuracy: {args.train} training images x {args.epochs} epochs at {args.size}x{args.size}, "
          f"mobilenet_v2 (rendering took {render_s / 60:.1f} min)\n")
    print("| run | init | training randomization | test set | median mm | median deg | ADD(-S)<10%d | train min |")
    print("|---|---|---|---|---|---|---|---|")
    for key, pretrained, data, test, te, re_, add, baseline, minutes in rows:
        print(f"| {key} | {pretrained} | {data.split('_')[1]} | {test[5:]} | {te:.1f} | {re_:.1f} | {100 * add:.1f}% | {minutes:.1f} |")
    baseline = rows[0][7] if rows else {}
    print(f"\nmean-pose baseline on the in-family test set: {baseline.get('te_mm_median', 0):.1f} mm, "
          f"{baseline.get('re_deg_median', 0):.1f} deg")
    (root / "accuracy.json").write_text(json.dumps([dict(zip(
        ["run", "init", "train", "test", "te_mm", "re_deg", "add_s_success", "baseline", "train_min"], r)) for r in rows],
        indent=1))


if __name__ == "__main__":
    main()
