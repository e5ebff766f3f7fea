"""Tolerant parsing of free-form VLM answers into the lane vocabulary and judge verdicts.

Models wrap JSON in code fences, rename keys, use synonyms, run out of tokens mid-object
or answer in prose. A caption answer always parses to LaneAttributes (``unknown`` where
nothing usable was said); a judge answer that is not a readable verdict is a FAIL with a
reason, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from lanepaint.data.vocab import UNKNOWN, LaneAttributes

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_CAPTION_RE = re.compile(r"road with (\w+) (\w+) (\w+) lane markings", re.IGNORECASE)

KEY_ALIASES = {
    "count": ("count", "lane_count", "line_count", "number", "num_lines", "lines", "quantity"),
    "color": ("color", "colour", "lane_color", "line_color", "marking_color"),
    "pattern": ("pattern", "style", "line_pattern", "line_type", "type", "marking_pattern"),
    "verdict": ("verdict", "result", "decision", "judgement", "judgment", "status", "pass"),
    "reasons": ("reasons", "reason", "explanation", "rationale", "why", "feedback"),
    "revised_caption": (
        "revised_caption",
        "revised caption",
        "revisedcaption",
        "new_caption",
        "caption",
        "suggested_caption",
        "improved_caption",
        "revised_prompt",
        "prompt",
    ),
}

SYNONYMS = {
    "count": {
        "single": ("single", "one", "1", "solo", "a single"),
        "double": ("double", "two", "2", "pair", "paired", "twin", "dual"),
    },
    "color": {
        "white": ("white",),
        "yellow": ("yellow", "amber", "orange", "gold"),
        "mixed": ("mixed", "both", "white and yellow", "yellow and white", "multiple", "various"),
    },
    "pattern": {
        "solid": ("solid", "continuous", "unbroken"),
        "dashed": ("dashed", "broken", "dotted", "intermittent", "segmented", "dash"),
        "mixed": ("mixed", "both", "solid and dashed", "dashed and solid", "combination"),
    },
}

MAX_CAPTION_CHARS = 300


def strip_fences(text: str) -> str:
    match = _FENCE_RE.search(text)
    return match.group(1).strip() if match else text.strip()


def _json_candidates(text: str) -> list[str]:
    body = strip_fences(text)
    out = []
    start = body.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(body)):
            ch = body[i]
            if in_str:
                esc = ch == "\\" and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    out.append(body[start : i + 1])
                    break
        start = body.find("{", start + 1)
    return out


def extract_json(text: str) -> dict | None:
    """The first JSON object in the text (fences stripped; single quotes and trailing
    commas repaired), or None when there is no complete object."""
    for candidate in _json_candidates(text or ""):
        for attempt in (candidate, _repair(candidate)):
            try:
                value = json.loads(attempt)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _repair(candidate: str) -> str:
    fixed = re.sub(r",\s*([}\]])", r"\1", candidate)
    if "'" in fixed and '"' not in fixed:
        fixed = fixed.replace("'", '"')
    fixed = re.sub(r"([{,]\s*)([A-Za-z_][\w ]*?)\s*:", r'\1"\2":', fixed)
    return fixed


def get_key(obj: dict, field_name: str):
    """Look a field up under any of its known aliases (case and spacing ignored)."""
    norm = {re.sub(r"[\s\-]+", "_", str(k).strip().lower()): v for k, v in obj.items()}
    for alias in KEY_ALIASES[field_name]:
        key = re.sub(r"[\s\-]+", "_", alias)
        if key in norm:
            return norm[key]
    return None


def normalize_value(field_name: str, value) -> str:
    """Map a free-form attribute value to the vocabulary (``unknown`` if not recognized)."""
    if value is None:
        return UNKNOWN
    if isinstance(value, list | tuple):
        values = {normalize_value(field_name, v) for v in value} - {UNKNOWN}
        if len(values) == 1:
            return values.pop()
        return "mixed" if len(values) > 1 and field_name != "count" else UNKNOWN
    text = str(value).strip().lower()
    if text in ("", "unknown", "unclear", "none", "n/a", "null", "not visible"):
        return UNKNOWN
    table = SYNONYMS[field_name]
    if text in table:
        return text
    hits = {word for word, syns in table.items() for s in syns if re.search(rf"\b{s}\b", text)}
    if "mixed" in hits:
        return "mixed"
    if len(hits) == 1:
        return hits.pop()
    if len(hits) > 1 and "mixed" in table:
        return "mixed"  # e.g. "white and yellow" phrased another way
    return UNKNOWN


@dataclass(frozen=True)
class CaptionAnswer:
    attributes: LaneAttributes
    method: str  # json | caption | keywords | none
    raw: str = field(repr=False, default="")

    @property
    def parsed(self) -> bool:
        return self.method != "none"


def parse_caption_answer(text: str) -> CaptionAnswer:
    """Lane attributes from a captioning answer: JSON, then the caption form, then keywords."""
    text = text or ""
    obj = extract_json(text)
    if obj is not None:
        attrs = LaneAttributes(
            *(normalize_value(f, get_key(obj, f)) for f in LaneAttributes.FIELDS)
        )
        if attrs != LaneAttributes():
            return CaptionAnswer(attrs, "json", text)
    match = _CAPTION_RE.search(text)
    if match:
        values = [
            normalize_value(f, v)
            for f, v in zip(LaneAttributes.FIELDS, match.groups(), strict=True)
        ]
        return CaptionAnswer(LaneAttributes(*values), "caption", text)
    lowered = text.lower()
    values = [normalize_value(f, lowered) for f in LaneAttributes.FIELDS]
    attrs = LaneAttributes(*values)
    if attrs != LaneAttributes():
        return CaptionAnswer(attrs, "keywords", text)
    return CaptionAnswer(LaneAttributes(), "none", text)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    revised_caption: str | None
    parsed: bool
    raw: str = field(repr=False, default="")

    def as_dict(self) -> dict:
        return {
            "verdict": "PASS" if self.passed else "FAIL",
            "reasons": self.reasons,
            "revised_caption": self.revised_caption,
            "parsed": self.parsed,
        }


def parse_verdict(text: str) -> Verdict:
    """A judge answer ``{verdict, reasons, revised_caption}``; anything unreadable is FAIL."""
    text = text or ""
    obj = extract_json(text)
    if obj is None:
        reason = "empty judge answer" if not text.strip() else "unparseable judge answer"
        return Verdict(False, [f"{reason}: {text[:200]!r}"], None, False, text)
    raw_verdict = get_key(obj, "verdict")
    if isinstance(raw_verdict, bool):
        verdict = "PASS" if raw_verdict else "FAIL"
    else:
        verdict = str(raw_verdict or "").strip().upper()
    if verdict not in ("PASS", "FAIL"):
        if verdict in ("PASSED", "YES", "TRUE", "OK", "ACCEPT", "ACCEPTED"):
            verdict = "PASS"
        elif verdict in ("FAILED", "NO", "FALSE", "REJECT", "REJECTED"):
            verdict = "FAIL"
        else:
            return Verdict(
                False, [f"no PASS/FAIL verdict in answer: {raw_verdict!r}"], None, False, text
            )
    reasons = get_key(obj, "reasons")
    if isinstance(reasons, str):
        reasons = [reasons]
    reasons = [str(r)[:500] for r in (reasons or []) if str(r).strip()]
    revised = get_key(obj, "revised_caption")
    revised = str(revised).strip()[:MAX_CAPTION_CHARS] if revised else None
    return Verdict(verdict == "PASS", reasons, revised or None, True, text)
