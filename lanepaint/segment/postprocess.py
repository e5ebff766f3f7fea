"""Mask clean-up shared by both segmenters, and the overlay used to check masks by eye.

Order matters: specks are removed first (so they are not dilated into blobs), then holes
are filled (lane markings that the segmenter left out of the road), then the mask is
dilated (the inpainting must cover the marking edges and a little margin). Holes are
filled only up to a size: a car driving ahead is also a hole in the road, and painting
it away is not the edit we want. Sizes are fractions of the frame area so the same
settings work at 320x192 and at 1920x1080. Convention: 1 = road to inpaint, 0 = keep.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PostprocessSettings:
    """``dilate``: radius of the elliptic dilation kernel at output resolution.
    ``min_component``: road components below this fraction of the frame are dropped.
    ``max_hole``: enclosed non-road regions up to this fraction of the frame are filled
    (0 disables hole filling)."""

    dilate: int = 4
    min_component: float = 0.002
    max_hole: float = 0.003

    def __post_init__(self) -> None:
        if self.dilate < 0:
            raise ValueError("dilate must be >= 0")
        for name in ("min_component", "max_hole"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a fraction of the frame, in [0, 1): {value}")


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected foreground components smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels].astype(np.uint8)


def fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill 4-connected background regions that do not touch the border, up to ``max_area``."""
    if max_area <= 0 or not mask.any():
        return mask
    background = (mask == 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    h, w = mask.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    touches = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    hole = ~touches & (stats[:, cv2.CC_STAT_AREA] <= max_area)
    hole[0] = False  # label 0 is the foreground here
    if not hole.any():
        return mask
    return np.where(hole[labels], np.uint8(1), mask)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel)


def postprocess_mask(mask: np.ndarray, settings: PostprocessSettings) -> np.ndarray:
    """One HxW mask (any nonzero = road) -> cleaned uint8 0/1."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    area = m.shape[0] * m.shape[1]
    m = remove_small_components(m, int(round(settings.min_component * area)))
    m = fill_holes(m, int(round(settings.max_hole * area)))
    return dilate(m, settings.dilate)


def postprocess_masks(
    masks: np.ndarray, settings: PostprocessSettings, workers: int = 4
) -> np.ndarray:
    """[T,H,W] masks in parallel threads (OpenCV releases the GIL); uint8 0/1 out."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [T,H,W], got {masks.shape}")
    out = np.empty(masks.shape, np.uint8)

    def one(i: int) -> None:
        out[i] = postprocess_mask(masks[i], settings)

    if workers <= 1 or len(masks) <= 1:
        for i in range(len(masks)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(len(masks))))
    return out


def overlay_frame(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB frame with the mask tinted red and outlined, for checking masks by eye."""
    out = frame.copy()
    m = mask > 0
    if m.any():
        tint = np.array([255, 40, 40], np.float32)
        out[m] = (out[m].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        thickness = max(1, round(min(frame.shape[:2]) / 240))
        cv2.drawContours(out, contours, -1, (255, 230, 0), thickness)
    return out


def road_fraction(masks: np.ndarray) -> float:
    """Mean fraction of pixels marked road over all frames (0.0 for an empty video)."""
    return float(masks.mean()) if masks.size else 0.0


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two binary masks (any shape); 1.0 when both are empty."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, t).sum() / union)
