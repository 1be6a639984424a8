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

from dataclasses import dataclass

import numpy as np

from discopose.refine.config import RefineConfig
from discopose.refine.image import ViewImage
from discopose.refine.model import FaceRaster, RefineModel, VisibleEdges, sample_along_edges
from discopose.refine.projection import line_jacobian


class ColorHistograms:
    """Foreground and background RGB histograms (``bins`` per channel) and the per-bin log-likelihood ratio."""

    def __init__(self, bins: int):
        self.bins = bins
        self.shift = 8 - int(np.log2(bins))
        self.foreground = None
        self.background = None
        self.log_ratio_table = np.zeros(bins ** 3, np.float32)

    def bin_of(self, colors: np.ndarray) -> np.ndarray:
        c = colors.astype(np.int32) >> self.shift
        return (c[..., 0] * self.bins + c[..., 1]) * self.bins + c[..., 2]

    def update(self, foreground_colors: np.ndarray, background_colors: np.ndarray, blend: float) -> None:
        """Blend the normalised histograms of these colours (N, 3) into the running ones."""
        size = self.bins ** 3
        if len(foreground_colors) < 10 or len(background_colors) < 10:
            return
        fg = np.bincount(self.bin_of(foreground_colors), minlength=size).astype(np.float64)
        bg = np.bincount(self.bin_of(background_colors), minlength=size).astype(np.float64)
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

    def log_ratio(self, colors: np.ndarray) -> np.ndarray:
        """log p(colour | foreground) - log p(colour | background) for (..., 3) uint8 colours."""
        return self.log_ratio_table[self.bin_of(colors)]


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


def _step_tables(config: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """log h_f and log h_b of the smoothed step over the ``function_segments`` segments around a candidate
    contour position (segment centres at -F/2 + 0.5 .. F/2 - 0.5 segments from it)."""
    half = config.function_segments // 2
    x = np.arange(-half, half) + 0.5
    h_f = 0.5 - config.step_amplitude * np.tanh(x / (2 * config.step_slope))
    return h_f, 1 - h_f


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
    # Pixel offsets along the line (outward positive), centred on the projected contour: `per` pixels evenly
    # spread over each segment of `scale` pixels.
    per = min(scale, config.pixels_per_segment)
    offsets = ((np.arange(segments)[:, None] + (np.arange(per)[None, :] + 0.5) / per) * scale
               - segments * scale / 2).reshape(-1)
    line_pixels = centers[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    indices, inside = view.pixel_indices(line_pixels)
    colors = view.colors(indices)
    if learn_colors or histograms.foreground is None:
        near, far = config.histogram_segments[0] * scale, config.histogram_segments[1] * scale
        distance = np.abs(offsets)
        band = (distance >= max(near, 1.0)) & (distance <= far)
        fg, bg = band & (offsets < 0), band & (offsets > 0)
        histograms.update(colors[:, fg][inside[:, fg]], colors[:, bg][inside[:, bg]], config.histogram_blend)
    llr = np.clip(histograms.log_ratio(colors), -config.pixel_llr_clip, config.pixel_llr_clip)
    llr[~inside] = 0.0
    # Segment evidence: its pixels' log-likelihood ratios summed -> probability of foreground.
    segment_llr = llr.reshape(len(points), segments, per).sum(-1) * (scale / per)
    p_fg = 1.0 / (1.0 + np.exp(-np.clip(segment_llr, -30, 30)))
    h_f, h_b = _step_tables(config)
    # Candidate k (contour at k segments from the projection, k = -h..h) reads segments k+h .. k+h+F-1.
    windows = np.lib.stride_tricks.sliding_window_view(p_fg, F, axis=1)       # (N, 2h+1, F)
    log_like = np.log(windows * h_f + (1 - windows) * h_b).sum(-1)           # (N, 2h+1)
    log_like -= log_like.max(1, keepdims=True)
    posterior = np.exp(log_like)
    posterior /= posterior.sum(1, keepdims=True)
    positions = np.arange(-half_d, half_d + 1) * float(scale)
    mean = posterior @ positions
    variance = posterior @ positions ** 2 - mean ** 2
    return RegionTerms(line_jacobian(view.K, camera_from_object, points, normals), mean,
                       np.maximum(variance, 0.0))
