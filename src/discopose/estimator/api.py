"""Two lines to a pose::

    est = discopose.load("runs/cube/best")
    pose = est.predict(image)            # one camera: an HxWx3 RGB uint8 array
    pose = est.predict({"left": a, "right": b})   # several cameras, by name

Preprocessing (resize, normalization, camera order) comes from the checkpoint, never the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose.geometry.transforms import make_transform, quat_wxyz_from_matrix


@dataclass
class Pose:
    """An estimated object pose with its uncertainty.

    ``frame`` names the frame the pose is expressed in: ``camera:<name>`` (OpenCV axes) or ``world``.
    ``position_sigma_m`` is the 1-sigma standard deviation per axis; ``rotation_sigma_deg`` the
    1-sigma of the isotropic rotation error (per axis of the rotation vector).
    """

    position_m: np.ndarray
    rotation: np.ndarray
    position_sigma_m: np.ndarray
    rotation_sigma_deg: float
    frame: str
    extra: dict = field(default_factory=dict)

    @property
    def quat_wxyz(self) -> np.ndarray:
        return quat_wxyz_from_matrix(self.rotation)

    @property
    def frame_from_object(self) -> np.ndarray:
        return make_transform(self.rotation, self.position_m)


class PoseEstimator:
    """A trained pose network with its preprocessing; backend ``torch`` or ``onnx`` (onnxruntime)."""

    def __init__(self, path: str | Path, backend: str = "torch", device: str | None = None):
        from discopose.models.checkpoint import read_meta
        self.path = Path(path)
        self.meta = read_meta(self.path)
        spec = self.meta["spec"]
        self.camera_names: list[str] = list(spec["camera_names"])
        self.input_size_px = tuple(spec["input_size_px"])  # (height, width)
        self.frame = "world" if spec["pose_frame"] == "world" else f"camera:{self.camera_names[0]}"
        self.backend = backend
        if backend == "torch":
            import torch
            from discopose.models.checkpoint import load_checkpoint
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, _ = load_checkpoint(self.path, self.device)
        elif backend == "onnx":
            onnx_path = self.path / "model.onnx"
            if not onnx_path.is_file():
                raise DiscoposeError(f"{onnx_path} does not exist; create it with `discopose export --model {path}`")
            import onnxruntime as ort
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else \
                ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        else:
            raise DiscoposeError(f"backend={backend!r}; use torch or onnx")

    def preprocess(self, images) -> np.ndarray:
        """Images -> (B, C, 3, H, W) float32 in [0, 1]. Accepts one HxWx3 array (one camera), a dict
        {camera name: image} or a list of such dicts/arrays for a batch."""
        batch = images if isinstance(images, list) else [images]
        out = np.empty((len(batch), len(self.camera_names), 3, *self.input_size_px), np.float32)
        height, width = self.input_size_px
        for b, item in enumerate(batch):
            if isinstance(item, np.ndarray):
                if len(self.camera_names) != 1:
                    raise DiscoposeError(f"this model needs {len(self.camera_names)} cameras {self.camera_names}; "
                                         "pass a dict {camera name: image}")
                item = {self.camera_names[0]: item}
            missing = [name for name in self.camera_names if name not in item]
            if missing:
                raise DiscoposeError(f"images for cameras {missing} are missing; the model needs {self.camera_names}")
            for c, name in enumerate(self.camera_names):
                image = np.asarray(item[name])
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise DiscoposeError(f"camera {name!r}: expected an HxWx3 RGB uint8 image, got "
                                         f"{image.dtype} {image.shape}")
                if image.shape[:2] != (height, width):
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                out[b, c] = image.transpose(2, 0, 1) / np.float32(255)
        return out

    def infer(self, batch: np.ndarray) -> dict:
        """Raw network outputs for a preprocessed batch, as numpy arrays."""
        if self.backend == "onnx":
            names = [o.name for o in self.session.get_outputs()]
            return dict(zip(names, self.session.run(None, {"images": batch})))
        import torch
        with torch.no_grad():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def predict(self, images) -> Pose | list[Pose]:
        """Pose of the object; a list when ``images`` is a list (a batch)."""
        out = self.infer(self.preprocess(images))
        poses = [Pose(position_m=out["position_m"][i], rotation=out["rotation"][i],
                      position_sigma_m=np.exp(0.5 * out["position_log_var"][i]),
                      rotation_sigma_deg=float(np.degrees(np.exp(0.5 * out["rotation_log_var"][i]))),
                      frame=self.frame) for i in range(len(out["position_m"]))]
        return poses if isinstance(images, list) else poses[0]


def load(path: str | Path, backend: str = "torch", device: str | None = None) -> PoseEstimator:
    """Load a trained estimator from a checkpoint folder (e.g. ``runs/cube/best``)."""
    return PoseEstimator(path, backend=backend, device=device)
