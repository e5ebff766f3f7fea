"""One report and one result type for every stage.

``summary.json`` has the same top-level keys in every stage (``SUMMARY_KEYS``; documented
in docs/architecture.md); what only one stage counts goes under ``details``. ``summary.md``
says on its first line which model set made the outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lanepaint.io import reports, storage

SUMMARY_KEYS = (
    "stage",
    "output",
    "inputs",
    "done",
    "skipped_done",
    "failed",
    "failures_by_reason",
    "settings_key",
    "settings",
    "model_set",
    "model_set_label",
    "timings_s",
    "started_at",
    "finished_at",
    "details",
)


class StageReport:
    """Counts, failures and phase timings of one stage run, written as its summary."""

    def __init__(self, stage: str, output: str):
        self.stage, self.output = stage, output
        self.timings = reports.Timings()
        self.failures = reports.Failures()
        self.started_at = reports.now_iso()
        self._t0 = time.perf_counter()
        self.inputs = self.done = self.skipped_done = 0
        self.settings_key: str | None = None
        self.settings: dict[str, Any] = {}
        self.model_set: str | None = None
        self.model_set_label: str | None = None
        self.details: dict[str, Any] = {}
        self.notes: list[str] = []
        self.earlier_failures: list[dict] = []

    def phase(self, name: str):
        return self.timings.phase(name)

    def fail(self, item: str, reason: str, **extra: Any) -> None:
        self.failures.add(item, reason, **extra)

    def add_failures(self, uri: str) -> int:
        """Take in a part's failures.jsonl (a shard, a worker, a build part; absent: none)
        when merging parts into one run's report; returns how many."""
        if not storage.exists(uri):
            return 0
        lines = [line for line in storage.read_text(uri).splitlines() if line.strip()]
        for line in lines:
            rec = json.loads(line)
            self.fail(rec.pop("item"), rec.pop("reason"), **rec)
        return len(lines)

    def keep_earlier_failures(self, uri: str, still_failed: Callable[[str], bool]) -> int:
        """Carry the failures of earlier runs at ``uri`` (a failures.jsonl) whose item
        ``still_failed`` into this run's failures.jsonl, marked ``earlier``; a stage that
        does not retry failed items must not forget them on a rerun. They are not counted
        in this run's ``failed``. Returns how many were kept."""
        if not storage.exists(uri):
            return 0
        seen = {r["item"] for r in self.failures.records}
        for line in storage.read_text(uri).splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            item = rec.get("item") if isinstance(rec, dict) else None
            if isinstance(item, str) and item not in seen and still_failed(item):
                seen.add(item)
                self.earlier_failures.append({**rec, "earlier": True})
        return len(self.earlier_failures)

    def set_models(self, metadata: dict[str, Any]) -> None:
        self.model_set = metadata.get("model_set")
        self.model_set_label = metadata.get("model_set_label")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "output": self.output,
            "inputs": self.inputs,
            "done": self.done,
            "skipped_done": self.skipped_done,
            "failed": len(self.failures),
            "failures_by_reason": self.failures.by_reason(),
            "settings_key": self.settings_key,
            "settings": self.settings,
            "model_set": self.model_set,
            "model_set_label": self.model_set_label,
            "timings_s": {**self.timings.as_dict(), "total": round(self.elapsed, 3)},
            "started_at": self.started_at,
            "finished_at": reports.now_iso(),
            "details": self.details,
        }

    def write(self, out_dir: str | None = None, stem: str = "") -> dict[str, Any]:
        """summary.json, summary.md and failures.jsonl into ``out_dir`` (default: the
        output); ``stem`` prefixes the names (caption writes ``<stem>.summary.json``)."""
        summary = self.summary()
        where = out_dir or self.output
        name = (lambda n: f"{stem}.{n}") if stem else (lambda n: n)
        storage.write_text(
            storage.join(where, name(reports.SUMMARY_JSON)),
            json.dumps(summary, indent=2, sort_keys=True) + "\n",
        )
        storage.write_text(storage.join(where, name(reports.SUMMARY_MD)), self.markdown(summary))
        earlier = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.earlier_failures)
        storage.write_text(
            storage.join(where, name(reports.FAILURES)), self.failures.to_jsonl() + earlier
        )
        return summary

    def markdown(self, summary: dict[str, Any]) -> str:
        label = summary["model_set_label"] or "no models used"
        flat = {k: v for k, v in summary.items() if k not in ("details", "settings")}
        body = reports.render_markdown(
            f"{self.stage}: {self.output}", {**flat, **summary["details"]}, self.notes
        )
        return f"> model set: {label}\n\n{body}"


@dataclass
class StageResult:
    """What a stage function returns: where it wrote, its summary, and whether it found
    everything already done."""

    output: str
    summary: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        s = self.summary
        return s["done"] == 0 and s["failed"] == 0 and s["skipped_done"] > 0

    @property
    def exit_code(self) -> int:
        """1 when inputs were given and every one of them failed; else 0."""
        s = self.summary
        return 1 if s["failed"] and not s["done"] and not s["skipped_done"] else 0

    def line(self) -> str:
        s = self.summary
        return (
            f"{s['stage']}: {self.output}: done {s['done']}, skipped {s['skipped_done']} "
            f"already done, failed {s['failed']} [{s['model_set_label'] or 'no models'}]"
        )
