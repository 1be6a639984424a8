"""Training throughput: the data loader alone vs the full training step, images/s, and the step's variants.

    python benchmarks/train_throughput.py [--data DATA] [--backbones mobilenet_v2,resnet18] [--steps 20]
                                          [--variants fp32,channels_last,bf16,compile]

Renders a small crop dataset (camera.aim=object, with depth for the dense head) if none is given. The
baseline, in the same process, is the fp32 training step on tensors already in memory: the loader is a
bottleneck when its rate is below the step's; each variant (channels-last memory format, bf16 autocast,
``torch.compile``) is reported as a ratio to that baseline. bf16 pays on CPUs with avx512_bf16 or AMX
(the flags are printed); elsewhere oneDNN emulates it.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from discopose._hardware import describe_cpu
from discopose.datasets.generate import generate_dataset
from discopose.datasets.loader import make_loader
from discopose.datasets.reader import open_dataset
from discopose.models.losses import dense_loss, pose_loss
from discopose.models.pose_net import PoseNet, PoseNetSpec
from discopose.render.config import RenderConfig


def loader_rate(info, spec, batch_size, workers, batches):
    loader = make_loader(info, spec, batch_size, train=True, num_workers=workers, shuffle_buffer=100)
    count, start = 0, None
    for i, (images, _) in enumerate(loader):
        if i == 1:
            start, count = time.perf_counter(), 0  # exclude worker start-up
        count += len(images)
        if i >= batches:
            break
    return count / (time.perf_counter() - start)


def step_rate(spec, batch_size, steps, device, variant: str = "fp32"):
    """Images/s of the full training step (forward, losses, backward, AdamW) for one variant (its knobs
    joined by '+', e.g. ``channels_last+bf16``)."""
    knobs = set(variant.split("+"))
    model = PoseNet(spec, pretrained="none").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images = torch.rand(batch_size, 3, *spec.input_size_px, device=device)
    if "channels_last" in knobs:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if "compile" in knobs else model
    uvz = torch.zeros(batch_size, 3, device=device)
    rotation = torch.eye(3, device=device).expand(batch_size, 3, 3)
    symmetries = torch.eye(3, device=device)[None]
    grid = (-(-spec.input_size_px[0] // spec.dense_stride), -(-spec.input_size_px[1] // spec.dense_stride))
    mask = torch.ones(batch_size, *grid, device=device)
    coordinates = torch.zeros(batch_size, 3, *grid, device=device)
    warmup = 3  # compile traces and autotunes in the first steps
    for i in range(steps + warmup):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in knobs):
            out = forward(images)
        out = {k: v.float() for k, v in out.items()}
        loss, _ = pose_loss(out, uvz, rotation, symmetries)
        if spec.dense:
            loss = loss + dense_loss(out, mask, coordinates, symmetries)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--backbones", default="mobilenet_v2,resnet18")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variants", default="fp32,channels_last,bf16,channels_last+bf16,compile",
                        help="comma-separated: fp32 (the baseline), channels_last, bf16, compile, or knobs joined by +")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tmp = None
    if not args.data:
        tmp = tempfile.TemporaryDirectory()
        args.data = tmp.name
        generate_dataset(args.data, 400, RenderConfig.load(overrides=[f"camera.width_px={args.size}",
                                                                      f"camera.height_px={args.size}",
                                                                      "camera.aim=object", "output.depth=true",
                                                                      "output.samples_per_shard=100"]), progress=False)
    info = open_dataset(args.data)
    size = (info.manifest["cameras"][0]["height_px"], info.manifest["cameras"][0]["width_px"])
    print(f"# training throughput on {device} ({os.cpu_count()} CPU cores; {describe_cpu()}), torch {torch.__version__}, "
          f"images {size[1]}x{size[0]}, batch {args.batch_size}\n")
    print("| what | images/s | vs fp32 step |")
    print("|---|---|---|")
    spec = PoseNetSpec(input_size_px=size)
    for workers in sorted({0, min(2, os.cpu_count() or 1), os.cpu_count() or 1}):
        rate = loader_rate(info, spec, args.batch_size, workers, batches=8)
        print(f"| loader alone, {workers} workers (decode + augment) | {rate:.0f} | |", flush=True)
    variants = ["fp32"] + [v for v in args.variants.split(",") if v != "fp32"]
    for backbone in args.backbones.split(","):
        spec = PoseNetSpec(backbone=backbone, input_size_px=size)
        baseline = None
        for variant in variants:
            try:
                rate = step_rate(spec, args.batch_size, args.steps, device, variant)
            except Exception as error:  # a variant this machine cannot run (e.g. no compiler for compile)
                print(f"| train step {backbone} {variant} | failed: {type(error).__name__}: "
                      f"{str(error).splitlines()[0][:80]} | |", flush=True)
                continue
            baseline = baseline or rate
            print(f"| train step {backbone} {variant} (tensors in memory) | {rate:.0f} | {rate / baseline:.2f}x |",
                  flush=True)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
