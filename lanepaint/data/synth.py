"""Synthetic front-camera road scenes with exact road masks and lane labels.

A fresh machine has no real dash-cam footage, yet the demo and the tests need driving
video whose lane markings are known exactly. This module renders one: a flat road seen by
a pinhole camera (vanishing point, foreshortened markings that move toward the camera),
asphalt and grass textures fixed to the ground so they move with the car, a sky and a
treeline, optional curve, soft shadow bands and night with headlight falloff. Everything is
numpy/OpenCV and deterministic from ``SceneSpec.seed``.

The ground is rendered by inverse projection: every pixel below the horizon is mapped to
road coordinates (lateral ``u`` from the ego-lane centre, longitudinal ``s`` along the road),
and markings are drawn as the exact fraction of the pixel footprint they cover, so thin far
lines and dash ends are anti-aliased rather than flickering.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lanepaint.data.vocab import LaneAttributes

log = logging.getLogger(__name__)

# lane_mask values
LEFT_LINE, RIGHT_LINE, OTHER_LINE = 1, 2, 3

SIDE_COUNTS = ("single", "double")
SIDE_COLORS = ("white", "yellow")
SIDE_PATTERNS = ("solid", "dashed")
#: The 8 concrete attribute combinations one line can have.
SIDE_COMBOS: tuple[LaneAttributes, ...] = tuple(
    LaneAttributes(c, k, p) for c in SIDE_COUNTS for k in SIDE_COLORS for p in SIDE_PATTERNS
)

_PAINT = {
    "white": np.array([232, 232, 226], np.float32),
    "yellow": np.array([228, 172, 38], np.float32),
}
_STRIPE_W = 0.15  # m, single line width
_DOUBLE_W = 0.12  # m, each stripe of a double line
_DOUBLE_GAP = 0.14  # m, between the two stripes of a double line
_EDGE = LaneAttributes("single", "white", "solid")


@dataclass(frozen=True)
class SceneSpec:
    """What to draw. Units: metres, seconds; ``curve`` is the road curvature in 1/m.

    ``left``/``right`` are the lines bounding the ego lane (concrete values only: single or
    double, white or yellow, solid or dashed). ``lanes_left``/``lanes_right`` add lanes
    beyond them, closed by a white solid edge line, so the ego lines are not the only ones.
    """

    left: LaneAttributes = LaneAttributes("single", "yellow", "solid")
    right: LaneAttributes = LaneAttributes("single", "white", "dashed")
    width: int = 320
    height: int = 192
    curve: float = 0.0
    shadows: bool = False
    night: bool = False
    speed: float = 14.0
    dash_length: float = 3.0
    dash_gap: float = 6.0
    noise: float = 3.0
    lane_width: float = 3.6
    lanes_left: int = 0
    lanes_right: int = 1
    sway: float = 0.2
    camera_height: float = 1.4
    horizon: float = 0.42  # fraction of the image height
    focal: float = 0.9  # focal length as a fraction of the image width
    seed: int = 0
    # Hard cases (lanepaint.data.synth_hard): sides with no visible ego line, what is
    # there instead, and what else gets in the way.
    absent: tuple[str, ...] = ()  # "left"/"right": no line there (none painted, or snow)
    curb: bool = False  # absent sides get a gutter, curb, sidewalk and parked cars
    snow: bool = False  # snow beyond present lines and over absent ones, slush, drifts
    rain: bool = False  # wet road, faded paint, drops on the lens
    glare: bool = False  # with night: sodium light, desaturated sensor, headlight glare
    worn: float = 0.0  # 0..1: share of the paint worn away
    oncoming: int = 0  # oncoming cars in the lane left of the ego lane, close to the line
    traffic: int = 0  # cars ahead, some straddling the ego lines (they hide paint)
    confound: tuple[str, ...] = ()  # sides with a ghost stripe or tar seam beside the line

    def __post_init__(self) -> None:
        for side in ("left", "right"):
            attrs = getattr(self, side)
            if (
                attrs.count not in SIDE_COUNTS
                or attrs.color not in SIDE_COLORS
                or attrs.pattern not in SIDE_PATTERNS
            ):
                raise ValueError(f"{side} line must be concrete (e.g. single white solid): {attrs}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image too small: {self.width}x{self.height}")
        if self.dash_length <= 0 or self.dash_gap <= 0:
            raise ValueError("dash length and gap must be positive")
        for name in ("absent", "confound"):
            if set(getattr(self, name)) - {"left", "right"}:
                raise ValueError(f"{name} takes left/right, got {getattr(self, name)}")

    def present(self, side: str) -> bool:
        """Whether the ego lane has a visible line on ``side``."""
        return side not in self.absent

    @property
    def summary(self) -> LaneAttributes:
        return LaneAttributes.combine(self.left, self.right)

    def labels(self) -> dict:
        return {
            "left": self.left.as_dict(),
            "right": self.right.as_dict(),
            "summary": self.summary.caption,
            **({"absent": list(self.absent)} if self.absent else {}),
        }


@dataclass
class _Marking:
    center: float
    attrs: LaneAttributes
    label: int
    phase: float = 0.0
    stripes: list[tuple[float, float]] = field(default_factory=list)  # (offset, width)


def _markings(spec: SceneSpec) -> tuple[list[_Marking], float, float]:
    """All painted lines (lateral position, attributes, label) and the road's extent."""
    rng = np.random.default_rng(spec.seed + 17)
    half = spec.lane_width / 2
    marks = [
        _Marking(-half, spec.left, LEFT_LINE),
        _Marking(half, spec.right, RIGHT_LINE),
    ]
    marks = [m for m, side in zip(marks, ("left", "right"), strict=True) if spec.present(side)]
    for n, sign in ((spec.lanes_left, -1), (spec.lanes_right, 1)):
        for k in range(1, n + 1):
            pos = sign * (half + k * spec.lane_width)
            attrs = _EDGE if k == n else LaneAttributes("single", "white", "dashed")
            marks.append(_Marking(pos, attrs, OTHER_LINE))
    for m in marks:
        m.phase = float(rng.uniform(0, spec.dash_length + spec.dash_gap))
        if m.attrs.count == "double":
            off = (_DOUBLE_W + _DOUBLE_GAP) / 2
            m.stripes = [(-off, _DOUBLE_W), (off, _DOUBLE_W)]
        else:
            m.stripes = [(0.0, _STRIPE_W)]
    shoulder_l = float(rng.uniform(0.4, 1.5))
    shoulder_r = float(rng.uniform(0.4, 1.5))
    left_edge = -half - spec.lanes_left * spec.lane_width - shoulder_l
    right_edge = half + spec.lanes_right * spec.lane_width + shoulder_r
    if spec.curb:  # asphalt reaches the curb (synth_hard draws it and the sidewalk)
        left_edge = -half - 4.0 if "left" in spec.absent else left_edge
        right_edge = half + 4.0 if "right" in spec.absent else right_edge
    return marks, left_edge, right_edge


def _interval_cover(lo: np.ndarray, hi: np.ndarray, a: float, b: float) -> np.ndarray:
    """Length of [lo, hi] ∩ [a, b] (elementwise)."""
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scales: list[float]):
    """Sum of blurred white-noise octaves, periodic (tiles seamlessly), unit std.

    Blurring in the Fourier domain wraps around, so a texture tile repeats along the road
    without a seam.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f2 = fy * fy + fx * fx
    out = np.zeros(shape, np.float32)
    for i, sigma in enumerate(scales):
        layer = rng.standard_normal(shape)
        if sigma > 0:
            gain = np.exp(-2 * (np.pi * sigma) ** 2 * f2)
            layer = np.fft.irfft2(np.fft.rfft2(layer) * gain, s=shape)
        out += (layer / (layer.std() + 1e-9) / (i + 1)).astype(np.float32)
    return out / (out.std() + 1e-6)


# Ground textures are tiles in road coordinates: _TEX_U metres across, _TEX_S along.
_TEX_U, _TEX_S, _TEX_RES = 16.0, 64.0, 0.05


@functools.lru_cache(maxsize=4)
def _static_layers(spec: SceneSpec) -> dict[str, np.ndarray]:
    """What does not change between frames: textures, sky, treeline, shadow bands."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    nu, ns = int(_TEX_U / _TEX_RES), int(_TEX_S / _TEX_RES)
    asphalt = _smooth_noise(rng, (ns, nu), [0, 1.5, 6, 24])
    grass = _smooth_noise(rng, (ns, nu), [0, 1, 4, 16])
    # Sky: vertical gradient; treeline: a silhouette above the horizon, static (far away).
    yh = spec.horizon * h
    ys = np.arange(h, dtype=np.float32)[:, None]
    t = np.clip(ys / max(yh, 1), 0, 1)
    if spec.night:
        top, bottom = np.array([6, 8, 18], np.float32), np.array([22, 24, 34], np.float32)
    else:
        top, bottom = np.array([92, 140, 205], np.float32), np.array([188, 206, 224], np.float32)
    sky = top * (1 - t[..., None]) + bottom * t[..., None]
    sky = np.broadcast_to(sky, (h, w, 3)).copy()
    xs = np.arange(w)
    profile = np.zeros(w, np.float32)
    for freq, amp in ((1.5, 0.5), (4, 0.3), (11, 0.15), (29, 0.08)):
        profile += amp * np.sin(2 * np.pi * freq * xs / w + rng.uniform(0, 2 * np.pi))
    tree_h = (0.035 + 0.03 * (profile - profile.min()) / (np.ptp(profile) + 1e-6)) * h
    tree_h *= rng.uniform(0.6, 1.4)
    tree = (ys < yh) & (ys >= yh - tree_h[None, :])
    tree_tex = _smooth_noise(rng, (h, w), [0, 1])
    tree_col = (
        np.array([58, 74, 52], np.float32) if not spec.night else np.array([8, 9, 12], np.float32)
    )
    haze = (
        np.array([170, 182, 190], np.float32)
        if not spec.night
        else np.array([20, 22, 30], np.float32)
    )
    tree_rgb = 0.55 * tree_col + 0.45 * haze + (8 if not spec.night else 1.5) * tree_tex[..., None]
    sky[tree] = tree_rgb[tree]
    # Shadow bands: (start s, length, lateral from, lateral to, wave phase), repeating every
    # _TEX_S metres of road so that shadows keep passing under the car.
    bands = []
    if spec.shadows:
        s = float(rng.uniform(0, 8))
        while s < _TEX_S - 4:
            length = float(rng.uniform(1.5, 6.0))
            side = rng.integers(0, 3)
            lo, hi = {
                0: (-40.0, 40.0),
                1: (-40.0, rng.uniform(-1, 3)),
                2: (rng.uniform(-3, 1), 40.0),
            }[int(side)]
            bands.append((s, length, float(lo), float(hi), float(rng.uniform(0, 6.3))))
            s += length + float(rng.uniform(3, 12))
    return {"asphalt": asphalt, "grass": grass, "sky": sky, "bands": bands}


def _sample_tile(tile: np.ndarray, u: np.ndarray, s: np.ndarray) -> np.ndarray:
    import cv2

    mx = ((u + _TEX_U / 2) / _TEX_RES).astype(np.float32)
    my = (np.mod(s, _TEX_S) / _TEX_RES).astype(np.float32)
    return cv2.remap(tile, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _lateral_position(spec: SceneSpec, t: float) -> float:
    """The camera's lateral offset from the ego-lane centre (a slow wander)."""
    phase = (spec.seed % 97) * 0.37
    return spec.sway * math.sin(2 * math.pi * t / 7.0 + phase)


@dataclass(frozen=True)
class _View:
    """Per-pixel road coordinates seen by the camera at one instant."""

    xs: np.ndarray  # pixel column
    ys: np.ndarray  # pixel row
    ground: np.ndarray  # below the horizon
    z: np.ndarray  # distance along the road
    x: np.ndarray  # lateral offset from the camera
    u: np.ndarray  # lateral road coordinate (curve and drift applied)
    s: np.ndarray  # longitudinal road coordinate (travel applied)
    du: np.ndarray  # pixel footprint across the road
    ds: np.ndarray  # ... and along it


def _view(spec: SceneSpec, t: float) -> _View:
    h, w = spec.height, spec.width
    f = spec.focal * w
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dy = ys + 0.5 - spec.horizon * h
    ground = dy > 0.5
    z = f * spec.camera_height / np.where(ground, dy, 1.0)
    x = (xs + 0.5 - w / 2) * z / f
    return _View(
        xs=xs,
        ys=ys,
        ground=ground,
        z=z,
        x=x,
        u=x + _lateral_position(spec, t) - 0.5 * spec.curve * z * z,
        s=z + spec.speed * t,
        du=z / f,
        ds=z * z / (f * spec.camera_height),
    )


def _surface(spec, layers, v: _View, left_edge: float, right_edge: float):
    """(ground rgb, road coverage, asphalt texture): asphalt inside, gravel/grass outside,
    textures fixed to the road, coverage by an exact lateral box filter."""
    u, s, ds = v.u, v.s, v.ds
    road_cov = _interval_cover(u - v.du / 2, u + v.du / 2, left_edge, right_edge) / v.du
    road_cov = np.where(v.ground, road_cov, 0.0)
    fine = np.clip(1.0 - ds / 0.25, 0.0, 1.0)  # fade fine texture where it would alias
    asph_t = _sample_tile(layers["asphalt"], u, s) * (0.35 + 0.65 * fine)
    grass_t = _sample_tile(layers["grass"], u * 0.7, s * 0.7) * (0.35 + 0.65 * fine)
    asphalt = np.array([88, 88, 92], np.float32) + 9.0 * asph_t[..., None]
    # tyre tracks: slightly darker polished bands in every lane
    lane_pos = np.mod(u + spec.lane_width / 2, spec.lane_width) - spec.lane_width / 2
    tracks = np.exp(-(((np.abs(lane_pos) - 0.85) / 0.35) ** 2))
    asphalt -= 7.0 * tracks[..., None]
    gcol = np.array([96, 116, 62], np.float32) + np.stack(
        [14 * grass_t, 18 * grass_t, 8 * grass_t], -1
    )
    dist_edge = np.minimum(np.abs(u - left_edge), np.abs(u - right_edge))
    gravel = (dist_edge < 0.6)[..., None]
    gcol = np.where(gravel, np.array([122, 114, 100], np.float32) + 10 * grass_t[..., None], gcol)
    rgb = gcol * (1 - road_cov[..., None]) + asphalt * road_cov[..., None]
    return rgb, road_cov, asph_t


def _paint_markings(spec, v: _View, marks, rgb, asph_t, visible):
    """Exact coverage of each stripe (lateral) times the dash duty (longitudinal), where
    the paint is not worn away or under snow (``visible``)."""
    from lanepaint.data import synth_hard

    h, w = spec.height, spec.width
    u, ds = v.u, v.ds
    lane_mask = np.zeros((h, w), np.uint8)
    period = spec.dash_length + spec.dash_gap
    for m in marks:
        cov = np.zeros((h, w), np.float32)
        for off, sw in m.stripes:
            c = m.center + off
            cov += _interval_cover(u - v.du / 2, u + v.du / 2, c - sw / 2, c + sw / 2) / v.du
        if m.attrs.pattern == "dashed":
            s0 = np.mod(v.s - ds / 2 - m.phase, period)
            s1 = s0 + ds
            duty = (
                _interval_cover(s0, s1, 0.0, spec.dash_length)
                + _interval_cover(s0, s1, period, period + spec.dash_length)
            ) / np.maximum(ds, 1e-6)
            duty = np.where(ds < period, duty, spec.dash_length / period)
            cov *= duty
        cov = synth_hard.wear(spec, v, cov) * visible
        cov = np.where(v.ground, np.clip(cov, 0, 1), 0.0).astype(np.float32)
        paint = synth_hard.faded(spec, _PAINT[m.attrs.color]) * (0.92 + 0.05 * asph_t[..., None])
        rgb = rgb * (1 - cov[..., None]) + paint * cov[..., None]
        lane_mask[(cov >= 0.5) & (lane_mask == 0)] = m.label
    for centre, width, colour, opacity in synth_hard.confounders(spec):
        cov = _interval_cover(u - v.du / 2, u + v.du / 2, centre - width / 2, centre + width / 2)
        cov = np.where(v.ground, np.clip(cov / v.du, 0, 1), 0.0) * opacity * visible
        rgb = rgb * (1 - cov[..., None]) + np.array(colour, np.float32) * cov[..., None]
    return rgb, lane_mask


def _lighting(spec, layers, v: _View, lane_mask) -> np.ndarray:
    """Shadows (day) or headlights (night); markings reflect headlights more."""
    h, w = spec.height, spec.width
    u, ds = v.u, v.ds
    light = np.ones((h, w, 1), np.float32)
    if spec.shadows and layers["bands"]:
        sm = np.mod(v.s, _TEX_S)
        shade = np.zeros((h, w), np.float32)
        for s_start, length, lo, hi, ph in layers["bands"]:
            wave = 0.6 * np.sin(1.1 * u + ph)
            edge = 0.5 + ds  # soft penumbra
            inside = _smoothstep((sm - s_start - wave) / edge + 0.5) * _smoothstep(
                (s_start + length + wave - sm) / edge + 0.5
            )
            inside *= _smoothstep((u - lo) / 0.8 + 0.5) * _smoothstep((hi - u) / 0.8 + 0.5)
            shade = np.maximum(shade, inside)
        light = 1.0 - 0.55 * shade[..., None] * np.array([1.0, 0.97, 0.88], np.float32)
    if spec.night:
        z = v.z
        beam = np.exp(-((v.x / (0.32 * z + 1.6)) ** 2)) / (1.0 + (z / 22.0) ** 2)
        ambient = 0.07
        warm = np.array([1.0, 0.93, 0.78], np.float32)
        paint_cov = (lane_mask > 0).astype(np.float32)[..., None]
        light = (ambient + 1.25 * beam[..., None] * warm) * (1 + 0.8 * paint_cov)
    return light


def _compose(spec, layers, v: _View, ground_rgb) -> np.ndarray:
    """Haze towards the horizon, and the sky above it."""
    haze_col = np.array([20, 22, 30] if spec.night else [176, 188, 198], np.float32)
    fog = (1.0 - np.exp(-v.z / (70.0 if spec.night else 160.0)))[..., None]
    ground_rgb = ground_rgb * (1 - fog) + haze_col * fog
    return np.where(v.ground[..., None], ground_rgb, layers["sky"])


def _camera(spec, v: _View, out, t: float) -> np.ndarray:
    """Optics blur, vignetting and sensor noise -> uint8."""
    import cv2

    h, w = spec.height, spec.width
    out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), 0.55)
    rr = ((v.xs - w / 2) / w) ** 2 + ((v.ys - h / 2) / h) ** 2
    out *= (1.0 - 0.35 * rr)[..., None]
    rng = np.random.default_rng([spec.seed, int(round(t * 1000))])
    sigma = spec.noise * (1.8 if spec.night else 1.0)
    if sigma > 0:
        out += rng.normal(0.0, sigma, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_frame(spec: SceneSpec, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame at time ``t`` seconds: (rgb uint8 HxWx3, road mask {0,1}, lane mask).

    The lane mask labels marking pixels 1 = left ego line, 2 = right ego line,
    3 = other lines (adjacent lanes, road edge), 0 = none.
    """
    from lanepaint.data import synth_hard

    layers = _static_layers(spec)
    view = _view(spec, t)
    marks, left_edge, right_edge = _markings(spec)
    rgb, road_cov, asph_t = _surface(spec, layers, view, left_edge, right_edge)
    rgb, visible = synth_hard.ground(spec, view, rgb)
    rgb, lane_mask = _paint_markings(spec, view, marks, rgb, asph_t, visible)
    lit = _compose(spec, layers, view, rgb * _lighting(spec, layers, view, lane_mask))
    lit, cover = synth_hard.draw_cars(spec, lit, t, _lateral_position(spec, t), spec.night)
    lit = synth_hard.night_sensor(spec, lit)
    rgb8 = synth_hard.lens_drops(spec, _camera(spec, view, lit, t), t)
    road = (road_cov >= 0.5) & (cover < 0.5)
    lane_mask[cover >= 0.5] = 0
    return rgb8, road.astype(np.uint8), lane_mask


def render_clip(spec: SceneSpec, frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` consecutive frames at ``fps``: (rgb [T,H,W,3] uint8, road masks [T,H,W])."""
    if frames < 1 or fps <= 0:
        raise ValueError(f"need frames >= 1 and fps > 0, got {frames}, {fps}")
    video = np.empty((frames, spec.height, spec.width, 3), np.uint8)
    masks = np.empty((frames, spec.height, spec.width), np.uint8)
    for i in range(frames):
        video[i], masks[i], _ = render_frame(spec, i / fps)
    return video, masks


def random_spec(
    rng: np.random.Generator,
    left: LaneAttributes,
    right: LaneAttributes,
    width: int,
    height: int,
) -> SceneSpec:
    """A varied scene with the given ego lines (curve, shadows, night, lanes drawn at random)."""
    return SceneSpec(
        left=left,
        right=right,
        width=width,
        height=height,
        curve=float(rng.choice([0.0, 0.0, 1.0, -1.0]) * rng.uniform(0.002, 0.006)),
        shadows=bool(rng.random() < 0.35),
        night=bool(rng.random() < 0.15),
        speed=float(rng.uniform(8, 25)),
        dash_length=float(rng.uniform(2.5, 3.5)),
        dash_gap=float(rng.uniform(5.0, 8.0)),
        lanes_left=int(rng.integers(0, 2)),
        lanes_right=int(rng.integers(0, 2)),
        camera_height=float(rng.uniform(1.25, 1.55)),
        horizon=float(rng.uniform(0.38, 0.46)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def describe(left: LaneAttributes, right: LaneAttributes) -> str:
    """A longer sentence with the same attributes (the dataset's ``prompt_2``)."""

    def words(a: LaneAttributes) -> str:
        return f"a {a.count} {a.pattern} {a.color} line"

    return (
        "A front-camera view of a road; the ego lane is bounded on the left by "
        f"{words(left)} and on the right by {words(right)}."
    )


def attribute_pairs(seed: int) -> list[tuple[LaneAttributes, LaneAttributes]]:
    """All 64 (left, right) combinations in a seeded order."""
    pairs = list(itertools.product(SIDE_COMBOS, SIDE_COMBOS))
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in order]


# ---------------------------------------------------------------------------- writers


def write_clip(spec: SceneSpec, out: Path, frames: int, fps: float) -> dict:
    """``out`` (mp4) + ``out.masks.npz`` + ``out.labels.json``; returns the labels."""
    from lanepaint.io.video import write_video

    out = Path(out)
    if spec.width % 2 or spec.height % 2:
        raise ValueError(f"H.264 needs an even size, got {spec.width}x{spec.height}")
    out.parent.mkdir(parents=True, exist_ok=True)
    video, masks = render_clip(spec, frames, fps)
    written = write_video(out, video, fps)
    stem = out.with_suffix("")
    np.savez_compressed(f"{stem}.masks.npz", masks)
    labels = {
        **spec.labels(),
        "fps": fps,
        "frames": int(written),
        "width": spec.width,
        "height": spec.height,
        "seed": spec.seed,
        "curve": spec.curve,
        "shadows": spec.shadows,
        "night": spec.night,
    }
    Path(f"{stem}.labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return labels


def write_dataset(root: str, n: int, width: int, height: int, seed: int) -> str:
    """``n`` frames of varied scenes as a FluxFill dataset plus ``labels.jsonl``."""
    from lanepaint.data.fluxfill import DatasetWriter

    rng = np.random.default_rng(seed)
    pairs = attribute_pairs(seed)
    lines = []
    with DatasetWriter(root) as writer:
        for i in range(n):
            left, right = pairs[i % len(pairs)]
            spec = random_spec(rng, left, right, width, height)
            rgb, road, _ = render_frame(spec, float(rng.uniform(0, 20)))
            name = f"synth_{i:05d}"
            row = writer.add(name, rgb, road, spec.summary.caption, describe(left, right))
            lines.append(json.dumps({"image": row.image, **spec.labels()}))
        writer.write_text("labels.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    return root


def write_chunks(
    root: Path,
    chunks: int,
    per_chunk: int,
    frames: int,
    fps: float,
    width: int,
    height: int,
    seed: int,
) -> list[Path]:
    """``chunk_0000/clip_00000.mp4`` ... : a source of videos laid out like the real one."""
    rng = np.random.default_rng(seed)
    pairs = attribute_pairs(seed)
    written = []
    k = 0
    for c in range(chunks):
        for _ in range(per_chunk):
            left, right = pairs[k % len(pairs)]
            spec = random_spec(rng, left, right, width, height)
            path = Path(root) / f"chunk_{c:04d}" / f"clip_{k:05d}.mp4"
            write_clip(spec, path, frames, fps)
            written.append(path)
            k += 1
    return written


# ------------------------------------------------------------------------------- CLI


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 320x192; got {text!r}") from exc
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size too small: {text}")
    return w, h


def _side(args: argparse.Namespace, side: str) -> LaneAttributes:
    def pick(name: str) -> str:
        return getattr(args, f"{side}_{name}") or getattr(args, name)

    return LaneAttributes(pick("count"), pick("color"), pick("pattern"))


def _even(size: tuple[int, int]) -> bool:
    """Videos need even sides (yuv420p); say so instead of padding behind the masks' back."""
    if size[0] % 2 or size[1] % 2:
        print(f"lanepaint synth: video sides must be even: {size[0]}x{size[1]}", file=sys.stderr)
        return False
    return True


def _cmd_clip(args: argparse.Namespace) -> int:
    w, h = args.size
    if not _even(args.size):
        return 2
    spec = SceneSpec(
        left=_side(args, "left"),
        right=_side(args, "right"),
        width=w,
        height=h,
        curve=args.curve,
        shadows=args.shadows,
        night=args.night,
        seed=args.seed,
    )
    labels = write_clip(spec, Path(args.out), args.frames, args.fps)
    log.info("wrote %s (%d frames): %s", args.out, labels["frames"], labels["summary"])
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    w, h = args.size
    write_dataset(args.dir, args.n, w, h, args.seed)
    log.info("wrote synthetic FluxFill dataset of %d rows at %s", args.n, args.dir)
    return 0


def _cmd_chunks(args: argparse.Namespace) -> int:
    w, h = args.size
    if not _even(args.size):
        return 2
    paths = write_chunks(
        Path(args.dir), args.chunks, args.per_chunk, args.frames, args.fps, w, h, args.seed
    )
    log.info("wrote %d clips in %d chunks under %s", len(paths), args.chunks, args.dir)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="synthetic road scenes with exact masks and lane labels"
    )
    sub = parser.add_subparsers(dest="synth_command", required=True, metavar="WHAT")

    def common(p: argparse.ArgumentParser, size: str) -> None:
        p.add_argument("--size", type=_size, default=_size(size), help=f"WxH (default {size})")
        p.add_argument("--seed", type=int, default=0)

    clip = sub.add_parser("clip", help="one mp4 + OUT.masks.npz + OUT.labels.json")
    clip.add_argument("out", help="output .mp4")
    clip.add_argument("--count", choices=SIDE_COUNTS, default="single")
    clip.add_argument("--color", choices=SIDE_COLORS, default="white")
    clip.add_argument("--pattern", choices=SIDE_PATTERNS, default="dashed")
    for side in ("left", "right"):
        clip.add_argument(f"--{side}-count", choices=SIDE_COUNTS, help=f"override for the {side}")
        clip.add_argument(f"--{side}-color", choices=SIDE_COLORS)
        clip.add_argument(f"--{side}-pattern", choices=SIDE_PATTERNS)
    clip.add_argument("--frames", type=int, default=48)
    clip.add_argument("--fps", type=float, default=8.0)
    clip.add_argument("--curve", type=float, default=0.0, help="curvature 1/m (e.g. 0.004)")
    clip.add_argument("--shadows", action="store_true")
    clip.add_argument("--night", action="store_true")
    common(clip, "320x192")
    clip.set_defaults(func=_cmd_clip)

    ds = sub.add_parser("dataset", help="a FluxFill dataset of varied synthetic frames")
    ds.add_argument("dir", help="dataset root (local or gs://)")
    ds.add_argument("--n", type=int, default=64)
    common(ds, "320x192")
    ds.set_defaults(func=_cmd_dataset)

    ch = sub.add_parser("chunks", help="chunk_0000/... folders of short synthetic clips")
    ch.add_argument("dir")
    ch.add_argument("--chunks", type=int, default=2)
    ch.add_argument("--per-chunk", type=int, default=2)
    ch.add_argument("--frames", type=int, default=24)
    ch.add_argument("--fps", type=float, default=8.0)
    common(ch, "320x192")
    ch.set_defaults(func=_cmd_chunks)


__all__ = [
    "SIDE_COMBOS",
    "SceneSpec",
    "attribute_pairs",
    "describe",
    "random_spec",
    "render_clip",
    "render_frame",
    "write_chunks",
    "write_clip",
    "write_dataset",
]
