"""What the edit stage writes per item (see :mod:`lanepaint.edit.layout`): first-frame
attempts and verdicts, the videos and the repainted masks at the source's size, the record,
and the run's manifest.

Videos are encoded locally and then published, so a gs:// output never holds half a file.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np

from lanepaint.data.videopainter import VideoPainterLayout
from lanepaint.edit.composite import ViewInputs
from lanepaint.edit.first_frame import FirstFrameConfig, FirstFrameResult, prepare_mask
from lanepaint.edit.inputs import Item
from lanepaint.edit.layout import EditLayout
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png
from lanepaint.kit import StageReport

MANIFEST_KEYS = ("video_id", "instruction_slug", "status", "settings_key", "model_set", "edited")


def write_first_frame(out: EditLayout, item: Item, result: FirstFrameResult) -> None:
    """Every attempt, the best one, and the judge's verdicts."""
    for attempt in result.attempts:
        write_png(out.attempt(*item.key, attempt.index), attempt.image)
    write_png(out.attempt(*item.key, "best.png"), result.best.image)
    judge_doc = {"instruction": item.instruction.text, **result.as_dict()}
    storage.write_text(out.judge(*item.key), json.dumps(judge_doc, indent=2) + "\n")


def write_item_files(
    out: EditLayout,
    source: VideoPainterLayout,
    item: Item,
    frames: np.ndarray,
    edited: np.ndarray,
    repainted: np.ndarray,
) -> tuple[dict, float]:
    """An item's videos (edited, and source | edited side by side, both at the source's
    size) and its repainted masks: (the record's fields naming them, seconds spent encoding
    the videos). The source compared against is the layout's own video."""
    from lanepaint.io.video import write_video

    key, fps = item.key, item.record.fps
    pix_fmt = video_pix_fmt(*edited.shape[1:3])
    t0 = time.perf_counter()
    write_local_video(out.edited(*key), edited, fps, write_video, pix_fmt=pix_fmt)
    side = (np.concatenate([s, e], axis=1) for s, e in zip(frames, edited, strict=True))
    write_local_video(out.side_by_side(*key), side, fps, write_video, pix_fmt=pix_fmt)
    t_enc = time.perf_counter() - t0
    files = {
        "source_video": source.video_for(item.record),
        # The region actually repainted: evaluate measures the background outside it.
        "mask_uri": write_masks(out.item(*key, "repainted_masks.npz"), repainted),
        "item_dir": out.item(*key),
        "edited": out.edited(*key),
        "side_by_side": out.side_by_side(*key),
        "judge": out.judge(*key),
    }
    return files, t_enc


def video_pix_fmt(height: int, width: int) -> str:
    """yuv420p (what every player plays) unless a side is odd, which 4:2:0 cannot hold;
    then yuv444p, so the edit keeps the source's exact size."""
    return "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"


def item_record(
    item: Item,
    identity: dict,
    files: dict,
    first: FirstFrameResult,
    result: Any,
    timings: dict[str, float],
) -> dict:
    """An item's record: what was asked, with which models, where its files are, what the
    painting did and how long each part took (seconds)."""
    return {
        "video_id": item.record.video_id,
        "instruction": item.instruction.text,
        "instruction_slug": item.instruction.slug,
        "attributes": item.instruction.attributes.as_dict(),
        **identity,
        **files,
        "first_frame": first.as_dict(),
        "frames": int(len(result.frames)),
        "fps": item.record.fps,
        "view_size": list(result.frames.shape[1:3]),
        "windows": list(result.window_starts),
        "propagation": result.mode,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def write_local_video(uri: str, frames, fps: float, write_video, **options) -> None:
    """Encode locally, then publish (gs:// or local) atomically."""
    import tempfile
    from pathlib import Path

    if not storage.is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        write_video(uri, frames, fps, **options)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "video.mp4"
        write_video(local, frames, fps, **options)
        storage.upload_file(local, uri)


def repainted_masks(view: ViewInputs, first_mask: np.ndarray, ff_config: FirstFrameConfig):
    """Per frame, the pixels the edit may change, at the source's size: the composited
    region (weight > 0), and on frame 0 FluxFill's dilated mask with its feathered rim."""
    out = view.regions.copy()
    out[0] = prepare_mask(first_mask, ff_config)[1] > 0
    return out


def write_masks(uri: str, masks: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez_compressed(buf, arr_0=np.asarray(masks).astype(np.uint8))
    storage.write_bytes(uri, buf.getvalue())
    return uri


def write_manifest(output_dir: str) -> list[dict]:
    """manifest.jsonl: one line per finished (video, instruction), from the records."""
    records = EditLayout(output_dir).records()
    storage.write_text(
        storage.join(output_dir, "manifest.jsonl"),
        "".join(json.dumps({k: r.get(k) for k in MANIFEST_KEYS}) + "\n" for r in records),
    )
    return records


def add_shards(report: StageReport, output_dir: str, num_shards: int = 0) -> int:
    """Add the summaries (counts, settings, model sets) and failures of the shards under
    ``<output>/_shards`` to ``report``; with ``num_shards`` (0 = every shard folder) only
    this run's shards count: an earlier run into the same folder may have left more.
    Returns how many shards were added."""
    current = {f"shard_{i:04d}" for i in range(num_shards)} if num_shards else None
    summaries = []
    for uri in storage.list_files(storage.join(output_dir, "_shards")):
        if current is not None and uri.rsplit("/", 2)[-2] not in current:
            continue
        if uri.endswith("/" + reports.SUMMARY_JSON):
            summaries.append(json.loads(storage.read_text(uri)))
        elif uri.endswith("/" + reports.FAILURES):
            report.add_failures(uri)
    for key in ("inputs", "done", "skipped_done"):
        setattr(report, key, sum(s[key] for s in summaries))
    if summaries:
        report.settings_key = summaries[0]["settings_key"]
        report.settings = summaries[0]["settings"]
        report.model_set = "; ".join(sorted({s["model_set"] or "" for s in summaries} - {""}))
        labels = {s["model_set_label"] or "" for s in summaries} - {""}
        report.model_set_label = "; ".join(sorted(labels)) or None
    return len(summaries)
