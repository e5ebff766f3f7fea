"""Where source videos come from: chunk folders, PhysicalAI-AV zip chunks, image folders.

Layouts understood (local or gs://):
- chunk folders: ``SOURCE/chunk_0000/**/*.mp4`` ... ``SOURCE/chunk_0199/...``
- PhysicalAI-AV: ``SOURCE/camera/<cam>/<cam>.chunk_0000.zip`` holding ``<uuid>.<cam>.mp4``;
  members are read straight from the zip (seekable reads; on GCS through a blob reader), so
  a chunk is never extracted whole.

Discovery is deterministic (sorted by chunk, then name), so ``--start-index``/``--limit``
and sharding always select the same videos; each video and image has a stable,
file-name-safe uid.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lanepaint.data.videopainter import safe_video_id
from lanepaint.io import storage
from lanepaint.io.video import VIDEO_EXTENSIONS
from lanepaint.kit import require_input

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_CHUNK_RE = re.compile(r"chunk_(\d{4})")


@dataclass(frozen=True)
class VideoSource:
    """One source video: a file, or a member of a zip chunk."""

    uri: str
    group: str
    chunk: int
    member: str = ""

    @property
    def name(self) -> str:
        return self.member or self.uri

    @property
    def video_id(self) -> str:
        return safe_video_id(self.name)

    @property
    def key(self) -> str:
        """Unique and stable: the URI plus the zip member."""
        return f"{self.uri}!{self.member}" if self.member else self.uri

    def as_dict(self) -> dict:
        return {"uri": self.uri, "group": self.group, "chunk": self.chunk, "member": self.member}


@dataclass
class Discovery:
    videos: list[VideoSource]
    skipped: list[dict]  # {"item", "reason"}: junk zip members, unsafe names, unreadable zips


def _chunk_of(path: str) -> int | None:
    match = _CHUNK_RE.search(path)
    return int(match.group(1)) if match else None


def safe_member(name: str) -> bool:
    """A zip member name we are willing to read: relative, no '..', not a directory."""
    if not name or name.endswith("/") or name.startswith(("/", "\\")) or ":" in name:
        return False
    norm = posixpath.normpath(name.replace("\\", "/"))
    return not (norm == ".." or norm.startswith("../"))


@contextlib.contextmanager
def _open_zip(uri: str) -> Iterator[zipfile.ZipFile]:
    with storage.open_read(uri) as fh, zipfile.ZipFile(fh) as zf:
        yield zf


def list_zip_videos(uri: str, chunk: int, group: str) -> Discovery:
    videos, skipped = [], []
    try:
        with _open_zip(uri) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if not safe_member(name):
                    skipped.append({"item": f"{uri}!{name}", "reason": "unsafe zip member name"})
                elif not name.lower().endswith(VIDEO_EXTENSIONS):
                    skipped.append({"item": f"{uri}!{name}", "reason": "not a video"})
                else:
                    videos.append(VideoSource(uri, group, chunk, name))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        skipped.append({"item": uri, "reason": f"unreadable zip: {exc}"})
    return Discovery(videos, skipped)


def discover_videos(
    source: str,
    chunk_start: int = 0,
    chunk_end: int = 199,
    start_index: int = 0,
    limit: int = 0,
    camera: str | None = None,
) -> Discovery:
    """Videos under ``source`` in chunks [chunk_start, chunk_end], then sliced:
    ``limit`` videos from ``start_index`` on (0 = no limit)."""
    files = storage.list_files(source)
    videos: list[VideoSource] = []
    skipped: list[dict] = []
    for uri in files:
        rel = uri[len(source.rstrip("/")) + 1 :]
        chunk = _chunk_of(rel)
        if chunk is None or not chunk_start <= chunk <= chunk_end:
            continue
        lower = rel.lower()
        if lower.endswith(".zip"):
            if camera and f"/{camera}/" not in f"/{rel}":
                continue
            found = list_zip_videos(uri, chunk, f"chunk_{chunk:04d}")
            videos += found.videos
            skipped += found.skipped
        elif lower.endswith(VIDEO_EXTENSIONS):
            videos.append(VideoSource(uri, f"chunk_{chunk:04d}", chunk))
    videos.sort(key=lambda v: (v.chunk, v.uri, v.member))
    end = start_index + limit if limit else None
    return Discovery(videos[start_index:end], skipped)


def list_images(source: str) -> list[str]:
    return [u for u in storage.list_files(source) if u.lower().endswith(IMAGE_EXTS)]


def expand_images(items: Sequence[str]) -> list[str]:
    """Image files named directly, or every image under a named folder/prefix; each image
    once (an image named twice, or also found in a named folder, is captioned once). A
    folder or prefix with nothing there is an error, never "0 images"."""
    out: dict[str, str] = {}
    for item in items:
        if item.lower().endswith(IMAGE_EXTS):
            found = [item]
        else:
            require_input(item, "images folder or prefix")
            found = list_images(item)
        for uri in found:
            out.setdefault(uri if storage.is_gcs(uri) else os.path.normpath(uri), uri)
    return list(out.values())


def stable_shard(key: str, num_shards: int) -> int:
    """The shard of ``key`` by a stable hash, not by position: shards that list a source
    separately (listings may differ) never move an item between shards or drop it."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % num_shards


def video_uid(video: VideoSource) -> str:
    """A file-name-safe id, unique per video: group, video id and a hash of the key."""
    digest = hashlib.sha1(video.key.encode()).hexdigest()[:8]
    return f"{video.group}__{video.video_id}__{digest}"


def image_uid(uri: str) -> str:
    """A file-name-safe id, unique per image: its safe name and a hash of the URI."""
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{safe_video_id(uri.rsplit('/', 1)[-1])}__{digest}"


def shard(items: list, num_shards: int) -> list[list]:
    """Split into ``num_shards`` contiguous, balanced parts (sizes differ by at most one)."""
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    base, extra = divmod(len(items), num_shards)
    parts, start = [], 0
    for i in range(num_shards):
        size = base + (1 if i < extra else 0)
        parts.append(items[start : start + size])
        start += size
    return parts


@contextlib.contextmanager
def local_video(video: VideoSource) -> Iterator[Path]:
    """A local file holding the video (a temp copy for gs:// files and zip members)."""
    if not video.member:
        with storage.local_path(video.uri) as path:
            yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="lanepaint-zipmember-"))
    try:
        target = tmp / posixpath.basename(video.member)
        with _open_zip(video.uri) as zf, zf.open(video.member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
