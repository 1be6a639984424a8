"""Region modality: where the image puts the object's silhouette, read along correspondence lines.

A correspondence line crosses the projected contour along its outward normal and is cut into segments of
``scale`` pixels. Each pixel's colour says foreground or background through two colour histograms (learned
from the pixels just inside and outside the projected contour); a segment's evidence is the sum of its
pixels' log-likelihood ratios. For every candidate contour position ``d`` on the line, a smoothed step
function (foreground before ``d``, background after, never quite certain: ``step_amplitude``) gives the
likelihood of the segments around ``d``; normalised over the candidates that is the posterior of the contour's
location. Its mean is where the contour should be, its variance how sure the line is. A Gauss-Newton row per
line pulls the projected contour point along the normal towards the mean, weighted by the inverse variance.
This is the sparse formulation of SRT3D/RBGT (Stoiber et al.), written from the papers; it reads the
silhouette only, so the letters and the texture inside the object do not disturb it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from discopose.refine.config import RefineConfig
from discopose.refine.image import ViewImage
from discopose.refine.model import FaceRaster, RefineModel, VisibleEdges, sample_along_edges
from discopose.refine.projection import along_normals, line_jacobian


class ColorHistograms:
    """Foreground and background RGB histograms (``bins`` per channel) and the per-bin log-likelihood ratio."""

    def __init__(self, bins: int):
        self.bins = bins
        self.shift = 8 - int(np.log2(bins))
        self.foreground = None
        self.background = None
        self.log_ratio_table = np.zeros(bins ** 3, np.float32)

    def bin_of(self, colors: np.ndarray) -> np.ndarray:
        """Histogram bin of (..., 3) uint8 RGB colours."""
        c = colors.astype(np.int32) >> self.shift
        return (c[..., 0] * self.bins + c[..., 1]) * self.bins + c[..., 2]

    def update(self, foreground_bins: np.ndarray, background_bins: np.ndarray, blend: float) -> None:
        """Blend the normalised histograms of these colours' bins (:meth:`bin_of`) into the running ones."""
        size = self.bins ** 3
        if len(foreground_bins) < 10 or len(background_bins) < 10:
            return
        fg = np.bincount(foreground_bins, minlength=size).astype(np.float64)
        bg = np.bincount(background_bins, minlength=size).astype(np.float64)
        fg /= fg.sum()
        bg /= bg.sum()
        if self.foreground is None:
            self.foreground, self.background = fg, bg
        else:
            self.foreground = (1 - blend) * self.foreground + blend * fg
            self.background = (1 - blend) * self.background + blend * bg
        # A colour seen on neither side says nothing (ratio 0); a small floor keeps rare colours finite.
        floor = 0.1 / size
        self.log_ratio_table = np.log((self.foreground + floor) / (self.background + floor)).astype(np.float32)


@dataclass
class RegionTerms:
    """One camera's correspondence lines at one pose: (N, 6) Jacobian rows (px per object-frame delta), the
    contour posterior's mean (px along the outward normal, from the projected contour) and variance (px^2)."""

    jacobian: np.ndarray
    mean_px: np.ndarray
    variance_px2: np.ndarray

    @property
    def count(self) -> int:
        return len(self.mean_px)


@functools.lru_cache(maxsize=16)
def _step_tables(function_segments: int, step_amplitude: float, step_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """h_b and h_f - h_b of the smoothed step over the ``function_segments`` segments around a candidate contour
    position (segment centres at -F/2 + 0.5 .. F/2 - 0.5 segments from it): a segment that is foreground with
    probability p is explained with likelihood ``h_b + p (h_f - h_b)``. Cached: the same few configs every call."""
    half = function_segments // 2
    x = np.arange(-half, half) + 0.5
    h_f = 0.5 - step_amplitude * np.tanh(x / (2 * step_slope))
    return _frozen(1 - h_f), _frozen(2 * h_f - 1)


@functools.lru_cache(maxsize=64)
def _line_layout(segments: int, per: int, scale: int, near: float, far: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets along a correspondence line (outward positive, centred on the projected contour: ``per``
    pixels evenly spread over each segment of ``scale`` pixels), and which of them train the foreground and the
    background histograms (between ``near`` and ``far`` px inside, or outside)."""
    offsets = ((np.arange(segments)[:, None] + (np.arange(per)[None, :] + 0.5) / per) * scale
               - segments * scale / 2).reshape(-1)
    distance = np.abs(offsets)
    band = (distance >= max(near, 1.0)) & (distance <= far)
    return _frozen(offsets), _frozen(band & (offsets < 0)), _frozen(band & (offsets > 0))


@functools.lru_cache(maxsize=16)
def _window_index(candidates: int, width: int) -> np.ndarray:
    """Segment indices that candidate k reads: k .. k + width - 1 (a gather: contiguous, unlike a strided view)."""
    return _frozen(np.arange(candidates)[:, None] + np.arange(width))


@functools.lru_cache(maxsize=8)
def _ones(count: int) -> np.ndarray:
    return _frozen(np.ones(count, np.float32))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # cached and shared between calls
    return array


def contour_lines(model: RefineModel, edges: VisibleEdges, camera_from_object: np.ndarray, K: np.ndarray,
                  count: int, raster: FaceRaster | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` line centres spread evenly over the projected silhouette: object-frame points (N, 3), ideal
    pixels (N, 2) and outward image normals (N, 2). With a ``raster`` (non-convex meshes) only the samples on
    the outer contour are kept."""
    points, pixels, edge = sample_along_edges(model, edges.silhouette, camera_from_object, K, count=count)
    normals = edges.outward_px[edge]
    if raster is not None:
        keep = raster.on_contour(pixels, normals)
        points, pixels, normals = points[keep], pixels[keep], normals[keep]
    return points, pixels, normals


def region_terms(view: ViewImage, histograms: ColorHistograms, model: RefineModel, edges: VisibleEdges,
                 camera_from_object: np.ndarray, scale: int, config: RefineConfig,
                 learn_colors: bool = True, raster: FaceRaster | None = None) -> RegionTerms:
    """Measure the contour along correspondence lines of ``scale`` px segments at ``camera_from_object``."""
    points, centers, normals = contour_lines(model, edges, camera_from_object, view.K, config.lines, raster)
    if len(points) == 0:
        return RegionTerms(np.zeros((0, 6)), np.zeros(0), np.zeros(0))
    half_d, F = config.distribution_half, config.function_segments
    segments = 2 * half_d + F
    per = min(scale, config.pixels_per_segment)
    offsets, foreground_band, background_band = _line_layout(
        segments, per, scale, config.histogram_segments[0] * scale, config.histogram_segments[1] * scale)
    indices, inside = view.pixel_indices(along_normals(centers, normals, offsets))
    bins = histograms.bin_of(view.colors(indices))
    if learn_colors or histograms.foreground is None:
        histograms.update(bins[:, foreground_band][inside[:, foreground_band]],
                          bins[:, background_band][inside[:, background_band]], config.histogram_blend)
    # Clipping the table clips every pixel's ratio the same way, on 4096 values instead of thousands of pixels.
    table = np.clip(histograms.log_ratio_table, -config.pixel_llr_clip, config.pixel_llr_clip)
    llr = np.where(inside, np.take(table, bins), np.float32(0.0))
    # Segment evidence: its pixels' log-likelihood ratios summed -> probability of foreground.
    # (A product with ones: NumPy's sum over a last axis of 2-3 is several times slower, with the same numbers.)
    segment_llr = (llr.reshape(len(points), segments, per) @ _ones(per)) * (scale / per)
    p_fg = 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(segment_llr, -30), 30)))
    h_b, h_gap = _step_tables(F, config.step_amplitude, config.step_slope)
    # Candidate k (contour at k segments from the projection, k = -h..h) reads segments k+h .. k+h+F-1.
    windows = p_fg[:, _window_index(2 * half_d + 1, F)]                         # (N, 2h+1, F)
    factors = windows * h_gap + h_b
    if (0.5 - config.step_amplitude) ** F > 1e-250:
        # Each factor is at least 0.5 - amplitude, so their product cannot underflow: one log per candidate.
        log_like = np.log(factors.prod(-1))                                   # (N, 2h+1)
    else:
        log_like = np.log(factors).sum(-1)
    log_like -= log_like.max(1, keepdims=True)
    posterior = np.exp(log_like)
    posterior /= posterior.sum(1, keepdims=True)
    positions = np.arange(-half_d, half_d + 1) * float(scale)
    mean = posterior @ positions
    variance = posterior @ positions ** 2 - mean ** 2
    return RegionTerms(line_jacobian(view.K, camera_from_object, points, normals), mean,
                       np.maximum(variance, 0.0))
