"""Lighter schedules for the joint (several-camera) alignment: accuracy and time against the default.

    python benchmarks/joint_alignment.py --data DIR [--model cube] [--limit 60] [--variants default lines60 ...]

DIR: a several-camera dataset of the model's world (the demo's ``data/test_rig3``, or ``discopose render`` with
``camera.count=3``). Each variant evaluates the estimator with the refinement on and that schedule; several cameras
are fused and aligned jointly, so the alignment's time is the joint one. Prints, per variant, the medians and p90s
of the fused pose's errors, the share of alignments applied, the alignment's median time and the whole frame's.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace

from discopose._hardware import describe_cpu
from discopose.evaluation import evaluate_checkpoint
from discopose.refine import RefineConfig

BASE = RefineConfig()
VARIANTS = {
    "default": BASE,
    "lines60": replace(BASE, lines=60),
    "no_coarsest": replace(BASE, scales_px=(4, 2, 1), iterations=(2, 2, 2), edge_search_px=(0.0, 6.0, 4.0)),
    "iters2222": replace(BASE, iterations=(2, 2, 2, 2)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a several-camera dataset of the model's world")
    parser.add_argument("--model", default="cube")
    parser.add_argument("--limit", type=int, default=60, help="scenes (default 60)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    print(f"CPU: {describe_cpu()}; {args.limit} scenes of {args.data}, model {args.model}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.variants:
            result = evaluate_checkpoint(args.model, args.data, os.path.join(scratch, name), limit=args.limit,
                                         refine=VARIANTS[name], plots=False)
            s = result["summary"]
            refine = s["refine"]
            print(f"{name:12s} {result['frame']}: position {s['te_mm']['median']:.2f} mm (p90 {s['te_mm']['p90']:.1f}), "
                  f"rotation {s['re_deg']['median']:.2f} deg (p90 {s['re_deg']['p90']:.1f}); applied "
                  f"{100 * refine['applied_frac']:.0f}%; alignment {refine['ms_median']:.1f} ms, frame "
                  f"{s['ms_per_frame']['median']:.1f} ms; networks alone {refine['network']['re_deg_median']:.2f} deg",
                  flush=True)


if __name__ == "__main__":
    main()
