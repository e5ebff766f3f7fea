"""Finding painted lane lines: vanishing point, bird's-eye view, marking maps, line fits.

Everything happens in a bird's-eye view (BEV) built from the vanishing point alone. For a
flat road and a camera without roll, a ground point at lateral offset X and distance Z
appears at ``x = vx + f X / Z``, ``y = vy + f h / Z``, so ``a = (x - vx) / (y - vy) = X / h``:
the lateral position in camera heights, whatever the focal length. Using
``z = (H - vy) / (y - vy)`` (distance in units of the distance seen at the bottom row) makes
the map a homography. In that view lines have a constant width, dashes a constant length,
and both ego lines follow the same curve, which the line search exploits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

MIN_SIDE = 48  # px; smaller images cannot show lane markings reliably
MAX_WIDTH = 800  # px; larger images are downscaled first (speed, and no accuracy gain)
NIGHT_LEVEL = 60  # median grey of the top third below which a frame is treated as night
# Paint is white or yellow (green about three quarters of red or more): a pixel with green
# below this share of red is a tail light or a red car's body, never paint.
RED_GREEN = 0.45

# BEV layout: lateral a in [-A_RANGE, A_RANGE] camera heights, distance z in [1, Z_MAX].
A_RANGE = 4.0
DA = 0.025
Z_MAX = 7.0
BEV_ROWS = 300
LINE_HALF = 0.14  # camera heights: half the window around a line centre (a double fits)

# Line search grid: a(z) = a0 + b (z-1) + c (z-1)^2, b and c shared by all lines.
_B_GRID = np.linspace(-0.4, 0.4, 33)
_C_GRID = np.linspace(-0.08, 0.08, 17)
_HIST_BIN = 0.05


class BadInput(ValueError):
    """An image that cannot be analysed (not RGB, too small, no road structure)."""


def as_rgb(image: object) -> np.ndarray:
    """A contiguous uint8 HxWx3 copy of an RGB image, or BadInput saying why not.

    Only 3-channel images are accepted: a grey or RGBA array is a sign of a caller mix-up
    (colour is half of what is measured), so it is reported rather than guessed at.
    """
    arr = np.asarray(image) if not isinstance(image, np.ndarray) else image
    if arr.dtype == object or arr.ndim != 3 or arr.shape[2] != 3:
        raise BadInput(f"expected an RGB image HxWx3, got shape {getattr(arr, 'shape', '?')}")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise BadInput(f"image too small ({arr.shape[1]}x{arr.shape[0]}); need >= {MIN_SIDE} px")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise BadInput(f"unsupported image dtype {arr.dtype}")


def noise_ratio(rgb: np.ndarray) -> float:
    """Share of the lower half's grey-level variation that is pixel-scale (≈0.95 for noise).

    Photographs and renders of roads stay well below 0.5; an image made of noise has no
    structure to analyse, however many "lines" chance would draw in it.
    """
    gray = cv2.cvtColor(rgb[rgb.shape[0] // 2 :], cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = gray - cv2.GaussianBlur(gray, (0, 0), 1.5)
    return float(fine.std() / (gray.std() + 1e-6))


def suppress_streaks(rgb: np.ndarray) -> np.ndarray:
    """At night: vertical bright streaks (headlights reflected on a wet road) painted over.

    A streak runs straight down the image from a lamp; a lane line that bounds the ego lane
    leans (|dx/dy| = its lateral offset in camera heights, >= 0.25), so a vertical opening
    of a fifth of the image height keeps streaks only. They would otherwise pass for lane
    lines near the middle, and out-vote the real ones for the vanishing point.
    """
    h, w = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if float(np.median(gray[: h // 3])) > NIGHT_LEVEL:  # a lit sky: not night
        return rgb
    k = max(5, w // 20) | 1
    road = cv2.morphologyEx(rgb, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, 1)))
    excess = gray.astype(np.int16) - cv2.cvtColor(road, cv2.COLOR_RGB2GRAY).astype(np.int16)
    bright = (excess > 25).astype(np.uint8)
    tall = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(9, int(0.2 * h))))
    streak = cv2.dilate(cv2.morphologyEx(bright, cv2.MORPH_OPEN, tall), np.ones((3, 5), np.uint8))
    if not streak.any():
        return rgb
    out = rgb.copy()
    out[streak > 0] = road[streak > 0]
    return out


def downscale(rgb: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (and mask) at most MAX_WIDTH wide: the BEV has a fixed resolution anyway."""
    h, w = rgb.shape[:2]
    if w <= MAX_WIDTH:
        return rgb, mask
    size = (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if mask is not None:
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return small, mask


# --------------------------------------------------------------------- vanishing point


@dataclass(frozen=True)
class VanishingPoint:
    """Image point (px) where the road's lines meet; its row is the horizon."""

    x: float
    y: float
    segments: int  # oblique segments that voted
    score: float  # vote strength (comparable within one image only)


def _segments(rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Straight edge segments (x1, y1, x2, y2) inside ``region`` from grey and yellow edges."""
    h, w = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgbf = rgb.astype(np.int16)
    yellow = np.clip(rgbf[..., 0] - rgbf[..., 2], 0, 255).astype(np.uint8)
    edges = np.zeros((h, w), np.uint8)
    # Edge thresholds from the lower half, where the road is: foliage above the horizon
    # is full of strong edges and would raise them beyond thin, far lane dashes.
    lower = region.copy()
    lower[: h // 2] = False
    for channel in (gray, yellow):
        blur = cv2.GaussianBlur(channel, (5, 5), 0)
        gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1)
        mag = np.hypot(gx, gy)[lower if lower.any() else region]
        if mag.size == 0:
            continue
        high = max(float(np.percentile(mag, 92)), 60.0)
        # Road lines in perspective are oblique; horizontal edges (shadow bands, the
        # horizon, car bumpers) would only crowd them out of the Hough transform.
        oblique = np.abs(gx) >= 0.18 * np.abs(gy)
        edges |= cv2.Canny(blur, high / 2.5, high) * oblique.astype(np.uint8)
    edges[~region] = 0
    diag = math.hypot(h, w)
    lines = cv2.HoughLinesP(
        edges,
        1,
        np.pi / 180,
        threshold=max(10, int(diag / 70)),
        minLineLength=max(8, int(diag / 60)),
        maxLineGap=max(2, int(diag / 150)),
    )
    if lines is None:
        return np.zeros((0, 4), np.float32)
    return lines.reshape(-1, 4).astype(np.float32)


def vanishing_points(
    rgb: np.ndarray, road_mask: np.ndarray | None = None, k: int = 3
) -> list[VanishingPoint]:
    """Up to ``k`` candidate points where the road's lines converge, best first.

    Extended edge segments vote; segments leaning left and leaning right vote in separate
    accumulators whose product is taken, so one long line (which votes all along itself)
    cannot win alone. Several candidates are returned because trees and railings converge
    too: the caller keeps the one under which the lane lines line up best.
    """
    h, w = rgb.shape[:2]
    region = np.zeros((h, w), bool)
    region[int(0.25 * h) :] = True
    if road_mask is not None:
        grown = cv2.dilate(road_mask.astype(np.uint8), np.ones((15, 15), np.uint8))
        region &= grown > 0
    seg = _segments(rgb, region)
    if len(seg) == 0:
        return []
    x1, y1, x2, y2 = seg.T
    dx, dy = x2 - x1, y2 - y1
    length = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(np.abs(dy), np.abs(dx)))
    keep = (angle > 10) & (angle < 80)
    if keep.sum() < 2:
        return []
    x1, y1, dx, dy, length = x1[keep], y1[keep], dx[keep], dy[keep], length[keep]
    top = np.minimum(y1, y1 + dy)
    # Lane lines fill the lower part of a dash-cam frame; trees, poles and railings the
    # upper. Segments count more the lower they lie.
    mid = (y1 + dy / 2) / h
    weight = length * np.clip((mid - 0.3) / 0.3, 0.1, 1.0)
    slope = dx / dy  # dx per dy
    step = max(1.0, h / 180)
    rows = np.arange(0.15 * h, 0.8 * h, step)
    nbins = int(w / step) + 1
    acc = np.zeros((2, len(rows), nbins), np.float32)
    side = (slope > 0).astype(int)  # image-left lines rise to the right (slope < 0)
    for j, y in enumerate(rows):
        above = top > y  # a vanishing point lies above the segments that point at it
        xs = x1 + (y - y1) * slope
        ok = above & (xs >= 0) & (xs < w)
        if not ok.any():
            continue
        bins = (xs[ok] / step).astype(int)
        np.add.at(acc, (side[ok], j, bins), weight[ok])
    for i in range(2):
        acc[i] = cv2.GaussianBlur(acc[i], (0, 0), 2.0)
    if acc[0].max() > 0 and acc[1].max() > 0:
        score = np.sqrt(acc[0] * acc[1])
    else:
        score = acc[0] + acc[1]
    found: list[VanishingPoint] = []
    ry, rx = max(2, int(0.06 * h / step)), max(2, int(0.06 * w / step))
    for _ in range(k):
        j, i = np.unravel_index(int(np.argmax(score)), score.shape)
        best = float(score[j, i])
        if best <= 0 or (found and best < 0.15 * found[0].score):
            break
        found.append(
            VanishingPoint(float(i * step + step / 2), float(rows[j]), int(keep.sum()), best)
        )
        score[max(0, j - ry) : j + ry + 1, max(0, i - rx) : i + rx + 1] = 0
    return found


# -------------------------------------------------------------------------- bird's-eye


@dataclass(frozen=True)
class Birdseye:
    """The homography between the image and the BEV grid (row 0 is far, the last is near)."""

    vx: float
    vy: float
    height: int
    width: int

    @property
    def cols(self) -> int:
        return int(round(2 * A_RANGE / DA))

    @property
    def a(self) -> np.ndarray:
        return -A_RANGE + DA * (np.arange(self.cols) + 0.5)

    @property
    def z(self) -> np.ndarray:
        return Z_MAX - (Z_MAX - 1.0) * np.arange(BEV_ROWS) / (BEV_ROWS - 1)

    def matrix(self) -> np.ndarray:
        """Maps BEV (col, row, 1) to image (x, y, 1), homogeneously."""
        d = self.height - self.vy
        dz = (Z_MAX - 1.0) / (BEV_ROWS - 1)
        # a = -A + DA (j + 0.5), z = Z_MAX - dz r;  x ~ vx z + a d,  y ~ vy z + d,  w ~ z
        a_row = np.array([DA, 0.0, -A_RANGE + DA / 2])
        z_row = np.array([0.0, -dz, Z_MAX])
        return np.stack(
            [self.vx * z_row + d * a_row, self.vy * z_row + np.array([0.0, 0.0, d]), z_row]
        )

    def warp(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
        return cv2.warpPerspective(
            image,
            self.matrix(),
            (self.cols, BEV_ROWS),
            flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def to_image(self, a: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.height - self.vy
        return self.vx + a * d / z, self.vy + d / z


# ------------------------------------------------------------------------ marking maps


@dataclass
class MarkingMaps:
    """Per-BEV-pixel evidence of paint."""

    bright: np.ndarray  # relative lightness excess over the local road surface
    yellow: np.ndarray  # yellow chroma excess over the local road surface
    chroma: np.ndarray  # (R - B) / (R + G + B): yellow-ness, independent of exposure
    mask: np.ndarray  # bool: paint candidates
    valid: np.ndarray  # bool: inside the image (and the road mask when given)
    surface: np.ndarray | None = None  # lightness of the road surface (paint removed)
    cache: dict = field(default_factory=dict)  # per-image values derived from the maps


def _open_h(channel: np.ndarray, width: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (width, 1))
    return cv2.morphologyEx(channel, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)


def _elongated(mask: np.ndarray) -> np.ndarray:
    """Keep the connected parts of a paint mask that are shaped like paint in the BEV.

    Lines and dashes are narrow and run along the road; sunlit gaps between tree shadows,
    cars and texture are blobs. The criteria are in BEV pixels of fixed meaning.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    height = stats[:, cv2.CC_STAT_HEIGHT].astype(float)
    width = stats[:, cv2.CC_STAT_WIDTH].astype(float)
    area = stats[:, cv2.CC_STAT_AREA].astype(float)
    mean_width = area / np.maximum(height, 1)
    keep = (height >= 6) & (mean_width <= 0.4 / DA) & (width <= np.maximum(0.45 / DA, 0.8 * height))
    keep[0] = False
    return keep[labels]


def marking_maps(bev: np.ndarray, valid: np.ndarray) -> MarkingMaps:
    """Narrow structures brighter or yellower than the road around them.

    Both measures are relative to a horizontal morphological opening (the road surface
    with anything narrower than ~0.6 camera heights removed), and lightness is divided by
    that surface, so a shadow or night dims line and road alike and the ratio survives.
    """
    rgb = cv2.GaussianBlur(bev.astype(np.float32), (3, 3), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=2)
    width = int(round(0.6 / DA)) | 1
    surface = _open_h(value, width)
    bright = (value - surface) / (surface + 25.0)
    chroma = (r - b) / (r + g + b + 30.0)
    yellow = chroma - _open_h(chroma, width)
    excess = value - surface
    # On a bright surface (concrete) white paint cannot be much brighter: ask for part of
    # the headroom to saturation instead of a ratio it cannot reach.
    need = np.minimum(0.3 * (surface + 25.0), 0.45 * (255.0 - surface))
    mask = (excess > np.maximum(need, 14.0)) | ((yellow > 0.12) & (r - b > 30) & (excess > -4))
    mask &= g >= RED_GREEN * r
    # Paint lies on the road surface: the "surface" under a bright spot on a car body or
    # under a tail light is the car's dark underside, far darker than the road in that row
    # (a shadow darkens by a factor of two or three; the underside of a car, more).
    row_surface = np.array(
        [np.median(row[ok]) if ok.any() else 0.0 for row, ok in zip(surface, valid, strict=True)]
    )
    mask &= valid & (surface >= 0.22 * row_surface[:, None])
    mask = _elongated(mask)
    return MarkingMaps(bright, yellow, chroma, mask, valid, surface)


# ----------------------------------------------------------------------------- lines


@dataclass
class Line:
    """A painted line in the BEV: lateral position a(z) = a0 + b (z-1) + c (z-1)^2."""

    a0: float
    b: float
    c: float
    support: float = 0.0  # number of candidate pixels on it
    rows: int = 0  # BEV rows in which it has paint
    extent: float = 0.0  # z range between its nearest and farthest paint
    shared_b: float = 0.0  # the slope all lines of the image were aligned with

    def at(self, z: np.ndarray) -> np.ndarray:
        return self.a0 + self.b * (z - 1) + self.c * (z - 1) ** 2


def _hist(a0: np.ndarray) -> np.ndarray:
    nbins = int(round(2 * (A_RANGE + 1.0) / _HIST_BIN))
    idx = np.clip(((a0 + A_RANGE + 1.0) / _HIST_BIN).astype(int), 0, nbins - 1)
    return np.bincount(idx, minlength=nbins).astype(np.float64)


def _align(a: np.ndarray, z: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The shared slope and curve that make the lines' pixels pile up the sharpest.

    A line at a0 is modelled as ``a0 + b (z-1) + c (z-1)^2``: ``b`` absorbs an error of the
    vanishing point's x and ``c`` the road's curve. Searched coarse to fine: b on the near
    paint first, where the curve matters least, then (b, c) around it on all of it. (An
    error of the horizon's height fans the lines out instead; each line's own slope is
    refined afterwards.)
    """
    dz = z - 1.0

    def score(b: float, c: float, sel: np.ndarray | slice = slice(None)) -> float:
        hist = _hist(a[sel] - b * dz[sel] - c * dz[sel] ** 2)
        return float(np.dot(hist, hist))

    near = z <= 3.0
    b0 = 0.0
    if near.sum() >= 20:
        b0 = max(_B_GRID, key=lambda b: score(b, 0.0, near))
    db = _B_GRID[1] - _B_GRID[0]
    # a mild prior for straight roads seen straight on: clutter must not bend the fit
    candidates = [
        (score(b, c) * math.exp(-((c / 0.06) ** 2) - (b / 0.5) ** 2), b, c)
        for c in _C_GRID
        for b in b0 + db * np.arange(-3, 4)
    ]
    _, b, c = max(candidates, key=lambda t: t[0])
    return float(b), float(c), _hist(a - b * dz - c * dz * dz)


def find_lines(maps: MarkingMaps, bev: Birdseye, max_lines: int = 8) -> list[Line]:
    """Candidate lines: peaks of the aligned histogram, each refined by its own fit."""
    rows, cols = np.nonzero(maps.mask)
    if len(rows) < 20:
        return []
    z_all, a_all = bev.z[rows], bev.a[cols]
    near = z_all <= 5.5
    a, z = a_all[near], z_all[near]
    if len(a) < 20:
        return []
    if len(a) > 12000:  # subsample for speed; the histogram shape survives
        pick = np.random.default_rng(0).choice(len(a), 12000, replace=False)
        a, z = a[pick], z[pick]
    b, c, hist = _align(a, z)
    smooth = np.convolve(hist, np.array([1, 2, 3, 2, 1], float) / 9, mode="same")
    centres = -A_RANGE - 1.0 + _HIST_BIN * (np.arange(len(hist)) + 0.5)
    peaks = [
        i
        for i in range(1, len(smooth) - 1)
        if smooth[i] > 0 and smooth[i] >= smooth[i - 1] and smooth[i] > smooth[i + 1]
    ]
    peaks.sort(key=lambda i: -smooth[i])
    # A line must hold far more paint than its window would catch from scattered clutter.
    # Clutter density: the median over BEV columns, so that the lines themselves (a few
    # columns) and cars (a few more) do not raise the bar for the others.
    column = maps.mask.sum(axis=0) / np.maximum(1, maps.valid.sum(axis=0))
    seen = maps.valid.sum(axis=0) > BEV_ROWS // 4
    density = float(np.median(column[seen])) if seen.any() else 0.0
    min_support = 4.0 * density * (2 * LINE_HALF / DA + 1) * BEV_ROWS
    lines: list[Line] = []
    for i in peaks:
        a0 = float(centres[i])
        if abs(a0) > A_RANGE - 0.1 or any(abs(a0 - ln.a0) < 0.3 for ln in lines):
            continue
        line = _refine(Line(a0, b, c, shared_b=b), a_all, z_all)
        if line is None or line.support < min_support:
            continue
        if not any(abs(line.a0 - ln.a0) < 0.25 for ln in lines):
            lines.append(line)
        if len(lines) >= max_lines:
            break
    return sorted(lines, key=lambda ln: ln.a0)


def _refine(line: Line, a: np.ndarray, z: np.ndarray) -> Line | None:
    """Fit one line to the paint near it.

    Its slope may differ from the shared one (a wrong horizon fans lines out in proportion
    to their offset), found by a small Hough search that keeps the shared curve; then a
    least-squares fit with the result as prior, so short lines cannot swing wildly.
    """
    window = np.abs(a - line.at(z)) < 0.6
    if window.sum() < 15:
        return None
    aw, zw = a[window], z[window]
    dzw = zw - 1.0
    best = (-1, line.a0, line.b)
    for slope in line.b + np.linspace(-0.3, 0.3, 25):
        a0s = aw - slope * dzw - line.c * dzw * dzw
        hist = _hist(a0s)
        smooth = np.convolve(hist, np.ones(5), mode="same")  # ~ the line window width
        i = int(np.argmax(smooth))
        centre = -A_RANGE - 1.0 + _HIST_BIN * (i + 0.5)
        if abs(centre - line.a0) < 0.35 and smooth[i] > best[0]:
            best = (smooth[i], centre, slope)
    line = Line(float(best[1]), float(best[2]), line.c, shared_b=line.shared_b)
    near = np.abs(a - line.at(z)) < LINE_HALF
    if near.sum() < 15:
        return None
    zn, an = z[near], a[near]
    dz = zn - 1.0
    lam = 50.0
    design = np.stack([np.ones_like(dz), dz, dz * dz], 1)
    lhs = design.T @ design + lam * np.diag([0.0, 1.0, 4.0])
    rhs = design.T @ an + lam * np.array([0.0, line.b, 4.0 * line.c])
    a0, b, c = np.linalg.solve(lhs, rhs)
    line = Line(float(a0), float(b), float(c), shared_b=line.shared_b)
    near = np.abs(a - line.at(z)) < LINE_HALF
    zn = z[near]
    if len(zn) < 15:
        return None
    step = (Z_MAX - 1.0) / (BEV_ROWS - 1)
    line.support = float(near.sum())
    line.rows = len(np.unique(np.round((Z_MAX - zn) / step).astype(int)))
    line.extent = float(zn.max() - zn.min())
    return line
