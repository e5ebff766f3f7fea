"""The recorded, invertible geometry between a source video and the video model's view.

The video model runs at one size (480x720 for CogVideoX-5B-I2V); a dash-cam video is
1920x1080, 1280x720, portrait, or smaller than the model. A :class:`Geometry` says which
source pixels the view shows (``crop``, a rectangle of the source) and where in the view
they land (``placed``); the rest of the view is padding. Three modes make one:

* ``fit`` — the whole source, scaled by one factor to fit the view, centered, padded
  (letterbox): lane widths, angles and dash lengths keep their proportions;
* ``crop`` — the smallest view-shaped rectangle around the road region (every frame's
  repaint mask), never smaller than the view in source pixels (no needless upsampling),
  clipped to the source and padded where the road is wider than the view's aspect allows;
  uniform scale too, and finer detail where the road covers part of the frame;
* ``stretch`` — the whole source resized to the view (VideoPainter's own behaviour):
  16:9 footage is squashed by 16 % horizontally into 3:2.

Padding is filled by reflection (natural-looking context, known to the model) and never
enters a mask. :meth:`Geometry.from_view` maps the view back (Lanczos), so a repainted
region can be composited into the source's own frames at their full resolution.

:class:`PaintBox` is the first frame's counterpart: the crop around frame 0's mask that
FluxFill paints at about its native pixel count, blended back into the full frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

MODES = ("fit", "crop", "stretch")
MIN_SIDE = 16  # a source side below this is refused (nothing a model can paint)

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at (h, w): area averaging when shrinking both ways, Lanczos otherwise."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def bounding_box(masks: np.ndarray) -> Box | None:
    """(top, left, bottom, right) of the nonzero pixels of one mask or a stack of them."""
    union = np.asarray(masks) > 0
    if union.ndim == 3:
        union = union.any(axis=0)
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _place(lo: int, hi: int, size: int, limit: int) -> int:
    """Start of a span of ``size`` (<= limit) centered on [lo, hi), holding it, in [0, limit]."""
    start = round((lo + hi - size) / 2)
    start = min(max(start, hi - size), lo)  # hold [lo, hi) where size allows
    return min(max(start, 0), limit - size)


def _box_around(bbox: Box, size: tuple[int, int], source: tuple[int, int]) -> Box:
    """A box of ``size`` (clipped to the source) centered on ``bbox`` and inside the source."""
    h, w = min(size[0], source[0]), min(size[1], source[1])
    top = _place(bbox[0], bbox[2], h, source[0])
    left = _place(bbox[1], bbox[3], w, source[1])
    return top, left, top + h, left + w


def check_size(height: int, width: int) -> None:
    """ValueError for a source no model can work on."""
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"video is {width}x{height}: both sides must be at least {MIN_SIDE} pixels"
        )


@dataclass(frozen=True)
class Geometry:
    """Source crop -> view rectangle (see the module doc). Sizes are (rows, columns)."""

    mode: str
    source: tuple[int, int]
    view: tuple[int, int]
    crop: Box  # source pixels the view shows
    placed: Box  # view pixels they land on; the rest of the view is padding

    @property
    def scale(self) -> tuple[float, float]:
        """View pixels per source pixel, (vertical, horizontal)."""
        (t, lf, b, r), (pt, pl, pb, pr) = self.crop, self.placed
        return (pb - pt) / (b - t), (pr - pl) / (r - lf)

    @property
    def aspect_error(self) -> float:
        """|horizontal / vertical scale - 1|: 0 keeps shapes (circles stay circles)."""
        sy, sx = self.scale
        return abs(sx / sy - 1.0)

    @property
    def padding(self) -> bool:
        return self.placed != (0, 0, *self.view)

    def to_view(self, frame: np.ndarray) -> np.ndarray:
        """A source frame ([H, W, 3] or [H, W]) as the model sees it, padding reflected."""
        t, lf, b, r = self.crop
        pt, pl, pb, pr = self.placed
        inner = _resize(np.ascontiguousarray(frame[t:b, lf:r]), (pb - pt, pr - pl))
        if not self.padding:
            return inner
        h, w = self.view
        return cv2.copyMakeBorder(inner, pt, h - pb, pl, w - pr, cv2.BORDER_REFLECT_101)

    def mask_to_view(self, mask: np.ndarray) -> np.ndarray:
        """A source mask in the view, uint8 0/1: a view pixel is masked when any source
        pixel under it is (never smaller than the source's mask); padding is never masked."""
        t, lf, b, r = self.crop
        pt, pl, pb, pr = self.placed
        covered = (np.asarray(mask[t:b, lf:r]) > 0).astype(np.float32)
        size = (pb - pt, pr - pl)
        shrink = size[0] <= covered.shape[0] and size[1] <= covered.shape[1]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        inner = cv2.resize(covered, (size[1], size[0]), interpolation=interp) > 1e-6
        out = np.zeros(self.view, np.uint8)
        out[pt:pb, pl:pr] = inner
        return out

    def from_view(self, view_frame: np.ndarray) -> np.ndarray:
        """The view's picture of the crop, back at the crop's source size (Lanczos when
        enlarging, area averaging when shrinking)."""
        t, lf, b, r = self.crop
        pt, pl, pb, pr = self.placed
        return _resize(np.ascontiguousarray(view_frame[pt:pb, pl:pr]), (b - t, r - lf))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["aspect_error"] = round(self.aspect_error, 6)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(data["mode"], *(tuple(data[k]) for k in ("source", "view", "crop", "placed")))


def _fitted(crop: Box, view: tuple[int, int]) -> Box:
    """The view rectangle a crop fills at one scale, centered."""
    ch, cw = crop[2] - crop[0], crop[3] - crop[1]
    s = min(view[0] / ch, view[1] / cw)
    ph, pw = min(view[0], max(1, round(ch * s))), min(view[1], max(1, round(cw * s)))
    top, left = (view[0] - ph) // 2, (view[1] - pw) // 2
    return top, left, top + ph, left + pw


def make_geometry(
    mode: str, source: tuple[int, int], view: tuple[int, int], region: np.ndarray | None = None
) -> Geometry:
    """The geometry of ``mode`` for a source of (H, W) and a view of (h, w); ``crop`` needs
    ``region``, every frame's repaint mask at the source's size ([T, H, W] or [H, W])."""
    check_size(*source)
    full = (0, 0, *source)
    if mode == "stretch":
        return Geometry(mode, source, view, full, (0, 0, *view))
    if mode == "fit":
        return Geometry(mode, source, view, full, _fitted(full, view))
    if mode != "crop":
        raise ValueError(f"geometry must be one of {', '.join(MODES)}, not {mode!r}")
    bbox = bounding_box(region) if region is not None else None
    if bbox is None:
        raise ValueError("crop geometry needs a non-empty road region")
    aspect = view[1] / view[0]
    bh = max(bbox[2] - bbox[0], (bbox[3] - bbox[1]) / aspect, min(view[0], source[0]))
    size = (math.ceil(bh), math.ceil(bh * aspect))
    crop = _box_around(bbox, size, source)
    return Geometry(mode, source, view, crop, _fitted(crop, view))


@dataclass(frozen=True)
class PaintBox:
    """Where FluxFill paints frame 0: a crop of the source and the working size it is
    painted at (about ``side``² pixels, multiples of 16)."""

    crop: Box
    work: tuple[int, int]

    def cut(self, image: np.ndarray) -> np.ndarray:
        t, lf, b, r = self.crop
        return np.ascontiguousarray(image[t:b, lf:r])

    def blend(self, frame: np.ndarray, painted: np.ndarray, soft: np.ndarray) -> np.ndarray:
        """``frame`` with ``painted`` (the crop at any size) blended in by ``soft`` (a float
        mask of the frame's size, 0 outside the crop); pixels where ``soft`` is 0 are the
        frame's own."""
        t, lf, b, r = self.crop
        out = frame.copy()
        patch = _resize(painted, (b - t, r - lf)).astype(np.float32)
        alpha = soft[t:b, lf:r, None].astype(np.float32)
        mixed = out[t:b, lf:r] * (1 - alpha) + patch * alpha
        out[t:b, lf:r] = np.where(alpha > 0, mixed.round(), out[t:b, lf:r]).astype(np.uint8)
        return out


MAX_PAINT_ASPECT = 3.0  # FluxFill's crop is kept between 1:3 and 3:1


def paint_box(region: np.ndarray, side: int) -> PaintBox:
    """The crop around ``region`` (frame 0's repaint mask, feathered rim included) that
    FluxFill paints: the region's box with an eighth of its size as context, grown towards
    ``side``² source pixels of context where the region is smaller, kept within 1:3..3:1
    and inside the frame; painted at about ``side``² pixels (up or down), multiples of 16."""
    height, width = region.shape[:2]
    bbox = bounding_box(region)
    if bbox is None:
        raise ValueError("empty mask: nothing to paint")
    bh, bw = bbox[2] - bbox[0], bbox[3] - bbox[1]
    margin = max(8, round(max(bh, bw) / 8))
    h, w = min(height, bh + 2 * margin), min(width, bw + 2 * margin)
    target = side * side
    if h * w < target:  # more context, up to the target area, as the frame allows
        grow = math.sqrt(target / (h * w))
        h, w = min(height, round(h * grow)), min(width, round(w * grow))
        h, w = min(height, max(h, round(target / w))), min(width, max(w, round(target / h)))
    h = min(height, max(h, math.ceil(w / MAX_PAINT_ASPECT)))
    w = min(width, max(w, math.ceil(h / MAX_PAINT_ASPECT)))
    crop = _box_around(bbox, (h, w), (height, width))
    ch, cw = crop[2] - crop[0], crop[3] - crop[1]
    s = math.sqrt(target / (ch * cw))
    work = (max(16, round(ch * s / 16) * 16), max(16, round(cw * s / 16) * 16))
    return PaintBox(crop, work)
