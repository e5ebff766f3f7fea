"""Edit instructions (``lane single white solid``; several joined by ``||``) and the prompts
derived from them.

The first-frame prompt is exactly the training caption (``road with ... lane markings``), so
a LoRA trained on our datasets sees the wording it learned; ``prompt_2`` (T5) adds the
visual detail the caption cannot carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lanepaint.data.vocab import COLORS, COUNTS, PATTERNS, LaneAttributes

_WORDS = {
    **{w: "count" for w in COUNTS if w != "unknown"},
    **{w: "color" for w in COLORS if w not in ("unknown", "mixed")},
    **{w: "pattern" for w in PATTERNS if w not in ("unknown", "mixed")},
}


@dataclass(frozen=True)
class Instruction:
    text: str
    attributes: LaneAttributes

    @property
    def slug(self) -> str:
        a = self.attributes
        return f"{a.count}_{a.color}_{a.pattern}"

    @property
    def caption(self) -> str:
        return self.attributes.caption

    @property
    def prompt_2(self) -> str:
        a = self.attributes
        line = "two parallel lines" if a.count == "double" else "a single line"
        style = "continuous" if a.pattern == "solid" else "evenly spaced dashes"
        return (
            f"A front-camera photo of a road whose lane marking is {line} of {a.color} road "
            f"paint in {style}, crisp and realistic on the asphalt, following the road's "
            "perspective."
        )


def parse_instruction(text: str) -> Instruction:
    """``lane single white solid`` (word order free, 'lane'/'lanes' optional)."""
    words = [w for w in re.split(r"[\s,_-]+", text.strip().lower()) if w]
    values: dict[str, str] = {}
    for word in words:
        if word in ("lane", "lanes", "marking", "markings", "line", "lines"):
            continue
        field = _WORDS.get(word)
        if field is None:
            raise ValueError(
                f"unknown word {word!r} in instruction {text!r}; use e.g. "
                "'lane single white solid' (count single|double, color white|yellow, "
                "pattern solid|dashed)"
            )
        if field in values and values[field] != word:
            raise ValueError(f"instruction {text!r} gives two {field}s")
        values[field] = word
    missing = [f for f in ("count", "color", "pattern") if f not in values]
    if missing:
        raise ValueError(f"instruction {text!r} lacks {', '.join(missing)}")
    return Instruction(text.strip(), LaneAttributes(**values))


def parse_instructions(text: str) -> list[Instruction]:
    """Several instructions separated by ``||``; duplicates removed, order kept."""
    out: list[Instruction] = []
    for part in text.split("||"):
        if part.strip():
            inst = parse_instruction(part)
            if inst.attributes not in [o.attributes for o in out]:
                out.append(inst)
    if not out:
        raise ValueError("no edit instruction given")
    return out
