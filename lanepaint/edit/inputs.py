"""What the edit stage reads: its inputs checked before anything is written or loaded, the
(video, instruction) items of a shard, and the frames and masks of one video.

Every input problem a user can fix is found by :func:`check_inputs`, as one line (exit 2
through the kit), before the output is claimed and before a model loads: a missing layout
or meta.csv, a meta.csv column missing or not a number, a LoRA folder without its adapter,
a missing model root. A row that cannot be used safely (ids or paths that would leave the
output) fails only its own items.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from dataclasses import dataclass
from typing import Any

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.edit.geometry import check_size
from lanepaint.edit.instructions import Instruction
from lanepaint.edit.layout import item_id
from lanepaint.edit.models import LoraAdapter, fetch_lora
from lanepaint.io import storage
from lanepaint.kit.guard import require_input

log = logging.getLogger(__name__)

MAX_MASK_COVERAGE = 0.98

# meta.csv: the columns every row needs, and the numeric ones with their type.
META_REQUIRED = tuple(
    f.name for f in dataclasses.fields(VideoRecord) if f.default is dataclasses.MISSING
)
_KINDS = {"int": int, "float": float}
META_NUMBERS = {
    f.name: _KINDS[kind]
    for f in dataclasses.fields(VideoRecord)
    if (kind := getattr(f.type, "__name__", str(f.type))) in _KINDS
}


@dataclass(frozen=True)
class EditInputs:
    """The inputs of a run, checked: the layout and its rows, the model set, the LoRA."""

    source: VideoPainterLayout
    videos: list[VideoRecord]  # every row of meta.csv
    model_set: dict
    lora: LoraAdapter | None


def check_inputs(
    data_dir: str, model_root: str, lora: str = "", vlm: str | None = None
) -> EditInputs:
    """Read and check every input (user errors raise here; nothing is written or loaded).
    ``vlm``: the Qwen2.5-VL size the judge needs (None: no judge)."""
    from lanepaint.models.root import as_model_root

    require_input(data_dir, "VideoPainter layout (--data-dir)")
    source = VideoPainterLayout(data_dir)
    require_input(source.meta, "meta.csv in the VideoPainter layout (segment writes it)")
    videos = read_meta(source)
    adapter = fetch_lora(lora) if lora else None
    root = as_model_root(model_root)
    require_model_folders(root, vlm)
    return EditInputs(source, videos, root.metadata(), adapter)


def require_model_folders(root, vlm: str | None) -> None:
    """Every model folder the edit loads exists: a missing one is found before the first
    model loads (not after FluxFill and the judge took their 10-20 s)."""
    from lanepaint.models import root as layout
    from lanepaint.models.root import ModelError

    needed = {
        "flux_fill": layout.FLUX_FILL_DIR,
        "cogvideox_i2v": layout.COGVIDEOX_I2V_DIR,
        "videopainter_branch": layout.VIDEOPAINTER_BRANCH_DIR,
    }
    if vlm is not None:
        needed[f"qwen_vl_{vlm.lower()}"] = layout.QWEN_VL_DIRS[vlm]
    for name, rel in needed.items():
        if not (root / rel).is_dir():
            raise ModelError(name, root / rel, "model folder not found")


def read_meta(source: VideoPainterLayout) -> list[VideoRecord]:
    """meta.csv's rows, after checking that every required column is there and every
    numeric value is a finite number (else ValueError naming the line and column)."""
    text = storage.read_text(source.meta).removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in META_REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"{source.meta} has no column {', '.join(missing)} (a VideoPainter meta.csv has "
            f"{', '.join(VideoRecord.columns())})"
        )
    for row in reader:
        for name, kind in META_NUMBERS.items():
            if not _is_number(row[name], kind):
                raise ValueError(
                    f"{source.meta} line {reader.line_num}: {name} {row[name]!r} is not "
                    f"{'a finite number' if kind is float else 'an integer'}"
                )
    return source.read_meta()


def _is_number(value: str | None, kind: type) -> bool:
    try:
        return math.isfinite(kind(value))
    except (TypeError, ValueError):
        return False


def parse_ids(text: str) -> tuple[str, ...]:
    """Video ids given comma-separated (``--video-ids a,b``)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class Item:
    """One (video, instruction): the unit the stage records, skips and fails."""

    record: VideoRecord
    instruction: Instruction

    @property
    def key(self) -> tuple[str, str]:
        return self.record.video_id, self.instruction.slug

    @property
    def id(self) -> str:
        return item_id(*self.key)


def select_videos(records: list[VideoRecord], config: Any) -> list[VideoRecord]:
    """This shard's videos (of ``config.video_ids`` when given), in video-id order."""
    from lanepaint.data.sources import shard

    if config.video_ids:
        wanted = set(config.video_ids)
        records = [r for r in records if r.video_id in wanted]
    return shard(sorted(records, key=lambda r: r.video_id), config.num_shards)[config.shard_index]


def make_items(
    videos: list[VideoRecord], instructions: list[Instruction]
) -> tuple[list[Item], list[tuple[Item, str]]]:
    """Every (video, instruction), and apart those whose row is unsafe, with the reason."""
    items, unsafe = [], []
    for record in videos:
        problem = unsafe_record(record)
        for inst in instructions:
            if problem:
                unsafe.append((Item(record, inst), problem))
            else:
                items.append(Item(record, inst))
    return items, unsafe


def unsafe_record(record: VideoRecord) -> str | None:
    """Why a meta.csv row cannot be used safely (ids and paths become path parts)."""
    from lanepaint.data.fluxfill import UnsafePathError, safe_relpath
    from lanepaint.data.videopainter import safe_video_id

    for name in ("video_id", "mask_id"):
        value = getattr(record, name)
        if not value or safe_video_id(value) != value:
            return f"{name} {value!r} is not a plain file name"
    try:
        safe_relpath(record.path)
    except UnsafePathError as exc:
        return str(exc)
    return None


def load_item(layout: VideoPainterLayout, record: VideoRecord, max_frames: int = 0):
    """Frames and masks of one video (the first ``max_frames``; 0 = all) at the source's
    size, checked: a mask per frame, not empty, not everything, sides of 16 pixels or more.
    A video one row or column larger than its masks is an odd-sized source that H.264 4:2:0
    padded to even sides (segment writes it so): cut back to the masks' size."""
    from lanepaint.io.video import read_frames

    with storage.local_path(layout.video_for(record)) as path:
        frames = read_frames(path, max_frames=max_frames or None)
    masks = layout.read_masks(record.mask_id)
    if max_frames:
        masks = masks[:max_frames]
    if len(frames) == 0:
        raise ValueError("video has no frames (no first frame to edit)")
    n = min(len(frames), len(masks))
    if n < len(frames):
        log.warning(
            "%s: %d frames but %d masks; using %d", record.video_id, len(frames), len(masks), n
        )
    frames, masks = frames[:n], masks[:n]
    h, w = masks.shape[1:]
    if frames.shape[1:3] == (h + h % 2, w + w % 2):  # an odd size the encoder padded to even
        frames = frames[:, :h, :w]
    if masks.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"mask size {masks.shape[1:]} != frame size {frames.shape[1:3]}")
    check_size(h, w)
    coverage = float((masks > 0).mean())
    if not (masks[0] > 0).any():
        raise ValueError("empty mask on the first frame: nothing to edit")
    if coverage > MAX_MASK_COVERAGE:
        raise ValueError(f"mask covers {coverage:.1%} of the video: no background to keep")
    return frames, masks
