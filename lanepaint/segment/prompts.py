"""Positive point prompts that say "this is the road" in a front-camera frame.

Points are normalized (x, y) in [0, 1] x [0, 1], origin top-left, so one prompt set fits
every resolution. The default is a 3x3 trapezoid in the lower middle of the frame: three
rows at 68 %, 75 % and 85 % of the height whose spread widens towards the camera the way
the ego lane does in perspective. It contains the seed's (0.5, 0.85), (0.4, 0.75) and
(0.6, 0.75); the lowest row stays above the bonnet that many dash cams see from about 90 %
down, and the top row stays below the horizon of a level camera (about 45-60 %).
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]

DEFAULT_POINTS: tuple[Point, ...] = (
    (0.45, 0.68),
    (0.50, 0.68),
    (0.55, 0.68),
    (0.40, 0.75),
    (0.50, 0.75),
    (0.60, 0.75),
    (0.35, 0.85),
    (0.50, 0.85),
    (0.65, 0.85),
)


def validate_points(points: Sequence[Sequence[float]]) -> tuple[Point, ...]:
    """Points as a tuple of (x, y) floats; each must lie inside the unit square."""
    out = []
    for p in points:
        if len(p) != 2:
            raise ValueError(f"a point is (x, y), got {p!r}")
        x, y = float(p[0]), float(p[1])
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"points are normalized to [0, 1]: got ({x}, {y})")
        out.append((x, y))
    if not out:
        raise ValueError("at least one prompt point is needed")
    return tuple(out)


def parse_points(text: str) -> tuple[Point, ...]:
    """``"0.5,0.85;0.4,0.75"`` (``;`` or whitespace between points) -> points."""
    items = [s for s in text.replace(";", " ").split() if s]
    points = []
    for item in items:
        parts = item.split(",")
        if len(parts) != 2:
            raise ValueError(f"a point is written x,y (normalized), got {item!r}")
        try:
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise ValueError(f"a point is written x,y (normalized), got {item!r}") from None
    return validate_points(points)


def format_points(points: Sequence[Point]) -> str:
    """The inverse of :func:`parse_points` (for CLI/KFP parameters and metadata)."""
    return ";".join(f"{x:g},{y:g}" for x, y in points)


def to_pixels(points: Sequence[Point], width: int, height: int) -> list[tuple[float, float]]:
    """Pixel coordinates (x, y) of normalized points in a ``width`` x ``height`` frame."""
    return [(x * width, y * height) for x, y in points]
