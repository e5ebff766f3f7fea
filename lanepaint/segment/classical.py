"""A weights-free road segmenter: the labeled fallback when SAM2 weights are absent.

Front cameras see the road in the lower middle of the frame, and asphalt has a narrow
range of colour and a fine, even texture. So: road statistics come from a seed trapezoid
at the bottom centre (robust median / MAD of chromaticity, lightness and local texture,
carried from frame to frame with momentum), every pixel is scored by its distance to those
statistics, the score is weighted by a perspective prior (the road lies below the horizon
and inside a wedge that narrows towards a vanishing point) and smoothed over time, and the
road is the component connected to the seed, cut where it narrows to a neck near the
horizon (where haze and sky look like far asphalt). A horizontal closing bridges lane
markings, which differ in colour from asphalt but are part of the road to repaint.

Chromaticity (r, g = R/sum, G/sum) carries most weight because it is unchanged by the
brightness drop of a shadow; lightness gets a wide tolerance for the same reason. It works
at a fixed working width (256 px) and scales masks back up, so its cost per frame does not
grow with the video's resolution. It is a sanity check, not a replacement for SAM2:
docs/segment.md gives its IoU against the exact masks of synthetic clips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from lanepaint.segment.base import EmptyVideoError, Segmentation, as_rgb, check_same_size


@dataclass(frozen=True)
class ClassicalSettings:
    """Tuning of the classical segmenter (defaults were chosen on synthetic clips)."""

    work_width: int = 256
    # Seed trapezoid: rows [seed_top, seed_bottom], half-width growing from top to bottom.
    seed_top: float = 0.66
    seed_bottom: float = 0.88
    seed_half_top: float = 0.06
    seed_half_bottom: float = 0.16
    # Tolerances in robust standard deviations (MAD * 1.4826), with floors.
    chroma_tol: float = 4.0
    light_tol: float = 10.0
    texture_tol: float = 10.0
    shadow_floor: float = 0.35  # lightness down to this fraction of the seed's is allowed
    shadow_chroma: float = 2.0  # chroma tolerance grows by this factor in full shadow
    marking_width: float = 0.08  # markings are thinner than this fraction of the width
    marking_contrast: int = 18  # and brighter than their surroundings by this (L, 0-255)
    threshold: float = 0.5
    # Perspective prior: the wedge's apex row is found per video (neck search); its sides
    # pass through these x positions at the bottom row.
    wedge_bottom_left: float = -0.35
    wedge_bottom_right: float = 1.35
    temporal: float = 0.5  # weight of the previous frame's score map
    stats_momentum: float = 0.7  # weight of the previous frame's seed statistics
    bridge: float = 0.04  # width of the horizontal closing, fraction of the frame width
    neck: float = 0.03  # a row narrower than this fraction of the width ends the road
    max_hole: float = 0.02  # enclosed non-road areas up to this fraction are markings, filled

    def __post_init__(self) -> None:
        if self.work_width < 32:
            raise ValueError("work_width must be >= 32")
        if not 0 <= self.temporal < 1 or not 0 <= self.stats_momentum < 1:
            raise ValueError("temporal and stats_momentum are in [0, 1)")


@dataclass
class _Stats:
    median: np.ndarray  # (4,) r, g, lightness, texture
    scale: np.ndarray  # (4,)


_FLOORS = np.array([0.006, 0.006, 6.0, 1.5], np.float32)


def _features(rgb: np.ndarray) -> np.ndarray:
    """[H,W,4] float32: chromaticity r, g, lightness (0-255) and local texture (std of L)."""
    f = rgb.astype(np.float32)
    total = f.sum(axis=2) + 3.0
    r = f[:, :, 0] / total
    g = f[:, :, 1] / total
    light = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float32)
    mean = cv2.blur(light, (5, 5))
    sq = cv2.blur(light * light, (5, 5))
    texture = np.sqrt(np.clip(sq - mean * mean, 0, None))
    return np.stack([r, g, light, texture], axis=2)


def _seed_mask(h: int, w: int, s: ClassicalSettings) -> np.ndarray:
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    t = np.clip((ys - s.seed_top) / max(s.seed_bottom - s.seed_top, 1e-6), 0, 1)
    half = s.seed_half_top + (s.seed_half_bottom - s.seed_half_top) * t
    inside_rows = (ys >= s.seed_top) & (ys <= s.seed_bottom)
    return inside_rows[:, None] & (np.abs(xs[None, :] - 0.5) <= half[:, None])


def _seed_stats(features: np.ndarray, seed: np.ndarray) -> _Stats:
    """Median / MAD of the seed, leaving out its brightest and darkest quarter of pixels
    by lightness (markings, tyre marks, a car's shadow) so they do not widen the model."""
    px = features[seed]
    light = px[:, 2]
    lo, hi = np.percentile(light, [20, 80])
    core = px[(light >= lo) & (light <= hi)]
    if len(core) < 8:
        core = px
    median = np.median(core, axis=0)
    mad = np.median(np.abs(core - median), axis=0) * 1.4826
    return _Stats(median.astype(np.float32), np.maximum(mad, _FLOORS).astype(np.float32))


def _score(features: np.ndarray, stats: _Stats, s: ClassicalSettings) -> np.ndarray:
    """Road likelihood in [0, 1] from the normalized distance to the seed statistics.

    Shadows darken asphalt by up to about 60 % and tint it blue: lightness below the seed
    median down to ``shadow_floor`` of it costs nothing, and the chromaticity tolerance
    widens as a pixel gets darker.
    """
    med, scale = stats.median, stats.scale
    light = features[:, :, 2]
    ratio = np.clip(light / max(float(med[2]), 1.0), 0.0, 1.0)
    z_light = np.where(
        light > med[2],
        (light - med[2]) / scale[2],
        np.maximum(s.shadow_floor * med[2] - light, 0.0) / scale[2],
    )
    chroma_tol = s.chroma_tol * (1.0 + s.shadow_chroma * (1.0 - ratio))
    zr = (features[:, :, 0] - med[0]) / scale[0] / chroma_tol
    zg = (features[:, :, 1] - med[1]) / scale[1] / chroma_tol
    zt = (features[:, :, 3] - med[3]) / scale[3] / s.texture_tol
    d2 = zr**2 + zg**2 + (z_light / s.light_tol) ** 2 + zt**2
    return np.exp(-d2).astype(np.float32)


def _markings(rgb_small: np.ndarray, s: ClassicalSettings) -> np.ndarray:
    """Thin bright structures (lane paint): lightness top-hat with a horizontal kernel
    wider than any marking, so wide bright areas (sky, barriers, cars) are not included."""
    light = cv2.cvtColor(rgb_small, cv2.COLOR_RGB2LAB)[:, :, 0]
    w = light.shape[1]
    k = max(3, int(round(s.marking_width * w)) | 1)
    tophat = cv2.morphologyEx(light, cv2.MORPH_TOPHAT, np.ones((1, k), np.uint8))
    return (tophat >= s.marking_contrast).astype(np.uint8)


def _wedge(h: int, w: int, apex_row: float, s: ClassicalSettings) -> np.ndarray:
    """Soft perspective prior: 1 inside the wedge from (0.5, apex_row) to the bottom corners."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    t = np.clip((ys - apex_row) / max(1.0 - apex_row, 1e-6), 0, None)[:, None]
    left = 0.5 + (s.wedge_bottom_left - 0.5) * t
    right = 0.5 + (s.wedge_bottom_right - 0.5) * t
    soft = 0.03
    inside = np.minimum(xs[None, :] - left, right - xs[None, :]) / soft
    below = (ys[:, None] - apex_row) / soft
    return (1 / (1 + np.exp(-np.clip(np.minimum(inside, below), -30, 30)))).astype(np.float32)


def _connected_to_seed(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    n, labels = cv2.connectedComponents(mask, connectivity=4)
    if n <= 1:
        return np.zeros_like(mask)
    counts = np.bincount(labels[seed & (mask > 0)], minlength=n)
    counts[0] = 0
    if counts.max() == 0:
        return np.zeros_like(mask)
    return (labels == int(counts.argmax())).astype(np.uint8)


def _cut_at_neck(mask: np.ndarray, neck_px: int, seed_top_row: int) -> tuple[np.ndarray, int]:
    """Remove everything above the first row (going up from the seed) that is narrower
    than ``neck_px``: the road narrows towards the horizon, a leak into sky widens again."""
    widths = mask.sum(axis=1)
    row = seed_top_row
    while row > 0 and widths[row - 1] >= neck_px:
        row -= 1
    out = mask.copy()
    out[:row] = 0
    return out, row


def _flanked(markings: np.ndarray, road: np.ndarray, reach: int) -> np.ndarray:
    """Marking pixels with road within ``reach`` px on their left and on their right:
    paint on a road, not bright texture in trees or on a barrier."""
    if not markings.any():
        return markings
    k = np.ones((1, reach), np.uint8)
    from_left = cv2.dilate(road, k, anchor=(reach - 1, 0))
    from_right = cv2.dilate(road, k, anchor=(0, 0))
    return markings & from_left & from_right


class ClassicalRoadSegmenter:
    """Weights-free road masks; same interface as the SAM2 segmenter."""

    name = "classical"

    def __init__(self, settings: ClassicalSettings | None = None):
        self.settings = settings or ClassicalSettings()

    def segment(self, frames: Iterable[np.ndarray]) -> Segmentation:
        """Raw road masks for the frames of one video."""
        s = self.settings
        full: list[np.ndarray] = []
        small_masks: list[np.ndarray] = []
        stats: _Stats | None = None
        prev: np.ndarray | None = None
        apex: float | None = None
        for frame in frames:
            rgb = as_rgb(frame)
            if full:
                check_same_size(full[0], rgb, len(full))
            full.append(rgb)
            h, w = rgb.shape[:2]
            ww = min(s.work_width, w)
            wh = max(8, round(h * ww / w))
            small = cv2.resize(rgb, (ww, wh), interpolation=cv2.INTER_AREA)
            feats = _features(small)
            seed = _seed_mask(wh, ww, s)
            new = _seed_stats(feats, seed)
            if stats is None:
                stats = new
            else:
                m = s.stats_momentum
                stats = _Stats(
                    m * stats.median + (1 - m) * new.median, m * stats.scale + (1 - m) * new.scale
                )
            score = _score(feats, stats, s)
            if prev is not None:
                score = s.temporal * prev + (1 - s.temporal) * score
            prev = score
            mask, apex = self._mask_from_score(score, _markings(small, s), seed, apex)
            small_masks.append(mask)
        if not full:
            raise EmptyVideoError("no frames to segment")
        h, w = full[0].shape[:2]
        masks = np.stack(
            [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in small_masks]
        )
        return Segmentation(full, masks.astype(bool))

    def _mask_from_score(
        self, score: np.ndarray, markings: np.ndarray, seed: np.ndarray, apex: float | None
    ) -> tuple[np.ndarray, float]:
        s = self.settings
        h, w = score.shape
        like = (score >= s.threshold).astype(np.uint8)
        raw = like | _flanked(markings, like, max(3, int(round(s.marking_width * w))))
        bridge = max(3, int(round(s.bridge * w)) | 1)
        raw = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, np.ones((3, bridge), np.uint8))
        road = _connected_to_seed(raw, seed)
        seed_top_row = int(np.argmax(seed.any(axis=1)))
        road, neck_row = _cut_at_neck(road, max(2, int(round(s.neck * w))), seed_top_row)
        # The apex of the wedge follows the neck row smoothly from frame to frame.
        found = neck_row / h
        apex = found if apex is None else 0.8 * apex + 0.2 * found
        prior = _wedge(h, w, apex - 0.02, s)
        road = road * (prior >= 0.5)
        road = _connected_to_seed(road.astype(np.uint8), seed)
        # Lane markings and small shadows inside the road: fill small enclosed holes (a car
        # ahead is a large one and stays out).
        inv = (road == 0).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        small = stats[:, cv2.CC_STAT_AREA] <= s.max_hole * h * w
        enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & small
        enclosed[0] = False
        road = np.where(enclosed[labels], np.uint8(1), road.astype(np.uint8))
        return road, apex
