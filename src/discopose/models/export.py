"""ONNX export (``discopose export``) for CPU inference with onnxruntime."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from discopose.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)
OUTPUTS = ("position_m", "rotation", "position_log_var", "rotation_log_var")
# Measured in tests/test_models.py: onnxruntime agrees with torch to this tolerance on float32.
PARITY_ATOL = 1e-4


class _TupleOutputs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        return tuple(out[k] for k in OUTPUTS)


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = 18) -> Path:
    """Write ``model.onnx`` (dynamic batch) into the checkpoint folder (or ``out``) and check parity."""
    model, meta = load_checkpoint(checkpoint)
    spec = model.spec
    out = Path(out) if out else Path(checkpoint) / "model.onnx"
    example = torch.rand(2, len(spec.camera_names), 3, *spec.input_size_px)
    tmp = out.with_name(f".{out.name}.tmp")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(_TupleOutputs(model).eval(), (example,), str(tmp), input_names=["images"],
                      output_names=list(OUTPUTS), opset_version=opset, dynamo=True, external_data=False,
                      dynamic_shapes={"images": {0: batch}})
    tmp.replace(out)
    diff = onnx_parity(model, out, example.numpy())
    log.info("exported %s (max |onnx - torch| = %.2e)", out, diff)
    return out


def onnx_parity(model, onnx_path: str | Path, images: np.ndarray) -> float:
    """Largest absolute difference between torch and onnxruntime outputs on ``images``."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.astype(np.float32)})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(images.astype(np.float32)))
    return max(float(np.abs(o - torch_out[k].numpy()).max()) for k, o in zip(OUTPUTS, onnx_out))
