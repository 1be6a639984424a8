"""ONNX export (``discopose export``) for CPU inference with onnxruntime."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from discopose._errors import DiscoposeError
from discopose.models.checkpoint import load_checkpoint, read_estimator_index

log = logging.getLogger(__name__)
OUTPUTS = ("position_uvz", "rotation", "position_log_var", "rotation_log_var")
DENSE_OUTPUTS = ("mask_logits", "coordinates")
# Measured in tests/test_models.py: onnxruntime agrees with torch to this tolerance on float32.
PARITY_ATOL = 1e-4
# Rotations from the same outputs differ by float noise only; arccos near 1 amplifies it to ~1e-3 deg.
PARITY_ROTATION_DEG = 0.05


def output_names(spec) -> tuple[str, ...]:
    # The markings' class probability is a trust signal: without it in the graph, the ONNX backend's
    # validity would differ from the torch backend's.
    classes = ("symmetry_logits",) if spec.shape_rotations else ()
    return OUTPUTS + classes + (DENSE_OUTPUTS if spec.dense else ())


@contextlib.contextmanager
def _batch_norm_kept():
    """Leave BatchNorm unfused in the exported graph. ONNX Runtime fuses it into the convolutions itself when
    it loads the graph (the same nodes and speed), but from the stored weights: so when those are stored in
    fp16 (:func:`halve_onnx_weights`, from an fp16 checkpoint) they are exactly the torch model's, and the
    backends agree to float noise. Fused at export, the fp16 rounding of the fused weights moved the outputs
    by ~1e-3 and the crop aim, RANSAC and the confidence with them (0.14 on a frame of the shipped cube)."""
    try:
        from onnxscript import rewriter
        rules = rewriter._DEFAULT_REWRITE_RULES
    except (ImportError, AttributeError):  # another onnxscript: fused (the parity check after halving says so)
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in rules
                                            if "BatchNorm" not in (getattr(rule, "name", "") or ""))
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


class _TupleOutputs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.names = output_names(model.spec)

    def forward(self, images):
        out = self.model(images)
        return tuple(out[k] for k in self.names)


def export_estimator(folder: str | Path) -> list[Path]:
    """``model.onnx`` for every network of an estimator folder (locator/, crop/) or one checkpoint."""
    folder = Path(folder)
    read_estimator_index(folder)  # a corrupt index would make the exported estimator unloadable: refuse now
    stages = [folder / name for name in ("locator", "crop") if (folder / name / "meta.json").is_file()]
    return [export_onnx(stage) for stage in stages or [folder]]


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = 18) -> Path:
    """Write ``model.onnx`` (dynamic batch) into the checkpoint folder (or ``out``) and check parity."""
    model, meta = load_checkpoint(checkpoint)
    spec = model.spec
    out = Path(out) if out else Path(checkpoint) / "model.onnx"
    example = torch.rand(2, 3, *spec.input_size_px)
    tmp = out.with_name(f".{out.name}.tmp")
    batch = torch.export.Dim("batch", min=1, max=1024)
    with _batch_norm_kept():
        torch.onnx.export(_TupleOutputs(model).eval(), (example,), str(tmp), input_names=["images"],
                          output_names=list(output_names(spec)), opset_version=opset, dynamo=True,
                          external_data=False, dynamic_shapes={"images": {0: batch}})
    tmp.replace(out)
    check_onnx_parity(checkpoint, out, model, example.numpy())
    record_onnx_hash(out)
    return out


def check_onnx_parity(checkpoint: str | Path, onnx_path: str | Path, model=None, images: np.ndarray | None = None
                      ) -> None:
    """Refuse (delete) ``onnx_path`` unless it agrees with the checkpoint's torch network on ``images``
    (random ones by default) within ``PARITY_ATOL`` and ``PARITY_ROTATION_DEG``."""
    model = model if model is not None else load_checkpoint(checkpoint)[0]
    if images is None:
        images = np.random.default_rng(0).random((2, 3, *model.spec.input_size_px), dtype=np.float32)
    diff, rotation_deg = onnx_parity(model, onnx_path, images)
    if diff > PARITY_ATOL or rotation_deg > PARITY_ROTATION_DEG:
        Path(onnx_path).unlink()
        raise DiscoposeError(f"ONNX export of {checkpoint} disagrees with torch by {diff:.1e} (> {PARITY_ATOL:.0e}) "
                             f"in its outputs or {rotation_deg:.2g} deg (> {PARITY_ROTATION_DEG}) in rotation; not "
                             "written. Try another --opset or report the torch/onnx versions")
    log.info("%s: max |onnx - torch| = %.2e, rotation %.1e deg: parity checked", onnx_path, diff, rotation_deg)


def record_onnx_hash(onnx_path: Path) -> None:
    """Put the graph's sha256 in its checkpoint's meta.json, so that the ONNX Runtime backend refuses a
    corrupted file as the torch backend refuses corrupted weights."""
    import hashlib
    import json

    from discopose._io import atomic_write_json
    meta_path = Path(onnx_path).parent / "meta.json"
    if Path(onnx_path).name != "model.onnx" or not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    meta["onnx_sha256"] = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    atomic_write_json(meta_path, meta)


def onnx_parity(model, onnx_path: str | Path, images: np.ndarray) -> tuple[float, float]:
    """(largest absolute difference between torch and onnxruntime outputs other than the rotation,
    largest angle in degrees between their rotations) on ``images``."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.astype(np.float32)})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(images.astype(np.float32)))
    onnx_by_name = dict(zip(output_names(model.spec), onnx_out))
    # The rotation is compared as an angle: it includes the class of the markings (an argmax), which a
    # wrong export flips by 90 degrees while every continuous output still agrees.
    names = [k for k in output_names(model.spec) if k != "rotation"]
    diff = max(float(np.abs(onnx_by_name[k] - torch_out[k].numpy()).max()) for k in names)
    relative = np.einsum("bji,bjk->bik", onnx_by_name["rotation"].astype(np.float64),
                         torch_out["rotation"].numpy().astype(np.float64))
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    return diff, float(np.degrees(np.arccos(cos)).max())


def halve_onnx_weights(onnx_path: str | Path) -> Path:
    """Store an exported network's float32 weights as float16 (half the file; for shipped models), each
    followed by a Cast back to float32: onnxruntime folds the casts at load and computes in float32 as
    before, so only the weights' rounding changes the outputs, and not at all for a network exported from
    fp16 weights (BatchNorm is left unfused for that: :func:`_batch_norm_kept`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    graph = model.graph
    kept, casts = [], []
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT or np.prod(initializer.dims) < 16:
            kept.append(initializer)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(initializer).astype(np.float16), initializer.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=TensorProto.FLOAT,
                                      name=initializer.name + "_to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(onnx_path)
    record_onnx_hash(onnx_path)
    return onnx_path
