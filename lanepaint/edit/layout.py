"""Where the edit stage writes, per video and instruction (what evaluate reads).

```
OUT/<video_id>/<instruction_slug>/edited.mp4        the edited video
                                  side_by_side.mp4  original | edited
                                  first_frame/attempt_<k>.png, best.png
                                  judge.json        every attempt with its verdict
                                  record.json       settings, sources, timings (written last)
OUT/summary.json, summary.md, failures.jsonl, manifest.jsonl
```

An item is ``<video_id>/<instruction_slug>``; its record.json is the item's commit point in
the stage kit's sense (:class:`EditLedger`).
"""

from __future__ import annotations

import json

from lanepaint.io import storage
from lanepaint.kit import Ledger


class EditLayout:
    def __init__(self, root: str):
        self.root = root

    def item(self, video_id: str, slug: str, name: str = "") -> str:
        parts = [video_id, slug] + ([name] if name else [])
        return storage.join(self.root, *parts)

    def edited(self, video_id: str, slug: str) -> str:
        return self.item(video_id, slug, "edited.mp4")

    def side_by_side(self, video_id: str, slug: str) -> str:
        return self.item(video_id, slug, "side_by_side.mp4")

    def attempt(self, video_id: str, slug: str, index: int | str) -> str:
        name = index if isinstance(index, str) else f"attempt_{index}.png"
        return self.item(video_id, slug, f"first_frame/{name}")

    def judge(self, video_id: str, slug: str) -> str:
        return self.item(video_id, slug, "judge.json")

    def record(self, video_id: str, slug: str) -> str:
        return self.item(video_id, slug, "record.json")

    def records(self, unreadable: list[tuple[str, str]] | None = None) -> list[dict]:
        """Every finished item's record, sorted by video and instruction. A record that
        does not decode (or names no item) is left out, and listed with why in
        ``unreadable`` when given (evaluate reports those as failures)."""
        out = []
        for uri in storage.list_files(self.root):
            if uri.endswith("/record.json"):
                try:
                    out.append(_edit_record(storage.read_text(uri)))
                except (ValueError, FileNotFoundError) as exc:  # JSON and UTF-8 errors too
                    if unreadable is not None:
                        unreadable.append((uri, f"{type(exc).__name__}: {exc}"))
        return sorted(out, key=lambda r: (str(r["video_id"]), str(r["instruction_slug"])))


def _edit_record(text: str) -> dict:
    record = json.loads(text)
    if not isinstance(record, dict) or not {"video_id", "instruction_slug"} <= record.keys():
        raise ValueError("not an edit record (no video_id / instruction_slug)")
    return record


def item_id(video_id: str, slug: str) -> str:
    return f"{video_id}/{slug}"


class EditLedger(Ledger):
    """The kit's item ledger on the edit layout: item ``<video_id>/<slug>``, its record the
    item folder's record.json (where evaluate reads it), with the kit's resume rule."""

    def __init__(self, root: str, settings_key: str):
        super().__init__(root, settings_key)
        self.layout = EditLayout(root)

    def uri(self, item: str) -> str:
        video_id, slug = item.split("/")
        return self.layout.record(video_id, slug)

    def records(self) -> dict[str, dict]:
        if self._records is None:
            self._records = {
                item_id(r["video_id"], r["instruction_slug"]): r for r in self.layout.records()
            }
        return self._records


def default_output_dir(data_dir: str) -> str:
    """Where edits of a VideoPainter root go unless told: ``<root>__edits`` beside it."""
    return data_dir.rstrip("/") + "__edits"
