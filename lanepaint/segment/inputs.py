"""Which videos a segment run reads, and the id each one gets in the VideoPainter layout.

Ids are deterministic and unique within an output root, and a source keeps the id its
record already has, so a rerun (or a KFP retry) finds its finished videos again.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lanepaint.data.videopainter import safe_name, safe_video_id
from lanepaint.io import storage
from lanepaint.io.video import is_video_name

DEFAULT_GROUP = "videos"


@dataclass(frozen=True)
class VideoJob:
    source: str
    group: str
    video_id: str


def read_video_list(uri: str) -> list[str]:
    """URIs from a list file (local or gs://): one per line, blank lines and # comments skipped."""
    lines = storage.read_text(uri).splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def list_inputs(uris: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Video files named directly or found under folders/prefixes: (sorted unique sources,
    [(uri, reason)] for folders that hold no video). Missing files are left to fail later,
    per video, so one typo does not stop the batch."""
    sources: set[str] = set()
    problems: list[tuple[str, str]] = []
    for uri in uris:
        if is_video_name(uri):
            sources.add(uri)
            continue
        found = [f for f in storage.list_files(uri) if is_video_name(f)]
        if found:
            sources.update(found)
        else:
            problems.append((uri, f"missing input: no video files at or under {uri}"))
    return sorted(sources), problems


def require_some(uris: Sequence[str]) -> None:
    """All inputs missing is a user error (one line, exit 2), not a run of "0 videos";
    one missing input among others stays a recorded failure of that input."""
    if not uris:
        raise ValueError("no videos given: name video files or folders (--videos)")
    if not any(storage.exists(u) for u in uris):
        more = f" (nor any of the other {len(uris) - 1} inputs)" if len(uris) > 1 else ""
        raise FileNotFoundError(f"no video or folder at {uris[0]!r}{more}: check the path")


def group_of(source: str) -> str:
    """The parent folder's name (``chunk_0003``), or ``videos`` when there is none."""
    parts = [p for p in source.rstrip("/").split("/") if p]
    if storage.is_gcs(source):
        parts = parts[2:]  # drop "gs:" and the bucket
    parent = parts[-2] if len(parts) >= 2 else ""
    return safe_name(parent, DEFAULT_GROUP)


def assign_ids(sources: Sequence[str], existing: dict[str, str] | None = None) -> list[VideoJob]:
    """Deterministic unique ids: ``safe_video_id(file name)``.

    A source that already has a record keeps its id (so reruns resume it). Where several
    new sources share a name, or a name is taken by another source's record, every one of
    them is prefixed with its group (``chunk_0003__clip``), and a short hash of the URI is
    appended if that still collides.
    """
    existing = existing or {}
    taken = set(existing.values())
    jobs = {s: VideoJob(s, group_of(s), existing[s]) for s in set(sources) if s in existing}
    fresh = sorted(s for s in set(sources) if s not in existing)
    base = {src: safe_video_id(src) for src in fresh}
    counts = Counter(base.values())
    for src in fresh:
        group = group_of(src)
        vid = base[src]
        if counts[vid] > 1 or vid in taken:
            vid = f"{group}__{vid}"
        if vid in taken:
            vid = f"{vid}_{hashlib.sha1(src.encode()).hexdigest()[:8]}"
        taken.add(vid)
        jobs[src] = VideoJob(src, group, vid)
    return [jobs[s] for s in sorted(jobs)]
