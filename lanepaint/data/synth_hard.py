"""Hard cases for the synthetic road scenes: what real frames do to a lane analyzer.

Each part is switched on by a ``SceneSpec`` field and reproduces one way the weights-free
analyzer was seen to fail on real frames (issue 21): a curb, gutter and parked cars where
the ego lane has no line; night with headlight falloff, sensor desaturation and oncoming
glare; rain drops on the lens and a wet road; worn paint; snow over the lines; a double
yellow line with oncoming traffic close beside it; vehicles hiding parts of a solid line;
a single dashed line next to a ghost stripe or a tar seam. Everything stays deterministic
from the spec's seed, and the labels say what a person would read (a snow-covered or
missing line is absent; a hidden solid line is still solid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Road-coordinate period of parked cars and snow patches (m), so that they keep coming.
_PERIOD = 64.0


@dataclass(frozen=True)
class Car:
    """A box-shaped vehicle: lateral centre u, near end s0 at t=0, speed v along the road."""

    u: float
    s0: float
    v: float
    length: float
    width: float
    height: float
    color: tuple[float, float, float]
    oncoming: bool = False


def _rng(spec, salt: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, salt])


_COLORS = (
    (30, 32, 36),
    (200, 202, 206),
    (150, 152, 158),
    (120, 24, 28),
    (28, 46, 96),
    (236, 236, 232),
    (70, 72, 74),
)


def _car(rng: np.random.Generator, u: float, s0: float, v: float, oncoming: bool = False) -> Car:
    color = _COLORS[int(rng.integers(0, len(_COLORS)))]
    return Car(
        u=u,
        s0=s0,
        v=v,
        length=float(rng.uniform(4.0, 5.2)),
        width=float(rng.uniform(1.7, 2.0)),
        height=float(rng.uniform(1.35, 1.9)),
        color=tuple(float(c) for c in color),
        oncoming=oncoming,
    )


def cars(spec) -> list[Car]:
    """Every vehicle of the scene: parked on a curb side, oncoming, or ahead in traffic."""
    rng = _rng(spec, 1)
    half = spec.lane_width / 2
    out: list[Car] = []
    for side in curb_sides(spec):
        sign = -1 if side == "left" else 1
        u = sign * (half + float(rng.uniform(0.9, 1.3)))
        s = float(rng.uniform(2, 12))
        while s < _PERIOD - 6:
            if rng.random() < 0.8:
                out.append(_car(rng, u + float(rng.uniform(-0.15, 0.15)), s, 0.0))
            s += float(rng.uniform(5.5, 9.0))
    for _ in range(spec.oncoming):
        u = -(half + float(rng.uniform(1.0, 1.35)))
        out.append(_car(rng, u, float(rng.uniform(0, 40)), -spec.speed, True))
    for k in range(spec.traffic):
        sign = rng.choice([-1.0, 1.0])
        u = float(sign * (half + rng.uniform(0.2, 1.1))) if k % 3 != 2 else 0.0
        v = spec.speed + float(rng.uniform(-1.5, 1.5))
        out.append(_car(rng, u, float(rng.uniform(5, 22)), v))
    return out


def curb_sides(spec) -> tuple[str, ...]:
    return tuple(s for s in ("left", "right") if s in spec.absent) if spec.curb else ()


def _project(spec, lateral: float, u, z, up):
    """Image (x, y) of road point (u, distance z) at height ``up`` above the ground."""
    f = spec.focal * spec.width
    x = u - lateral + 0.5 * spec.curve * z * z
    return spec.width / 2 + f * x / z - 0.5, spec.horizon * spec.height + f * (
        spec.camera_height - up
    ) / z - 0.5


def _faces(spec, car: Car, z0: float, lateral: float) -> list[tuple[np.ndarray, float]]:
    """(polygon, shade) of the faces the camera sees, far to near."""
    z1 = z0 + car.length
    u1, u2 = car.u - car.width / 2, car.u + car.width / 2
    h = car.height

    def poly(points):
        return np.array([_project(spec, lateral, u, z, y) for u, z, y in points], np.float32)

    faces = []
    if h < spec.camera_height:
        faces.append((poly([(u1, z0, h), (u2, z0, h), (u2, z1, h), (u1, z1, h)]), 1.1))
    side_u = u1 if car.u - lateral > 0 else u2
    faces.append((poly([(side_u, z0, 0), (side_u, z1, 0), (side_u, z1, h), (side_u, z0, h)]), 0.8))
    faces.append((poly([(u1, z0, 0), (u2, z0, 0), (u2, z0, h), (u1, z0, h)]), 1.0))
    return faces


def _fill(shape, polygon: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a convex polygon."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(polygon * 16).astype(np.int32)
    cv2.fillConvexPoly(mask, pts, 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def draw_cars(spec, rgb: np.ndarray, t: float, lateral: float, night: bool) -> np.ndarray:
    """Vehicles over the lit ground (far to near), with shadows and lights; returns cover."""
    h, w = rgb.shape[:2]
    cover = np.zeros((h, w), np.float32)
    placed = []
    for car in cars(spec):
        z0 = car.s0 + (car.v - spec.speed) * t
        if car.v <= 0.0:  # parked and oncoming cars keep coming: positions wrap around
            z0 = 3.0 + float(np.mod(z0 - 3.0, 40.0 if car.oncoming else _PERIOD))
        if z0 + car.length < 1.5 or z0 > 90:
            continue
        placed.append((max(z0, 1.2), car))
    for z0, car in sorted(placed, key=lambda p: -p[0]):
        foot = _fill(
            (h, w),
            np.array(
                [
                    _project(spec, lateral, u, z, 0.0)
                    for u, z in (
                        (car.u - car.width / 2 - 0.2, z0 - 0.2),
                        (car.u + car.width / 2 + 0.2, z0 - 0.2),
                        (car.u + car.width / 2 + 0.2, z0 + car.length),
                        (car.u - car.width / 2 - 0.2, z0 + car.length),
                    )
                ],
                np.float32,
            ),
        )
        rgb = rgb * (1 - 0.6 * foot[..., None])
        body = np.array(car.color, np.float32) * (0.12 if night else 1.0)
        for polygon, shade in _faces(spec, car, z0, lateral):
            a = _fill((h, w), polygon)[..., None]
            rgb = rgb * (1 - a) + body * shade * a
            cover = np.maximum(cover, a[..., 0])
        rgb = _lights(spec, rgb, car, z0, lateral, night)
    return rgb, cover


def _lights(spec, rgb, car: Car, z0: float, lateral: float, night: bool) -> np.ndarray:
    """Tail lights (red) or headlights (white, with bloom and a road streak at night)."""
    f = spec.focal * spec.width
    r = max(1.0, 0.12 * f / z0)
    lamp = np.array([255, 250, 235] if car.oncoming else [235, 30, 30], np.float32)
    if not night and car.oncoming:
        return rgb
    gain = 1.0 if not night else (3.0 if car.oncoming else 1.4)
    layer = np.zeros(rgb.shape[:2], np.float32)
    for du in (-0.65, 0.65):
        x, y = _project(spec, lateral, car.u + du * car.width / 2, z0, 0.75)
        if -20 < x < spec.width + 20 and -20 < y < spec.height + 20:
            cv2.circle(layer, (int(round(x)), int(round(y))), int(math.ceil(r)), 1.0, -1)
            if night and car.oncoming and spec.glare:
                # wet-road reflection: a streak from the lamp down the image
                x0, x1 = int(round(x - r)), int(round(x + r)) + 1
                y0 = int(round(y))
                col = np.linspace(0.5, 0.0, max(1, spec.height - y0))[:, None]
                layer[max(0, y0) :, max(0, x0) : max(0, x1)] += col[: spec.height - max(0, y0)]
    if night and spec.glare:
        layer = layer + 0.6 * cv2.GaussianBlur(layer, (0, 0), 2.5 * r + 2)
    return rgb + gain * np.clip(layer, 0, 1.5)[..., None] * lamp * (0.5 if not night else 1.0)


# ---------------------------------------------------------------------- ground and paint


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    layer = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return layer / (layer.std() + 1e-6)


@dataclass(frozen=True)
class Ground:
    """Per-scene layout of the hard ground: where the curb and the snow edge run."""

    curb: dict[str, float]  # side -> lateral position of the curb face
    gutter: float  # gutter pan width (m)
    snow_edge: dict[str, float]  # side -> lateral position where snow starts


def ground_layout(spec) -> Ground:
    rng = _rng(spec, 2)
    half = spec.lane_width / 2
    curb = {}
    for side in curb_sides(spec):
        sign = -1 if side == "left" else 1
        curb[side] = sign * (half + float(rng.uniform(2.0, 2.6)))
    snow = {}
    if spec.snow:
        for side, sign in (("left", -1), ("right", 1)):
            if side in spec.absent:  # snow covers the line
                snow[side] = sign * (half - float(rng.uniform(0.2, 0.7)))
            else:  # a snow bank beyond the line
                snow[side] = sign * (half + float(rng.uniform(0.35, 1.2)))
    return Ground(curb, float(rng.uniform(0.3, 0.5)), snow)


def _tile(spec, salt: int, sigma: float) -> np.ndarray:
    return _noise(_rng(spec, salt), (256, 256), sigma)


def _sample(tile: np.ndarray, u, s, res: float) -> np.ndarray:
    mx = (u / res).astype(np.float32)
    my = (s / res).astype(np.float32)
    return cv2.remap(tile, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def ground(spec, v, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Curb, gutter and sidewalk on curb sides; snow. Returns (rgb, paint visibility)."""
    layout = ground_layout(spec)
    u = v.u
    visible = np.ones(u.shape, np.float32)
    for uc in layout.curb.values():
        sign = 1 if uc > 0 else -1
        d = sign * (u - uc)  # > 0 beyond the curb face
        tex = _sample(_tile(spec, 3, 2.0), u, v.s, 0.1)[..., None]
        gutter = (d > -layout.gutter) & (d <= 0)
        face = (d > 0) & (d <= 0.15)
        top = (d > 0.15) & (d <= 0.35)
        walk = d > 0.35
        for region, colour in (
            (gutter, (142, 140, 134)),
            (face, (112, 110, 106)),
            (top, (178, 176, 170)),
            (walk, (158, 156, 150)),
        ):
            rgb = np.where(region[..., None], np.array(colour, np.float32) + 6 * tex, rgb)
    if layout.snow_edge:
        tex = _sample(_tile(spec, 4, 3.0), u, v.s, 0.1)
        snow = np.zeros(u.shape, np.float32)
        for ue in layout.snow_edge.values():
            sign = 1 if ue > 0 else -1
            ragged = ue + sign * 0.25 * _sample(_tile(spec, 5, 6.0), u * 0 + 1.0, v.s, 0.1)
            snow = np.maximum(snow, np.clip((sign * (u - ragged)) / 0.15 + 0.5, 0, 1))
        # thin drifts across the lane and slush between the tyre tracks
        lane_pos = np.mod(u + spec.lane_width / 2, spec.lane_width) - spec.lane_width / 2
        between = np.clip(1.0 - np.abs(lane_pos) / 0.35, 0, 1) * 0.55
        drift = np.clip((tex - 1.2) / 0.4, 0, 1)
        snow = np.maximum(snow, np.maximum(between, drift))
        colour = np.array([222, 226, 234], np.float32) + 8 * tex[..., None]
        rgb = rgb * (1 - snow[..., None]) + colour * snow[..., None]
        visible = 1.0 - snow
    if spec.rain:  # wet asphalt: darker, with a sheen of the sky toward the horizon
        sheen = np.clip(1.0 - v.z / 60.0, 0, 1)
        rgb = rgb * (0.62 + 0.1 * sheen[..., None]) + 40 * (1 - sheen[..., None])
    return rgb, visible


def wear(spec, v, cov: np.ndarray) -> np.ndarray:
    """Worn paint: patches of the line are gone and the rest is thinner."""
    if spec.worn <= 0:
        return cov
    tex = _sample(_tile(spec, 6, 2.5), v.u * 3.0, v.s, 0.1)
    keep = np.clip((tex + 1.2 - 2.4 * spec.worn) / 0.5, 0, 1)
    return cov * keep * (1.0 - 0.35 * spec.worn)


def faded(spec, paint: np.ndarray) -> np.ndarray:
    """Worn or wet paint loses colour toward grey."""
    loss = 0.45 * spec.worn + (0.2 if spec.rain else 0.0)
    if loss <= 0:
        return paint
    grey = paint.mean(axis=-1, keepdims=True) * 0.85
    return paint * (1 - loss) + grey * loss


def confounders(spec) -> list[tuple[float, float, tuple[float, float, float], float]]:
    """(lateral position, width, colour, opacity) of non-line stripes beside a dashed line.

    A ghost of old paint or a tar seam runs 0.2-0.4 m from the line: a single dashed line
    seen with it must still read as single.
    """
    out = []
    rng = _rng(spec, 7)
    half = spec.lane_width / 2
    for side, sign in (("left", -1), ("right", 1)):
        if side not in spec.confound:
            continue
        off = sign * (half + float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.4)))
        if rng.random() < 0.5:
            out.append((off, 0.12, (200.0, 200.0, 196.0), float(rng.uniform(0.2, 0.4))))
        else:
            out.append((off, float(rng.uniform(0.04, 0.1)), (30.0, 30.0, 34.0), 0.8))
    return out


# ---------------------------------------------------------------------------- camera


def night_sensor(spec, rgb: np.ndarray) -> np.ndarray:
    """A night camera: sodium-warm street light, lower saturation (float image)."""
    if not (spec.night and spec.glare):
        return rgb
    grey = rgb.mean(axis=-1, keepdims=True)
    rgb = grey + 0.6 * (rgb - grey)
    return rgb * np.array([1.08, 0.98, 0.82], np.float32)


def lens_drops(spec, rgb: np.ndarray, t: float) -> np.ndarray:
    """Rain on the windshield: blurred, brightened discs and lower contrast (uint8 in/out)."""
    if not spec.rain:
        return rgb
    h, w = rgb.shape[:2]
    rng = _rng(spec, 8)
    img = rgb.astype(np.float32)
    img = 0.8 * img + 0.2 * img.mean()
    blurred = cv2.GaussianBlur(img, (0, 0), max(1.5, w / 120))
    alpha = np.zeros((h, w), np.float32)
    drift = _rng(spec, 9 + int(t * 4)).uniform(-0.01, 0.01, 2)
    for _ in range(int(rng.integers(25, 60))):
        x = (rng.uniform(0, 1) + drift[0]) * w
        y = (rng.uniform(0, 1) + drift[1]) * h
        r = rng.uniform(0.008, 0.03) * w
        cv2.circle(alpha, (int(x), int(y)), max(1, int(r)), 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.8, w / 400))[..., None]
    img = img * (1 - alpha) + (blurred * 1.06 + 6) * alpha
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- recipes

#: The hard conditions of issue 21, one recipe each (``hard_spec``).
HARD_CONDITIONS = (
    "curb_parked",
    "night_glare",
    "rain",
    "worn",
    "snow",
    "double_oncoming",
    "occluded",
    "single_dashed",
)


def _recipe(condition: str, rng: np.random.Generator, left, right) -> dict:
    """SceneSpec fields that make ``condition`` (may replace the ego lines)."""
    from lanepaint.data.vocab import LaneAttributes

    side = str(rng.choice(["left", "right"]))
    if condition == "curb_parked":
        return {"absent": (side,), "curb": True, f"lanes_{side}": 0}
    if condition == "night_glare":
        return {"night": True, "glare": True, "oncoming": int(rng.integers(1, 3)), "lanes_left": 1}
    if condition == "rain":
        return {"rain": True, "noise": 4.0}
    if condition == "worn":
        return {"worn": float(rng.uniform(0.3, 0.6))}
    if condition == "snow":
        u = rng.random()
        absent = () if u < 0.4 else ((side,) if u < 0.8 else ("left", "right"))
        return {"snow": True, "absent": absent}
    if condition == "double_oncoming":
        pattern = "solid" if rng.random() < 0.7 else "dashed"
        return {
            "left": LaneAttributes("double", "yellow", pattern),
            "oncoming": int(rng.integers(1, 4)),
            "lanes_left": 1,
        }
    if condition == "occluded":
        fields = {"traffic": int(rng.integers(2, 5))}
        if left.pattern == right.pattern == "dashed":  # a solid line for the cars to hide
            line = left if side == "left" else right
            fields[side] = LaneAttributes(line.count, line.color, "solid")
        return fields
    if condition == "single_dashed":
        color = str(rng.choice(["white", "yellow"]))
        return {side: LaneAttributes("single", color, "dashed"), "confound": (side,)}
    raise ValueError(f"unknown hard condition {condition!r}; known: {', '.join(HARD_CONDITIONS)}")


def hard_spec(condition: str, rng: np.random.Generator, left, right, width: int, height: int):
    """A varied SceneSpec of ``condition`` around the ego lines ``left`` and ``right``."""
    from lanepaint.data.synth import SceneSpec

    fields = {
        "left": left,
        "right": right,
        "width": width,
        "height": height,
        "speed": float(rng.uniform(8, 25)),
        "lanes_left": int(rng.integers(0, 2)),
        "lanes_right": int(rng.integers(0, 2)),
        "camera_height": float(rng.uniform(1.25, 1.55)),
        "horizon": float(rng.uniform(0.38, 0.46)),
        "dash_length": float(rng.uniform(2.5, 3.5)),
        "dash_gap": float(rng.uniform(5.0, 8.0)),
        "curve": float(rng.choice([0.0, 0.0, 1.0, -1.0]) * rng.uniform(0.001, 0.004)),
    }
    fields.update(_recipe(condition, rng, left, right))
    fields["seed"] = int(rng.integers(0, 2**31 - 1))
    return SceneSpec(**fields)
