"""The item ledger: which items of a stage are finished, and under which settings.

One JSON record per item under ``<root>/<folder>/<item>.json`` is the item's commit point:
the stage writes every output of the item first and the record last (atomically), so a
record vouches for complete outputs. The resume rule is the same in every stage: an item is
done when its record exists, carries the current settings key and ``status`` ``ok``, and
(optionally) the stage's own check of its outputs passes. Before an item is redone its old
record is withdrawn, so a crash half-way never leaves a record over stale outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from lanepaint.io import storage

log = logging.getLogger(__name__)

RECORDS = "records"
OK = "ok"


class Ledger:
    """Records of finished items under ``root``; ``item`` ids are safe file names."""

    def __init__(self, root: str, settings_key: str, folder: str = RECORDS):
        self.root = root
        self.key = settings_key
        self.folder = storage.join(root, folder)
        self._records: dict[str, dict] | None = None

    def uri(self, item: str) -> str:
        if not item or "/" in item or item in (".", ".."):
            raise ValueError(f"unsafe item id for a record: {item!r}")
        return storage.join(self.folder, f"{item}.json")

    def records(self) -> dict[str, dict]:
        """item -> record, every readable record (any settings); unreadable ones are
        ignored with a warning (the item is redone)."""
        if self._records is None:
            self._records = {}
            for uri in storage.list_files(self.folder):
                if not uri.endswith(".json"):
                    continue
                item = uri.rsplit("/", 1)[-1][: -len(".json")]
                try:
                    self._records[item] = json.loads(storage.read_text(uri))
                except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                    log.warning("ignoring unreadable record %s (redone): %s", uri, exc)
        return self._records

    def reload(self) -> dict[str, dict]:
        """Every record on disk now, including those other runs committed since the first
        read (what a manifest such as meta.csv must be built from)."""
        self._records = None
        return self.records()

    def is_done(self, item: str, check: Callable[[dict], bool] | None = None) -> bool:
        rec = self.records().get(item)
        if not rec or rec.get("settings_key") != self.key or rec.get("status", OK) != OK:
            return False
        return check(rec) if check else True

    def split(
        self, items: Iterable[Any], key: Callable[[Any], str], check=None, redo: bool = False
    ) -> tuple[list[Any], list[Any]]:
        """(to do, done) in input order; ``redo`` treats every item as to do."""
        todo, done = [], []
        for it in items:
            (done if not redo and self.is_done(key(it), check) else todo).append(it)
        return todo, done

    def withdraw(self, item: str) -> None:
        """Remove an item's record before its outputs are rewritten."""
        storage.delete(self.uri(item))
        self.records().pop(item, None)

    def commit(self, item: str, record: dict) -> dict:
        """Write the item's record last: it carries the settings key and ``status``."""
        from lanepaint.io.reports import now_iso

        record = {"status": OK, **record, "settings_key": self.key, "finished_at": now_iso()}
        storage.write_text(self.uri(item), json.dumps(record, indent=2, sort_keys=True) + "\n")
        self.records()[item] = record
        return record

    def current(self) -> dict[str, dict]:
        """Records made with the current settings key (what a merge may combine)."""
        return {i: r for i, r in self.records().items() if r.get("settings_key") == self.key}
