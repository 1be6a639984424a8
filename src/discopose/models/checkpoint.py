"""Checkpoints: ``model.safetensors`` (weights only, no pickle) + ``meta.json`` (everything else);
estimators: ``estimator.json`` + one checkpoint per stage.

A checkpoint folder is written under a temp name and renamed into place, so a crash never leaves a
half-written ``best/`` or ``last/``. Optimizer state for ``--resume`` lives in ``train_state.pt``, read
back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from discopose._version import __version__
from discopose._errors import DiscoposeError
from discopose.decoding import PoseNetSpec

if TYPE_CHECKING:
    from discopose.models.pose_net import PoseNet
# torch is imported where weights are read or written: reading indexes and metadata (the ONNX Runtime
# backend) needs neither torch nor the network classes.

CHECKPOINT_FORMAT = "discopose-checkpoint"
CHECKPOINT_VERSION = 1
# An estimator folder: estimator.json plus one checkpoint folder per stage (locator/, crop/), and for a user's
# mesh the mesh itself (the refinement aligns it to the image; the built-in cube is rebuilt from its bounds).
ESTIMATOR_FORMAT = "discopose-estimator"
ESTIMATOR_VERSION = 1
OBJECT_MESH_FILE = "object_mesh.npz"


def save_checkpoint(folder: str | Path, model: PoseNet, meta: dict, train_state: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        full_meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "discopose_version": __version__,
                     "spec": asdict(model.spec), **meta,
                     "weights_sha256": hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()}
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=1))
        if train_state is not None:
            import torch
            torch.save(train_state, tmp / "train_state.pt")
        swap_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def swap_folder(new: Path, folder: Path) -> None:
    """Put the complete folder ``new`` in place of ``folder``. POSIX has no atomic swap of non-empty
    folders, so the old one is first renamed aside; if a crash falls between the two renames,
    :func:`recover_folder` (run by every reader) puts the old one back."""
    recover_folder(folder)
    old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(folder: Path) -> None:
    """After a crash between :func:`swap_folder`'s renames: restore the set-aside previous version."""
    folder = Path(folder)
    if folder.exists():
        return
    aside = sorted(folder.parent.glob(f".{folder.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if aside:
        aside[-1].rename(folder)


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    recover_folder(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
        raise DiscoposeError(f"{folder} is not a discopose checkpoint (needs meta.json and model.safetensors); "
                             "point to a run's best/ or last/ folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DiscoposeError(f"{meta_path} is truncated or corrupt; use another checkpoint (e.g. last/) or "
                             "retrain") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DiscoposeError(f"{meta_path} is not a discopose checkpoint")
    if meta.get("version", 0) > CHECKPOINT_VERSION:
        raise DiscoposeError(f"{folder} was written by a newer discopose (checkpoint v{meta['version']}); upgrade")
    return meta


def read_estimator_index(folder: str | Path) -> dict | None:
    """An estimator folder's ``estimator.json``, checked; None when ``folder`` has none (a single checkpoint)."""
    index = Path(folder) / "estimator.json"
    if not index.is_file():
        return None
    try:
        meta = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DiscoposeError(f"{index} is truncated or corrupt; use another copy of the estimator or "
                             "retrain") from None
    if not isinstance(meta, dict) or meta.get("format") != ESTIMATOR_FORMAT:
        raise DiscoposeError(f"{index} is not a discopose estimator index")
    if meta.get("version", 0) > ESTIMATOR_VERSION:
        raise DiscoposeError(f"{folder} was written by a newer discopose; upgrade")
    return meta


def load_checkpoint(folder: str | Path, device: str = "cpu") -> tuple[PoseNet, dict]:
    """Rebuild the network from ``meta.json`` and load its weights; returns (model in eval mode, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    meta = read_meta(folder)
    weights = Path(folder) / "model.safetensors"
    data = weights.read_bytes()
    if meta.get("weights_sha256") and hashlib.sha256(data).hexdigest() != meta["weights_sha256"]:
        raise DiscoposeError(f"{weights} does not match the sha256 in meta.json (corrupt or truncated); use "
                             "another checkpoint (e.g. last/) or retrain")
    from discopose.models.pose_net import PoseNet
    model = PoseNet(PoseNetSpec(**meta["spec"]), pretrained="none")
    try:
        model.load_state_dict(load(data), strict=True)
    except (SafetensorError, RuntimeError) as exc:  # not safetensors at all, or another network's weights
        raise DiscoposeError(f"{weights} is not the weights of the network meta.json describes "
                             f"({str(exc).splitlines()[0]}); use another checkpoint (e.g. last/) or retrain") from None
    return model.to(device).eval(), meta


def load_train_state(folder: str | Path) -> dict:
    import torch
    return torch.load(Path(folder) / "train_state.pt", map_location="cpu", weights_only=True)


def _write_object_mesh(folder: Path, locator_meta: dict) -> bool:
    """The trained object's mesh (metres) into ``folder`` when it is a user's mesh; False for the built-in cube.
    Read from the file the training data was rendered from, which must still be that mesh (its sha256)."""
    import numpy as np
    from discopose.render.objects import load_mesh_object
    config = (locator_meta.get("train_render_config") or {}).get("object") or {}
    if not config.get("mesh"):
        return False
    path, expected = config["mesh"], locator_meta["object"].get("source_sha256")
    if not Path(path).is_file():
        raise DiscoposeError(f"the estimator's mesh {path} is gone; put the mesh the training data was rendered "
                             "from back there to assemble the estimator (the refinement aligns it)")
    obj = load_mesh_object(path, config.get("mesh_scale_to_m", 1.0))
    if expected and obj.source_sha256 != expected:
        raise DiscoposeError(f"{path} has changed since the training data was rendered from it (sha256); restore "
                             "that mesh to assemble the estimator")
    with open(folder / OBJECT_MESH_FILE, "wb") as handle:
        np.savez(handle, vertices_m=obj.positions.astype(np.float32), faces=obj.indices.astype(np.int32))
    return True


def read_object_mesh(folder: str | Path, index: dict | None):
    """``(vertices_m, faces)`` of the user's mesh an estimator folder carries, or None (the built-in cube,
    single checkpoints, estimators assembled before meshes travelled with them)."""
    import numpy as np
    if not index or not index.get("object_mesh"):
        return None
    path = Path(folder) / index["object_mesh"]
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["vertices_m"], float), np.asarray(data["faces"], np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DiscoposeError(f"{path} is missing or corrupt ({type(exc).__name__}); copy the whole estimator "
                             "folder, or load it with refine=False") from None


def assemble_estimator(folder: str | Path, locator: str | Path, crop: str | Path | None) -> Path:
    """An estimator folder: ``estimator.json`` + copies of the stage checkpoints, swapped in atomically."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        shutil.copytree(locator, tmp / "locator", ignore=shutil.ignore_patterns("train_state.pt"))
        if crop is not None:
            shutil.copytree(crop, tmp / "crop", ignore=shutil.ignore_patterns("train_state.pt"))
        meta = read_meta(tmp / "locator")
        index = {"format": ESTIMATOR_FORMAT, "version": ESTIMATOR_VERSION, "object": meta["object"],
                 "cameras": meta["cameras"], "stages": ["locator"] + (["crop"] if crop is not None else [])}
        if _write_object_mesh(tmp, meta):
            index["object_mesh"] = OBJECT_MESH_FILE
        (tmp / "estimator.json").write_text(json.dumps(index, indent=1))
        swap_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
