"""A captioned FluxFill dataset built part by part from road frames (stage build-dataset).

One item (a video, or an image) becomes rows: its frames → road masks → frames of too
little road dropped → captions → images, masks and rows under ``parts/<part>/``. The merge
reads every part's ledger records back into ``train.csv``, ``manifest.jsonl``, the summed
counts and the lane attribute statistics.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from lanepaint.data import fluxfill, masks
from lanepaint.data.sources import VideoSource, local_video
from lanepaint.data.vocab import UNKNOWN, LaneAttributes, parse_caption
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png
from lanepaint.kit import Ledger, StageReport

log = logging.getLogger(__name__)

Masker = Callable[[list[np.ndarray]], list[np.ndarray]]
CaptionFn = Callable[[list[np.ndarray], list[np.ndarray]], list[dict]]
Frames = list[tuple[int, np.ndarray]]


# --- one item -----------------------------------------------------------------------------


def read_video_frames(video: VideoSource, frame_numbers: Sequence[int]) -> tuple[Frames, dict]:
    """The frames of ``frame_numbers`` that exist, and the record's source fields (the
    numbers past the end are recorded as missing)."""
    from lanepaint.io.video import VideoError, read_frames_at

    with local_video(video) as path:
        found = read_frames_at(path, list(frame_numbers))
    frames = [(n, found[n]) for n in frame_numbers if n in found]
    if not frames:
        raise VideoError(f"none of frames {list(frame_numbers)} exist")
    missing = [n for n in frame_numbers if n not in found]
    return frames, {"video": video.as_dict(), "missing_frames": missing}


def read_image_frames(uri: str) -> tuple[Frames, dict]:
    """An image as a one-frame item, and the record's source field."""
    from lanepaint.io.images import read_rgb

    return [(0, read_rgb(uri))], {"image": uri}


def process_frames(
    frames: Frames,
    masker: Masker | None,
    captioner: CaptionFn,
    min_coverage: float,
    rng: np.random.Generator | None = None,
) -> tuple[Frames, list[np.ndarray], list[dict], list[dict]]:
    """Masks (road, or synthetic without a masker) → coverage filter → captions.
    Returns kept frames, their masks, their captions, and the dropped frames."""
    if masker is not None:
        road = masker([f for _, f in frames])
    else:
        road = [masks.synthetic_mask(f.shape[0], f.shape[1], rng) for _, f in frames]
    kept, kept_masks, dropped = [], [], []
    for (number, frame), mask in zip(frames, road, strict=True):
        cov = masks.coverage(mask)
        if cov < min_coverage:
            dropped.append({"frame": number, "reason": f"low coverage: {cov:.4f}"})
        else:
            kept.append((number, frame))
            kept_masks.append(mask)
    captions = captioner([f for _, f in kept], kept_masks) if kept else []
    return kept, kept_masks, captions, dropped


def write_rows(
    output_dir: str,
    part_name: str,
    uid: str,
    frames: Frames,
    road_masks: list[np.ndarray],
    captions: list[dict],
) -> list[dict]:
    """Write images and masks of one item; returns its rows (paths relative to the root)."""
    rows = []
    for (number, frame), mask, cap in zip(frames, road_masks, captions, strict=True):
        stem = f"{uid}_f{number:06d}"
        image_rel = f"parts/{part_name}/images/{stem}.png"
        mask_rel = f"parts/{part_name}/masks/{stem}.png"
        write_png(storage.join(output_dir, image_rel), frame)
        write_png(storage.join(output_dir, mask_rel), np.where(mask > 0, 255, 0).astype(np.uint8))
        attrs = LaneAttributes(*(cap[f] for f in LaneAttributes.FIELDS))
        row = {
            "image": image_rel,
            "mask": mask_rel,
            "prompt": attrs.caption,
            "prompt_2": "",
            "frame": number,
            "coverage": round(masks.coverage(mask), 4),
            "parse_method": cap.get("parse_method"),
        }
        if "analyzer" in cap:
            row["analyzer_caption"] = cap["analyzer"]["caption"]
        if "agree" in cap:
            row["agree"] = cap["agree"]
            row["disagree"] = cap["disagree"]
        rows.append(row)
    return rows


# --- merge --------------------------------------------------------------------------------


def part_root(output_dir: str) -> str:
    return storage.join(output_dir, "parts")


def current_records(output_dir: str) -> dict[str, dict]:
    """uid -> record of every part's records made with the newest settings key (rows of
    other settings or models, from an earlier run, are never mixed in; latest wins)."""
    parts = sorted(
        {
            u.split("/records/")[0]
            for u in storage.list_files(part_root(output_dir))
            if "/records/" in u
        }
    )
    records = [r for p in parts for r in Ledger(p, "").records().values() if "uid" in r]
    records.sort(key=lambda r: r.get("finished_at", ""))
    if not records:
        return {}
    newest = records[-1].get("settings_key")
    stale = sum(1 for r in records if r.get("settings_key") != newest)
    if stale:
        log.warning("%d records of earlier settings left out of train.csv", stale)
    return {r["uid"]: r for r in records if r.get("settings_key") == newest}


def write_dataset(output_dir: str, by_uid: dict[str, dict]) -> int:
    """``train.csv`` and ``manifest.jsonl`` (one line per item, its rows counted); returns
    the number of rows."""
    rows = [
        fluxfill.FluxFillRow(r["image"], r["mask"], r["prompt"], r.get("prompt_2", ""))
        for uid in sorted(by_uid)
        for r in by_uid[uid]["rows"]
    ]
    storage.write_text(storage.join(output_dir, fluxfill.CSV_NAME), fluxfill.format_csv(rows))
    manifest = "".join(
        json.dumps(
            {k: v for k, v in by_uid[uid].items() if k != "rows"}
            | {"rows": len(by_uid[uid]["rows"])},
            sort_keys=True,
        )
        + "\n"
        for uid in sorted(by_uid)
    )
    storage.write_text(storage.join(output_dir, "manifest.jsonl"), manifest)
    return len(rows)


def add_parts(report: StageReport, output_dir: str) -> int:
    """The parts' counts (this settings key only) and every part's and discovery's failures
    into the merged report; returns how many parts were counted."""
    counted = 0
    for uri in storage.list_files(part_root(output_dir)):
        if uri.endswith("/" + reports.FAILURES):
            report.add_failures(uri)
        elif uri.endswith("/" + reports.SUMMARY_JSON):
            part = json.loads(storage.read_text(uri))
            if part.get("settings_key") == report.settings_key:
                counted += 1
                report.settings = part.get("settings", {})
                report.inputs += part["inputs"]
                report.done += part["done"]
                report.skipped_done += part["skipped_done"]
    # What discovery found but could not use (junk zip members ...) counts as input too.
    report.inputs += report.add_failures(storage.join(output_dir, "discovery", reports.FAILURES))
    return counted


def merged_details(by_uid: dict[str, dict], rows: int, parts: int) -> dict:
    """The merged summary's own counts: items, rows, what was dropped, and the statistics."""
    all_rows = [r for rec in by_uid.values() for r in rec["rows"]]
    return {
        "items": len(by_uid),
        "rows": rows,
        "parts": parts,
        "missing_frames": sum(len(r.get("missing_frames", [])) for r in by_uid.values()),
        "dropped_low_coverage": sum(len(r.get("dropped_frames", [])) for r in by_uid.values()),
        "disagreements": sum(1 for r in all_rows if r.get("disagree")),
        **attribute_stats(all_rows),
    }


def attribute_stats(rows: list[dict]) -> dict:
    """Distribution of count/color/pattern (the seed's table) and of whole captions."""
    attrs = [parse_caption(r["prompt"]) for r in rows]
    out = {
        f"by_{a}": dict(Counter(getattr(x, a) for x in attrs).most_common())
        for a in LaneAttributes.FIELDS
    }
    out["by_caption"] = dict(Counter(x.caption for x in attrs).most_common())
    out["clear_rows"] = sum(1 for x in attrs if x.is_clear)
    out["unknown_rows"] = sum(1 for x in attrs if UNKNOWN in x.as_dict().values())
    return out


def stats_markdown(stats: dict) -> str:
    """``stats.md``: one table per lane attribute, rows and share per value."""
    lines = ["# Lane attribute distribution", ""]
    for attr in LaneAttributes.FIELDS:
        table = stats[f"by_{attr}"]
        total = sum(table.values()) or 1
        lines += [f"## {attr}", "", "| value | rows | share |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v} | {100 * v / total:.1f} % |" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def dated_output_dir(output_root: str, run_time: str) -> str:
    """``ROOT/YYYYmmdd-HHMMSS``: each (recurring) run writes a new prefix, never over an
    earlier dataset. ``run_time`` is the run's scheduled or creation time (ISO 8601 in any
    of the forms KFP gives); a taken prefix gets a ``-2``, ``-3`` ... suffix."""
    import datetime as dt
    import re

    text = (run_time or "").strip()
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 14:
        stamp = f"{digits[:8]}-{digits[8:14]}"
    else:  # unresolved placeholder (local runner) or empty: now
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = storage.join(output_root, stamp)
    candidate, suffix = base, 1
    while storage.exists(storage.join(candidate, fluxfill.CSV_NAME)):
        suffix += 1
        candidate = f"{base}-{suffix}"
    return candidate
