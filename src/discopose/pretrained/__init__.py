"""Estimators shipped inside the package, loadable by name: ``discopose.load("cube")``.

A shipped estimator is an ordinary estimator folder (``estimator.json`` + ``locator/`` + ``crop/``) with fp16
weights (half the size; the networks compute in fp32 after loading) and a ``model_card`` in its
``estimator.json``: the command, seed and code version that trained it and the figures it measured.
``pack_estimator`` makes one from a demo run; ``scripts/train_shipped_model.sh`` is the one command that
trains and packs the shipped cube.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from discopose._errors import DiscoposeError

SHIPPED_DIR = Path(__file__).parent
# Two fp16 networks, their fp16 ONNX graphs and the model card. 26, not the earlier 25: the Patch-PnP head and the
# BatchNorm layers the ONNX graphs now keep unfused (for exact fp16 parity) put a two-stage mobilenet_v2 at 25.1 MB.
MAX_SHIPPED_MB = 26.0


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "estimator.json").is_file())


def resolve_model(model: str | Path) -> Path:
    """An estimator folder for ``model``: an existing path as given, else the shipped estimator of that name."""
    from discopose.models.checkpoint import recover_folder
    path = Path(model)
    recover_folder(path)  # a crash between a swap's two renames leaves the folder set aside: put it back
    if path.exists():
        return path
    if isinstance(model, str) and "/" not in model and (SHIPPED_DIR / model / "estimator.json").is_file():
        return SHIPPED_DIR / model
    shipped = shipped_names()
    raise DiscoposeError(f"model {str(model)!r} is neither an estimator folder nor a shipped model; give a run's "
                         f"best/ folder" + (f" or one of: {', '.join(shipped)}" if shipped else
                                            " (this install ships no model: train one with `discopose demo`)"))


def is_shipped(path: str | Path) -> bool:
    return Path(path).resolve().parent == SHIPPED_DIR.resolve()


def model_card(model: str | Path) -> dict | None:
    """The ``model_card`` of an estimator's ``estimator.json`` (None for estimators without one)."""
    index = resolve_model(model) / "estimator.json"
    return json.loads(index.read_text()).get("model_card") if index.is_file() else None


def _halve_weights(stage: Path) -> None:
    """Rewrite a stage's weights in fp16 and its meta's checksum to match."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    weights = load_file(str(stage / "model.safetensors"))
    halved = {name: (array.astype(np.float16) if array.dtype == np.float32 else array)
              for name, array in weights.items()}
    save_file(halved, str(stage / "model.safetensors"))
    (stage / "model.safetensors").chmod(0o644)
    meta = json.loads((stage / "meta.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((stage / "model.safetensors").read_bytes()).hexdigest()
    meta["weights_dtype"] = "float16"
    (stage / "meta.json").write_text(json.dumps(meta, indent=1))


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2 ** 20


def pack_estimator(estimator: str | Path, out: str | Path, card: dict, onnx: bool = True) -> Path:
    """Copy an estimator folder to ``out`` with fp16 weights and ``card`` in its ``estimator.json``; with
    ``onnx``, also each stage's ``model.onnx`` (fp16 weights, parity-checked), so that ``backend="onnx"``
    runs the shipped model without torch.

    Refuses (nothing written) when the result exceeds ``MAX_SHIPPED_MB``; ``out`` is replaced atomically."""
    from discopose.models.checkpoint import read_estimator_index, swap_folder
    estimator, out = Path(estimator), Path(out)
    index = read_estimator_index(estimator)
    if index is None:
        raise DiscoposeError(f"{estimator} has no estimator.json; pack a two-stage estimator folder (a run's best/)")
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir(parents=True)
        for stage in index["stages"]:
            shutil.copytree(estimator / stage, tmp / stage,
                            ignore=shutil.ignore_patterns("train_state.pt", "model.onnx", "*.tmp"))
            _halve_weights(tmp / stage)
        if index.get("object_mesh"):
            shutil.copy2(estimator / index["object_mesh"], tmp / index["object_mesh"])
        index["model_card"] = card
        (tmp / "estimator.json").write_text(json.dumps(index, indent=1))
        if onnx:
            # What `discopose export` writes, checked again in fp16: the graph must compute what the fp16 torch
            # network computes, or the two backends would state different confidences and validity.
            from discopose.models.export import check_onnx_parity, export_estimator, halve_onnx_weights
            for graph in export_estimator(tmp):
                check_onnx_parity(graph.parent, halve_onnx_weights(graph))
        size = folder_mb(tmp)
        if size > MAX_SHIPPED_MB:
            raise DiscoposeError(f"the packed estimator is {size:.1f} MB, over the {MAX_SHIPPED_MB:.0f} MB a shipped "
                                 "model may take; use a smaller backbone")
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
