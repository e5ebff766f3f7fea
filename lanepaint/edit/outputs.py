"""What the edit stage writes per item (see :mod:`lanepaint.edit.layout`): first-frame
attempts and verdicts, the videos, the source at the model's size, the repainted masks,
the record, and the run's manifest.

Videos are encoded locally and then published, so a gs:// output never holds half a file.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.edit.first_frame import FirstFrameConfig, FirstFrameResult
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
    masks: np.ndarray,
    result: Any,
    first_frame: FirstFrameConfig,
) -> tuple[dict, float]:
    """An item's videos (edited, side by side), its source at the model's size and the
    repainted masks: (the record's fields naming them, seconds spent encoding the videos)."""
    from lanepaint.io.video import write_video

    key, fps = item.key, item.record.fps
    t0 = time.perf_counter()
    write_local_video(out.edited(*key), result.frames, fps, write_video)
    side = np.concatenate([frames, result.frames], axis=2)
    write_local_video(out.side_by_side(*key), side, fps, write_video)
    t_enc = time.perf_counter() - t0
    files = {
        "source_video": resized_source(out, key, frames, item.record, source, write_video),
        # The region actually repainted (dilated): evaluate measures background outside it.
        "mask_uri": write_masks(
            out.item(*key, "repainted_masks.npz"),
            repainted_masks(result.masks, masks[0], first_frame),
        ),
        "item_dir": out.item(*key),
        "edited": out.edited(*key),
        "side_by_side": out.side_by_side(*key),
        "judge": out.judge(*key),
    }
    return files, t_enc


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
        "size": list(result.frames.shape[1:3]),
        "windows": list(result.window_starts),
        "propagation": result.mode,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def write_local_video(uri: str, frames: np.ndarray, fps: float, write_video) -> None:
    """Encode locally, then publish (gs:// or local) atomically."""
    import tempfile
    from pathlib import Path

    if not storage.is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        write_video(uri, frames, fps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "video.mp4"
        write_video(local, frames, fps)
        storage.upload_file(local, uri)


def resized_source(out: EditLayout, key, frames, record: VideoRecord, vp, write_video) -> str:
    """The original at the model's size (what evaluate compares against)."""
    if (record.height, record.width) == frames.shape[1:3]:
        return vp.video_for(record)
    uri = out.item(*key, "original.mp4")
    write_local_video(uri, frames, record.fps, write_video)
    return uri


def repainted_masks(
    propagated: np.ndarray, first_mask: np.ndarray, ff_config: FirstFrameConfig
) -> np.ndarray:
    """Per frame, the pixels the edit may change: the propagation's (dilated) masks, and on
    frame 0 FluxFill's dilated mask plus its feathered rim."""
    from lanepaint.data.masks import dilate

    out = np.asarray(propagated).astype(np.uint8).copy()
    out[0] |= dilate(first_mask, ff_config.dilation + ff_config.feather)
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
            for line in storage.read_text(uri).splitlines():
                if line.strip():
                    rec = json.loads(line)
                    report.fail(rec.pop("item"), rec.pop("reason"), **rec)
    for key in ("inputs", "done", "skipped_done"):
        setattr(report, key, sum(s[key] for s in summaries))
    if summaries:
        report.settings_key = summaries[0]["settings_key"]
        report.settings = summaries[0]["settings"]
        report.model_set = "; ".join(sorted({s["model_set"] or "" for s in summaries} - {""}))
        labels = {s["model_set_label"] or "" for s in summaries} - {""}
        report.model_set_label = "; ".join(sorted(labels)) or None
    return len(summaries)
