"""Two lines to a pose::

    est = discopose.load("runs/cube/best")
    pose = est.predict(image, camera="cam0.yaml")        # one camera: an HxWx3 RGB uint8 array
    pose = est.predict({"left": a, "right": b}, camera={"left": cam_l, "right": cam_r})  # world frame

Every image is first mapped onto the camera each network was trained for, with that image's own
intrinsics and distortion (:func:`discopose.camera.remap_image`): the locator sees the frame through
its model camera (and, where the object is small in the frame, again through a view zoomed onto its first
estimate), then a virtual camera is aimed at the located object and zoomed onto it, and the
crop network reads the pose there (repeated ``refine_steps`` times, each crop centred on the last
estimate). Several cameras are fused in the world frame with their calibrated extrinsics
(:func:`fuse_world_poses`); a camera that is missing is simply left out.

With ``refine`` (``discopose.load(path, refine=True)``) the networks' pose is then aligned to each camera's
full-resolution image with the object's known mesh (:mod:`discopose.refine`), several cameras jointly in the
world frame after fusion; the aligned pose replaces the networks' only where the alignment's own score says
the image supports it (``Pose.extra["refine"]`` records what happened), and that score is a trust signal.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from discopose._errors import DiscoposeError
from discopose._hardware import usable_cores
from discopose.camera import CameraModel, aimed_field_camera
from discopose.geometry.transforms import make_transform, quat_wxyz_from_matrix, rotation_angle_deg
from discopose.models.checkpoint import read_estimator_index, read_object_mesh, recover_folder
from discopose.estimator.trust import OUT_OF_VOLUME_SIGMA_GROWTH, TrustModel, out_of_volume
from discopose.refine.config import RefineConfig, RefineResult, follow_schedule
from discopose.geometry.symmetry import Symmetry, closest_equivalent
from discopose.decoding import (PoseNetSpec, decode_position, dense_consistency, network_batch, stage_camera,
                                stage_view)

log = logging.getLogger(__name__)

# A refined pose replaces the networks' only when its alignment score (the share of contour lines and crease
# samples that agree with the projection within RefineConfig.agree_px) reaches this, and beats the networks'
# own pose scored the same way (RefineConfig.keep_better_start). Swept with `benchmarks/refine.py --estimator`
# on the demo model (seed 0; 100 test, 40 + 20 realistic-proxy frames, 10 fused three-camera ones) and the
# shipped one: at 0.3 9% / 7% of test / realistic frames end > 5 deg worse (up to a third of those not
# flagged invalid), at 0.5 6% / 5%, all flagged, while 35% / 25% end > 5 deg better; 0.6-0.8 cut the better share
# faster than the worse one. Several starting hypotheses (RefineConfig.hypotheses=7) take more frames but make
# 10-13% worse, some unflagged: the estimator's default is the single start.
REFINE_MIN_SCORE = 0.5
# Several cameras: the joint alignment replaces a fused pose that fusion flagged invalid only from this score on.
REFINE_RESCUE_MIN_SCORE = 0.7
# The locator's second look at a small object (PoseEstimator._locate_closer): a view this many object diameters
# wide around the first estimate, taken where it magnifies the whole-frame view at least LOCATOR_MIN_ZOOM times.
# Measured on the demo's seed-0 model (1 vs 2 looks, min zoom 1-2): 2 looks at 1.25x took the median position error
# beyond 0.6 m from 55 to 25 mm on synthetic frames and from 68 to 23 mm on realistic ones, nearer unchanged.
LOCATOR_ZOOM_SPAN = 3.0
LOCATOR_MIN_ZOOM = 1.25
LOCATOR_ZOOM_PASSES = 2


@dataclass
class Pose:
    """An estimated object pose with its uncertainty.

    ``frame`` names the frame the pose is expressed in: ``camera:<name>`` (OpenCV axes) or ``world``.
    ``position_covariance_m2`` is the 3x3 position covariance in that frame; ``position_sigma_m`` its
    per-axis 1-sigma. ``rotation_sigma_deg`` is the 1-sigma of the isotropic rotation error (per axis
    of the rotation vector). ``cameras`` lists the cameras that contributed.

    ``confidence`` (0-1) is the estimator's probability that the pose is good (within 10 mm and 15 deg),
    from the consistency of its own parts; ``valid`` is False when it is too low to act on: a control
    policy should treat such a pose as missing. Both come from the estimator's calibrated
    :class:`~discopose.estimator.trust.TrustModel` (an uncalibrated estimator calls every pose valid).
    """

    position_m: np.ndarray
    rotation: np.ndarray
    position_covariance_m2: np.ndarray
    rotation_sigma_deg: float
    frame: str
    cameras: list[str] = field(default_factory=list)
    valid: bool = True
    confidence: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def position_sigma_m(self) -> np.ndarray:
        return np.sqrt(np.diag(self.position_covariance_m2))

    @property
    def quat_wxyz(self) -> np.ndarray:
        return quat_wxyz_from_matrix(self.rotation)

    @property
    def frame_from_object(self) -> np.ndarray:
        return make_transform(self.rotation, self.position_m)


class _Network:
    """One stage's network (torch or onnxruntime) with its spec."""

    def __init__(self, folder: Path, backend: str, device: str | None, onnx_threads: int | None = None):
        from discopose.models.checkpoint import read_meta
        self.meta = read_meta(folder)
        self.spec = PoseNetSpec(**self.meta["spec"])
        self.backend = backend
        self.threads = None  # ONNX Runtime's threads a call (0: its own choice); None for torch
        if backend == "torch":
            import torch
            from discopose.models.checkpoint import load_checkpoint
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, _ = load_checkpoint(folder, self.device)
        elif backend == "onnx":
            onnx_path = folder / "model.onnx"
            if not onnx_path.is_file():
                raise DiscoposeError(f"{onnx_path} does not exist; create it with `discopose export --model "
                                     f"{folder.parent if folder.name in ('locator', 'crop') else folder}`")
            import hashlib

            import onnxruntime as ort
            data = onnx_path.read_bytes()
            if self.meta.get("onnx_sha256") and hashlib.sha256(data).hexdigest() != self.meta["onnx_sha256"]:
                raise DiscoposeError(f"{onnx_path} does not match the sha256 in meta.json (corrupt or truncated); "
                                     f"export it again (`discopose export --model ...`) or copy the estimator again")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else \
                ["CPUExecutionProvider"]
            options = ort.SessionOptions()
            threads = onnx_threads if onnx_threads is not None else (1 if usable_cores() <= 2 else 0)
            self.threads = threads
            if threads:
                options.intra_op_num_threads = threads
            if threads == 1:
                # Nothing to spin for: idle pool threads spinning for work take the cores from everything else.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(data, sess_options=options, providers=providers)
        else:
            raise DiscoposeError(f"backend={backend!r}; use torch or onnx")

    def __call__(self, images: list[np.ndarray]) -> dict:
        """Raw outputs for HxWx3 uint8 images already on this network's camera, as numpy arrays."""
        batch = network_batch(images)
        if self.backend == "onnx":
            names = [o.name for o in self.session.get_outputs()]
            return dict(zip(names, self.session.run(None, {"images": batch})))
        import torch
        with torch.no_grad():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def decode(self, out: dict, i: int, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(position_m, rotation, position covariance, rotation sigma rad) of output ``i`` in the frame of
        the camera with intrinsics ``K`` that the image was taken with."""
        position, covariance = decode_position(out["position_uvz"][i], out["position_log_var"][i], K, self.spec)
        return position, out["rotation"][i], covariance, float(np.exp(0.5 * out["rotation_log_var"][i]))


class PoseEstimator:
    """A locator and a crop network (or one full-frame network) with their preprocessing, and optionally the
    refinement that aligns the object's mesh to the full-resolution image after them (``refine``: False, True
    for the default :class:`~discopose.refine.RefineConfig`, a RefineConfig, or None: as the estimator's trust
    model was calibrated, on where ``calibrate_estimator(..., refine=True)`` fitted it to refined poses)."""

    def __init__(self, path: str | Path, backend: str = "auto", device: str | None = None, refine_steps: int = 2,
                 refine: bool | RefineConfig | None = None, onnx_threads: int | None = None,
                 view_threads: int | None = None):
        from discopose.pretrained import resolve_model
        self.path = resolve_model(path)
        recover_folder(self.path)
        index = read_estimator_index(self.path)
        if backend == "auto":
            backend = _auto_backend(self.path, index, device)
        if index is not None:
            self.meta = index
            stages = index.get("stages", ["locator", "crop"])
            for stage in stages:
                if not (self.path / stage).is_dir():
                    raise DiscoposeError(f"{self.path}/estimator.json lists the {stage} stage but {self.path / stage} "
                                         "is missing; copy the whole estimator folder, not part of it")
            self.locator = _Network(self.path / "locator", backend, device, onnx_threads)
            self.crop = _Network(self.path / "crop", backend, device, onnx_threads) if "crop" in stages else None
            self.trust = TrustModel.from_index(self.meta)
        else:  # a single network's checkpoint: a full-frame model on its own
            self.locator = _Network(self.path, backend, device, onnx_threads)
            self.crop = None
            self.meta = {"object": self.locator.meta["object"]}
            self.trust = TrustModel()
            if self.locator.spec.stage != "locator":
                raise DiscoposeError(f"{self.path} is a crop-stage network, which needs a locator to find the "
                                     "object; load the estimator folder that holds both (a run's best/)")
        self.backend = backend
        if view_threads is not None and view_threads < 1:
            raise DiscoposeError(f"view_threads={view_threads}: give 1 (the cameras' networks one after the other), 2 "
                                 "or more, or None for discopose's choice")
        # Several cameras' networks side by side (predict_views): worth it where each network call runs on one
        # thread and another core is free, since ONNX Runtime and OpenCV compute without holding the interpreter.
        one_thread_calls = backend == "onnx" and self.locator.threads == 1
        self.view_threads = view_threads if view_threads is not None else \
            (2 if one_thread_calls and usable_cores() >= 2 else 1)
        self._view_helpers = None  # (process id, threads, executor) of predict_views' helpers
        refine_config = _refine_config(self.trust.fit_report.get("refine", False) if refine is None else refine)
        if refine_config is None and self.meta.get("trust_networks"):
            # Calibrated with the refinement and run without it: the model fitted for the networks alone.
            self.trust = TrustModel.from_dict(self.meta["trust_networks"])
        self.refine_steps = refine_steps if self.crop is not None else 0
        self.locator_zoom_passes = LOCATOR_ZOOM_PASSES
        self.model_camera, _ = stage_camera(self.locator.spec)
        self._surface_points = np.asarray(self.object["surface_points_m"], float)
        # The camera distances the networks were trained on (None: older estimators, one distance).
        trained = (self.locator.meta.get("train_render_config") or {}).get("camera", {}).get("distance_range_m")
        self.volume_m = None if trained is None else (float(trained[0]), float(trained[1]))
        # The object's own symmetry (the lettered cube has none: its markings break the shape's 24).
        self.symmetries = Symmetry.from_dict(self.object["symmetry"]).matrices()
        # The refinement: its settings, the mesh model built once, and the score a refined pose needs.
        self.refine_config = refine_config
        # Following starts one frame's motion from the truth, where the coarse scales only lose precision.
        self.follow_config = None if refine_config is None else follow_schedule(refine_config)
        self.refine_min_score = REFINE_MIN_SCORE
        self.refine_model = None
        if refine_config is not None:
            from discopose.refine import RefineModel
            mesh = read_object_mesh(self.path, index)
            if mesh is None and self.object.get("name") != "cube":
                raise DiscoposeError(f"{self.path} carries no mesh of {self.object.get('name')!r} to refine with "
                                     "(assembled before estimators carried their mesh); retrain it, or load it with "
                                     "refine=False")
            self.refine_model = RefineModel.from_object_meta(self.object, mesh=mesh)

    @property
    def refines(self) -> bool:
        """Whether predictions are refined on the full-resolution image (``load(..., refine=...)``)."""
        return self.refine_config is not None

    @property
    def object(self) -> dict:
        return self.meta["object"]

    @property
    def train_render_config(self):
        """The :class:`RenderConfig` of the locator's training images, the world the estimator learned, or
        None for checkpoints written before it was recorded. Render test clips in it (with another seed)."""
        from discopose.render.config import RenderConfig
        data = self.locator.meta.get("train_render_config")
        if data is None:
            return None
        if "distance_range_m" not in data.get("camera", {}):  # trained before the working volume: one distance
            data = {**data, "camera": {**data["camera"], "distance_range_m": None}}
        return RenderConfig.from_dict(data)

    def camera_for(self, image: np.ndarray, camera=None, assume_nominal: bool = False,
                   name: str = "camera") -> CameraModel:
        """The camera an image was taken with: a camera file path, a :class:`CameraModel`, a 3x3 K
        (no distortion), or None for the model's own camera (an image of its size, or any size with
        ``assume_nominal=True``: the model's horizontal field of view, with a warning)."""
        height, width = np.asarray(image).shape[:2]
        if isinstance(camera, (str, Path)):
            camera = CameraModel.load(camera)
        if isinstance(camera, CameraModel):
            if camera.width_px * height != camera.height_px * width:
                raise DiscoposeError(
                    f"{name}: camera {camera.name!r} is calibrated at {camera.width_px}x{camera.height_px} but the "
                    f"image is {width}x{height}, another aspect ratio (a cropped or differently configured stream): "
                    f"set the camera to {camera.width_px}x{camera.height_px} or calibrate it at {width}x{height}")
            if (camera.width_px, camera.height_px) != (width, height):
                log.warning("camera %s is calibrated at %dx%d, the image is %dx%d: rescaling its intrinsics",
                            camera.name, camera.width_px, camera.height_px, width, height)
                camera = camera.scaled_to(width, height)
            return camera
        if camera is not None:
            K = np.asarray(camera, float)
            if K.shape != (3, 3):
                raise DiscoposeError(f"camera must be a camera file, a CameraModel or a 3x3 K; got shape {K.shape}")
            return CameraModel(name, width, height, K)
        model = self.model_camera
        if (width, height) == (model.width_px, model.height_px):
            return model
        if not assume_nominal:
            raise DiscoposeError(
                f"a {width}x{height} image without its camera: the model needs the intrinsics to read depth "
                f"and position; pass camera= a camera file from `discopose calibrate intrinsics`, a CameraModel "
                f"or a 3x3 K (or assume_nominal=True to assume the model's field of view, which is only right "
                f"for the same lens)")
        log.warning("assuming the model's nominal camera (its horizontal field of view, square pixels, centred "
                    "principal point) at %dx%d; poses are wrong for another lens", width, height)
        focal = model.K[0, 0] * width / model.width_px
        return CameraModel("nominal", width, height,
                           [[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])

    def predict(self, images, camera=None, assume_nominal: bool = False):
        """Pose of the object.

        ``images``: one HxWx3 RGB uint8 array (pose in that camera's frame), a dict ``{camera name:
        image}`` (several cameras fused into the world frame: ``camera`` must then be a dict of
        calibrated cameras with ``world_from_camera``), or a list of either (a batch: a list back).
        """
        batch = images if isinstance(images, list) else [images]
        poses = []
        for item in batch:
            if isinstance(item, dict):
                poses.append(self.predict_world(item, camera or {}))
            else:
                self._check_image(item, "image")
                cam = self.camera_for(item, camera, assume_nominal)
                poses.append(self.predict_views([(item, cam)])[0])
        return poses if isinstance(images, list) else poses[0]

    def predict_world(self, images: dict, cameras: dict) -> Pose:
        """World-frame pose fused from several calibrated cameras; cameras without an image (None) are
        left out, so a lost camera degrades the estimate instead of corrupting it."""
        views, names = [], []
        for name, image in images.items():
            if image is None:
                continue
            if name not in cameras:
                raise DiscoposeError(f"no camera given for {name!r}; pass camera={{'{name}': 'calib.yaml', ...}}")
            self._check_image(image, name)
            cam = self.camera_for(image, cameras[name], name=name)
            if cam.world_from_camera is None:
                raise DiscoposeError(f"camera {name!r} has no world_from_camera; calibrate it with "
                                     "`discopose calibrate extrinsics` to fuse cameras")
            views.append((image, cam))
            names.append(name)
        if not views:
            raise DiscoposeError("no camera images to estimate from")
        return self.fuse_views(self.predict_views(views, refine=False), views, names)

    def fuse_views(self, camera_poses: list[Pose], views: list[tuple[np.ndarray, CameraModel]],
                   names: list[str], align: bool = True) -> Pose:
        """One world-frame pose from per-camera poses (:func:`fuse_world_poses`) and, when the estimator
        refines (and ``align`` is left True), the fused pose aligned to every camera's image jointly (one pose,
        all cameras' evidence: :meth:`align_fused`)."""
        pose = fuse_world_poses(camera_poses, [cam for _, cam in views], names, symmetries=self.symmetries)
        return self.align_fused(pose, views) if self.refines and align else pose

    def align_fused(self, fused: Pose, views: list[tuple[np.ndarray, CameraModel]]) -> Pose:
        """``fused`` (:func:`fuse_world_poses`, world frame) aligned to every camera's image jointly: a copy,
        valid where the alignment is. ``views`` may be later frames of the same cameras (a tracker that fuses
        the networks' poses on one frame and aligns on the next)."""
        start = fused.frame_from_object
        result, error = self._align(views, start, world=True)
        # Where fusion already judged the pose invalid, only a convincing alignment may make it valid (measured
        # on the shipped model's two-camera renders: correct joint alignments scored 0.87-0.93, a wrong one that
        # turned an invalid 11 deg pose into 29 deg scored 0.52).
        applied = self._refine_accepts(result) and (fused.valid or result.score >= REFINE_RESCUE_MIN_SCORE)
        aligned = result.frame_from_object if applied else start
        # Valid where the cameras' joint evidence supports the pose: measured on 30 rendered three-camera
        # frames, that flags more gross errors (6 of 7 against fusion's 4) and keeps more good poses (19 of
        # 22 against 17); the one gross error it keeps is a misread face whose geometry aligns exactly.
        return replace(fused, position_m=aligned[:3, 3].copy(), rotation=aligned[:3, :3].copy(), valid=applied,
                       extra={**fused.extra, "refine": self._refine_record(result, start, applied, error),
                              "fusion_valid": fused.valid})

    def follow(self, views: list[tuple[np.ndarray, CameraModel]], frame_from_object, names: list[str] | None = None,
               world: bool = False) -> Pose | None:
        """The classical tracker's step: the mesh aligned to new frames from a recent pose (the last frame's),
        without the networks. ``frame_from_object`` (4x4) is in the one camera's frame, or in the world frame
        with ``world`` (every camera calibrated, refined jointly). Returns None where the estimator cannot follow
        (it does not refine, or was calibrated without refined poses and so has no sigmas for them) or the image
        does not support the pose (:meth:`follow_alignment`): the caller then runs the networks. The pose's
        ``confidence`` is the alignment's score; its sigmas are the followed poses' own where the estimator was
        calibrated with them (else the refined poses'); ``extra["followed"]`` is True."""
        trust = self.trust
        position_sigma_m, rotation_sigma_deg = trust.followed_position_sigma_m, trust.followed_rotation_sigma_deg
        if rotation_sigma_deg is None:
            position_sigma_m, rotation_sigma_deg = trust.refined_position_sigma_m, trust.refined_rotation_sigma_deg
        if rotation_sigma_deg is None:
            return None
        start = np.asarray(frame_from_object, float)
        result = self.follow_alignment(views, start, world)
        if result is None:
            return None
        names = names or [camera.name for _, camera in views]
        aligned = result.frame_from_object
        return Pose(position_m=aligned[:3, 3].copy(), rotation=aligned[:3, :3].copy(),
                    position_covariance_m2=np.diag(np.square(position_sigma_m)),
                    rotation_sigma_deg=float(rotation_sigma_deg),
                    frame="world" if world else f"camera:{names[0]}", cameras=list(names), valid=True,
                    confidence=float(result.score),
                    extra={"followed": True, "refine": self._refine_record(result, start, True, None)})

    def follow_alignment(self, views: list[tuple[np.ndarray, CameraModel]], start: np.ndarray, world: bool = False
                         ) -> RefineResult | None:
        """The alignment a follow step takes from ``start``, or None where the estimator does not refine, the
        alignment failed, or its score is below ``refine_min_score`` (the image does not support the pose)."""
        if not self.refines:
            return None
        result, _ = self._align(views, np.asarray(start, float), world, self.follow_config)
        return result if result is not None and result.score >= self.refine_min_score else None

    def _align(self, views: list[tuple[np.ndarray, CameraModel]], start: np.ndarray, world: bool,
               config: RefineConfig | None = None) -> tuple[RefineResult | None, str | None]:
        """The refinement from ``start``: one camera in its own frame, or (``world``) every camera jointly in the
        world frame. Returns ``(result, None)``, or ``(None, why)`` where there is nothing to align (e.g. a start
        behind a camera)."""
        from discopose.refine import refine_pose, refine_world_pose
        try:
            if world:
                return refine_world_pose(views, self.refine_model, start, config or self.refine_config), None
            return refine_pose(views[0][0], views[0][1], self.refine_model, start, config or self.refine_config), None
        except DiscoposeError as exc:
            return None, str(exc)

    def _refine_accepts(self, result: RefineResult | None) -> bool:
        """The score gate: the alignment replaces the start only when the image supports it (its score reaches
        ``refine_min_score``) better than it supports the start (hypothesis -1: the start scored better)."""
        return result is not None and result.hypothesis != -1 and result.score >= self.refine_min_score

    def _refine_record(self, result: RefineResult | None, start: np.ndarray, applied: bool, error: str | None) -> dict:
        """``Pose.extra["refine"]``: the alignment's evidence, whether it replaced the start, and the start."""
        record = {"applied": applied, "score": 0.0, "min_score": self.refine_min_score, "iterations": 0,
                  "time_ms": 0.0, "hypothesis": None, "region_agreement": None, "edge_agreement": None,
                  "residual_px": None, "network_frame_from_object": np.asarray(start, float), "error": error}
        if result is not None:
            record.update(score=float(result.score), iterations=int(result.iterations), time_ms=float(result.time_ms),
                          hypothesis=int(result.hypothesis), region_agreement=result.region_agreement,
                          edge_agreement=result.edge_agreement, residual_px=result.residual_px,
                          shift_deg=rotation_angle_deg(result.frame_from_object[:3, :3], start[:3, :3]),
                          shift_mm=1000 * float(np.linalg.norm(result.frame_from_object[:3, 3] - start[:3, 3])))
        return record

    def predict_views(self, views: list[tuple[np.ndarray, CameraModel]], priors: list | None = None,
                      refine: bool = True, view_threads: int | None = None) -> list[Pose]:
        """Camera-frame pose per (image, camera) pair, the pairs batched through each stage.

        ``priors``: where the object is expected (camera-frame positions, e.g. a tracking filter's
        prediction). Given for every view, they replace the locator (a tracker's fast path: two network
        passes instead of three; a single crop pass would be faster still but measurably noisier).
        Each pose states its uncertainty and validity through the estimator's :class:`TrustModel`;
        ``extra`` holds the consistency signals and what the networks stated before calibration.
        When the estimator refines (and ``refine`` is left True), each view's pose is then aligned to its
        full-resolution image with its own camera; ``extra["refine"]`` says whether the aligned pose replaced
        the networks' (``applied``), its ``score``, ``iterations``, ``time_ms`` and the networks' pose
        (``network_frame_from_object``, 4x4). ``view_threads``: threads for the views' networks in this call
        (default: the estimator's, :func:`load`); the poses are the same whatever it is.
        """
        threads = min(self.view_threads if view_threads is None else view_threads, len(views))
        if threads >= 2:
            # The views in `threads` groups, all but the last on helper threads, the last here: each group batched
            # as before (the same numbers), and the groups' network calls overlap (README: three 640x480 cameras).
            bounds = np.linspace(0, len(views), threads + 1).round().astype(int)
            groups = [(views[a:b], None if priors is None else priors[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            helpers = self._views_helpers(threads - 1)
            pending = [helpers.submit(self._network_estimates, *group) for group in groups[:-1]]
            try:
                last = self._network_estimates(*groups[-1])
            except BaseException:
                wait(pending)
                raise
            estimates, checks = [], []
            for group_estimates, group_checks in [future.result() for future in pending] + [last]:
                estimates += group_estimates
                checks += group_checks
        else:
            estimates, checks = self._network_estimates(views, priors)
        refine = refine and self.refines
        return [self._trusted_pose(estimate, check, cam, image if refine else None) for estimate, check, (image, cam)
                in zip(estimates, checks, views)]

    def _views_helpers(self, count: int) -> ThreadPoolExecutor:
        """At least ``count`` helper threads for :meth:`predict_views`, made on first use, when more are asked for,
        and again in a forked child (a fork copies the executor but not its threads: a job there would wait
        forever)."""
        pid, workers, executor = self._view_helpers or (None, 0, None)
        if pid != os.getpid() or workers < count:
            if executor is not None and pid == os.getpid():
                executor.shutdown(wait=False)
            executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="discopose-views")
            self._view_helpers = (os.getpid(), count, executor)
        return executor

    def _network_estimates(self, views: list[tuple[np.ndarray, CameraModel]], priors: list | None
                           ) -> tuple[list[tuple], list[dict | None]]:
        """The networks' estimate per view in its camera's frame, ``(position, rotation, covariance, sigma)``, and
        the crop pass's dense consistency check (None without one), the views batched through each stage."""
        spec = self.crop.spec if self.crop else None
        if priors is not None and spec is not None and all(p is not None for p in priors):
            estimates = [(np.asarray(p, float), None, None, None) for p in priors]
        else:
            located = self.locator([stage_view(image, cam, self.model_camera, np.eye(3)) for image, cam in views])
            estimates = [self.locator.decode(located, i, self.model_camera.K) for i in range(len(views))]
            for _ in range(self.locator_zoom_passes):
                estimates = self._locate_closer(views, estimates)
        checks = [None] * len(views)
        for step in range(self.refine_steps):
            # Only the last pass's pose is kept, and only the position aims the next crop: the dense
            # consistency check (RANSAC PnP, silhouette) is computed once, on the last pass.
            last = step == self.refine_steps - 1
            aims = [estimate[0] for estimate in estimates]
            crops = [stage_camera(spec, aim_m=aim) for aim in aims]
            out = self.crop([stage_view(image, cam, crop, crop_from_camera)
                             for (image, cam), (crop, crop_from_camera) in zip(views, crops)])
            estimates, checks = [], []
            for i, (crop, crop_from_camera) in enumerate(crops):
                position, rotation, covariance, sigma = self.crop.decode(out, i, crop.K)
                check = None
                if spec.dense and last:
                    check = dense_consistency(out["mask_logits"][i], out["coordinates"][i], crop.K, spec, position,
                                              rotation, self._surface_points)
                    check["regressed_rotation"] = rotation
                    rotation = check["rotation"]
                    check["class_prob"] = _class_probability(out, i)
                estimates.append(_in_source_frame((position, rotation, covariance, sigma), crop_from_camera))
                if check is not None:
                    check["camera_from_crop"] = crop_from_camera.T
                    check["aim_m"] = aims[i]
                checks.append(check)
        return estimates, checks

    def _locate_closer(self, views: list[tuple[np.ndarray, CameraModel]], estimates: list[tuple]) -> list[tuple]:
        """The locator again, on a view aimed at its first estimate and ``LOCATOR_ZOOM_SPAN`` object diameters
        wide, for each view where that magnifies the frame ``LOCATOR_MIN_ZOOM`` times or more: a far object is a
        few pixels in the whole-frame view, and the first look's error there is larger than the crop tolerates."""
        field_m = LOCATOR_ZOOM_SPAN * self.locator.spec.object_diameter_m
        width, height = self.model_camera.width_px, self.model_camera.height_px
        chosen, aimed = [], []
        for i, ((image, cam), estimate) in enumerate(zip(views, estimates)):
            position = estimate[0]
            if position[2] <= 0 or cam.width_px * position[2] < LOCATOR_MIN_ZOOM * cam.K[0, 0] * field_m:
                continue
            chosen.append(i)
            aimed.append(aimed_field_camera(position, field_m, width, height, name="locator zoom"))
        if not chosen:
            return estimates
        located = self.locator([stage_view(views[i][0], views[i][1], camera, aimed_from_camera)
                                for i, (camera, aimed_from_camera) in zip(chosen, aimed)])
        estimates = list(estimates)
        for j, (i, (camera, aimed_from_camera)) in enumerate(zip(chosen, aimed)):
            estimates[i] = _in_source_frame(self.locator.decode(located, j, camera.K), aimed_from_camera)
        return estimates

    def _trusted_pose(self, estimate: tuple, check: dict | None, camera: CameraModel,
                      image: np.ndarray | None = None) -> Pose:
        """A camera-frame :class:`Pose` with the uncertainty and validity the trust model gives it; with an
        ``image``, the networks' pose refined on it where the alignment's score gate accepts it."""
        position, rotation, covariance, sigma_rad = estimate
        trust = self.trust
        extra = {"network_position_covariance_m2": covariance, "network_rotation_sigma_rad": sigma_rad}
        signals = position_disagreement = rotation_disagreement = None
        distance_m = float(np.linalg.norm(position))
        outside = out_of_volume(distance_m, self.volume_m)
        if check is not None:
            camera_from_crop = check["camera_from_crop"]
            signals = dict(check["signals"], class_prob=check["class_prob"], out_of_volume=outside,
                           object_px=float(camera.K[0, 0] * self.crop.spec.object_diameter_m / max(position[2], 1e-6)))
            signals["refine_shift_rel"] = float(np.linalg.norm(position - check["aim_m"]) / self.crop.spec.object_diameter_m)
            signals["position_sigma_rel"] = float(np.sqrt(np.trace(covariance)) / max(position[2], 1e-6))
            signals["rotation_sigma_deg"] = float(np.degrees(sigma_rad))
            if check["pnp_position_m"] is not None:
                position_disagreement = camera_from_crop @ check["pnp_position_m"] - position
                rotation_disagreement = float(np.radians(signals["pnp_rotation_deg"]))
            # Each rotation head alone, in the camera frame: for evaluation per head (discopose eval).
            head_rotations = {"regressed": camera_from_crop @ check["regressed_rotation"],
                              "pnp": None if check["pnp_rotation"] is None else camera_from_crop @ check["pnp_rotation"]}
            extra.update(signals=signals, position_disagreement_m=position_disagreement,
                         rotation_disagreement_rad=rotation_disagreement, head_rotations=head_rotations)
        applied = False
        if image is not None:
            start = make_transform(rotation, position)
            result, error = self._align([(image, camera)], start, world=False)
            applied = self._refine_accepts(result)
            extra["refine"] = record = self._refine_record(result, start, applied, error)
            if signals is not None:
                # The alignment's evidence for the pose returned: its score (0 where it could not run) and how
                # far it moved the networks' rotation (0 where it was not taken).
                signals["alignment_score"] = record["score"]
                signals["alignment_shift_deg"] = record["shift_deg"] if applied else 0.0
            if applied:
                position = result.camera_from_object[:3, 3].copy()
                rotation = result.camera_from_object[:3, :3].copy()
        confidence = trust.confidence(signals)
        position_covariance = trust.position_covariance(covariance, position_disagreement)
        rotation_sigma_deg = float(np.degrees(trust.rotation_sigma_rad(sigma_rad, rotation_disagreement)))
        if applied and trust.refined_rotation_sigma_deg is not None:
            # The aligned pose's own precision, calibrated on refined views (the networks' no longer applies).
            position_covariance = np.diag(np.square(trust.refined_position_sigma_m))
            rotation_sigma_deg = float(trust.refined_rotation_sigma_deg)
        # Outside the trained distances the networks extrapolate: never valid, and less precise the farther out.
        growth = math.exp(OUT_OF_VOLUME_SIGMA_GROWTH * outside)
        extra["out_of_volume"] = outside
        return Pose(position_m=position, rotation=rotation, position_covariance_m2=growth ** 2 * position_covariance,
                    rotation_sigma_deg=growth * rotation_sigma_deg, frame=f"camera:{camera.name}", cameras=[camera.name],
                    valid=trust.is_valid(confidence) and outside == 0.0, confidence=confidence, extra=extra)

    @staticmethod
    def _check_image(image, name: str) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DiscoposeError(f"{name}: expected an HxWx3 RGB uint8 image, got {image.dtype} {image.shape}")


def _in_source_frame(estimate: tuple, view_from_source: np.ndarray) -> tuple:
    """A network's ``(position, rotation, covariance, sigma)`` read in a virtual camera rotated by
    ``view_from_source`` from the source camera (a crop, the locator's zoomed look), in the source camera's frame."""
    position, rotation, covariance, sigma = estimate
    source_from_view = view_from_source.T
    return (source_from_view @ position, source_from_view @ rotation,
            source_from_view @ covariance @ view_from_source, sigma)


def _class_probability(out: dict, i: int) -> float:
    """The crop network's probability for the markings' class it chose (1.0 without classes)."""
    if "symmetry_logits" not in out:
        return 1.0
    logits = np.asarray(out["symmetry_logits"][i], float)
    probabilities = np.exp(logits - logits.max())
    return float(probabilities.max() / probabilities.sum())


def fuse_world_poses(camera_poses: list[Pose], cameras: list[CameraModel], names: list[str],
                     agree_deg: float = 30.0, position_gate_chi2: float = 16.27,
                     symmetries: np.ndarray | None = None) -> Pose:
    """One world-frame pose from per-camera estimates and their calibrated ``world_from_camera``.

    Only valid camera poses are fused (all of them when none is valid; the result is then invalid).
    Positions: information-weighted (inverse covariance) mean, so each camera contributes most along
    the axes it sees best (its image plane) and the depths triangulate; a camera whose position is
    inconsistent with the others' (chi-squared above ``position_gate_chi2`` per dof, p = 0.001 for
    3 dof, and most of it from that camera) is dropped, worst first. Rotations: the largest set of cameras agreeing within ``agree_deg``
    (weighted by their stated precision) is averaged (chordal mean), so one camera that misreads the
    markings cannot drag the others. The stated covariance and sigma grow by the Birge ratio when
    the cameras scatter more than they say they should (their errors are not independent). With the object's
    ``symmetries`` (M, 3, 3; :meth:`Symmetry.matrices`), rotations that differ by a symmetry agree, and each is
    turned to its equivalent closest to the consensus before averaging.

    ``valid``: a majority of the fused cameras agree in rotation, and either at least one of them is valid
    or (none being valid) at least two agree in rotation and position. ``confidence``: 1 - prod(1 - c)
    over the agreeing cameras (independent evidence).
    """
    positions, covariances, rotations, sigmas = [], [], [], []
    for pose, cam in zip(camera_poses, cameras):
        world_rotation = cam.world_from_camera[:3, :3]
        positions.append(world_rotation @ pose.position_m + cam.world_from_camera[:3, 3])
        covariances.append(world_rotation @ pose.position_covariance_m2 @ world_rotation.T)
        rotations.append(world_rotation @ pose.rotation)
        sigmas.append(max(np.radians(pose.rotation_sigma_deg), 1e-4))
    any_valid = any(pose.valid for pose in camera_poses)
    used = [i for i, pose in enumerate(camera_poses) if pose.valid or not any_valid]
    information = {i: np.linalg.inv(covariances[i] + 1e-12 * np.eye(3)) for i in used}

    def fuse_positions(members):
        covariance = np.linalg.inv(sum(information[i] for i in members))
        position = covariance @ sum(information[i] @ positions[i] for i in members)
        chi2 = sum(float((positions[i] - position) @ information[i] @ (positions[i] - position)) for i in members)
        return position, covariance, chi2

    members = list(used)
    position, covariance, chi2 = fuse_positions(members)
    while len(members) > 2 and chi2 > position_gate_chi2 * (len(members) - 1):
        residual = {i: float((positions[i] - position) @ information[i] @ (positions[i] - position)) for i in members}
        worst = max(members, key=residual.get)
        if residual[worst] < 0.6 * chi2:
            break  # all scatter alike: their sigmas are too small, not one camera wrong (inflated below)
        members.remove(worst)
        position, covariance, chi2 = fuse_positions(members)
    dof = 3 * (len(members) - 1)
    if dof and chi2 > dof:
        covariance = covariance * (chi2 / dof)

    weights = {i: 1.0 / sigmas[i] ** 2 for i in used}
    support = {i: [j for j in used if closest_equivalent(rotations[i], rotations[j], symmetries)[1] < agree_deg]
               for i in used}
    best = max(used, key=lambda i: sum(weights[j] for j in support[i]))
    inliers = support[best]
    rotations = {j: closest_equivalent(rotations[best], rotations[j], symmetries)[0] for j in used}
    u, _, vt = np.linalg.svd(sum(weights[j] * rotations[j] for j in inliers))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    sigma = 1.0 / np.sqrt(sum(weights[j] for j in inliers))
    chi2_rotation = sum(weights[j] * np.radians(rotation_angle_deg(rotations[j], rotation)) ** 2 for j in inliers)
    dof_rotation = 3 * (len(inliers) - 1)
    if dof_rotation and chi2_rotation > dof_rotation:
        sigma *= np.sqrt(chi2_rotation / dof_rotation)

    agreeing = [i for i in inliers if i in members]
    consensus = len(used) == 1 or 2 * len(inliers) > len(used)
    # Valid: backed by a valid camera, or by two cameras that agree on their own (independent views
    # rarely fail the same way).
    valid = consensus and (any_valid and bool(agreeing) or len(agreeing) >= 2)
    confidences = [camera_poses[i].confidence for i in (agreeing or inliers)]
    if valid:
        confidence = 1.0 - float(np.prod([1.0 - c for c in confidences]))
    else:
        confidence = float(min(confidences))
    return Pose(position_m=position, rotation=rotation, position_covariance_m2=covariance,
                rotation_sigma_deg=float(np.degrees(sigma)), frame="world", cameras=list(names), valid=valid,
                confidence=confidence,
                extra={"rotation_inliers": [names[j] for j in inliers], "position_members": [names[j] for j in members],
                       "valid_cameras": [names[i] for i, pose in enumerate(camera_poses) if pose.valid]})


def _auto_backend(path: Path, index: dict | None, device: str | None) -> str:
    """onnx when every network has its ``model.onnx`` and onnxruntime is installed, on CPU (2-4x faster than
    torch there for these small batches: benchmarks/track_latency.py); torch otherwise."""
    stages = [path / stage for stage in index.get("stages", ["locator", "crop"])] if index else [path]
    if device == "cuda" or not all((stage / "model.onnx").is_file() for stage in stages):
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


def _refine_config(refine) -> RefineConfig | None:
    """``refine`` as given to :func:`load` (None resolved): None for off, else the settings to refine with."""
    if isinstance(refine, RefineConfig):
        return refine
    if isinstance(refine, (bool, np.bool_)):
        return RefineConfig() if refine else None
    raise DiscoposeError(f"refine={refine!r}: give True, False, None (as calibrated) or a discopose.refine.RefineConfig")


def load(path: str | Path, backend: str = "auto", device: str | None = None,
         refine: bool | RefineConfig | None = None, onnx_threads: int | None = None,
         view_threads: int | None = None) -> PoseEstimator:
    """Load a trained estimator from its folder (e.g. ``runs/cube/best``) or a shipped one by name (``"cube"``).

    ``backend``: ``auto`` (ONNX Runtime when the folder has exported networks and the device is the CPU, else
    torch), ``torch`` or ``onnx``. ``refine``: align the object's mesh to each full-resolution image after the
    networks (about 12 ms a camera at 640x480 on one core): True, False, a :class:`~discopose.refine.RefineConfig`,
    or None (the default): on where the estimator was calibrated with it (``calibrate_estimator(...,
    refine=True)``, as the demo and the shipped model are), since only then does its trust model read the
    alignment's score and state the refined poses' own sigmas. On the demo model it takes the median rotation
    error from 18.9 to 13.5 deg on synthetic frames, 17.4 to 8.0 on the realistic proxy without the hand and
    9.9 to 0.7 with three cameras (README). ``onnx_threads``: ONNX Runtime's threads within one network call;
    None (the default) is 1 on machines with at most 2 cores, where one thread without spinning measured as fast at
    the median and faster at p99 than two, and left the cores to the tracker's other work (README, Tracking), and
    ONNX Runtime's own choice elsewhere (not measured); 0 is always its own choice. ``view_threads``: with several
    cameras in one call, their networks run in this many groups side by side, one thread each; None (the default)
    is 2 where each network call runs on one thread and 2 or more cores are usable (three 640x480 cameras fused and
    aligned: 0.75-0.83x the time, README), else 1."""
    if onnx_threads is not None and onnx_threads < 0:
        raise DiscoposeError(f"onnx_threads={onnx_threads}: give a count of threads, 0 for ONNX Runtime's choice or "
                             "None for discopose's")
    return PoseEstimator(path, backend=backend, device=device, refine=refine, onnx_threads=onnx_threads,
                         view_threads=view_threads)
