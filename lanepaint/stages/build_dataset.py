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
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from lanepaint.data import dataset_build as dataset
from lanepaint.data.dataset_build import CaptionFn, Frames, Masker
from lanepaint.data.sources import (
    VideoSource,
    discover_videos,
    image_uid,
    list_images,
    stable_shard,
    video_uid,
)
from lanepaint.io import storage
from lanepaint.kit import (
    Ledger,
    StageReport,
    StageResult,
    check_apart,
    check_finite,
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
from lanepaint.segment.base import SEGMENTERS

log = logging.getLogger(__name__)

STAGE = "build-dataset"
DEFAULT_FRAMES = (1, 100, 200, 300, 400, 500)
CAPTIONERS = ("vlm", "analyzer")
MASK_MODES = ("road", "synthetic")
VLM_SIZES = ("7B", "72B")
MERGE_WAIT_S = 600.0


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
        check_finite(self)  # nan/inf, however the Config is built
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
        if min(self.chunk_start, self.start_index, self.limit, self.seed) < 0:
            raise ValueError(
                "chunk start, start index, limit and seed must be >= 0 (limit 0 = all)"
            )
        if self.chunk_end < self.chunk_start:
            raise ValueError(f"chunk end {self.chunk_end} is before chunk start {self.chunk_start}")
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


@dataclass(frozen=True)
class InputKind:
    """What differs between videos and image folders; the loop over them is one."""

    name: str
    default_part: str
    key: Callable[[Any], str]
    uid: Callable[[Any], str]
    read: Callable[[Any, BuildConfig], tuple[Frames, dict]]
    road_masks: Callable[[BuildConfig], bool]


VIDEOS = InputKind(
    "videos",
    "shard_0000",
    lambda v: v.key,
    video_uid,
    lambda v, c: dataset.read_video_frames(v, c.frame_numbers),
    lambda c: True,
)
IMAGES = InputKind(
    "images",
    "images",
    str,
    image_uid,
    lambda uri, c: dataset.read_image_frames(uri),
    lambda c: c.mask_mode == "road",
)


# --- per-item processing ----------------------------------------------------------------


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
            kept, kept_masks, captions, dropped = dataset.process_frames(
                frames, masker, captioner, config.min_coverage, rng
            )
        with report.phase("write"):
            rows = dataset.write_rows(output_dir, part_name, uid, kept, kept_masks, captions)
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
        by_uid = dataset.current_records(output_dir)
        if by_uid:
            newest = max(by_uid.values(), key=lambda r: r.get("finished_at", ""))
            report.set_models(newest)
            report.settings_key = newest.get("settings_key")
        rows = dataset.write_dataset(output_dir, by_uid)
        parts = dataset.add_parts(report, output_dir)
    report.details = dataset.merged_details(by_uid, rows, parts)
    summary = report.write()
    stats_md = dataset.stats_markdown(report.details)
    storage.write_text(storage.join(output_dir, "stats.md"), stats_md)
    return StageResult(output_dir, summary)


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, BuildConfig, _add_io, _run)


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
