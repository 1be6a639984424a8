"""int8 networks (ONNX Runtime static quantization) against the shipped float graphs: pose error and time.

    python benchmarks/int8.py --model cube --calibration DATA --data DATA [DATA ...] [--calibration-limit 64]
                              [--limit N] [--out DIR]

Each stage's float32 graph is exported from the estimator's weights and quantized (QDQ, int8 weights per output
channel, uint8 activations) with activation ranges calibrated on the inputs the networks receive while the
estimator runs on ``--calibration`` frames (rendered; never the evaluation sets). The quantized estimator is an
ordinary estimator folder (``--out``, default a temporary one). Both estimators are then evaluated through
``discopose eval`` on each ``--data`` set (the realistic proxy is what decides: issue 33 ships int8 only if its
median pose error there stays within 5%), with the refinement as calibrated and without it (the networks'
own error), and each network's call is timed on the recorded inputs (batch as the estimator runs it), the two
models alternating. Prints the CPU: int8 convolutions are fast only with VNNI (avx512_vnni / avx_vnni).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import discopose
from discopose._hardware import describe_cpu
from discopose.datasets.format import camera_from_labels
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.evaluation import evaluate_checkpoint
from discopose.models.export import export_onnx, record_onnx_hash
from discopose.pretrained import resolve_model


class Recorder:
    """Stands in for an onnxruntime session and keeps every input batch it is given."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feeds):
        self.batches.append(feeds["images"].copy())
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


class Batches:
    """onnxruntime.quantization's CalibrationDataReader over recorded batches."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch}


STAGES = ("locator", "crop")


def recorded_inputs(estimator, data: str, limit: int) -> dict[str, list[np.ndarray]]:
    """Each stage's input batches while ``estimator`` (ONNX backend) runs on ``data``'s frames."""
    recorders = {stage: Recorder(getattr(estimator, stage).session) for stage in STAGES}
    for stage, recorder in recorders.items():
        getattr(estimator, stage).session = recorder
    try:
        for sample in iter_samples(open_dataset(data), limit=limit):
            estimator.predict_views([(sample["views"][name]["rgb"], camera_from_labels(name, labels))
                                     for name, labels in sample["labels"]["cameras"].items()])
    finally:
        for stage, recorder in recorders.items():
            getattr(estimator, stage).session = recorder.session
    return {stage: recorder.batches for stage, recorder in recorders.items()}


def quantize(model: str, out: Path, calibration: str, limit: int) -> Path:
    """``out``: a copy of the estimator whose stages run int8 graphs calibrated on ``calibration``'s frames."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    shutil.copytree(resolve_model(model), out)
    for stage in STAGES:
        export_onnx(out / stage)  # float32 weights (shipped graphs store float16 ones)
    inputs = recorded_inputs(discopose.load(out, backend="onnx", refine=False), calibration, limit)
    for stage, batches in inputs.items():
        graph = out / stage / "model.onnx"
        prepared = graph.with_name("prepared.onnx")
        # Symbolic shape inference fails on the dynamo export's Expand nodes; ONNX's own shape inference suffices.
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(graph), Batches(batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        prepared.unlink()
        record_onnx_hash(graph)
        print(f"{stage}: int8 graph {graph.stat().st_size / 2 ** 20:.1f} MB from {len(batches)} batches",
              flush=True)
    return out


def network_times(models: dict[str, Path], calibration: str, limit: int, repeats: int = 3) -> dict:
    """Median ms of each stage's network call per model, on the batches the estimator gives it, alternating."""
    estimators = {name: discopose.load(path, backend="onnx", refine=False) for name, path in models.items()}
    inputs = recorded_inputs(next(iter(estimators.values())), calibration, limit)
    times = {(name, stage): [] for name in estimators for stage in STAGES}
    for repeat in range(repeats):
        for stage, batches in inputs.items():
            for i, batch in enumerate(batches):
                order = list(estimators.items())
                for name, estimator in (order if (i + repeat) % 2 == 0 else order[::-1]):
                    session = getattr(estimator, stage).session
                    began = time.perf_counter()
                    session.run(None, {"images": batch})
                    times[(name, stage)].append(1000 * (time.perf_counter() - began))
    return {key: float(np.median(value)) for key, value in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--calibration", required=True, help="rendered frames the int8 ranges are calibrated on")
    parser.add_argument("--calibration-limit", type=int, default=64)
    parser.add_argument("--data", nargs="+", required=True, help="datasets to evaluate on (the realistic proxy)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", help="where the int8 estimator goes (default: a temporary folder)")
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "int8"
        quantize(args.model, out, args.calibration, args.calibration_limit)
        models = {"float (shipped)": resolve_model(args.model), "int8": out}
        times = network_times(models, args.calibration, 16)
        print("\n| network | float ms | int8 ms | x float |\n|---|---|---|---|")
        for stage in STAGES:
            base, fast = times[("float (shipped)", stage)], times[("int8", stage)]
            print(f"| {stage} | {base:.2f} | {fast:.2f} | {base / fast:.2f} |")
        print("\n| data | refinement | float: median mm / deg | int8: median mm / deg | int8 / float |")
        print("|---|---|---|---|---|")
        for data in args.data:
            for refine in (False, None):
                medians = {}
                for name, path in models.items():
                    result = evaluate_checkpoint(str(path), data, str(Path(tmp) / "eval" / name), limit=args.limit,
                                                 refine=refine)
                    summary = result["summary"]
                    medians[name] = (summary["te_mm"]["median"], summary["re_deg"]["median"])
                (t0, r0), (t1, r1) = medians.values()
                print(f"| {Path(data).name} | {'off' if refine is False else 'as calibrated'} | {t0:.1f} / {r0:.1f} | "
                      f"{t1:.1f} / {r1:.1f} | {t1 / t0:.2f} / {r1 / r0:.2f} |", flush=True)
        print(json.dumps({"times_ms": {f"{k[0]} {k[1]}": v for k, v in times.items()}}))


if __name__ == "__main__":
    main()
