"""ONNX export (``discopose export``) for CPU inference with onnxruntime."""
from __future__ import annotations

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


def output_names(spec) -> tuple[str, ...]:
    return OUTPUTS + (DENSE_OUTPUTS if spec.dense else ())


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
    torch.onnx.export(_TupleOutputs(model).eval(), (example,), str(tmp), input_names=["images"],
                      output_names=list(output_names(spec)), opset_version=opset, dynamo=True, external_data=False,
                      dynamic_shapes={"images": {0: batch}})
    tmp.replace(out)
    diff = onnx_parity(model, out, example.numpy())
    if diff > PARITY_ATOL:
        out.unlink()
        raise DiscoposeError(f"ONNX export of {checkpoint} disagrees with torch by {diff:.1e} (> {PARITY_ATOL:.0e}); "
                             "not written. Try another --opset or report the torch/onnx versions")
    log.info("exported %s (max |onnx - torch| = %.2e, parity checked)", out, diff)
    return out


def onnx_parity(model, onnx_path: str | Path, images: np.ndarray) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on ``images``."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.astype(np.float32)})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(images.astype(np.float32)))
    # The rotation's class is an argmax: compare its continuous parts, from which it is decided.
    names = [k for k in output_names(model.spec) if k != "rotation"]
    onnx_by_name = dict(zip(output_names(model.spec), onnx_out))
    return max(float(np.abs(onnx_by_name[k] - torch_out[k].numpy()).max()) for k in names)
