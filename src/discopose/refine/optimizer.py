"""The optimizer and the entry points: sum each camera's modalities into 6x6 normal equations in the object
frame, take damped Gauss-Newton steps coarse to fine, score the result, and try several starts when asked."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.geometry.transforms import invert_transform, rotation_about_axis
from discopose.refine.config import RefineConfig, RefineResult
from discopose.refine.edges import MAD_TO_SIGMA, TUKEY_C, EdgeTerms, edge_terms, median
from discopose.refine.image import ViewImage
from discopose.refine.model import FaceRaster, RefineModel, visible_edges
from discopose.refine.projection import object_delta_transform
from discopose.refine.region import ColorHistograms, RegionTerms, region_terms

# Absolute floor of the damping (relative to the largest Hessian diagonal) so that a view with no evidence
# along some direction leaves that direction alone instead of dividing by zero.
DAMPING_FLOOR = 1e-6


def refine_pose(image, camera: CameraModel, model: RefineModel, camera_from_object_init,
                config: RefineConfig | None = None) -> RefineResult:
    """Align ``model`` to one camera's full-resolution image, starting at ``camera_from_object_init``.

    ``image``: HxWx3 uint8 RGB of the size ``camera`` describes (distortion included: the image is read
    through it, never remapped). ``camera_from_object_init``: 4x4, OpenCV axes, metres, e.g. the networks'
    estimate. Returns a :class:`RefineResult` with the refined ``camera_from_object`` and its evidence
    (``score`` 0-1: how well the image supports it). Raises a one-line :class:`DiscoposeError` on bad input.
    """
    config = config or RefineConfig()
    view = ViewImage(image, camera)
    return _refine([view], [np.eye(4)], model, camera_from_object_init, config, f"camera:{camera.name}")


def refine_world_pose(views: list[tuple[np.ndarray, CameraModel]], model: RefineModel, world_from_object_init,
                      config: RefineConfig | None = None) -> RefineResult:
    """Several calibrated cameras (each with ``world_from_camera``) refined jointly: one pose in the world
    frame, every camera's correspondences summed into the same normal equations."""
    config = config or RefineConfig()
    if not views:
        raise DiscoposeError("refine_world_pose: no (image, camera) views given")
    images, cameras_from_world = [], []
    for i, (image, camera) in enumerate(views):
        images.append(ViewImage(image, camera, name=f"view {i}"))
        if camera.world_from_camera is None:
            raise DiscoposeError(f"camera {camera.name!r} has no world_from_camera; calibrate it with "
                                 "`discopose calibrate extrinsics` to refine in the world frame")
        cameras_from_world.append(invert_transform(np.asarray(camera.world_from_camera, float)))
    return _refine(images, cameras_from_world, model, world_from_object_init, config, "world")


@dataclass
class _Alignment:
    frame_from_object: np.ndarray
    score: float
    region_agreement: float | None
    edge_agreement: float | None
    residual_px: float | None
    lines: int
    edge_samples: int
    iterations: int


def _check_pose(pose, name: str) -> np.ndarray:
    pose = np.asarray(pose, float)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise DiscoposeError(f"{name} must be a finite 4x4 transform (metres), got shape {pose.shape}")
    rotation = pose[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) <= 0:
        raise DiscoposeError(f"{name} is not a rigid transform: its 3x3 part must be a rotation")
    return pose


def _refine(views: list[ViewImage], cameras_from_frame: list[np.ndarray], model: RefineModel, init,
            config: RefineConfig, frame: str) -> RefineResult:
    started = time.perf_counter()
    if not isinstance(model, RefineModel):
        raise DiscoposeError(f"model must be a RefineModel (RefineModel.cube(), .from_mesh(...)), "
                             f"got {type(model).__name__}")
    frame_from_object = _check_pose(init, f"{frame.split(':')[0]}_from_object_init")
    for camera_from_frame, view in zip(cameras_from_frame, views):
        depth = (camera_from_frame @ frame_from_object)[2, 3]
        if depth <= 0.5 * model.diameter_m:
            raise DiscoposeError(f"the starting pose puts the object {depth:.3f} m in front of camera "
                                 f"{view.camera.name!r}: it must lie in front of the camera")
    levels = len(config.scales_px)
    tracks = [_start(views, cameras_from_frame, model, start, config)
              for start in _hypotheses(frame_from_object, cameras_from_frame[0], config)]
    screen = min(config.hypothesis_screen_levels, levels) if len(tracks) > 1 else 0
    scores = []
    if screen:
        # Every start runs the coarse scales; only the best-scoring few go on to the fine ones.
        for track in tracks:
            _run_levels(views, cameras_from_frame, model, track, range(screen), config)
        scores = [_score(views, cameras_from_frame, track.histograms, model, track.frame_from_object,
                         track.iterations, config).score for track in tracks]
        finalists = list(np.argsort(scores)[::-1][:config.hypotheses_kept])
    else:
        finalists = list(range(len(tracks)))
    alignments = {}
    for index in finalists:
        track = _run_levels(views, cameras_from_frame, model, tracks[index], range(screen, levels), config)
        alignments[index] = _score(views, cameras_from_frame, track.histograms, model, track.frame_from_object,
                                   track.iterations, config)
    chosen = max(alignments, key=lambda index: alignments[index].score)
    best = alignments[chosen]
    if not screen:
        scores = [alignments[index].score for index in finalists]
    if config.keep_better_start:
        # The start itself, scored the same way: a refinement that walked off a good start is not taken.
        histograms = [ColorHistograms(config.histogram_bins) for _ in views]
        unrefined = _score(views, cameras_from_frame, histograms, model, frame_from_object, 0, config)
        if unrefined.score > best.score:
            best, chosen = unrefined, -1
    pose = best.frame_from_object
    if config.keep_start_equivalent and len(model.shape_symmetries) > 1:
        pose = _nearest_equivalent(pose, frame_from_object[:3, :3], model.shape_symmetries)
    return RefineResult(frame_from_object=pose, frame=frame, score=best.score,
                        region_agreement=best.region_agreement, edge_agreement=best.edge_agreement,
                        residual_px=best.residual_px, lines=best.lines, edge_samples=best.edge_samples,
                        iterations=best.iterations, hypothesis=int(chosen),
                        hypothesis_scores=[float(v) for v in scores],
                        time_ms=1000 * (time.perf_counter() - started), start_from_object=frame_from_object)


def _hypotheses(frame_from_object: np.ndarray, camera_from_frame: np.ndarray, config: RefineConfig) -> list:
    """The start, then rotations by +-hypothesis_deg about the (first) camera's x, y, z axes through the object's
    centre, up to ``config.hypotheses`` in all."""
    starts = [frame_from_object]
    frame_from_camera_rotation = camera_from_frame[:3, :3].T
    angle = np.radians(config.hypothesis_deg)
    for axis in range(3):
        for sign in (1, -1):
            if len(starts) >= config.hypotheses:
                return starts
            turn = rotation_about_axis(frame_from_camera_rotation[:, axis], sign * angle)
            start = frame_from_object.copy()
            start[:3, :3] = turn @ frame_from_object[:3, :3]
            starts.append(start)
    return starts


def _nearest_equivalent(frame_from_object: np.ndarray, start_rotation: np.ndarray, symmetries: np.ndarray):
    """The pose among ``frame_from_object @ S`` (S a shape symmetry) whose rotation is nearest the start's."""
    candidates = frame_from_object[:3, :3] @ symmetries
    traces = np.einsum("nij,ij->n", candidates, start_rotation)  # trace(C^T R_start): larger is nearer
    pose = frame_from_object.copy()
    pose[:3, :3] = candidates[int(np.argmax(traces))]
    return pose


def _rasters(views, cameras_from_frame, model: RefineModel, frame_from_object: np.ndarray) -> list:
    """Per camera, the face raster a non-convex mesh needs to drop what it hides from itself (None if convex).
    Drawn once per scale: within one the pose moves by a few pixels."""
    if model.convex:
        return [None] * len(views)
    return [FaceRaster(model, camera_from_frame @ frame_from_object, view.K, (view.height, view.width))
            for view, camera_from_frame in zip(views, cameras_from_frame)]


def _measure(views, cameras_from_frame, histograms, model, frame_from_object, scale: int, search_px: float,
             config: RefineConfig, learn_colors: bool, rasters: list) -> list[tuple[RegionTerms, EdgeTerms | None]]:
    terms = []
    for view, camera_from_frame, hist, raster in zip(views, cameras_from_frame, histograms, rasters):
        camera_from_object = camera_from_frame @ frame_from_object
        if camera_from_object[2, 3] <= 0.5 * model.diameter_m:  # walked behind the camera: no evidence
            terms.append((RegionTerms(np.zeros((0, 6)), np.zeros(0), np.zeros(0)), None))
            continue
        edges = visible_edges(model, camera_from_object, view.K, config.edge_min_facing)
        region = region_terms(view, hist, model, edges, camera_from_object, scale, config, learn_colors, raster)
        edge = edge_terms(view, model, edges, camera_from_object, search_px, config, raster) \
            if config.edges and search_px > 0 else None
        terms.append((region, edge))
    return terms


def _normal_equations(terms, scale: int, config: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton ``H delta = g`` summed over cameras and modalities (each row weighted by its inverse
    variance, px^-2)."""
    hessian, gradient = np.zeros((6, 6)), np.zeros(6)
    for region, edge in terms:
        if region.count:
            weight = 1.0 / (region.variance_px2 + (0.5 * scale) ** 2)
            if config.region_robust:
                # Tukey on the measured offsets, scaled by their spread about the projection: lines that read a
                # finger or a look-alike background as the contour disagree with the rest and drop out.
                spread = MAD_TO_SIGMA * median(np.abs(region.mean_px)) + 0.5 * scale
                u = region.mean_px / (TUKEY_C * spread)
                weight = weight * np.where(np.abs(u) < 1, (1 - u ** 2) ** 2, 0.0)
            hessian += (region.jacobian * weight[:, None]).T @ region.jacobian
            gradient += region.jacobian.T @ (weight * region.mean_px)
        if edge is not None and edge.count:
            weight = config.edge_weight * edge.weight / max(1.0, float(scale)) ** 2
            hessian += (edge.jacobian * weight[:, None]).T @ edge.jacobian
            gradient += edge.jacobian.T @ (weight * edge.offset_px)
    return hessian, gradient


@dataclass
class _Track:
    """One start's refinement in progress: its pose, colour histograms and Newton steps so far."""

    frame_from_object: np.ndarray
    histograms: list
    apparent: float
    iterations: int = 0


def _start(views, cameras_from_frame, model: RefineModel, frame_from_object: np.ndarray,
           config: RefineConfig) -> _Track:
    return _Track(frame_from_object, [ColorHistograms(config.histogram_bins) for _ in views],
                  _apparent_scale(views, cameras_from_frame, model, frame_from_object, config))


def _run_levels(views, cameras_from_frame, model: RefineModel, track: _Track, levels: range,
                config: RefineConfig) -> _Track:
    """Damped Gauss-Newton steps of the scales in ``levels`` (coarse to fine), in place on ``track``."""
    max_translation = config.max_step_diameter * model.diameter_m
    frame_from_object = track.frame_from_object
    for level in levels:
        nominal, count = config.scales_px[level], config.iterations[level]
        scale = int(np.clip(round(nominal * track.apparent), 1, 2 * nominal))
        nominal_search = config.edge_search_px[level]
        search_px = float(np.clip(nominal_search * track.apparent, 3.0, 2 * nominal_search)) if nominal_search else 0.0
        rasters = _rasters(views, cameras_from_frame, model, frame_from_object) if count else []
        for step in range(count):
            # Colours are learned at the first step of each scale (the pose has moved most since the last).
            terms = _measure(views, cameras_from_frame, track.histograms, model, frame_from_object, scale, search_px,
                             config, step == 0, rasters)
            hessian, gradient = _normal_equations(terms, scale, config)
            diagonal = np.diag(hessian).copy()
            if diagonal.max() <= 0:
                break
            damped = hessian + np.diag(config.damping * diagonal + DAMPING_FLOOR * diagonal.max())
            delta = np.linalg.solve(damped, gradient)
            rotation_norm, translation_norm = np.linalg.norm(delta[:3]), np.linalg.norm(delta[3:])
            if rotation_norm > config.max_step_rad:
                delta[:3] *= config.max_step_rad / rotation_norm
            if translation_norm > max_translation:
                delta[3:] *= max_translation / translation_norm
            frame_from_object = frame_from_object @ object_delta_transform(delta)
            track.iterations += 1
    track.frame_from_object = frame_from_object
    return track


def _apparent_scale(views, cameras_from_frame, model: RefineModel, frame_from_object: np.ndarray,
                    config: RefineConfig) -> float:
    """The object's projected diameter (px, largest over the cameras) over ``config.reference_diameter_px``."""
    largest = 0.0
    for view, camera_from_frame in zip(views, cameras_from_frame):
        depth = (camera_from_frame @ frame_from_object)[2, 3]
        largest = max(largest, view.K[0, 0] * model.diameter_m / max(depth, 1e-6))
    return largest / config.reference_diameter_px


def _score(views, cameras_from_frame, histograms, model, frame_from_object, iterations: int,
           config: RefineConfig) -> _Alignment:
    """How well the image supports ``frame_from_object``: the finest scale's lines and crease samples that put
    the contour/edge within ``agree_px`` of the projection."""
    terms = _measure(views, cameras_from_frame, histograms, model, frame_from_object, 1, 2 * config.agree_px,
                     config, True, _rasters(views, cameras_from_frame, model, frame_from_object))
    region_agree = region_count = edge_agree = edge_count = 0
    residuals = []
    for region, edge in terms:
        if region.count:
            agree = (np.abs(region.mean_px) <= config.agree_px) & (region.variance_px2 <= config.agree_px ** 2)
            region_agree += int(agree.sum())
            region_count += region.count
            residuals.append(np.abs(region.mean_px))
        if edge is not None and edge.count:
            edge_agree += int((edge.found & (np.abs(edge.offset_px) <= config.agree_px)).sum())
            edge_count += edge.count
    total = region_count + edge_count
    return _Alignment(
        frame_from_object=frame_from_object,
        score=(region_agree + edge_agree) / total if total else 0.0,
        region_agreement=region_agree / region_count if region_count else None,
        edge_agreement=edge_agree / edge_count if edge_count else None,
        residual_px=median(np.concatenate(residuals)) if residuals else None,
        lines=region_count, edge_samples=edge_count, iterations=iterations)
