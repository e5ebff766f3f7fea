"""Lane attributes of a road image or video, without model weights.

``analyze_image`` finds the painted lines (see ``detect``), picks the two that bound the
ego lane and classifies each (see ``classify``). ``analyze_video`` does that on sampled
frames with one shared vanishing point and votes per attribute, since a dash pattern or a
faint colour is clearer over several frames than in one. Input that cannot be analysed
(not RGB, tiny, no road, too dark) gives ``unknown`` attributes and a note, never an
exception: a dataset build must record it and move on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lanepaint.data.vocab import UNKNOWN, LaneAttributes
from lanepaint.io.video import VIDEO_EXTENSIONS
from lanepaint.lanes import classify, detect

log = logging.getLogger(__name__)

ATTRIBUTES = LaneAttributes.FIELDS
#: What one side reports: whether a line is there, then the line's attributes.
SIDE_FIELDS = ("presence", *ATTRIBUTES)
PRESENT, ABSENT = "present", "absent"
# Below this (on a 0..1 scale) a decision is reported as unknown rather than guessed.
MIN_CONFIDENCE = 0.55
# Confidence that a side has no line when the other side's line was found.
ABSENT_CONFIDENCE = 0.8
# ... and that both sides have none when a road was seen but no line-like paint on it.
NO_LINE_CONFIDENCE = 0.6


@dataclass(frozen=True)
class SideResult:
    """One ego-lane line: whether it is there (present/absent/unknown) and each attribute,
    each with its own confidence (0..1). A value is ``unknown`` where the evidence was too
    weak to answer: the analyzer abstains rather than guess."""

    count: str = UNKNOWN
    color: str = UNKNOWN
    pattern: str = UNKNOWN
    confidence: dict[str, float] = field(
        default_factory=lambda: {name: 0.0 for name in SIDE_FIELDS}
    )
    presence: str = UNKNOWN

    @property
    def attributes(self) -> LaneAttributes:
        return LaneAttributes(self.count, self.color, self.pattern)

    def as_dict(self) -> dict:
        return {
            "presence": self.presence,
            "count": self.count,
            "color": self.color,
            "pattern": self.pattern,
            "confidence": {k: round(float(v), 3) for k, v in self.confidence.items()},
        }


@dataclass(frozen=True)
class LaneAnalysis:
    left: SideResult = field(default_factory=SideResult)
    right: SideResult = field(default_factory=SideResult)
    notes: tuple[str, ...] = ()
    frames: int = 1

    @property
    def summary(self) -> LaneAttributes:
        return LaneAttributes.combine(self.left.attributes, self.right.attributes)

    @property
    def caption(self) -> str:
        return self.summary.caption

    def as_dict(self) -> dict:
        return {
            "left": self.left.as_dict(),
            "right": self.right.as_dict(),
            "caption": self.caption,
            "frames": self.frames,
            "notes": list(self.notes),
        }


#: The confidence an analyzer attribute needs to count in a cross-check (caption
#: agreement, evaluate): stricter than answering, so a borderline answer is never
#: held against a caption or an edit.
CHECK_CONFIDENCE = 0.7


def trusted_attributes(analysis: dict, min_confidence: float = CHECK_CONFIDENCE) -> LaneAttributes:
    """The summary attributes of an analysis (``LaneAnalysis.as_dict()``) that both ego
    lines support with at least ``min_confidence``; the others become ``unknown``.

    A missing line or a low-confidence attribute is no evidence either way, so it must
    not count as a disagreement with a caption or as a wrong edit.
    """
    sides = []
    for side in (analysis.get("left") or {}, analysis.get("right") or {}):
        conf = side.get("confidence") or {}
        values = (
            side.get(name, UNKNOWN) if float(conf.get(name, 0.0)) >= min_confidence else UNKNOWN
            for name in ATTRIBUTES
        )
        sides.append(LaneAttributes(*values))
    return LaneAttributes.combine(*sides)


def _unknown(reason: str, frames: int = 1) -> LaneAnalysis:
    log.debug("lane analysis unknown: %s", reason)
    return LaneAnalysis(notes=(reason,), frames=frames)


def _near_row(lines, maps, bev) -> int | None:
    rows = [classify.nearest_paint_row(ln, maps, bev) for ln in lines if ln is not None]
    rows = [r for r in rows if r is not None]
    return max(rows) if rows else None


def _side(
    line: detect.Line | None,
    maps,
    bev,
    near_row: int | None,
    absent_confidence: float,
    other: detect.Line | None = None,
) -> tuple[SideResult, classify.LineEvidence | None]:
    """One side's answer; below MIN_CONFIDENCE a value is ``unknown`` (an abstention).
    ``other`` is the other side's ego line (the lane's width puts a far line in doubt)."""
    if line is None:
        conf = {name: 0.0 for name in SIDE_FIELDS} | {"presence": absent_confidence}
        presence = ABSENT if absent_confidence >= MIN_CONFIDENCE else UNKNOWN
        return SideResult(confidence=conf, presence=presence), None
    ev = classify.measure(line, maps, bev, near_row)
    presence = classify.decide_presence(line, ev)
    doubt = classify.outer_line_doubt(line, other)
    decisions = {
        "presence": classify.Decision(presence.value, round(presence.confidence * doubt, 3)),
        "count": classify.decide_count(ev),
        "color": classify.decide_color(ev),
        "pattern": classify.decide_pattern(ev),
    }
    values = {
        k: (d.value if d.confidence >= MIN_CONFIDENCE else UNKNOWN) for k, d in decisions.items()
    }
    conf = {k: d.confidence for k, d in decisions.items()}
    if values["presence"] != PRESENT:  # a doubtful line is not described
        values |= {name: UNKNOWN for name in ATTRIBUTES}
    return SideResult(
        values["count"], values["color"], values["pattern"], conf, values["presence"]
    ), ev


def _absent_confidence(
    lines: list[detect.Line],
    dropped: list[detect.Line],
    sign: int,
    found: int,
    worn_beside: bool = False,
) -> float:
    """How sure a side without an ego line has none: sure when the other side's line was
    found and nothing line-like was seen on this side; not when a weak candidate was (a
    worn line may be one; not a streak at an angle to the line found on the other side, as
    slush or a snow edge makes) or a candidate was dropped that may still be paint (a line half
    hidden by snow or a car may look like an edge). With no line on either side a road was
    seen (a vanishing point) without markings: less sure, and not at all with a doubt.
    Beside a found line whose paint is worn (``worn_beside``), a missing line may be worn
    away: a doubt too."""
    lo, hi = classify.EGO_RANGE
    weak = [
        ln
        for ln in lines
        if lo <= sign * ln.a0 <= hi
        and ln.rows >= classify.MIN_ROWS // 2
        and (found == 0 or classify.is_parallel(ln))
    ]
    doubt = weak or worn_beside or any(sign * ln.a0 > 0 for ln in dropped)
    if found == 0:
        return 0.0 if doubt else NO_LINE_CONFIDENCE
    return ABSENT_CONFIDENCE * (0.5 if doubt else 1.0)


def _road_mask(mask: object, shape: tuple[int, int]) -> np.ndarray | None:
    """A {0,1} uint8 mask of the image's size, or None when it cannot be one."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.ndim != 2 or arr.shape != shape:
        return None
    return (arr > 0).astype(np.uint8)


def _prepare(rgb: object, road_mask: object | None) -> tuple[np.ndarray, np.ndarray | None, list]:
    image = detect.as_rgb(rgb)
    notes: list[str] = []
    mask = None
    if road_mask is not None:
        mask = _road_mask(road_mask, image.shape[:2])
        if mask is None:
            notes.append(
                f"road mask of shape {np.shape(road_mask)} does not match the image "
                f"{image.shape[:2]}; ignored"
            )
    image, mask = detect.downscale(image, mask)
    if min(image.shape[:2]) < detect.MIN_SIDE:
        raise detect.BadInput(f"image too narrow once scaled to {image.shape[1]} px wide")
    return image, mask, notes


@dataclass
class Detection:
    """Everything one image's analysis found on the way (for measuring and debugging).

    Geometry is in the processed image, which is the input scaled by ``scale``.
    """

    result: LaneAnalysis
    scale: float = 1.0
    vanishing: detect.VanishingPoint | None = None
    bev: detect.Birdseye | None = None
    lines: list[detect.Line] = field(default_factory=list)
    left: detect.Line | None = None
    right: detect.Line | None = None
    evidence: dict[str, classify.LineEvidence | None] = field(default_factory=dict)


def analyze_image(rgb: np.ndarray, road_mask: np.ndarray | None = None) -> LaneAnalysis:
    """Lane attributes of one RGB image (uint8 HxWx3), optionally within its road mask."""
    return inspect_image(rgb, road_mask).result


def inspect_image(rgb: np.ndarray, road_mask: np.ndarray | None = None) -> Detection:
    """analyze_image with its intermediate results."""
    try:
        image, mask, notes = _prepare(rgb, road_mask)
    except detect.BadInput as exc:
        return Detection(_unknown(str(exc)))
    det = Detection(_unknown("not analysed"), scale=image.shape[1] / np.shape(rgb)[1])
    try:
        det.result = _analyze(image, mask, notes, det)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError, cv2.error) as exc:
        # geometry degenerate for this input (e.g. vanishing point on the bottom row)
        det.result = _unknown(f"analysis failed on this input: {exc}")
    return det


@dataclass
class _View:
    """What is seen of the road from one vanishing-point hypothesis."""

    vp: detect.VanishingPoint
    bev: detect.Birdseye
    maps: detect.MarkingMaps
    lines: list[detect.Line]
    left: detect.Line | None
    right: detect.Line | None

    @property
    def both(self) -> bool:
        return self.left is not None and self.right is not None

    @property
    def quality(self) -> float:
        """Paint rows and length of the ego lines; a pair counts more than one line."""
        ego = [ln for ln in (self.left, self.right) if ln is not None]
        return sum(ln.rows + 20.0 * ln.extent for ln in ego) * (1.5 if len(ego) == 2 else 1.0)


def _view(image: np.ndarray, mask: np.ndarray | None, vp: detect.VanishingPoint) -> _View | str:
    """The lines seen from ``vp``, or why there is nothing to see from it."""
    h, w = image.shape[:2]
    bev = detect.Birdseye(vp.x, vp.y, h, w)
    valid = bev.warp(np.ones((h, w), np.uint8), nearest=True) > 0
    if mask is not None:
        grown = cv2.dilate(mask, np.ones((9, 9), np.uint8))
        valid &= bev.warp(grown, nearest=True) > 0
    if valid.sum() < 0.05 * valid.size:
        return "too little road in view"
    maps = detect.marking_maps(bev.warp(image), valid)
    density = maps.mask[valid].mean()
    if density > 0.25:
        return f"paint-like texture everywhere ({density:.0%}): not a road"
    lines = detect.find_lines(maps, bev)
    return _View(vp, bev, maps, lines, *classify.ego_pair(lines))


def _analyze(image, mask, notes: list[str], det: Detection) -> LaneAnalysis:
    h, w = image.shape[:2]
    if mask is not None and mask.mean() < 0.01:
        return _unknown("road mask covers < 1% of the image")
    lower = image[h // 2 :]
    if float(lower.std()) < 2.0:
        return _unknown("no image structure (uniform image)")
    if float(lower.max(axis=2).mean()) < 12.0:
        return _unknown("too dark to see lane markings")
    if detect.noise_ratio(image) > 0.6:
        return _unknown("image is dominated by pixel noise: no road structure")
    image = detect.suppress_streaks(image)
    candidates = detect.vanishing_points(image, mask, k=3)
    candidates = [vp for vp in candidates if 0.1 * h <= vp.y <= 0.85 * h]
    if not candidates:
        return _unknown("no converging lines: no road found")
    # The best-voted point is kept when both ego lines are seen from it; otherwise the
    # next candidates are tried (trees and railings converge too) and the one that shows
    # the most lane line wins.
    best: _View | None = None
    reason = ""
    for vp in candidates:
        view = _view(image, mask, vp)
        if isinstance(view, str):
            reason = reason or view
            continue
        if best is None or view.quality > best.quality:
            best = view
        if view.both:
            best = view
            break
    if best is None:
        return _unknown(reason)
    return _describe(best, notes, det)


def _pick_paint(view: _View, det: Detection) -> tuple[list[detect.Line], list[detect.Line]]:
    """Choose the ego lines, dropping a chosen one that is clearly not paint (too wide,
    an edge between unlike grounds, no lighter than the asphalt) for the next candidate
    out; returns the candidates left and those dropped that may still be a line (too
    wide only, and not yellow, is a gutter, a snow bank or a car's flank, not a line)."""
    lines = list(view.lines)
    dropped: list[detect.Line] = []
    det.left, det.right = view.left, view.right
    for _ in range(3):
        near = _near_row((det.left, det.right), view.maps, view.bev)
        measured = [
            (ln, classify.measure(ln, view.maps, view.bev, near))
            for ln in (det.left, det.right)
            if ln is not None
        ]
        bad = [ln for ln, ev in measured if classify.not_paint(ev)]
        if not bad:
            break
        dropped += [
            ln for ln, ev in measured if classify.not_paint(ev) and classify.may_be_paint(ev)
        ]
        lines = [ln for ln in lines if all(ln is not b for b in bad)]
        det.left, det.right = classify.ego_pair(lines)
    return lines, dropped


def _describe(view: _View, notes: list[str], det: Detection) -> LaneAnalysis:
    """Both sides' answers from the chosen view."""
    det.vanishing, det.bev, det.lines = view.vp, view.bev, view.lines
    maps, bev = view.maps, view.bev
    lines, dropped = _pick_paint(view, det)
    if det.left is None and det.right is None:
        left, right = (
            _side(None, maps, bev, None, _absent_confidence(lines, dropped, sign, 0))[0]
            for sign in (-1, 1)
        )
        return LaneAnalysis(left, right, notes=(*notes, "no lane line found"))
    near = _near_row((det.left, det.right), maps, bev)
    ego = {"left": det.left, "right": det.right}
    found = sum(ln is not None for ln in ego.values())
    sides: dict[str, SideResult] = {}
    worn = False  # the found line's paint is worn: a missing one may be worn away
    for name in sorted(ego, key=lambda n: ego[n] is None):  # the found line first
        other = ego["right" if name == "left" else "left"]
        sign = -1 if name == "left" else 1
        absent = _absent_confidence(lines, dropped, sign, found, worn)
        sides[name], ev = _side(ego[name], maps, bev, near, absent, other)
        det.evidence[name] = ev
        worn = ev is not None and classify.worn_paint(ev)
        if ego[name] is None:
            notes.append(f"no {name} ego-lane line found")
    return LaneAnalysis(sides["left"], sides["right"], tuple(notes))


# ------------------------------------------------------------------------------- video


def _vote(sides: list[SideResult], min_votes: int) -> SideResult:
    """Per attribute: the value with the largest summed confidence over frames."""
    values, conf = {}, {}
    for name in SIDE_FIELDS:
        weight: dict[str, float] = defaultdict(float)
        for side in sides:
            value = getattr(side, name)
            if value != UNKNOWN:
                weight[value] += side.confidence.get(name, 0.0)
        votes = sum(1 for s in sides if getattr(s, name) != UNKNOWN)
        if not weight or votes < min_votes:
            values[name], conf[name] = UNKNOWN, 0.0
            continue
        best = max(weight, key=weight.get)
        share = weight[best] / sum(weight.values())
        agreeing = [s.confidence[name] for s in sides if getattr(s, name) == best]
        values[name] = best
        conf[name] = round(share * float(np.mean(agreeing)), 3)
        if conf[name] < MIN_CONFIDENCE * 0.8:
            values[name] = UNKNOWN
    if values["presence"] == ABSENT:  # most frames see no line there
        values |= {name: UNKNOWN for name in ATTRIBUTES}
    return SideResult(values["count"], values["color"], values["pattern"], conf, values["presence"])


def _sample_frames(source: str | Path, max_frames: int) -> tuple[list[int], list[np.ndarray]]:
    """Up to ``max_frames`` frames evenly spread over a video file, with their indices."""
    from lanepaint.io.video import iter_frames, probe

    total = probe(source).frames
    step = max(1, int(np.ceil(total / max_frames))) if total else 1
    indices, frames = [], []
    for i, frame in enumerate(iter_frames(source)):
        if i % step == 0:
            indices.append(i)
            frames.append(frame)
            if len(frames) >= max_frames:
                break
    return indices, frames


def analyze_video(
    source: str | Path | np.ndarray | Iterable[np.ndarray],
    max_frames: int = 24,
    road_masks: np.ndarray | None = None,
) -> LaneAnalysis:
    """Lane attributes of a video (path, [T,H,W,3] array or frames), voted over frames.

    ``road_masks``: [T,H,W] per source frame, or one [H,W] mask for all of them.

    Up to ``max_frames`` frames spread over the video are analysed one by one and each
    attribute goes to the value with the most confidence summed over frames: a frame where
    a car hides a dash or a shadow eats a line is outvoted by the others. A missing file
    raises FileNotFoundError; an undecodable one is a recorded unknown.
    """
    if isinstance(source, str | Path):
        from lanepaint.io.video import VideoError

        if not Path(source).exists():
            raise FileNotFoundError(f"no such video: {source}")
        try:
            indices, frames = _sample_frames(source, max_frames)
        except VideoError as exc:
            return _unknown(f"cannot decode video: {exc}", frames=0)
    else:
        frames = list(source)
        step = max(1, int(np.ceil(len(frames) / max(1, max_frames))))
        indices = list(range(0, len(frames), step))
        frames = [frames[i] for i in indices]
    if not frames:
        return _unknown("no frames", frames=0)
    if road_masks is not None and np.ndim(road_masks) == 2:  # one mask for every frame
        road_masks = [road_masks] * (max(indices) + 1)
    masks = [
        road_masks[i] if road_masks is not None and i < len(road_masks) else None for i in indices
    ]
    results = [analyze_image(frame, mask) for frame, mask in zip(frames, masks, strict=True)]
    min_votes = max(1, len(results) // 5)
    left = _vote([r.left for r in results], min_votes)
    right = _vote([r.right for r in results], min_votes)
    notes: list[str] = []
    for note in (n for r in results for n in r.notes):
        if note not in notes:
            notes.append(note)
    return LaneAnalysis(left, right, tuple(notes[:5]), frames=len(results))


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_image(path: str | Path) -> np.ndarray:
    """An image file as an array: RGB for colour files, 2-D for single-channel ones.

    Alpha and palettes are dropped by converting to RGB; a grey file stays grey so that the
    analysis reports it as non-RGB instead of calling every line white.
    """
    from PIL import Image

    from lanepaint.io.images import to_8bit

    with Image.open(path) as im:
        im = to_8bit(im, str(path))  # 16-bit grey scaled, not clipped to white
        if im.mode in ("L", "LA", "I", "I;16", "F", "1"):
            return np.asarray(im.convert("L"))
        return np.asarray(im.convert("RGB"))


def load_mask(path: str | Path) -> np.ndarray:
    """A road mask from a PNG (nonzero = road) or an .npz (``arr_0``, [H,W] or [T,H,W])."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        from lanepaint.data.masks import read_masks_npz

        return read_masks_npz(path.read_bytes(), str(path), ndim=(2, 3))
    from PIL import Image

    with Image.open(path) as im:
        return (np.asarray(im.convert("L")) > 0).astype(np.uint8)


def analyze_path(path: str | Path, mask_path: str | Path | None = None, max_frames: int = 24):
    """analyze_image or analyze_video, by the file's suffix."""
    mask = load_mask(mask_path) if mask_path else None
    if is_video(path):
        return analyze_video(path, max_frames=max_frames, road_masks=mask)
    if not Path(path).exists():
        raise FileNotFoundError(f"no such image: {path}")
    try:
        image = load_image(path)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        return _unknown(f"cannot decode image {path}: {exc}")
    if mask is not None and mask.ndim == 3:
        mask = mask[0]
    return analyze_image(image, mask)
