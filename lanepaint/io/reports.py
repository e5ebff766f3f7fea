"""What every stage leaves behind for people and machines: summaries, failures, timings.

Each stage writes ``summary.json`` (counts, failures, timings; machine-readable) and
``summary.md`` (the same for a person) into its output, plus ``failures.jsonl`` with one
record per input that could not be processed.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lanepaint.io import storage

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
FAILURES = "failures.jsonl"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class Timings:
    """Wall time per named phase, accumulated (a phase may run many times, in many threads:
    stages overlap decoding, model work and writing)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


@dataclass
class Failures:
    """Records of inputs that failed; each has at least ``item`` and ``reason``."""

    records: list[dict] = field(default_factory=list)

    def add(self, item: str, reason: str, **extra) -> None:
        self.records.append({"item": item, "reason": reason, **extra})

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(_reason_key(r["reason"]) for r in self.records))

    def to_jsonl(self) -> str:
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def _reason_key(reason: str) -> str:
    """The kind of a failure reason (its text up to the first colon) for tallies."""
    return reason.split(":", 1)[0].strip()


def render_markdown(title: str, summary: dict, notes: list[str] | None = None) -> str:
    """A plain Markdown page of the summary's scalar fields and small tables."""
    lines = [f"# {title}", ""]
    for note in notes or []:
        lines.append(f"> {note}")
    if notes:
        lines.append("")
    scalars = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    if scalars:
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in scalars.items()]
        lines.append("")
    for key, value in summary.items():
        if (
            isinstance(value, dict)
            and value
            and all(not isinstance(v, dict | list) for v in value.values())
        ):
            lines += [f"## {key}", "", "| key | value |", "| --- | --- |"]
            lines += [f"| {k} | {v} |" for k, v in value.items()]
            lines.append("")
    return "\n".join(lines)


def write_reports(
    out_dir: str,
    title: str,
    summary: dict,
    failures: Failures | None = None,
    notes: list[str] | None = None,
) -> dict:
    """Write summary.json, summary.md and failures.jsonl into ``out_dir`` (local or gs://)."""
    storage.write_text(
        storage.join(out_dir, SUMMARY_JSON), json.dumps(summary, indent=2, sort_keys=True) + "\n"
    )
    storage.write_text(storage.join(out_dir, SUMMARY_MD), render_markdown(title, summary, notes))
    if failures is not None:
        storage.write_text(storage.join(out_dir, FAILURES), failures.to_jsonl())
    return summary
