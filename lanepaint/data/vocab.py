"""The lane-marking vocabulary and the caption that carries it.

Every stage speaks this vocabulary: the captioner normalizes free text into it, the
dataset stores it as a caption, the filter selects on it and the evaluator compares it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar

COUNTS = ("single", "double", "unknown")
COLORS = ("white", "yellow", "mixed", "unknown")
PATTERNS = ("solid", "dashed", "mixed", "unknown")
UNKNOWN = "unknown"
ANY = "any"

CAPTION_TEMPLATE = "road with {count} {color} {pattern} lane markings"
_CAPTION_RE = re.compile(
    r"^\s*road with (?P<count>\w+) (?P<color>\w+) (?P<pattern>\w+) lane markings\s*\.?\s*$",
    re.IGNORECASE,
)


class CaptionError(ValueError):
    """A caption that is not of the form ``road with {count} {color} {pattern} lane markings``."""


@dataclass(frozen=True)
class LaneAttributes:
    """Lane-marking attributes of a road image (or of one side of the ego lane)."""

    #: The attribute names, in caption order: the one spelling of the field list.
    FIELDS: ClassVar[tuple[str, str, str]] = ("count", "color", "pattern")

    count: str = UNKNOWN
    color: str = UNKNOWN
    pattern: str = UNKNOWN

    def __post_init__(self) -> None:
        for field in self.FIELDS:
            value, allowed = getattr(self, field), VALUES[field]
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")

    @property
    def caption(self) -> str:
        return CAPTION_TEMPLATE.format(**asdict(self))

    @property
    def is_clear(self) -> bool:
        """True when no attribute is unknown (what `--require-clear-road` asks for)."""
        return UNKNOWN not in (self.count, self.color, self.pattern)

    def agreement(self, other: LaneAttributes) -> dict[str, bool | None]:
        """Per attribute: whether both say the same; None where either side is unknown
        (no evidence either way, so neither an agreement nor a disagreement)."""
        out: dict[str, bool | None] = {}
        for name in self.FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            out[name] = None if UNKNOWN in (a, b) else a == b
        return out

    def agreeing(self, other: LaneAttributes) -> int:
        """How many attributes agree (known on both sides and equal)."""
        return sum(v is True for v in self.agreement(other).values())

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def matches(self, count: str = ANY, color: str = ANY, pattern: str = ANY) -> bool:
        """Whether these attributes pass a filter; each filter value may be ``any``."""
        return all(
            want == ANY or want == have
            for want, have in ((count, self.count), (color, self.color), (pattern, self.pattern))
        )

    @classmethod
    def combine(cls, left: LaneAttributes, right: LaneAttributes) -> LaneAttributes:
        """One summary for the two lines bounding the ego lane.

        Color and pattern become ``mixed`` where the sides differ. Count has no ``mixed``:
        a road with a double line on either side is described as ``double`` (that is what
        a filter for double lines must find); unknown on either side stays unknown.
        """

        def merge(a: str, b: str) -> str:
            if UNKNOWN in (a, b):
                return UNKNOWN
            return a if a == b else "mixed"

        if UNKNOWN in (left.count, right.count):
            count = UNKNOWN
        else:
            count = "double" if "double" in (left.count, right.count) else "single"
        return cls(count, merge(left.color, right.color), merge(left.pattern, right.pattern))


#: field -> the words it may take.
VALUES: dict[str, tuple[str, ...]] = dict(
    zip(LaneAttributes.FIELDS, (COUNTS, COLORS, PATTERNS), strict=True)
)


def parse_caption(text: str) -> LaneAttributes:
    """Parse a caption in the canonical form; raises CaptionError otherwise."""
    match = _CAPTION_RE.match(text or "")
    if not match:
        raise CaptionError(f"not a lane caption: {text!r}")
    try:
        return LaneAttributes(
            match["count"].lower(), match["color"].lower(), match["pattern"].lower()
        )
    except ValueError as exc:
        raise CaptionError(f"{exc} in caption {text!r}") from exc


def validate_filter_value(field: str, value: str) -> str:
    """Normalize a filter value (``any`` or a vocabulary word), raising a clear error."""
    allowed = VALUES[field]
    value = value.strip().lower()
    if value != ANY and value not in allowed:
        raise ValueError(f"--{field} must be 'any' or one of {', '.join(allowed)}; got {value!r}")
    return value
