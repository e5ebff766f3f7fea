"""The VideoPainter data layout: what segment writes and edit reads.

```
ROOT/raw_videos/<group>/<video_id>.0.mp4     video re-encoded at the output fps
ROOT/mask_root/<video_id>/all_masks.npz      key arr_0: uint8 [T,H,W], 1 = road to inpaint
ROOT/meta.csv                                one row per video (VideoRecord)
```
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from lanepaint.io import storage
from lanepaint.io.video import VIDEO_EXTENSIONS

META_NAME = "meta.csv"
_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class VideoRecord:
    """One row of meta.csv. ``path`` is relative to ``raw_videos/``."""

    video_id: str
    path: str
    mask_id: str
    fps: float
    frames: int
    width: int
    height: int
    start_frame: int
    end_frame: int
    caption: str = ""
    source: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def safe_video_id(name: str) -> str:
    """A file-system and URI safe id from a file name (extension and '.0' stripped)."""
    stem = name.rsplit("/", 1)[-1]
    for ext in VIDEO_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    return safe_name(stem, "video")


def safe_name(text: str, fallback: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9_.-]`` made one ``_``
    (ids and group names become file-system and URI safe), or ``fallback`` if nothing is left."""
    return _ID_RE.sub("_", text).strip("._") or fallback


class VideoPainterLayout:
    """Paths and atomic readers/writers for one VideoPainter-layout root (local or gs://)."""

    def __init__(self, root: str):
        self.root = root

    def raw_video(self, group: str, video_id: str) -> str:
        return storage.join(self.root, "raw_videos", group, f"{video_id}.0.mp4")

    def raw_video_rel(self, group: str, video_id: str) -> str:
        return f"{group}/{video_id}.0.mp4"

    def masks(self, mask_id: str) -> str:
        return storage.join(self.root, "mask_root", mask_id, "all_masks.npz")

    def mask_png_dir(self, mask_id: str) -> str:
        return storage.join(self.root, "mask_root", mask_id, "png")

    def video_for(self, record: VideoRecord) -> str:
        return storage.join(self.root, "raw_videos", record.path)

    @property
    def meta(self) -> str:
        return storage.join(self.root, META_NAME)

    def write_masks(self, mask_id: str, masks: np.ndarray) -> str:
        """Store [T,H,W] masks (nonzero = inpaint) as uint8 0/1 in a compressed npz."""
        if masks.ndim != 3:
            raise ValueError(f"masks must be [T,H,W], got shape {masks.shape}")
        buf = io.BytesIO()
        np.savez_compressed(buf, arr_0=(masks > 0).astype(np.uint8))
        uri = self.masks(mask_id)
        storage.write_bytes(uri, buf.getvalue())
        return uri

    def read_masks(self, mask_id: str) -> np.ndarray:
        """[T,H,W] masks; a file holding pickled objects is refused (MaskFileError)."""
        from lanepaint.data.masks import read_masks_npz

        uri = self.masks(mask_id)
        return read_masks_npz(storage.read_bytes(uri), uri)

    def read_meta(self) -> list[VideoRecord]:
        if not storage.exists(self.meta):
            return []
        text = storage.read_text(self.meta).removeprefix("\ufeff")
        records = []
        for row in csv.DictReader(io.StringIO(text, newline="")):
            records.append(
                VideoRecord(
                    video_id=row["video_id"],
                    path=row["path"],
                    mask_id=row["mask_id"],
                    fps=float(row["fps"]),
                    frames=int(row["frames"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    start_frame=int(row["start_frame"]),
                    end_frame=int(row["end_frame"]),
                    caption=row.get("caption", "") or "",
                    source=row.get("source", "") or "",
                )
            )
        return records

    def write_meta(self, records: list[VideoRecord]) -> str:
        """Replace meta.csv atomically (rows sorted by video id, so reruns are stable)."""
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=VideoRecord.columns(), lineterminator="\n")
        writer.writeheader()
        for rec in sorted(records, key=lambda r: r.video_id):
            writer.writerow(asdict(rec))
        storage.write_text(self.meta, buf.getvalue())
        return self.meta
