"""The refinement's settings (one dataclass: the line scales, iteration schedule and modality weights) and
its result."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from discopose._errors import ConfigError


@dataclass
class RefineConfig:
    """How :func:`~discopose.refine.refine_pose` aligns the mesh to the image.

    Coarse to fine: level ``i`` runs ``iterations[i]`` Newton steps with correspondence-line segments of
    ``scales_px[i]`` pixels (a line spans ``2 * distribution_half + function_segments`` segments, so the
    coarsest level sees the contour up to ``scales_px[0] * distribution_half`` px away).
    """

    scales_px: tuple[int, ...] = (6, 4, 2, 1)
    # The scales above are for an object this many pixels across (its projected diameter); a smaller or larger
    # projection scales them (never below 1 px, never above twice), so the lines never reach across the object.
    reference_diameter_px: float = 200.0
    iterations: tuple[int, ...] = (3, 2, 2, 2)
    # Region modality (silhouette): correspondence lines across the projected contour.
    lines: int = 100
    distribution_half: int = 6          # contour positions considered: -h..h segments
    function_segments: int = 8          # segments each position's smoothed step function reads
    pixels_per_segment: int = 3         # pixels read per segment (evenly spread): coarse segments need not read all
    step_amplitude: float = 0.43        # smoothed step: global uncertainty (0.5 = a hard step)
    step_slope: float = 0.5             # smoothed step: local uncertainty, segments
    pixel_llr_clip: float = 2.0         # one pixel's colour evidence is capped at this log-likelihood ratio
    histogram_bins: int = 16            # per RGB channel
    # Line pixels between these many segments inside/outside the projected contour train the histograms (the
    # band closer than the first is left out: the pose is still off by about a segment or two).
    histogram_segments: tuple[float, float] = (2.0, 10.0)
    histogram_blend: float = 0.5        # weight of this iteration's colours against the running histograms
    region_robust: bool = True          # Tukey weights on the lines' measured offsets
    # Edge modality: the visible crease edges (between two front faces) searched along their normals.
    edges: bool = True
    edge_weight: float = 1.0
    edge_silhouette: bool = False       # also search the silhouette's edges (the region term reads them already)
    edge_spacing_px: float = 6.0
    edge_end_margin: float = 0.12       # share of each crease edge left out at either end (corners are ambiguous)
    # Search distance per scale (scaled like scales_px, at least 3 px); 0 = no edge term at that scale. Off at
    # the coarse scales: searched far, the letters' strokes win over the creases (measured: worse than without).
    edge_search_px: tuple[float, ...] = (0.0, 0.0, 6.0, 4.0)
    edge_min_gradient: float = 8.0      # grey levels per pixel
    edge_min_facing: float = 0.25       # both faces of a crease must face the camera at least this much (cosine)
    edge_prior_frac: float = 0.5        # candidates are weighted by a Gaussian of this fraction of the search
    edge_max_angle_deg: float = 30.0    # image gradient vs predicted edge normal
    # Optimizer: Levenberg-Marquardt damping relative to the Hessian's diagonal, and step limits.
    damping: float = 0.1
    max_step_rad: float = 0.35
    max_step_diameter: float = 0.3
    # Score: a correspondence agrees when the image puts the contour (or crease) this close to the projection.
    agree_px: float = 2.5
    # Starting hypotheses: the start and rotations by +-hypothesis_deg about the camera's x, y, z axes
    # (through the object's centre), up to this many in all; the best-scoring alignment wins.
    hypotheses: int = 1
    hypothesis_deg: float = 25.0
    # With several starts, all run this many of the coarsest scales, are scored, and the best
    # ``hypotheses_kept`` finish the rest (the whole schedule for all would cost ``hypotheses`` times one).
    hypothesis_screen_levels: int = 2
    hypotheses_kept: int = 2
    # Return the start unchanged when it scores better than every refined hypothesis (hypothesis -1).
    keep_better_start: bool = True
    # Among the shape's symmetric equivalents keep the one nearest the start (the letters are the network's).
    keep_start_equivalent: bool = True

    def __post_init__(self):
        self.scales_px = tuple(int(s) for s in np.atleast_1d(self.scales_px))
        self.iterations = tuple(int(i) for i in np.atleast_1d(self.iterations))
        self.edge_search_px = tuple(float(s) for s in np.atleast_1d(self.edge_search_px))
        if not self.scales_px or min(self.scales_px) < 1:
            raise ConfigError(f"refine.scales_px must be whole pixels >= 1, coarse to fine, got {self.scales_px}")
        if len(self.iterations) != len(self.scales_px) or min(self.iterations) < 0:
            raise ConfigError(f"refine.iterations needs one non-negative count per scale ({len(self.scales_px)}), "
                              f"got {self.iterations}")
        if len(self.edge_search_px) != len(self.scales_px) or min(self.edge_search_px) < 0:
            raise ConfigError(f"refine.edge_search_px needs one distance per scale ({len(self.scales_px)}, 0 = no "
                              f"edge term at that scale), "
                              f"got {self.edge_search_px}")
        if self.lines < 8:
            raise ConfigError(f"refine.lines must be at least 8, got {self.lines}")
        if self.pixels_per_segment < 1:
            raise ConfigError(f"refine.pixels_per_segment must be at least 1, got {self.pixels_per_segment}")
        if self.distribution_half < 1 or self.function_segments < 2 or self.function_segments % 2:
            raise ConfigError("refine.distribution_half must be >= 1 and refine.function_segments even and >= 2, "
                              f"got {self.distribution_half} and {self.function_segments}")
        if not 0 < self.step_amplitude < 0.5:
            raise ConfigError(f"refine.step_amplitude must lie in (0, 0.5), got {self.step_amplitude}")
        self.histogram_segments = tuple(float(v) for v in self.histogram_segments)
        if len(self.histogram_segments) != 2 or not 0 <= self.histogram_segments[0] < self.histogram_segments[1]:
            raise ConfigError("refine.histogram_segments must be (near, far) segments with 0 <= near < far, "
                              f"got {self.histogram_segments}")
        if self.histogram_bins not in (2, 4, 8, 16, 32, 64):
            raise ConfigError(f"refine.histogram_bins must be 2, 4, 8, 16, 32 or 64, got {self.histogram_bins}")
        if not 0 < self.histogram_blend <= 1:
            raise ConfigError(f"refine.histogram_blend must lie in (0, 1], got {self.histogram_blend}")
        if self.hypotheses < 1 or self.hypotheses > 7:
            raise ConfigError(f"refine.hypotheses must be 1 (the start only) to 7 (start and +-hypothesis_deg "
                              f"about each camera axis), got {self.hypotheses}")
        if self.hypothesis_screen_levels < 0 or self.hypotheses_kept < 1:
            raise ConfigError("refine.hypothesis_screen_levels must be >= 0 and refine.hypotheses_kept >= 1")
        if self.damping < 0 or self.agree_px <= 0:
            raise ConfigError("refine.damping must be >= 0 and refine.agree_px > 0")


def follow_schedule(config: RefineConfig) -> RefineConfig:
    """``config`` for a start one frame's motion from the truth (the tracker following its last pose): the two
    finest scales only, two steps each, one hypothesis. Measured from starts up to 3 deg / 5 mm off
    (benchmarks/follow_schedule.py, 30 frames a set): realistic proxy with the hand 1.27 deg median against 4.04
    with the whole schedule (whose coarse scales slide under the fingers), three cameras jointly 0.31 against 0.41 deg,
    in 0.57-0.61x the time."""
    return replace(config, scales_px=(2, 1), iterations=(2, 2), edge_search_px=(6.0, 4.0), hypotheses=1)


@dataclass
class RefineResult:
    """A refined pose with the evidence for it.

    ``frame_from_object``: 4x4 (metres) in ``frame`` (``camera:<name>`` for one camera, ``world`` for several).
    ``score`` (0-1): how well the image supports the pose: the share of correspondence lines and crease samples
    whose image contour/edge lies within ``agree_px`` of the projection (a wrong pose aligns badly).
    ``region_agreement`` / ``edge_agreement``: the same per modality (None without samples);
    ``residual_px``: median distance of the measured contour from the projection over the lines;
    ``lines`` / ``edge_samples``: how many were measured at the end; ``iterations``: Newton steps of the chosen
    hypothesis; ``hypothesis``: which start won (0 = the given one, -1 = the start left unrefined because it
    scored better); ``hypothesis_scores``: each start's score after the coarse scales that screen them (one
    start: its final score);
    ``time_ms``: wall time of the whole call; ``start_from_object``: the starting pose, in the same frame.
    """

    frame_from_object: np.ndarray
    frame: str
    score: float
    region_agreement: float | None
    edge_agreement: float | None
    residual_px: float | None
    lines: int
    edge_samples: int
    iterations: int
    hypothesis: int = 0
    hypothesis_scores: list[float] = field(default_factory=list)
    time_ms: float = 0.0
    start_from_object: np.ndarray | None = None

    @property
    def camera_from_object(self) -> np.ndarray:
        """The pose in the camera's frame (a one-camera result)."""
        if not self.frame.startswith("camera"):
            raise ConfigError(f"this refinement's pose is in the {self.frame} frame; read frame_from_object")
        return self.frame_from_object
