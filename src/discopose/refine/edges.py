"""Edge modality: the visible crease edges (where two front faces meet) searched along their image normals.

Samples every ``edge_spacing_px`` along each visible crease (its ends left out: near a corner the edge is
ambiguous) look for the strongest grey-level gradient within ``search`` px along the projected normal whose
direction agrees with that normal (a letter's strokes run every way, a crease only one way). The sub-pixel
offset of that gradient maximum is the residual; Tukey weights from the residuals' own spread drop the samples
that locked onto something else (a letter, a finger, the table edge). This is the moving-edges idea of RAPID
(Harris) and ViSP's moving edges, restricted to the creases so that the region modality keeps the silhouette.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from discopose.refine.config import RefineConfig
from discopose.refine.image import ViewImage
from discopose.refine.model import FaceRaster, RefineModel, VisibleEdges, sample_along_edges
from discopose.refine.projection import along_normals, line_jacobian

TUKEY_C = 4.685
MAD_TO_SIGMA = 1.4826


def median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D float array, the same number: a sort costs a fifth of its overhead on the few hundred
    residuals of one view."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


@functools.lru_cache(maxsize=8)
def _cos_deg(angle_deg: float) -> float:
    return float(np.cos(np.radians(angle_deg)))


@dataclass
class EdgeTerms:
    """One camera's crease samples at one pose: (N, 6) Jacobian rows, the measured offset (px along the
    normal) of the image edge, whether one was found, and the Tukey weight of each."""

    jacobian: np.ndarray
    offset_px: np.ndarray
    found: np.ndarray
    weight: np.ndarray

    @property
    def count(self) -> int:
        return len(self.offset_px)


def crease_samples(model: RefineModel, edges: VisibleEdges, camera_from_object: np.ndarray, K: np.ndarray,
                   config: RefineConfig, raster: FaceRaster | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points on the visible creases (and the silhouette with ``config.edge_silhouette``): object-frame
    points (N, 3), ideal pixels (N, 2), unit image normals (N, 2). With a ``raster`` (non-convex meshes) the
    crease samples that another part of the mesh hides are dropped."""
    pairs = np.concatenate([edges.crease, edges.silhouette]) if config.edge_silhouette else edges.crease
    points, pixels, edge = sample_along_edges(model, pairs, camera_from_object, K,
                                              spacing_px=config.edge_spacing_px, end_margin=config.edge_end_margin)
    if len(points) == 0:
        return points, pixels, np.zeros((0, 2))
    a, b = model.vertices_m[pairs[:, 0]], model.vertices_m[pairs[:, 1]]
    R, t = camera_from_object[:3, :3], camera_from_object[:3, 3]
    ends = np.stack([a, b]) @ R.T + t
    ends_px = ends[..., :2] / ends[..., 2:3] * np.diag(K)[:2] + K[:2, 2]
    direction = ends_px[1] - ends_px[0]
    normal = np.stack([-direction[:, 1], direction[:, 0]], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    normals = normal[edge]
    if raster is not None:
        is_crease = edge < len(edges.crease)
        keep = ~is_crease
        keep[is_crease] = raster.on_crease(pixels[is_crease], normals[is_crease],
                                           edges.crease_faces[edge[is_crease]])
        points, pixels, normals = points[keep], pixels[keep], normals[keep]
    return points, pixels, normals


def edge_terms(view: ViewImage, model: RefineModel, edges: VisibleEdges, camera_from_object: np.ndarray,
               search_px: float, config: RefineConfig, raster: FaceRaster | None = None) -> EdgeTerms:
    """Search each crease sample's normal within ``search_px`` for the image edge."""
    points, pixels, normals = crease_samples(model, edges, camera_from_object, view.K, config, raster)
    if len(points) == 0:
        return EdgeTerms(np.zeros((0, 6)), np.zeros(0), np.zeros(0, bool), np.zeros(0))
    reach = int(np.ceil(search_px))
    offsets = np.arange(-reach, reach + 1, dtype=float)
    indices, inside = view.pixel_indices(along_normals(pixels, normals, offsets), margin=1)
    gradient = view.gradient(indices)                                      # (N, L, 2)
    gradient_u, gradient_v = gradient[..., 0], gradient[..., 1]
    along = np.abs(gradient_u * normals[:, :1] + gradient_v * normals[:, 1:])
    magnitude = np.sqrt(gradient_u * gradient_u + gradient_v * gradient_v)
    agrees = along >= _cos_deg(config.edge_max_angle_deg) * magnitude
    strength = np.where(inside & agrees & (magnitude >= config.edge_min_gradient), along, 0.0)
    # Nearer candidates are likelier: a letter's stroke or the far side of a face lies farther than the
    # crease the pose is already close to.
    prior = np.exp(-0.5 * (offsets / (config.edge_prior_frac * search_px)) ** 2)
    best = (strength * prior).argmax(1)
    rows = np.arange(len(points))
    found = strength[rows, best] > 0
    # Sub-pixel: the vertex of the parabola through the maximum and its two neighbours.
    left = strength[rows, np.maximum(best - 1, 0)]
    right = strength[rows, np.minimum(best + 1, len(offsets) - 1)]
    centre = strength[rows, best]
    curvature = left - 2 * centre + right
    shift = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0)
    offset = offsets[best] + np.minimum(np.maximum(shift, -0.5), 0.5)
    weight = np.zeros(len(points))
    if found.any():
        # The spread about the projection (not about the median: a pose off by a shift moves all samples alike).
        spread = MAD_TO_SIGMA * median(np.abs(offset[found]))
        c = min(max(TUKEY_C * spread, 2.0), max(2.0, search_px))
        u = offset / c
        weight = np.where(found & (np.abs(u) < 1), (1 - u ** 2) ** 2, 0.0)
    return EdgeTerms(line_jacobian(view.K, camera_from_object, points, normals), offset, found, weight)
