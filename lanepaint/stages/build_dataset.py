"""Stage build-dataset: road frames from driving videos → a captioned FluxFill dataset.

Per video: frames at the given frame numbers (0-based decode order; out-of-range numbers
are recorded), a road mask per frame, frames whose mask covers less than
``min_coverage`` dropped (recorded), captions for the rest (batched), written under
``OUT/parts/<shard>/``. Each finished video leaves a ledger record
(``parts/<shard>/records/<uid>.json``) holding its rows: the records are the manifest, so a
run killed midway resumes where it stopped and never duplicates a video. ``merge`` then
writes ``OUT/train.csv`` (atomically) from all records, plus ``manifest.jsonl`` and the
attribute statistics.

Image folders work too (``--images DIR``): road or synthetic (rectangles + brush strokes)
masks, auto-captions, the same layout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from lanepaint.data import fluxfill, masks
from lanepaint.data.sources import VideoSource, discover_videos, list_images, local_video
from lanepaint.data.vocab import UNKNOWN, LaneAttributes, parse_caption
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png
from lanepaint.kit import (
    Ledger,
    StageReport,
    StageResult,
    check_apart,
    claim_output,
    from_args,
    output_settings,
    require_input,
    setting,
    settings_key,
)
from lanepaint.kit.cli import register_stage
from lanepaint.kit.lock import output_lock
from lanepaint.models.device import DEVICE_HELP

log = logging.getLogger(__name__)

STAGE = "build-dataset"
DEFAULT_FRAMES = (1, 100, 200, 300, 400, 500)
SEGMENTERS = ("sam2", "classical")
CAPTIONERS = ("vlm", "analyzer")
MASK_MODES = ("road", "synthetic")
VLM_SIZES = ("7B", "72B")
MERGE_WAIT_S = 600.0

Masker = Callable[[list[np.ndarray]], list[np.ndarray]]
CaptionFn = Callable[[list[np.ndarray], list[np.ndarray]], list[dict]]
Frames = list[tuple[int, np.ndarray]]


def parse_frame_numbers(text: str) -> tuple[int, ...]:
    try:
        numbers = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"frame numbers must be integers: {text!r}") from exc
    return numbers


@dataclass(frozen=True)
class BuildConfig:
    frame_numbers: tuple[int, ...] = setting(
        DEFAULT_FRAMES, help="0-based frame indices, comma-separated", parse=parse_frame_numbers
    )
    min_coverage: float = setting(
        0.01, help="drop frames whose road mask covers less than this share of the frame"
    )
    segmenter: str = setting(
        "sam2", help="road masks: sam2 (point grid) or classical (weights-free)", choices=SEGMENTERS
    )
    captioner: str = setting(
        "vlm", help="vlm (Qwen2.5-VL) or analyzer (weights-free lane analyzer)", choices=CAPTIONERS
    )
    vlm_size: str = setting("7B", help="Qwen2.5-VL size", choices=VLM_SIZES)
    analyzer_check: bool = setting(True, help="cross-check VLM captions with the lane analyzer")
    mask_mode: str = setting(
        "road",
        help="image folders: road masks or synthetic rectangles/strokes",
        choices=MASK_MODES,
    )
    seed: int = setting(42, help="seed of the synthetic masks")
    chunk_start: int = setting(0, help="first source chunk (chunk_NNNN)", output=False)
    chunk_end: int = setting(199, help="last source chunk", output=False)
    start_index: int = setting(0, help="skip this many discovered videos", output=False)
    limit: int = setting(0, help="process at most N discovered videos (0 = no limit)", output=False)
    batch_size: int = setting(8, help="frames per VLM batch", output=False)
    device: str = setting("auto", help=DEVICE_HELP + " (the VLM takes the last GPU)", output=False)

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}")
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner must be one of {CAPTIONERS}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}")
        if self.vlm_size not in VLM_SIZES:
            raise ValueError(f"vlm size must be one of {VLM_SIZES}")
        if not 0 <= self.min_coverage < 1:
            raise ValueError("min coverage must be in [0, 1)")
        if any(n < 0 for n in self.frame_numbers) or not self.frame_numbers:
            raise ValueError("frame numbers must be non-negative and at least one")
        if min(self.chunk_start, self.start_index, self.limit) < 0:
            raise ValueError("chunk start, start index and limit must be >= 0 (limit 0 = all)")
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1")

    @property
    def uses_models(self) -> bool:
        return self.segmenter == "sam2" or self.captioner == "vlm"


WEIGHTS_FREE = {
    "model_set": "none",
    "model_set_label": "weights-free: classical road segmenter and lane analyzer",
    "model_root": None,
}


def model_identity(config: BuildConfig, model_root: str | None) -> dict:
    """Which models make this dataset's masks and captions (stored in every record)."""
    if not config.uses_models:
        return dict(WEIGHTS_FREE)
    if model_root is None:
        raise ValueError("--model-root is needed for the sam2 segmenter or the vlm captioner")
    from lanepaint.models.root import as_model_root

    return as_model_root(model_root).metadata()


def part_key(config: BuildConfig, identity: dict) -> str:
    """The settings key of a part's records: output settings and which models made them."""
    return settings_key(
        config, model_set=identity.get("model_set"), model_root=identity.get("model_root")
    )


# --- models -----------------------------------------------------------------------------


def make_masker(config: BuildConfig, model_root: str | None) -> Masker:
    """Road masks for single frames: SAM2 (image predictor, point grid) or classical."""
    from lanepaint.segment.road import make_image_segmenter

    return make_image_segmenter(config.segmenter, model_root, device=config.device)


def make_captioner(config: BuildConfig, model_root: str | None) -> CaptionFn:
    """Caption records for frames: the VLM (cross-checked) or the lane analyzer alone."""
    from lanepaint.vlm import caption

    if config.captioner == "analyzer":
        return caption.analyzer_records
    if model_root is None:
        raise ValueError("the VLM captioner needs --model-root")
    captioner = caption.load_captioner(
        model_root, vlm_size=config.vlm_size, batch_size=config.batch_size, device=config.device
    )

    def by_vlm(frames: list[np.ndarray], road_masks: list[np.ndarray]) -> list[dict]:
        return caption.vlm_records(
            captioner, frames, road_masks, analyzer_check=config.analyzer_check
        )

    return by_vlm


# --- inputs -------------------------------------------------------------------------------


def stable_shard(key: str, num_shards: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % num_shards


def video_uid(video: VideoSource) -> str:
    digest = hashlib.sha1(video.key.encode()).hexdigest()[:8]
    return f"{video.group}__{video.video_id}__{digest}"


def image_uid(uri: str) -> str:
    from lanepaint.data.videopainter import safe_video_id

    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{safe_video_id(uri.rsplit('/', 1)[-1])}__{digest}"


def read_video(video: VideoSource, config: BuildConfig) -> tuple[Frames, dict]:
    """The configured frames that exist, and the record's source fields."""
    from lanepaint.io.video import VideoError, read_frames_at

    with local_video(video) as path:
        found = read_frames_at(path, list(config.frame_numbers))
    frames = [(n, found[n]) for n in config.frame_numbers if n in found]
    if not frames:
        raise VideoError(f"none of frames {list(config.frame_numbers)} exist")
    missing = [n for n in config.frame_numbers if n not in found]
    return frames, {"video": video.as_dict(), "missing_frames": missing}


def read_image(uri: str, config: BuildConfig) -> tuple[Frames, dict]:
    from lanepaint.io.images import read_rgb

    return [(0, read_rgb(uri))], {"image": uri}


@dataclass(frozen=True)
class InputKind:
    """What differs between videos and image folders; the loop over them is one."""

    name: str
    default_part: str
    key: Callable[[Any], str]
    uid: Callable[[Any], str]
    read: Callable[[Any, BuildConfig], tuple[Frames, dict]]
    road_masks: Callable[[BuildConfig], bool]


VIDEOS = InputKind("videos", "shard_0000", lambda v: v.key, video_uid, read_video, lambda c: True)
IMAGES = InputKind("images", "images", str, image_uid, read_image, lambda c: c.mask_mode == "road")


# --- per-item processing ----------------------------------------------------------------


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


def process_frames(
    frames: Frames,
    masker: Masker | None,
    captioner: CaptionFn,
    config: BuildConfig,
    rng: np.random.Generator | None = None,
) -> tuple[Frames, list[np.ndarray], list[dict], list[dict]]:
    """Masks → coverage filter → captions. Returns kept frames, masks, captions, drops."""
    if masker is not None:
        road = masker([f for _, f in frames])
    else:
        road = [masks.synthetic_mask(f.shape[0], f.shape[1], rng) for _, f in frames]
    kept, kept_masks, dropped = [], [], []
    for (number, frame), mask in zip(frames, road, strict=True):
        cov = masks.coverage(mask)
        if cov < config.min_coverage:
            dropped.append({"frame": number, "reason": f"low coverage: {cov:.4f}"})
        else:
            kept.append((number, frame))
            kept_masks.append(mask)
    captions = captioner([f for _, f in kept], kept_masks) if kept else []
    return kept, kept_masks, captions, dropped


def build_item(
    kind: InputKind,
    item: Any,
    output_dir: str,
    part_name: str,
    config: BuildConfig,
    masker: Masker | None,
    captioner: CaptionFn,
    report: StageReport,
) -> dict | None:
    """Read frames → masks → captions → rows of one input; its record, or None when it
    failed (recorded in the report; one bad input never stops the batch)."""
    uid = kind.uid(item)
    rng = np.random.default_rng([config.seed, int(uid.rsplit("__", 1)[1], 16)])
    try:
        with report.phase("decode"):
            frames, source = kind.read(item, config)
        with report.phase("mask_and_caption"):
            kept, kept_masks, captions, dropped = process_frames(
                frames, masker, captioner, config, rng
            )
        with report.phase("write"):
            rows = write_rows(output_dir, part_name, uid, kept, kept_masks, captions)
    except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
        log.warning("%s failed: %s", kind.key(item), exc)
        report.fail(kind.key(item), f"{type(exc).__name__}: {exc}")
        return None
    return {**source, "uid": uid, "rows": rows, "dropped_frames": dropped}


# --- the stage ----------------------------------------------------------------------------


def build_part(
    kind: InputKind,
    items: Sequence,
    output_dir: str,
    config: BuildConfig,
    model_root: str | None = None,
    part_name: str = "",
    masker: Masker | None = None,
    captioner: CaptionFn | None = None,
) -> StageResult:
    """Process ``items`` (videos or image URIs, per ``kind``) into ``OUT/parts/<part>``:
    skip items finished with the same settings and models, load the models once, and
    commit a ledger record per finished item (written last, holding its rows)."""
    part_name = part_name or kind.default_part
    part_uri = storage.join(output_dir, "parts", part_name)
    identity = model_identity(config, model_root)
    claim_output(STAGE, output_dir)
    # One writer per part; parts of one dataset are built in parallel (one task a shard).
    with output_lock(STAGE, part_uri):
        return _build_part(
            kind, items, output_dir, config, model_root, part_name, identity, masker, captioner
        )


def _build_part(
    kind: InputKind,
    items: Sequence,
    output_dir: str,
    config: BuildConfig,
    model_root: str | None,
    part_name: str,
    identity: dict,
    masker: Masker | None,
    captioner: CaptionFn | None,
) -> StageResult:
    """:func:`build_part` with the part locked."""
    part_uri = storage.join(output_dir, "parts", part_name)
    report = StageReport(STAGE, part_uri)
    report.set_models(identity)
    report.settings, report.settings_key = output_settings(config), part_key(config, identity)
    ledger = Ledger(part_uri, report.settings_key)
    todo, done = ledger.split(items, kind.uid)
    report.inputs, report.skipped_done = len(items), len(done)
    log.info("%s: %d %s, %d already done", part_name, len(items), kind.name, len(done))
    road_masks = kind.road_masks(config)
    if todo:
        with report.phase("load_models"):
            if road_masks:
                masker = masker or make_masker(config, model_root)
            captioner = captioner or make_captioner(config, model_root)
    rows_written = 0
    for item in tqdm(todo, desc=f"{STAGE} {part_name}", unit=kind.name[:-1]):
        uid = kind.uid(item)
        if uid in ledger.records():
            ledger.withdraw(uid)  # its files are about to be rewritten
        record = build_item(
            kind,
            item,
            output_dir,
            part_name,
            config,
            masker if road_masks else None,
            captioner,
            report,
        )
        if record is not None:
            ledger.commit(uid, {**identity, **record})
            rows_written += len(record["rows"])
    report.done = len(todo) - len(report.failures)
    report.details = {"part": part_name, "rows_written": rows_written}
    return StageResult(part_uri, report.write())


def run(
    output_dir: str,
    config: BuildConfig,
    source: str | None = None,
    images: str | None = None,
    model_root: str | None = None,
    num_shards: int = 1,
    shard_index: int | None = None,
    do_merge: bool = True,
) -> StageResult:
    """CLI/component entry: discover, process one shard (or all), then merge.

    One shard (``shard_index``) locks only its part: the shards of a dataset run in
    parallel. The whole dataset in one process locks the dataset folder."""
    if (source is None) == (images is None):
        raise ValueError("give exactly one of --source (videos) or --images (image folder)")
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num_shards}")
    if not (shard_index is None or 0 <= shard_index < num_shards):
        raise ValueError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    check_apart([source, images, model_root], [output_dir])
    require_input(source or images, "video source" if source else "images folder")
    model_identity(config, model_root)  # a missing model root fails before any work
    whole = shard_index is None
    with output_lock(STAGE, output_dir) if whole else contextlib.nullcontext():
        claim_output(STAGE, output_dir)
        return _build_claimed(
            output_dir, config, source, images, model_root, num_shards, shard_index, do_merge
        )


def _build_claimed(
    output_dir: str,
    config: BuildConfig,
    source: str | None,
    images: str | None,
    model_root: str | None,
    num_shards: int,
    shard_index: int | None,
    do_merge: bool,
) -> StageResult:
    """:func:`run` once the inputs are checked and the output claimed."""
    if images is not None:
        part = build_part(IMAGES, list_images(images), output_dir, config, model_root)
        return merge(output_dir) if do_merge else part
    videos = discover(source, output_dir, config)
    indices = range(num_shards) if shard_index is None else [shard_index]
    result = None
    for i in indices:
        # By a stable hash of each video's key, not by position: every shard task lists the
        # source itself, and a listing that differs (objects added, a zip unreadable for a
        # moment) must not move videos between shards or drop them.
        mine = [v for v in videos if stable_shard(v.key, num_shards) == i]
        result = build_part(VIDEOS, mine, output_dir, config, model_root, f"shard_{i:04d}")
    return merge(output_dir) if do_merge else result


def discover(source: str, output_dir: str, config: BuildConfig) -> list[VideoSource]:
    """The source's videos in the configured range; what is not a readable video (junk zip
    members, unsafe names, broken zips) goes to ``OUT/discovery/failures.jsonl``."""
    found = discover_videos(
        source, config.chunk_start, config.chunk_end, config.start_index, config.limit
    )
    if found.skipped:
        report = StageReport(f"{STAGE} discovery", storage.join(output_dir, "discovery"))
        report.inputs = len(found.videos) + len(found.skipped)
        report.done = len(found.videos)
        for item in found.skipped:
            report.fail(item["item"], item["reason"])
        report.write()
    return found.videos


# --- merge --------------------------------------------------------------------------------


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


def part_root(output_dir: str) -> str:
    return storage.join(output_dir, "parts")


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
            add_failures(report, uri)
        elif uri.endswith("/" + reports.SUMMARY_JSON):
            part = json.loads(storage.read_text(uri))
            if part.get("settings_key") == report.settings_key:
                counted += 1
                report.settings = part.get("settings", {})
                report.inputs += part["inputs"]
                report.done += part["done"]
                report.skipped_done += part["skipped_done"]
    # What discovery found but could not use (junk zip members ...) counts as input too.
    report.inputs += add_failures(report, storage.join(output_dir, "discovery", reports.FAILURES))
    return counted


def add_failures(report: StageReport, uri: str) -> int:
    """Copy a failures.jsonl into the report (absent: none); returns how many."""
    if not storage.exists(uri):
        return 0
    lines = [line for line in storage.read_text(uri).splitlines() if line.strip()]
    for line in lines:
        rec = json.loads(line)
        report.fail(rec.pop("item"), rec.pop("reason"), **rec)
    return len(lines)


def merge(output_dir: str) -> StageResult:
    """Write ``train.csv``, ``manifest.jsonl``, stats and the merged summary (the common
    shape; counts summed over the parts made with the newest settings) from every part."""
    claim_output(STAGE, output_dir)
    # Shards of one dataset may finish together, each merging: they wait for each other.
    with output_lock(STAGE, output_dir, wait_s=MERGE_WAIT_S):
        return _merge(output_dir)


def _merge(output_dir: str) -> StageResult:
    """:func:`merge` with the dataset folder locked."""
    report = StageReport(STAGE, output_dir)
    with report.phase("merge"):
        by_uid = current_records(output_dir)
        if by_uid:
            newest = max(by_uid.values(), key=lambda r: r.get("finished_at", ""))
            report.set_models(newest)
            report.settings_key = newest.get("settings_key")
        rows = write_dataset(output_dir, by_uid)
        parts = add_parts(report, output_dir)
    all_rows = [r for rec in by_uid.values() for r in rec["rows"]]
    stats = attribute_stats(all_rows)
    report.details = {
        "items": len(by_uid),
        "rows": rows,
        "parts": parts,
        "missing_frames": sum(len(r.get("missing_frames", [])) for r in by_uid.values()),
        "dropped_low_coverage": sum(len(r.get("dropped_frames", [])) for r in by_uid.values()),
        "disagreements": sum(1 for r in all_rows if r.get("disagree")),
        **stats,
    }
    summary = report.write()
    storage.write_text(storage.join(output_dir, "stats.md"), stats_markdown(stats))
    return StageResult(output_dir, summary)


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


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(
        subparsers,
        STAGE,
        "road frames from videos (or an image folder) into a captioned FluxFill dataset",
        __doc__,
        BuildConfig,
        _add_io,
        _run,
    )


def _add_io(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="video source root (chunk_NNNN folders or zip chunks)")
    src.add_argument("--images", help="an image folder instead of videos")
    parser.add_argument("--output-dir", required=True, help="dataset folder (path or gs://)")
    parser.add_argument(
        "--model-root", default=None, help="model root (needed for sam2 or the vlm captioner)"
    )
    parser.add_argument("--num-shards", type=int, default=1, help="split the videos into N")
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="process only this shard (others run elsewhere); default: every shard",
    )
    parser.add_argument("--no-merge", action="store_true", help="skip writing train.csv")


def _run(args) -> int:
    result = run(
        args.output_dir,
        from_args(BuildConfig, args),
        source=args.source,
        images=args.images,
        model_root=args.model_root,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        do_merge=not args.no_merge,
    )
    s = result.summary
    print(
        json.dumps(
            {k: v for k, v in {**s, **s["details"]}.items() if not isinstance(v, dict)}, indent=1
        )
    )
    return result.exit_code
