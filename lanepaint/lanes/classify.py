"""From a fitted line to its attributes: count, color and pattern, each with a confidence.

The measurements are taken along the line in the bird's-eye view, where paint width and
dash length do not change with distance:

- pattern: which BEV rows along the line hold paint. A solid line covers nearly all rows
  between its nearest and farthest paint; a dashed one leaves long gaps.
- count: the paint's cross-section, averaged over near rows after centring each row; a
  double line shows two peaks with a dip between them.
- color: the paint's (R - B) / (R + G + B) chroma minus that of the road beside it. Being a
  ratio, it ignores exposure, shadow and the warm cast of headlights on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lanepaint.lanes.detect import A_RANGE, DA, LINE_HALF, Birdseye, Line, MarkingMaps

# Decision thresholds (tuned on synthetic scenes and the Udacity frames; see docs/quality.md).
YELLOW_DELTA = 0.1  # chroma excess over the road that makes paint yellow
#: Share of yellow pixels from which a line read white is in doubt. White lines on the
#: tuning data: 1 of 954 over 0.15; yellow ones read white through a car: 0.3-0.42.
MIXED_YELLOW = 0.25
SOLID_COVERAGE = 0.72  # share of rows with paint above which a line is solid
DASH_GAP = 0.7  # z units: a dashed line's longest gap is at least this long
DASHED_COVERAGE = 0.62  # ... and below which it is dashed (between them: abstain)
GAP_MIN = 0.3  # z units: the shortest gap that counts as a dash gap
HOLE = 0.35  # z units: gaps shorter than this are holes, left out of the mean gap
PATTERN_MIN_RANGE = 1.2  # z units of visible line needed to judge the pattern
# Worn solid vs dashed, by the gaps (holes shorter than GAP_MIN count as paint): a worn solid
# line leaves a trace of paint in short gaps, a dashed one clean asphalt in long ones. Worn
# paint is patchy (some gap rows keep a trace, others are bare), so the upper quartile of
# the gap rows' trace (gap_paint_high) tells it, not their median.
SHORT_GAPS = 0.9  # z units: mean gap below which gaps with a trace are not a dashed line's
WORN_HOLES = 1.0  # z units: mean gap below which gaps with a trace may be worn holes (solid)
WORN_TRACE = 0.1  # gap_paint_high above which such gaps hold worn paint ...
DASH_TRACE = 0.08  # ... and above which short gaps are not a dashed line's (between: abstain)
# Worn paint is faded too: a line this much lighter than the asphalt or more is fresh paint
# (dashes on a light concrete road keep a trace of its seams and stains in their gaps).
WORN_LIFT = 2.0
# Dashes are painted at one period, so a dashed line's gaps are alike in length; worn holes
# are as long as the wear made them. A faded line with a trace in gaps of unlike length
# (the second longest below this share of the longest) is not called dashed.
EVEN_GAPS = 0.7
# A dash is ~3 m: about 1 z unit near the camera (99 % of those on the Udacity frames
# under 1.3, the longest 1.73).
# Unbroken paint this long (z units) reaching the near stretch is longer than any dash: a
# solid line's stretch, whatever gaps the cars ahead leave in the rest of it.
SOLID_RUN = 1.8
HOLED_COVERAGE = 0.55  # paint on this share of rows with no gap longer than
HOLE_MAX = 0.65  # ... this (z units) is a solid line with holes, trace or not
# Worn paint beside a missing line (worn_paint, for presence): the median trace and the gaps.
CLEAN_TRACE = 0.08  # gap_paint from which a line's gaps hold worn paint ...
WORN_GAP = 1.0  # ... when their mean (z units) is below this
DOUBLE_SEPARATION = (0.1, 0.45)  # camera heights between the two stripes' centres
DOUBLE_DIP = 0.8  # the dip between two peaks must fall below this share of the lower one
# ... and a line with two peaks at a double line's separation is single only when the dip
# is above this (between them: abstain; worn or glared double lines dip that little).
SINGLE_DIP = 0.88
# A double line with one stripe worn away in places: the worn stripe is a faint bump beside
# the other in the mean cross-section (the dip between them below STRIPE_DIP of the bump),
# but where its paint is left it is as strong as paint. On this share of the rows or more
# it is a stripe, not a ghost of old paint (faint all along), and "single" is in doubt.
STRIPE_DIP = 0.6
SECOND_STRIPE = 0.18
RESOLVE_PX = 0.045  # camera heights per image pixel up to which a double line is resolved

LIFT_MIN = 1.2  # paint must be this much lighter than the road's row median
# A row where the line's place is this much darker/lighter than the asphalt ahead, or
# this much more coloured, is hidden (a car), not a gap.
HIDDEN_RATIO = (0.3, 1.7)
HIDDEN_TINT = 0.12
# A car's shadow and dark base lie where a line goes under it (0.33-0.45 of the asphalt
# ahead here): a gap whose near end (BASE_ROWS rows before the nearer paint) holds ground
# darker than this is hidden by a car, not a dash gap. A dash ends on asphalt.
CAR_BASE = 0.5
BASE_ROWS = 10
REF_WIDE = 2.0  # camera heights: the road across both ego lines (see _row_refs)
# Widest paint (camera heights, at half its peak): one stripe, or two of a double line.
MAX_WIDTH = (0.19, 0.32)
BALANCE_MAX = 0.45  # |log| lightness ratio between the two sides beyond which it is an edge

NEAR_Z = 4.0  # z units: the near stretch, where paint is resolved (colour, lightness)
# Rows of the near stretch in view (of ~150) beyond which a line without paint there is no
# painted line: a dash period is shorter than the stretch, so a lane line shows paint in it.
NEAR_VIEW = 60

EGO_RANGE = (0.25, 2.8)  # |a0| of a line that may bound the ego lane, camera heights
LANE_WIDTH = (1.6, 4.2)  # plausible ego-lane width, camera heights
# Lane width beyond which the farther of the two ego lines is in doubt: a lane is seldom
# this wide, a curb or a parked car's edge beyond a missing line often is that far out.
WIDE_LANE = 3.5
MIN_ROWS = 28  # BEV rows with paint (of 300); a short dash at 320x192 has ~35
MIN_EXTENT = 0.4  # z units between a line's nearest and farthest paint
# Least share of rows with paint for a present line; the second for clear paint seen over
# a long stretch (a worn dashed line keeps a few short dashes).
SPARSE_COVERAGE = (0.15, 0.07)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


@dataclass(frozen=True)
class Decision:
    """One attribute's value and a confidence in 0..1 (0.5 = on the threshold)."""

    value: str
    confidence: float


@dataclass(frozen=True)
class LineEvidence:
    """What was measured on one line (``inspect_image`` exposes it for debugging)."""

    a0: float
    rows_visible: int
    coverage: float
    long_gaps: int
    visible_range: float  # z units in view from the far paint to the near end (hidden rows out)
    chroma_delta: float
    profile_peaks: int
    peak_separation: float
    dip_ratio: float
    lift: float = float("nan")  # paint lightness over the road's typical lightness in its rows
    balance: float = 0.0  # side_balance: 0 when both sides of the line are alike
    width: float = 0.0  # camera heights: the paint's width at half its peak (all stripes)
    longest_gap: float = 0.0  # z units: the longest run of seen rows without paint
    # What is left of the paint in the gaps, as a share of the paint's own strength (the
    # road beside the line subtracted): a worn solid line keeps a faint trace in its holes,
    # the asphalt between dashes is clean. NaN when there are too few gap rows to tell.
    gap_paint: float = float("nan")
    gap_paint_high: float = float("nan")  # the upper quartile of the same over the gap rows
    mean_gap: float = 0.0  # z units: mean gap between paint (holes < HOLE left out)
    # the second longest of those gaps over the longest; NaN with fewer than two
    gap_ratio: float = float("nan")
    near_run: float = 0.0  # z units: the longest unbroken paint reaching z = NEAR_Z (near_run)
    near_view: int = 0  # rows up to z = 4 where the line's place is in view ...
    near_paint: int = 0  # ... and those of them with paint
    paint_rows: int = 0  # rows with paint, near and far
    # share of cross-section rows with paint in a faint second stripe (second_stripe)
    second_stripe: float = 0.0
    # camera heights: the paint's width with each row centred on its own paint
    # (_row_width); inf with too few rows to tell
    row_width: float = math.inf
    # share of the near paint's pixels that are yellow (chroma over the road's by YELLOW_DELTA)
    yellow_share: float = float("nan")


def is_plausible(line: Line) -> bool:
    """Enough paint, long enough, and parallel to the other lines.

    A line's own slope may depart from the shared one in proportion to its offset (a
    wrong horizon fans lines out), not more: a shadow edge or a seam crossing the lane at
    an angle is not a lane line.
    """
    return line.rows >= MIN_ROWS and line.extent >= MIN_EXTENT and is_parallel(line)


def is_parallel(line: Line) -> bool:
    """Whether the line's slope departs from the shared one no more than a wrong horizon
    explains (in proportion to its offset)."""
    return abs(line.b - line.shared_b) <= 0.12 + 0.1 * abs(line.a0)


def ego_pair(lines: list[Line]) -> tuple[Line | None, Line | None]:
    """The lines that bound the lane the camera is in (None where there is none).

    Nearest plausible line on each side of the camera; when the two are closer than a lane
    the weaker one is dropped for the next one out (a seam or a tyre track is not a line).
    """
    left = sorted(
        (ln for ln in lines if is_plausible(ln) and -EGO_RANGE[1] <= ln.a0 <= -EGO_RANGE[0]),
        key=lambda ln: -ln.a0,
    )
    right = sorted(
        (ln for ln in lines if is_plausible(ln) and EGO_RANGE[0] <= ln.a0 <= EGO_RANGE[1]),
        key=lambda ln: ln.a0,
    )
    while left and right and right[0].a0 - left[0].a0 < LANE_WIDTH[0]:
        (left if left[0].rows < right[0].rows else right).pop(0)
    chosen_l = left[0] if left else None
    chosen_r = right[0] if right else None
    if chosen_l and chosen_r and chosen_r.a0 - chosen_l.a0 > LANE_WIDTH[1]:
        # too wide for one lane: keep the better supported side only
        if chosen_l.rows >= chosen_r.rows:
            chosen_r = None
        else:
            chosen_l = None
    return chosen_l, chosen_r


def side_balance(line: Line, maps: MarkingMaps, bev: Birdseye, clear: np.ndarray) -> float:
    """How unlike the road is on the line's two sides: median |log(lightness ratio)|.

    Paint lies on the road, with road on both sides; a gutter or curb has sidewalk on one
    side, the edge of a snow cover has snow, a car's flank has the car. 0 for a line on
    uniform road; the near rows (z <= 4) decide, where both sides are resolved, those with
    no car beside the line (``clear``, from ``beside_clear``) when they are most of them.
    """
    if maps.surface is None:
        return 0.0
    centre = _centres(line, bev)
    half, wide = int(round(LINE_HALF / DA)), int(round(0.4 / DA))
    cols = maps.surface.shape[1]
    rows = []
    for r in np.nonzero(bev.z <= 4.0)[0]:
        jc = centre[r]
        if jc - wide < 0 or jc + wide >= cols or not maps.valid[r, jc - wide : jc + wide + 1].all():
            continue
        rows.append(r)
    ratios = []
    for r in _mostly_clear(rows, clear):
        jc = centre[r]
        left = float(np.median(maps.surface[r, jc - wide : jc - half - 1]))
        right = float(np.median(maps.surface[r, jc + half + 2 : jc + wide + 1]))
        ratios.append(abs(math.log((left + 15.0) / (right + 15.0))))
    return float(np.median(ratios)) if len(ratios) >= 10 else 0.0


def beside_clear(line: Line, maps: MarkingMaps, bev: Birdseye) -> np.ndarray:
    """Per BEV row: whether the road on both sides of the line is like the asphalt ahead
    (no car beside it there): as ``occupancy`` tells a hidden line, by lightness and tint."""
    rows_n, cols_n = maps.mask.shape
    if maps.surface is None:
        return np.ones(rows_n, bool)
    centre = _centres(line, bev)
    half, wide = int(round(LINE_HALF / DA)), int(round(0.4 / DA))
    surface_ref, chroma_ref = _row_refs(maps, bev)
    clear = (centre - wide >= 0) & (centre + wide < cols_n)
    no_ref = ~(surface_ref > 0)  # nothing ahead to compare with: nothing seen as a car
    rows = np.arange(rows_n)[:, None]
    for offsets in (np.arange(-wide, -half - 1), np.arange(half + 2, wide + 1)):
        cols = np.clip(centre[:, None] + offsets[None, :], 0, cols_n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.median(maps.surface[rows, cols], axis=1) / surface_ref
        tint = np.abs(np.median(maps.chroma[rows, cols], axis=1) - chroma_ref)
        clear &= _road_like(ratio, tint) | no_ref
    return clear


def _mostly_clear(rows: list[int], clear: np.ndarray) -> list[int]:
    """The rows with clear road beside the line, when they are most of them: a car beside
    a line for a stretch must not make it look wide or one-sided, but what runs along all
    of it (a curb, a snow bank) is the line's surroundings."""
    kept = [r for r in rows if clear[r]]
    return kept if len(kept) >= max(3, len(rows) / 2) else rows


def _strength(maps: MarkingMaps) -> np.ndarray:
    return np.clip(np.maximum(maps.bright, 2.0 * maps.yellow), 0.0, None)


def _centres(line: Line, bev: Birdseye) -> np.ndarray:
    return np.round((line.at(bev.z) + A_RANGE) / DA - 0.5).astype(int)


def occupancy(
    line: Line, maps: MarkingMaps, bev: Birdseye, z_limit: float = 6.8
) -> tuple[np.ndarray, np.ndarray]:
    """Per BEV row: whether the line's window is in view (seen), and whether it has paint.

    A row where something unlike the road covers the line's place (a car: far darker or
    lighter than the asphalt ahead, or coloured) is not seen: a solid line hidden by
    traffic has no gap there, it is out of view. So is a gap that starts at a car's dark
    base where the paint stops (``_gaps_under_cars``).
    """
    rows_n, cols_n = maps.mask.shape
    centre = _centres(line, bev)
    half, wide = int(round(LINE_HALF / DA)), int(round(0.35 / DA))
    surface_ref, chroma_ref = _row_refs(maps, bev)
    seen = np.zeros(rows_n, bool)
    on = np.zeros(rows_n, bool)
    for r in range(rows_n):
        jc = centre[r]
        if bev.z[r] > z_limit or jc - wide < 0 or jc + wide >= cols_n:
            continue
        window = slice(jc - half, jc + half + 1)
        if not maps.valid[r, window].all():
            continue
        on[r] = maps.mask[r, window].any()
        seen[r] = on[r] or not _hidden(maps, r, window, surface_ref[r], chroma_ref[r])
    return seen & ~_gaps_under_cars(centre, maps, surface_ref, seen, on), on


def _gaps_under_cars(
    centre: np.ndarray, maps: MarkingMaps, surface_ref: np.ndarray, seen: np.ndarray, on: np.ndarray
) -> np.ndarray:
    """Per BEV row: whether it lies in a gap that starts, where the nearer paint stops, at
    ground darker than CAR_BASE of the asphalt ahead (a car's base: see CAR_BASE)."""
    under = np.zeros_like(on)
    painted = np.nonzero(on)[0]
    if maps.surface is None or len(painted) < 2:
        return under
    half = int(round(LINE_HALF / DA))
    lo, hi = painted.min(), painted.max()
    starts, ends = _runs(~on[lo : hi + 1])  # the gaps between paint; ends: the nearer paint
    for start, end in zip(lo + starts, lo + ends, strict=True):
        base = [
            r for r in range(max(start, end - BASE_ROWS), end) if seen[r] and surface_ref[r] > 0
        ]
        darkest = min(
            (
                _lightness(maps, r, slice(centre[r] - half, centre[r] + half + 1), surface_ref[r])
                for r in base
            ),
            default=1.0,
        )
        if seen[start:end].any() and darkest < CAR_BASE:
            under[start:end] = True
    return under


def _hidden(maps: MarkingMaps, r: int, window: slice, surface: float, chroma: float) -> bool:
    if maps.surface is None or not surface > 0:
        return False
    tint = abs(float(np.median(maps.chroma[r, window])) - chroma)
    return not _road_like(_lightness(maps, r, window, surface), tint)


def _lightness(maps: MarkingMaps, r: int, window: slice, surface: float) -> float:
    """The line's place in row r, as lightness over the asphalt ahead (``surface``)."""
    return float(np.median(maps.surface[r, window])) / surface


def _road_like(ratio, tint):
    """Whether ground of this lightness ratio and tint (against the asphalt ahead) is road,
    not a car (scalars or arrays)."""
    return (ratio >= HIDDEN_RATIO[0]) & (ratio <= HIDDEN_RATIO[1]) & (tint <= HIDDEN_TINT)


def _row_refs(maps: MarkingMaps, bev: Birdseye) -> tuple[np.ndarray, np.ndarray]:
    """Per BEV row, the median lightness and chroma of the road straight ahead (|a| <= 0.6
    camera heights, inside the ego lane; NaN where none is in view): the asphalt that
    paint must outshine and that a car is unlike.

    A light car straight ahead fills that strip in its rows; the road across both ego
    lines (|a| <= REF_WIDE) is then darker, and is the asphalt: the lower of the two is
    taken. (Snow banks and sidewalks, lighter, lie beyond the ego lines: never taken.)"""
    if "row_refs" not in maps.cache:
        surface, chroma = _row_medians(maps, bev, 0.6)
        maps.cache["row_refs"] = np.fmin(surface, _row_medians(maps, bev, REF_WIDE)[0]), chroma
    return maps.cache["row_refs"]


def _row_medians(maps: MarkingMaps, bev: Birdseye, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Per BEV row, the median surface lightness and chroma over |a| <= half."""
    rows_n = maps.mask.shape[0]
    if maps.surface is None:
        return np.full(rows_n, np.nan), np.full(rows_n, np.nan)
    ahead = maps.valid & (np.abs(bev.a) <= half)[None, :]
    any_ahead = ahead.any(axis=1)
    surface = np.where(ahead, maps.surface, np.nan)[any_ahead]
    chroma = np.where(ahead, maps.chroma, np.nan)[any_ahead]
    out_s, out_c = np.full(rows_n, np.nan), np.full(rows_n, np.nan)
    out_s[any_ahead] = np.nanmedian(surface, axis=1)
    out_c[any_ahead] = np.nanmedian(chroma, axis=1)
    return out_s, out_c


def nearest_paint_row(line: Line, maps: MarkingMaps, bev: Birdseye) -> int | None:
    _, on = occupancy(line, maps, bev)
    idx = np.nonzero(on)[0]
    return int(idx.max()) if len(idx) else None


def measure(
    line: Line, maps: MarkingMaps, bev: Birdseye, near_row: int | None = None
) -> LineEvidence:
    """Occupancy along the line, its cross-section and its colour.

    ``near_row`` is the nearest BEV row where any ego line has paint: the road is in view
    from there on (below it there may be the car's hood), so a dashed line's first gap
    counts even when the picture holds a single dash of it.
    """
    rows_n, cols_n = maps.mask.shape
    z = bev.z
    centre = _centres(line, bev)
    half, wide = int(round(LINE_HALF / DA)), int(round(0.35 / DA))
    seen, on = occupancy(line, maps, bev)
    strength = _strength(maps)
    row_surface = np.nan_to_num(_row_refs(maps, bev)[0])
    # The cross-section only tells double from single where an image pixel is small next
    # to the gap between two stripes (~0.1 camera heights): a pixel spans z / (H - vy)
    # camera heights at distance z, so only rows nearer than this take part.
    profile_z = min(5.0, RESOLVE_PX * (bev.height - bev.vy))
    line_px: list[np.ndarray] = []
    road_px: list[np.ndarray] = []
    lifts: list[np.ndarray] = []
    shifts, profile_rows = [], []
    for r in np.nonzero(on & (z <= 5.0))[0]:
        jc = centre[r]
        if z[r] <= NEAR_Z:  # colour from near paint: far paint is thin and loses its chroma
            win = maps.mask[r, jc - half : jc + half + 1]
            line_px.append(maps.chroma[r, jc - half : jc + half + 1][win])
            side = np.r_[jc - wide : jc - half - 2, jc + half + 3 : jc + wide + 1]
            free = maps.valid[r, side] & ~maps.mask[r, side]
            road_px.append(maps.chroma[r, side][free])
            if maps.surface is not None and row_surface[r] > 0:
                surf = maps.surface[r, jc - half : jc + half + 1][win]
                value = surf + maps.bright[r, jc - half : jc + half + 1][win] * (surf + 25.0)
                lifts.append(value / row_surface[r])
        core = strength[r, jc - half : jc + half + 1]
        if z[r] <= profile_z and core.sum() > 0:
            shifts.append(float((core * np.arange(-half, half + 1)).sum() / core.sum()))
            profile_rows.append(r)
    row_shifts = dict(zip(profile_rows, shifts, strict=True))
    # Centre the rows on the paint, then average. One shift for all rows (a median): a row
    # where one stripe of a double line is worn away must not be centred on the other.
    shift = int(round(float(np.median(shifts)))) if shifts else 0
    profile_rows = [r for r in profile_rows if 0 <= centre[r] + shift - wide < cols_n - 2 * wide]
    profiles = [
        strength[r, centre[r] + shift - wide : centre[r] + shift + wide + 1] for r in profile_rows
    ]
    # The paint's width from rows without a car beside the line, where there are enough
    beside = beside_clear(line, maps, bev)  # per row: no car beside the line
    clear = set(_mostly_clear(profile_rows, beside))
    clear_profiles = [p for r, p in zip(profile_rows, profiles, strict=True) if r in clear]
    coverage, gaps, vis_range, longest, inner = _coverage(on, seen, z, near_row)
    # with no gap between paint, the one toward the camera is all there is to judge by
    mean_gap = float(np.mean(inner)) if inner else longest
    near = z <= NEAR_Z
    # colour
    chroma_delta = yellow_share = float("nan")
    if line_px:
        paint = np.concatenate(line_px)
        road = np.concatenate(road_px) if road_px else np.zeros(0)
        if paint.size >= 10:
            base = float(np.median(road)) if road.size >= 10 else 0.0
            chroma_delta = float(np.median(paint)) - base
            yellow_share = float(np.mean(paint - base > YELLOW_DELTA))
    peaks, separation, dip, width, (trace, trace_high), stripe = _cross_section(
        profiles, strength, centre + shift, on, seen & (z <= 5.0), maps.valid
    )
    if len(clear_profiles) >= 3:
        width = _half_width(np.mean(clear_profiles, axis=0))
    row_width = _row_width(strength, centre, {r: row_shifts[r] for r in clear}, wide)
    return LineEvidence(
        a0=line.a0,
        rows_visible=int(seen.sum()),
        coverage=coverage,
        long_gaps=gaps,
        visible_range=vis_range,
        chroma_delta=chroma_delta,
        profile_peaks=peaks,
        peak_separation=separation,
        dip_ratio=dip,
        lift=float(np.median(np.concatenate(lifts))) if lifts else float("nan"),
        balance=side_balance(line, maps, bev, beside),
        width=width,
        longest_gap=longest,
        gap_paint=trace,
        gap_paint_high=trace_high,
        mean_gap=mean_gap,
        gap_ratio=gap_ratio(inner),
        near_run=near_run(on, z),
        near_view=int((seen & near).sum()),
        near_paint=int((on & near).sum()),
        paint_rows=int(on.sum()),
        second_stripe=stripe,
        row_width=row_width,
        yellow_share=yellow_share,
    )


def _cross_section(
    profiles: list[np.ndarray],
    strength: np.ndarray,
    centre: np.ndarray,
    on: np.ndarray,
    seen: np.ndarray,
    valid: np.ndarray,
) -> tuple[int, float, float, float, tuple[float, float], float]:
    """(peaks, separation, dip, width, gap trace (median, upper quartile), second stripe)
    of a line's mean cross-section."""
    if len(profiles) < 3:
        return 0, 0.0, 1.0, 0.0, (float("nan"), float("nan")), 0.0
    mean_profile = np.mean(profiles, axis=0)
    peaks, separation, dip = _two_peaks(mean_profile)
    width = _half_width(mean_profile)
    wide = (len(mean_profile) - 1) // 2
    paint_cols = np.nonzero(mean_profile >= 0.5 * mean_profile.max())[0] - wide
    trace = gap_trace(strength, centre, paint_cols, on, seen, valid)
    return peaks, separation, dip, width, trace, second_stripe(np.asarray(profiles))


def second_stripe(profiles: np.ndarray) -> float:
    """Share of the rows (``profiles``: rows x columns, centred on the line) where a second
    stripe, at a double line's separation from the strongest, has paint at least half as
    strong as the strongest stripe's typical paint; 0 when no such stripe stands out of the
    mean cross-section behind a clear dip (STRIPE_DIP).

    A double line with one stripe worn away in places shows that stripe as a bump too low
    to count as a peak, yet strong where paint is left; a ghost of old paint beside a
    single line is faint everywhere, and snow's or a car's edges leave no clear dip."""
    p = _smooth(profiles.mean(axis=0))
    i = int(np.argmax(p))
    if p[i] <= 0:
        return 0.0

    def column(c: int) -> np.ndarray:  # per row, the paint at column c (one column of slack)
        return profiles[:, max(0, c - 1) : c + 2].max(axis=1)

    main = float(np.percentile(column(i), 75))
    lo, hi = (int(round(s / DA)) for s in DOUBLE_SEPARATION)
    share = 0.0
    for j in range(1, len(p) - 1):
        if not (lo <= abs(j - i) <= hi and p[j] >= p[j - 1] and p[j] > p[j + 1]):
            continue
        a, b = sorted((i, j))
        if p[a : b + 1].min() < STRIPE_DIP * p[j]:
            share = max(share, float((column(j) > 0.5 * main).mean()))
    return share


def _row_width(
    strength: np.ndarray, centre: np.ndarray, row_shifts: dict[int, float], wide: int
) -> float:
    """The paint's width with each row centred on its own paint (``row_shifts``: row ->
    paint centre off the line's, in columns); inf with fewer than 3 rows.

    Where cars hide the far road, and with it the horizon, the line's fit can drift off
    the paint by more than the paint's width; one shift for all rows (``measure``) then
    smears the mean cross-section wider than any row's paint. A gutter pan or a car's
    flank is wide in every row."""
    cols_n = strength.shape[1]
    profiles = []
    for r, s in row_shifts.items():
        jc = centre[r] + int(round(s))
        if 0 <= jc - wide and jc + wide < cols_n:
            profiles.append(strength[r, jc - wide : jc + wide + 1])
    return _half_width(np.mean(profiles, axis=0)) if len(profiles) >= 3 else math.inf


def _half_width(profile: np.ndarray) -> float:
    """Camera heights of a cross-section at half its peak or more."""
    return float((profile >= 0.5 * profile.max()).sum()) * DA


def gap_trace(
    strength: np.ndarray,
    centre: np.ndarray,
    paint_cols: np.ndarray,
    on: np.ndarray,
    seen: np.ndarray,
    valid: np.ndarray,
) -> tuple[float, float]:
    """Paint strength left in a line's gaps over that on its paint, the road beside it
    subtracted from both: ~0 for dash gaps (clean asphalt), clearly above for worn paint.
    The median and the upper quartile over the gap rows (NaN, NaN when too few): worn
    paint is patchy, so a worn line's trace may show in a quarter of its gap rows only.

    Measured in the columns where the line's cross-section has paint (both stripes of a
    double line), against the road 0.32-0.45 camera heights to either side (the cleaner
    side: a ghost stripe or a curb may lie on the other).
    """
    cols_n = strength.shape[1]
    near, far = int(round(0.32 / DA)), int(round(0.45 / DA))
    idx = np.nonzero(on)[0]
    none = float("nan"), float("nan")
    if len(idx) < 3 or len(paint_cols) == 0:
        return none
    span = np.zeros_like(on)
    span[idx.min() : idx.max() + 1] = True
    values = {True: [], False: []}
    for r in np.nonzero(span & seen)[0]:
        j = centre[r]
        if j - far < 0 or j + far >= cols_n or not valid[r, j - far : j + far + 1].all():
            continue
        beside = min(
            float(np.median(strength[r, j - far : j - near + 1])),
            float(np.median(strength[r, j + near : j + far + 1])),
        )
        values[bool(on[r])].append(float(strength[r, j + paint_cols].mean()) - beside)
    if len(values[False]) < 5 or len(values[True]) < 3:
        return none
    paint = float(np.median(values[True]))
    if not paint > 0:
        return none
    gaps = np.asarray(values[False]) / paint
    return float(np.median(gaps)), float(np.percentile(gaps, 75))


def _coverage(
    on: np.ndarray, seen: np.ndarray, z: np.ndarray, near_row: int | None
) -> tuple[float, int, float, float, list[float]]:
    """(share of seen rows with paint, long gaps, length in view, longest gap, inner gaps)
    from the nearest paint in view to this line's farthest paint. The length in view (z
    units) leaves out the rows a car hides: the pattern is judged on what is seen. The
    inner gaps are those of at least HOLE that paint follows (the last one may be cut short
    by the view)."""
    idx = np.nonzero(on)[0]
    coverage, gaps, vis_range, longest = 0.0, 0, 0.0, 0.0
    inner: list[float] = []
    if len(idx):
        lo, hi = int(idx.min()), int(idx.max())
        if near_row is not None:
            hi = max(hi, near_row)
        occ = on[lo : hi + 1][seen[lo : hi + 1]]
        coverage = float(occ.mean()) if len(occ) else 0.0
        step = float(z[0] - z[1])
        vis_range = (len(occ) - 1) * step  # z[lo] - z[hi] with nothing hidden
        run = 0
        for i, v in enumerate(np.append(occ, True)):
            if v:
                gaps += int(run * step >= GAP_MIN)
                longest = max(longest, run * step)
                if run * step >= HOLE and i < len(occ):
                    inner.append(run * step)
                run = 0
            else:
                run += 1
    return coverage, gaps, vis_range, longest, inner


def gap_ratio(gaps: list[float]) -> float:
    """The second longest gap over the longest, NaN with fewer than two: near 1 for a dashed
    line's gaps, which are painted at one period."""
    if len(gaps) < 2:
        return float("nan")
    second, longest = sorted(gaps)[-2:]
    return second / longest


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each run of True in ``flags``, and the row after its last."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]


def near_run(on: np.ndarray, z: np.ndarray) -> float:
    """The longest run of consecutive rows with paint (z units) whose near end is within
    NEAR_Z: near paint is resolved, while far dashes may blur into one."""
    starts, ends = _runs(on)
    step = float(z[0] - z[1])
    return max(
        (float(e - s) * step for s, e in zip(starts, ends, strict=True) if z[e - 1] <= NEAR_Z),
        default=0.0,
    )


def _smooth(profile: np.ndarray) -> np.ndarray:
    """A cross-section smoothed over three columns (1-2-1), as its peaks are read."""
    return np.convolve(profile, np.array([1.0, 2.0, 1.0]) / 4.0, mode="same")


def _two_peaks(profile: np.ndarray) -> tuple[int, float, float]:
    """(number of significant peaks, separation of the top two in camera heights, dip ratio)."""
    p = _smooth(profile)
    top = float(p.max())
    if top <= 0:
        return 0, 0.0, 1.0
    maxima = [
        i
        for i in range(1, len(p) - 1)
        if p[i] >= p[i - 1] and p[i] > p[i + 1] and p[i] >= 0.4 * top
    ]
    if len(maxima) < 2:
        return len(maxima), 0.0, 1.0
    maxima.sort(key=lambda i: -p[i])
    i, j = sorted(maxima[:2])
    dip = float(p[i : j + 1].min()) / float(min(p[i], p[j]))
    return len(maxima), (j - i) * DA, dip


def decide_pattern(ev: LineEvidence) -> Decision:
    if ev.visible_range < PATTERN_MIN_RANGE:
        return Decision("unknown", 0.0)
    trace = 0.0 if math.isnan(ev.gap_paint_high) else ev.gap_paint_high
    traced = _sigmoid((trace - DASH_TRACE) / 0.01)
    # Unbroken paint longer than a dash is not a dash. With clean gaps it is a solid line's
    # (a trace in them may be a ghost stripe or worn paint joining dashes into one run).
    unbroken = _sigmoid((ev.near_run - SOLID_RUN) / 0.05)
    margin = (SOLID_COVERAGE - ev.coverage) / 0.08
    if ev.long_gaps == 0 or margin < 0:
        # solid: confident when coverage is well above the threshold and the line is long
        conf = _sigmoid(-margin) * min(1.0, ev.visible_range / 3.0)
        return Decision("solid", round(max(conf, unbroken * (1.0 - traced)), 3))
    # dashed: confident only well below the threshold. Paint on half the length or more
    # is as likely a worn or partly hidden solid line as a dashed one.
    # And a dash gap is metres long: worn paint leaves holes of a metre or so.
    conf = _sigmoid((DASHED_COVERAGE - ev.coverage) / 0.04) * min(1.0, 0.6 + 0.2 * ev.long_gaps)
    conf *= _sigmoid((ev.longest_gap - DASH_GAP) / 0.08)
    # Short gaps with paint left in them are a worn solid line's holes, not dash gaps.
    short = _sigmoid((SHORT_GAPS - ev.mean_gap) / 0.1)
    conf *= 1.0 - traced * short
    conf *= 1.0 - unbroken
    faded = 1.0 if math.isnan(ev.lift) else _sigmoid((WORN_LIFT - ev.lift) / 0.05)
    worn_trace = _sigmoid((trace - WORN_TRACE) / 0.01)  # as much paint left as worn paint's
    worn = worn_trace * _sigmoid((WORN_HOLES - ev.mean_gap) / 0.1)
    worn *= faded
    holed = _sigmoid((ev.coverage - HOLED_COVERAGE) / 0.04)
    holed *= _sigmoid((HOLE_MAX - ev.longest_gap) / 0.06)
    # ... judged over a stretch long enough to hold several holes (as solid above)
    solid = max(worn, holed) * min(1.0, ev.visible_range / 3.0)
    solid = max(solid, unbroken * (1.0 - traced))
    if solid > conf:
        return Decision("solid", round(solid, 3))
    # Gaps of unlike length with worn paint in them are holes, or a dash worn through: doubt
    if not math.isnan(ev.gap_ratio):
        uneven = _sigmoid((EVEN_GAPS - ev.gap_ratio) / 0.03)
        conf *= 1.0 - worn_trace * faded * uneven
    return Decision("dashed", round(conf, 3))


def decide_color(ev: LineEvidence) -> Decision:
    if math.isnan(ev.chroma_delta):
        return Decision("unknown", 0.0)
    margin = (ev.chroma_delta - YELLOW_DELTA) / 0.03
    if margin > 0:
        return Decision("yellow", round(_sigmoid(margin), 3))
    # White paint has no yellow pixels; a line read white with much yellow in it is a
    # yellow line mixed with other light ground (a car the fit runs onto): doubt.
    mixed = 0.0 if math.isnan(ev.yellow_share) else ev.yellow_share
    conf = _sigmoid(-margin) * _sigmoid((MIXED_YELLOW - mixed) / 0.03)
    return Decision("white", round(conf, 3))


def decide_count(ev: LineEvidence) -> Decision:
    lo, hi = DOUBLE_SEPARATION
    if ev.profile_peaks == 0:
        return Decision("unknown", 0.0)
    # A double line with one stripe worn in places reads as single but leaves a trace:
    # paint wider than one stripe, or a faint second stripe strong where paint is left.
    one_stripe = _sigmoid((MAX_WIDTH[0] - ev.width) / 0.02)
    not_worn_double = _sigmoid((SECOND_STRIPE - ev.second_stripe) / 0.015)
    if ev.profile_peaks < 2:
        return Decision("single", round(0.95 * one_stripe * not_worn_double, 3))
    if lo <= ev.peak_separation <= hi and ev.dip_ratio < DOUBLE_DIP:
        return Decision("double", round(_sigmoid((DOUBLE_DIP - ev.dip_ratio) / 0.04), 3))
    if lo <= ev.peak_separation <= hi:
        conf = _sigmoid((ev.dip_ratio - SINGLE_DIP) / 0.03) * one_stripe * not_worn_double
        return Decision("single", round(conf, 3))
    conf = _sigmoid((ev.dip_ratio - DOUBLE_DIP + 0.08) / 0.08) * not_worn_double
    return Decision("single", round(conf, 3))


def worn_paint(ev: LineEvidence) -> bool:
    """Worn paint: a line not fully painted whose gaps are short (mean below WORN_GAP) and
    hold a trace of paint (CLEAN_TRACE or more), as a worn solid line's holes do; dash gaps
    are long and clean, and snow over a line leaves it nearly whole."""
    trace = 0.0 if math.isnan(ev.gap_paint) else ev.gap_paint
    return trace >= CLEAN_TRACE and ev.mean_gap < WORN_GAP and ev.coverage < 0.9


def far_only(ev: LineEvidence) -> bool:
    """No paint on a near stretch that is in view: the "line" is something far ahead (the
    lower edge of a parked or leading car), since a lane line, even dashed, shows paint there.
    """
    return ev.near_paint == 0 and ev.near_view >= NEAR_VIEW


def not_paint(ev: LineEvidence) -> bool:
    """Clearly not a painted line: far too wide, an edge between unlike grounds, no
    lighter than the asphalt ahead, or no paint near the camera where the road is in view
    (the caller then looks for the next line out)."""
    limit = MAX_WIDTH[1] if ev.profile_peaks >= 2 else MAX_WIDTH[0]
    return (
        far_only(ev)
        or ev.width > limit + 0.05
        or ev.balance > BALANCE_MAX + 0.1
        or (not math.isnan(ev.lift) and ev.lift < LIFT_MIN - 0.1 and not _yellow(ev))
    )


def may_be_paint(ev: LineEvidence) -> bool:
    """Of a candidate that ``not_paint`` drops: whether it may still be a line. One that is
    too wide, with no yellow in it, is a gutter pan, a snow bank (also an edge between
    unlike grounds then) or a car's flank; a narrow edge between unlike grounds or a dark
    stripe may be a line half under snow or beside a car. Paint far ahead only may be
    what is left of a worn line when there is little of it; much of it is a solid
    structure (a car)."""
    limit = MAX_WIDTH[1] if ev.profile_peaks >= 2 else MAX_WIDTH[0]
    edge = ev.balance > BALANCE_MAX + 0.1
    dark = not math.isnan(ev.lift) and ev.lift < LIFT_MIN - 0.1 and not _yellow(ev)
    if far_only(ev):  # a remnant of a worn or snow-covered line, or a car's edge
        return ev.paint_rows < 2 * MIN_ROWS
    return _yellow(ev) or not ev.width > limit + 0.05 and (edge or dark)


def _yellow(ev: LineEvidence) -> bool:
    """Yellow paint is paint even where a shadow keeps it no lighter than sunlit road."""
    return not math.isnan(ev.chroma_delta) and ev.chroma_delta > YELLOW_DELTA


def outer_line_doubt(line: Line, other: Line | None) -> float:
    """Factor on a found line's presence: 1, unless the lane it bounds with ``other`` is
    wider than a lane (WIDE_LANE) and it is the farther of the two; then it may be a curb or
    a parked car's edge on a side without a line, and the wider the less sure."""
    if other is None or abs(line.a0) <= abs(other.a0):
        return 1.0
    return _sigmoid((WIDE_LANE - abs(line.a0 - other.a0)) / 0.1)


def decide_presence(line: Line, ev: LineEvidence) -> Decision:
    """A found line is present, the more surely the more rows hold paint and the longer it
    is, the lighter it is than the road in its rows (the plain asphalt strip between a
    parked car's shadow and the lane is not), and the more alike the road on its two sides
    (a curb or the edge of a snow cover has other ground beyond it)."""
    conf = _sigmoid((line.rows - MIN_ROWS) / 8.0) * min(1.0, 0.4 + line.extent / 1.5)
    if math.isnan(ev.lift) or math.isnan(ev.chroma_delta):
        conf *= 0.3  # no paint near enough to see what it is
    elif not _yellow(ev):
        conf *= _sigmoid((ev.lift - LIFT_MIN) / 0.05)
    # Sparse paint is clutter, unless it is clearly paint spread over a long stretch (the
    # few dashes left of a worn dashed line).
    clear = _yellow(ev) or (not math.isnan(ev.lift) and ev.lift >= LIFT_MIN + 0.25)
    floor = SPARSE_COVERAGE[1] if clear and line.extent >= 3.0 else SPARSE_COVERAGE[0]
    conf *= _sigmoid((ev.coverage - floor) / 0.03)
    if ev.width > 0:  # paint is narrow in each row: a gutter pan or a car's flank is not
        limit = MAX_WIDTH[1] if ev.profile_peaks >= 2 else MAX_WIDTH[0]
        conf *= _sigmoid((limit - min(ev.width, ev.row_width)) / 0.02)
    conf *= _sigmoid((BALANCE_MAX - ev.balance) / 0.08)
    return Decision("present", round(conf, 3))
