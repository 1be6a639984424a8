"""Ablations of the default recipe (`discopose demo`), each run on the same budget, in one script.

    python benchmarks/accuracy.py [--scale 1.0] [--runs A,B,C,D] [--seed 0] [--out bench_accuracy]

Runs (the demo's data sizes and epochs times --scale):
  A. two-stage (locator + zoom-in crops, dense head), ImageNet init, full randomization: the recipe
  B. as A, scratch init                                  (what ImageNet initialization buys)
  C. as A, little randomization                          (what domain randomization buys)
  D. one full-frame network, no zoom-in, the same number of training views as A's two stages
     together (the previous design: global pooling + keypoints + rotation head on the whole frame)
  H. as A, with the hand in the training images (the hand, limbs and table at their default rates)
     (what the hand randomization buys)
Each is scored on the in-family test set, on a held-out appearance family that shares no texture
kind with training (value noise, white point lights), and on hand-occluded images (a hand in every
frame; scored on those whose visible fraction is 0.5-0.9); A also on a 3-camera rig, fused vs one camera.
Chance levels (the mean training position, a fixed rotation) are printed beside the results.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from discopose.datasets.generate import generate_dataset
from discopose.demo import FULL, HELD_OUT_LOOKS, NO_HAND, TRAIN_LOOKS
from discopose.evaluation import evaluate_checkpoint
from discopose.models.train import TrainConfig, train, train_estimator
from discopose.render.config import RenderConfig

LITTLE = ["textures.kinds=[solid]", "lighting.count=[1, 1]", "lighting.types=[directional]",
          "lighting.color_saturation_max=0", "clutter.distractor_count=[0, 0]", "clutter.occluder_prob=0",
          "clutter.room_prob=0", "noise.gaussian_sigma=[0, 0]", "noise.blur_prob=0", "camera.position_jitter_m=0",
          "camera.rotation_jitter_deg=0", "camera.focal_jitter_frac=0", "camera.principal_point_jitter_px=0"]


# Run A is the hand-free world (the demo's before the hand became its default), H the demo's world.
NO_HAND_LOOKS = TRAIN_LOOKS + NO_HAND
WITH_HAND = TRAIN_LOOKS
HAND_OCCLUDED = (0.5, 0.9)  # visible fraction of the hand-occluded test images that are scored


def size(px):
    return [f"camera.width_px={px}", f"camera.height_px={px}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the demo's data sizes by this")
    parser.add_argument("--runs", default="A,B,C,D")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_accuracy")
    args = parser.parse_args()
    plan = replace(FULL, frames=int(FULL.frames * args.scale), crops=int(FULL.crops * args.scale), seed=args.seed)
    root = Path(args.out)
    crop = ["camera.aim=object", "output.depth=true"] + size(plan.crop_px)
    base = args.seed * 100
    sets = {
        "frames_full": (plan.frames, size(plan.frame_px) + NO_HAND_LOOKS, base),
        "crops_full": (plan.crops, crop + NO_HAND_LOOKS, base + 1),
        "frames_little": (plan.frames, size(plan.frame_px) + LITTLE, base),
        "crops_little": (plan.crops, crop + LITTLE, base + 1),
        "test_in_family": (plan.test, size(plan.test_px) + NO_HAND_LOOKS, base + 2),
        "test_held_out": (plan.test, size(plan.test_px) + HELD_OUT_LOOKS + NO_HAND, base + 3),
        "test_rig3": (plan.test, size(plan.test_px) + NO_HAND_LOOKS + ["camera.count=3"], base + 4),
        "frames_hand": (plan.frames, size(plan.frame_px) + WITH_HAND, base),
        "crops_hand": (plan.crops, crop + WITH_HAND, base + 1),
        "test_hand": (plan.test, size(plan.test_px) + WITH_HAND + ["hand.prob=1"], base + 5),
    }
    wanted = set(args.runs.split(","))
    needed = {"frames_full", "crops_full", "test_in_family", "test_held_out", "test_hand"}
    if "A" in wanted:
        needed.add("test_rig3")
    if "C" in wanted:
        needed |= {"frames_little", "crops_little"}
    if "H" in wanted:
        needed |= {"frames_hand", "crops_hand"}
    started = time.perf_counter()
    for name, (count, overrides, seed) in sets.items():
        if name in needed:
            generate_dataset(str(root / name), count, RenderConfig.load(overrides=overrides + [f"seed={seed}"]),
                             progress=False)
    render_min = (time.perf_counter() - started) / 60

    def config(stage, epochs, **extra):
        return TrainConfig(stage=stage, epochs=epochs, batch_size=plan.batch_size, seed=plan.seed, **extra)

    rows = []
    for key in args.runs.split(","):
        t0 = time.perf_counter()
        run = root / f"run_{key}"
        if key == "D":
            # The two stages' training views together, spent on one full-frame network.
            views = plan.frames * plan.locator_epochs + plan.crops * plan.crop_epochs
            train(str(root / "frames_full"), str(run), config=config("locator", max(1, round(views / plan.frames))),
                  progress=False)
            model, label = run / "best", "one full-frame network, no zoom-in"
        else:
            randomization = {"C": "little", "H": "hand"}.get(key, "full")
            extra = {"pretrained": "none"} if key == "B" else {}
            train_estimator(str(root / f"frames_{randomization}"), str(root / f"crops_{randomization}"), str(run),
                            locator_config=config("locator", plan.locator_epochs, **extra),
                            crop_config=config("crop", plan.crop_epochs, **extra), progress=False)
            model = run / "best"
            label = {"A": "two-stage, ImageNet, full DR", "B": "two-stage, scratch, full DR",
                     "C": "two-stage, ImageNet, little DR", "H": "two-stage, ImageNet, full DR + hand"}[key]
        minutes = (time.perf_counter() - t0) / 60
        tests = ["test_in_family", "test_held_out"] + (["test_rig3"] if key == "A" else [])
        for test in tests:
            for fuse in ([True, False] if test == "test_rig3" else [True]):
                result = evaluate_checkpoint(str(model), str(root / test), str(run / f"eval_{test}_{fuse}"), fuse=fuse)
                s = result["summary"]
                rows.append({"run": key, "model": label, "test": test + ("" if fuse else " (first camera alone)"),
                             "te_mm": s["te_mm"]["median"], "re_deg": s["re_deg"]["median"],
                             "re_within_30deg": s["success"]["re<30deg"], "chance": result["baseline"],
                             "train_min": minutes})
        occluded = evaluate_checkpoint(str(model), str(root / "test_hand"), str(run / "eval_test_hand"),
                                       visible_range=HAND_OCCLUDED)
        s = occluded["summary"]
        rows.append({"run": key, "model": label,
                     "test": f"hand-occluded (visible {HAND_OCCLUDED[0]}-{HAND_OCCLUDED[1]}, {occluded['count']} images)",
                     "te_mm": s["te_mm"]["median"], "re_deg": s["re_deg"]["median"],
                     "re_within_30deg": s["success"]["re<30deg"], "chance": occluded["baseline"],
                     "train_min": minutes})
    print(f"# ablations: seed {plan.seed}, {plan.frames} locator frames x {plan.locator_epochs} epochs, "
          f"{plan.crops} crops x {plan.crop_epochs} epochs (rendering took {render_min:.1f} min)\n")
    print("| run | model | test set | median mm | median deg | within 30 deg | chance mm / deg | train min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['model']} | {r['test']} | {r['te_mm']:.1f} | {r['re_deg']:.1f} | "
              f"{100 * r['re_within_30deg']:.0f}% | {r['chance']['te_mm_median']:.1f} / {r['chance']['re_deg_median']:.1f} | "
              f"{r['train_min']:.1f} |")
    (root / "accuracy.json").write_text(json.dumps({"plan": asdict(plan), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
