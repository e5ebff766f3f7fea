"""Small pointer files that stand for large data living elsewhere.

Copying tens of GB through the KFP launcher is slow, so a stage writes its media under a
run-scoped prefix (local or gs://) and its output artifact is a small JSON pointer: the
artifact keeps lineage visible in the UI, the data stays where it was written.
"""

from __future__ import annotations

import json
from pathlib import Path

from lanepaint.io.atomic import atomic_write_text

POINTER_KEY = "lanepaint_pointer"


def write_pointer(path: str | Path, uri: str, kind: str, **metadata) -> dict:
    """Write a pointer to ``uri`` at the local ``path``; returns its content."""
    content = {POINTER_KEY: 1, "uri": uri, "kind": kind, **metadata}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")
    return content


def resolve_pointer(path_or_uri: str | Path) -> str:
    """The URI a pointer file names, or the argument itself when it is not a pointer."""
    path = Path(path_or_uri)
    if path.is_file() and path.stat().st_size < 1 << 20:
        try:
            content = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return str(path_or_uri)
        if isinstance(content, dict) and content.get(POINTER_KEY):
            return content["uri"]
    return str(path_or_uri)


def publish_stage(result, artifact, metrics, report, kind: str) -> None:
    """A component's outputs from a stage result (``lanepaint.kit.StageResult``): the
    pointer artifact (with the URI and counts in its metadata, for lineage in the UI), the
    common counts as KFP metrics, and the stage's summary.md as the Markdown report.

    Takes KFP's artifact objects without importing kfp (only ``path``, ``metadata`` and
    ``log_metric`` are used)."""
    from lanepaint.io import storage

    s = result.summary
    info = {"items": s["done"] + s["skipped_done"], "model_set": s["model_set"]}
    write_pointer(artifact.path, result.output, kind, **info)
    artifact.metadata.update({"uri": result.output, **info})
    for key in ("inputs", "done", "skipped_done", "failed"):
        metrics.log_metric(key, s[key])
    for key, value in s["details"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(result.output, "summary.md")))
