"""The video model's work brought back to the source: its inputs made in the view, its
output composited into the source's own decoded frames at their full resolution.

The repaint region of a frame is its road mask grown by ``dilation`` source pixels, with a
feathered rim ``feather`` pixels wide beyond it (:class:`Repaint`; one distance transform
per frame, cheap at 1080p where a 73-pixel structuring element is not). The view gets the
road masks themselves (undilated, as the pipeline's propagation modes expect; mapped so that
they never shrink, see :meth:`Geometry.mask_to_view`) and a pipeline dilation wide enough
that the model generates every pixel the blend will use; back at the source's size, the
model's frame (Lanczos through the geometry) is blended in with the feathered weight, and
every pixel of weight 0 is copied from the source unchanged. Frame 0 is FluxFill's
full-resolution frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from lanepaint.edit.first_frame import FirstFrameConfig
from lanepaint.edit.geometry import Geometry, make_geometry

REFERENCE_ROWS = 480  # pixel sizes of the settings are given for 480-row frames


def at_rows(pixels: int, rows: int) -> int:
    """A size given at :data:`REFERENCE_ROWS` rows, for a frame of ``rows`` rows."""
    return round(pixels * rows / REFERENCE_ROWS)


@dataclass(frozen=True)
class Repaint:
    """How far the propagated region reaches beyond the road mask, in source pixels."""

    dilation: int
    feather: int

    @classmethod
    def for_rows(cls, dilation: int, feather: int, rows: int) -> Repaint:
        """The stage's settings (given at 480 rows) for a source of ``rows`` rows: the mask
        dilation is a kernel width, as the pipeline's (half of it on each side); the
        feather is the rim's width."""
        return cls(round(at_rows(dilation, rows) / 2), at_rows(feather, rows))

    def view_kernel(self, geometry: Geometry) -> int:
        """The pipeline's ``mask_dilation`` (a square kernel width, in view pixels) whose
        growth of the view's masks covers this region in the view: the reach scaled, one
        pixel more for where pixel grids meet."""
        reach = self.dilation + self.feather
        if reach == 0:
            return 0
        return 2 * (math.ceil(reach * max(geometry.scale)) + 1) + 1

    def weight(self, mask: np.ndarray) -> np.ndarray:
        """Blend weight of the model's pixels, float32 [H, W]: 1 within ``dilation`` of the
        mask, falling smoothly (smoothstep) to 0 across the next ``feather`` pixels."""
        outside = (np.asarray(mask) == 0).astype(np.uint8)
        distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_5)
        if self.feather <= 0:
            return (distance <= self.dilation).astype(np.float32)
        t = np.clip((self.dilation + self.feather - distance) / self.feather, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def regions(self, masks: np.ndarray) -> np.ndarray:
        """Per frame, the pixels the blend may change (weight > 0), uint8 [T, H, W]."""
        return np.stack([(self.weight(m) > 0).astype(np.uint8) for m in masks])


def scaled_first_frame(config: FirstFrameConfig, rows: int) -> FirstFrameConfig:
    """The first frame's settings (pixel sizes given at 480 rows) for a frame of ``rows``."""
    return replace(
        config, dilation=at_rows(config.dilation, rows), feather=at_rows(config.feather, rows)
    )


@dataclass
class ViewInputs:
    """What the video model is given, and how to bring its output back."""

    geometry: Geometry
    frames: np.ndarray  # [T, h, w, 3] uint8, the source in the view
    masks: np.ndarray  # [T, h, w] uint8: the road masks in the view (padding 0)
    first_frame: np.ndarray  # [h, w, 3] the edited frame 0 in the view
    regions: np.ndarray  # [T, H, W] uint8: the repaint regions at the source's size
    repaint: Repaint
    dilation: int  # the pipeline's mask_dilation for ``masks`` (Repaint.view_kernel)


def view_inputs(
    mode: str,
    view: tuple[int, int],
    frames: np.ndarray,
    masks: np.ndarray,
    first_frame: np.ndarray,
    repaint: Repaint,
) -> ViewInputs:
    """The geometry of ``mode`` for this video and the model's inputs in its view."""
    regions = repaint.regions(masks)
    geometry = make_geometry(mode, frames.shape[1:3], view, regions)
    return ViewInputs(
        geometry,
        np.stack([geometry.to_view(f) for f in frames]),
        np.stack([geometry.mask_to_view(m) for m in masks]),
        geometry.to_view(first_frame),
        regions,
        repaint,
        repaint.view_kernel(geometry),
    )


def composite_frame(
    source: np.ndarray, generated: np.ndarray, weight: np.ndarray, geometry: Geometry
) -> np.ndarray:
    """One source frame with the model's view frame blended in by ``weight``; where the
    weight is 0 the result is the source, bit for bit."""
    out = source.copy()
    t, lf, b, r = geometry.crop
    alpha = np.ascontiguousarray(weight[t:b, lf:r], dtype=np.float32)
    if not (alpha > 0).any():
        return out
    patch = geometry.from_view(generated)
    area = np.ascontiguousarray(out[t:b, lf:r])
    # Weight 0 gives the source's value exactly (OpenCV rounds the weighted sum).
    out[t:b, lf:r] = cv2.blendLinear(patch, area, alpha, 1.0 - alpha)
    return out


def composite_video(
    source: np.ndarray,
    generated: np.ndarray,
    masks: np.ndarray,
    first_frame: np.ndarray,
    geometry: Geometry,
    repaint: Repaint,
) -> np.ndarray:
    """The edited video at the source's size: frame 0 is ``first_frame`` (already at that
    size), every later frame the source with the model's output composited in."""
    out = np.empty_like(source)
    out[0] = first_frame
    for t in range(1, len(source)):
        out[t] = composite_frame(source[t], generated[t], repaint.weight(masks[t]), geometry)
    return out
