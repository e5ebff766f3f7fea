"""Stage build-dataset: road frames from driving videos → a captioned FluxFill dataset.

Per video: frames at the given frame numbers (0-based decode order; out-of-range numbers
are recorded), a road mask per frame, frames whose mask covers less than
``min_coverage`` dropped (recorded), captions for the rest (batched), written under
``OUT/parts/<shard>/``. Each finished video leaves a record
(``parts/<shard>/records/<uid>.json``) holding its rows: the records are the manifest, so a
run killed midway resumes where it stopped and never duplicates a video. ``merge`` then
writes ``OUT/train.csv`` (atomically) from all records, plus ``manifest.jsonl`` and the
attribute statistics.

Image folders work too (``--images DIR``): road or synthetic (rectangles + brush strokes)
masks, auto-captions, the same layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from lanepaint.data import fluxfill, masks
from lanepaint.data.sources import (
    VideoSource,
    discover_videos,
    list_images,
    local_video,
)
from lanepaint.data.vocab import UNKNOWN, LaneAttributes
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png

log = logging.getLogger(__name__)

DEFAULT_FRAMES = (1, 100, 200, 300, 400, 500)
SEGMENTERS = ("sam2", "classical")
CAPTIONERS = ("vlm", "analyzer")
MASK_MODES = ("road", "synthetic")

Masker = Callable[[list[np.ndarray]], list[np.ndarray]]
CaptionFn = Callable[[list[np.ndarray], list[np.ndarray]], list[dict]]


@dataclass(frozen=True)
class BuildConfig:
    frame_numbers: tuple[int, ...] = DEFAULT_FRAMES
    min_coverage: float = 0.01
    segmenter: str = "sam2"
    captioner: str = "vlm"
    vlm_size: str = "7B"
    analyzer_check: bool = True
    batch_size: int = 8
    mask_mode: str = "road"  # image folders: road | synthetic
    seed: int = 42
    device: str = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}")
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner must be one of {CAPTIONERS}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}")
        if not 0 <= self.min_coverage < 1:
            raise ValueError("min coverage must be in [0, 1)")
        if any(n < 0 for n in self.frame_numbers) or not self.frame_numbers:
            raise ValueError("frame numbers must be non-negative and at least one")

    def settings_hash(self, identity: dict | None = None) -> str:
        """What makes two runs' rows comparable (a video is redone if this changes),
        including which models made them."""
        d = asdict(self)
        for key in ("batch_size", "device", "extra"):
            d.pop(key)
        d["models"] = {k: (identity or {}).get(k) for k in ("model_set", "model_root")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

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


# --- models -----------------------------------------------------------------------------


def make_masker(config: BuildConfig, model_root: str | None) -> Masker:
    """Road masks for single frames: SAM2 (image predictor, point grid) or classical."""
    from lanepaint.segment.road import make_image_segmenter

    return make_image_segmenter(config.segmenter, model_root, device=config.device)


def make_captioner(config: BuildConfig, model_root: str | None) -> CaptionFn:
    """Caption records for frames: the VLM (cross-checked) or the lane analyzer alone."""
    from lanepaint.stages.caption import CaptionConfig, analyzer_reading, caption_record

    if config.captioner == "analyzer":

        def by_analyzer(frames, road_masks):
            out = []
            for frame, mask in zip(frames, road_masks, strict=True):
                analysis = analyzer_reading(frame, mask)
                from lanepaint.data.vocab import parse_caption

                attrs = parse_caption(analysis["caption"])
                out.append(
                    {
                        "caption": attrs.caption,
                        **attrs.as_dict(),
                        "parse_method": "analyzer",
                        "analyzer": analysis,
                    }
                )
            return out

        return by_analyzer

    if model_root is None:
        raise ValueError("the VLM captioner needs --model-root")
    from lanepaint.stages.caption import load_captioner

    cconfig = CaptionConfig(
        vlm_size=config.vlm_size,
        batch_size=config.batch_size,
        analyzer_check=config.analyzer_check,
        device=config.device,
    )
    captioner = load_captioner(model_root, cconfig)

    def by_vlm(frames, road_masks):
        answers = captioner.caption(frames)
        records = []
        for frame, mask, answer in zip(frames, road_masks, answers, strict=True):
            analysis = analyzer_reading(frame, mask) if config.analyzer_check else None
            records.append(caption_record("", answer, analysis))
        return records

    return by_vlm


# --- per-item processing ----------------------------------------------------------------


@dataclass
class Part:
    """One shard's output folder under the dataset root."""

    root: str
    name: str

    @property
    def uri(self) -> str:
        return storage.join(self.root, "parts", self.name)

    def record_uri(self, uid: str) -> str:
        return storage.join(self.uri, "records", f"{uid}.json")

    def done(self, settings: str) -> set[str]:
        """Items finished with these settings (their records are the manifest)."""
        return {uid for uid, r in _existing_records(self).items() if r.get("settings") == settings}

    def commit(self, record: dict) -> None:
        """The record is the item's commit point: written last, atomically. It carries the
        settings hash and the model identity (model_set, model_set_label, model_root)."""
        record = {**record, "finished_at": reports.now_iso()}
        storage.write_text(
            self.record_uri(record["uid"]), json.dumps(record, sort_keys=True) + "\n"
        )


def stable_shard(key: str, num_shards: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % num_shards


def video_uid(video: VideoSource) -> str:
    digest = hashlib.sha1(video.key.encode()).hexdigest()[:8]
    return f"{video.group}__{video.video_id}__{digest}"


def image_uid(uri: str) -> str:
    from lanepaint.data.videopainter import safe_video_id

    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{safe_video_id(uri.rsplit('/', 1)[-1])}__{digest}"


def write_rows(
    part: Part,
    uid: str,
    frames: list[tuple[int, np.ndarray]],
    road_masks: list[np.ndarray],
    captions: list[dict],
) -> list[dict]:
    """Write images and masks of one item; returns its rows (paths relative to the root)."""
    rows = []
    for (number, frame), mask, cap in zip(frames, road_masks, captions, strict=True):
        stem = f"{uid}_f{number:06d}"
        image_rel = f"parts/{part.name}/images/{stem}.png"
        mask_rel = f"parts/{part.name}/masks/{stem}.png"
        write_png(storage.join(part.root, image_rel), frame)
        write_png(storage.join(part.root, mask_rel), np.where(mask > 0, 255, 0).astype(np.uint8))
        attrs = LaneAttributes(cap["count"], cap["color"], cap["pattern"])
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
    frames: list[tuple[int, np.ndarray]],
    masker: Masker | None,
    captioner: CaptionFn,
    config: BuildConfig,
    rng: np.random.Generator | None = None,
) -> tuple[list[tuple[int, np.ndarray]], list[np.ndarray], list[dict], list[dict]]:
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


# --- the stage ----------------------------------------------------------------------------


def _existing_records(part: Part) -> dict[str, dict]:
    out = {}
    for uri in storage.list_files(storage.join(part.uri, "records")):
        try:
            rec = json.loads(storage.read_text(uri))
            out[rec["uid"]] = rec
        except (json.JSONDecodeError, KeyError, FileNotFoundError):
            log.warning("ignoring unreadable record %s (it will be redone)", uri)
    return out


def _build_part(
    kind: str,
    items: Sequence,
    key_of: Callable,
    uid_of: Callable,
    read: Callable,
    output_dir: str,
    config: BuildConfig,
    model_root: str | None,
    part_name: str,
    masker: Masker | None,
    captioner: CaptionFn | None,
    road_masks: bool,
) -> dict:
    """The loop both sources share: skip finished items, load the models once, and per item
    read frames → masks → captions → rows → record (the record is the commit point)."""
    started = time.perf_counter()
    part = Part(output_dir, part_name)
    identity = model_identity(config, model_root)
    settings = config.settings_hash(identity)
    done = part.done(settings)
    todo = [item for item in items if uid_of(item) not in done]
    failures = reports.Failures()
    timings = reports.Timings()
    log.info(
        "%s: %d %s, %d already done, %d to do",
        part_name,
        len(items),
        kind,
        len(items) - len(todo),
        len(todo),
    )
    if todo:
        with timings.phase("load_models"):
            if road_masks:
                masker = masker or make_masker(config, model_root)
            captioner = captioner or make_captioner(config, model_root)
    rows_written = 0
    for item in tqdm(todo, desc=f"build-dataset {part_name}", unit=kind[:-1]):
        uid = uid_of(item)
        rng = np.random.default_rng([config.seed, int(uid.rsplit("__", 1)[1], 16)])
        try:
            with timings.phase("decode"):
                frames, source = read(item)
            with timings.phase("mask_and_caption"):
                kept, kept_masks, captions, dropped = process_frames(
                    frames, masker if road_masks else None, captioner, config, rng
                )
            with timings.phase("write"):
                rows = write_rows(part, uid, kept, kept_masks, captions)
        except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
            log.warning("%s failed: %s", key_of(item), exc)
            failures.add(key_of(item), f"{type(exc).__name__}: {exc}")
            continue
        part.commit(
            {
                **identity,
                **source,
                "uid": uid,
                "settings": settings,
                "rows": rows,
                "dropped_frames": dropped,
            }
        )
        rows_written += len(rows)
    summary = {
        "stage": "build-dataset",
        "part": part_name,
        kind: len(items),
        "skipped_done": len(items) - len(todo),
        "processed": len(todo) - len(failures),
        "failed": len(failures),
        "rows_written": rows_written,
        "timings_s": {**timings.as_dict(), "total": round(time.perf_counter() - started, 3)},
        "finished_at": reports.now_iso(),
        **identity,
    }
    reports.write_reports(part.uri, f"build-dataset part {part_name}", summary, failures)
    return summary


def build_from_videos(
    videos: Sequence[VideoSource],
    output_dir: str,
    config: BuildConfig,
    model_root: str | None = None,
    part_name: str = "shard_0000",
    masker: Masker | None = None,
    captioner: CaptionFn | None = None,
) -> dict:
    """Process ``videos`` into ``OUT/parts/<part_name>``; returns the part's summary."""
    from lanepaint.io.video import VideoError, read_frames_at

    def read(video: VideoSource):
        with local_video(video) as path:
            found = read_frames_at(path, list(config.frame_numbers))
        frames = [(n, found[n]) for n in config.frame_numbers if n in found]
        if not frames:
            raise VideoError(f"none of frames {list(config.frame_numbers)} exist")
        missing = [n for n in config.frame_numbers if n not in found]
        return frames, {"video": video.as_dict(), "missing_frames": missing}

    return _build_part(
        "videos",
        videos,
        lambda v: v.key,
        video_uid,
        read,
        output_dir,
        config,
        model_root,
        part_name,
        masker,
        captioner,
        road_masks=True,
    )


def build_from_images(
    images: Sequence[str],
    output_dir: str,
    config: BuildConfig,
    model_root: str | None = None,
    part_name: str = "images",
    masker: Masker | None = None,
    captioner: CaptionFn | None = None,
) -> dict:
    """The same layout from an image folder (road or synthetic masks)."""
    from lanepaint.io.images import read_rgb

    def read(uri: str):
        return [(0, read_rgb(uri))], {"image": uri}

    return _build_part(
        "images",
        images,
        str,
        image_uid,
        read,
        output_dir,
        config,
        model_root,
        part_name,
        masker,
        captioner,
        road_masks=config.mask_mode == "road",
    )


def merge(output_dir: str) -> dict:
    """Write ``train.csv``, ``manifest.jsonl`` and stats from every part's records."""
    record_uris = [
        u
        for u in storage.list_files(storage.join(output_dir, "parts"))
        if "/records/" in u and u.endswith(".json")
    ]
    records = []
    for uri in record_uris:
        try:
            records.append(json.loads(storage.read_text(uri)))
        except (json.JSONDecodeError, FileNotFoundError):
            log.warning("skipping unreadable record %s", uri)
    records.sort(key=lambda r: r.get("finished_at", ""))
    if records:
        # Rows made with other settings or models (an earlier run) are never mixed in.
        newest = records[-1].get("settings")
        stale = [r for r in records if r.get("settings") != newest]
        if stale:
            log.warning("%d records of earlier settings left out of train.csv", len(stale))
        records = [r for r in records if r.get("settings") == newest]
    by_uid: dict[str, dict] = {}
    for rec in records:
        by_uid[rec["uid"]] = rec  # latest wins: a video is in the dataset once
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
    stats = attribute_stats([r for rec in by_uid.values() for r in rec["rows"]])
    part_summaries = []
    for uri in storage.list_files(storage.join(output_dir, "parts")):
        if uri.endswith("/" + reports.SUMMARY_JSON):
            part_summaries.append(json.loads(storage.read_text(uri)))
    summary = {
        "stage": "build-dataset",
        "output": output_dir,
        "items": len(by_uid),
        "rows": len(rows),
        "parts": len(part_summaries),
        "missing_frames": sum(len(r.get("missing_frames", [])) for r in by_uid.values()),
        "dropped_low_coverage": sum(len(r.get("dropped_frames", [])) for r in by_uid.values()),
        "disagreements": sum(
            1 for rec in by_uid.values() for r in rec["rows"] if r.get("disagree")
        ),
        **stats,
        "finished_at": reports.now_iso(),
    }
    for key in ("model_set", "model_set_label"):
        values = {str(r.get(key)) for r in by_uid.values() if r.get(key)}
        if values:
            summary[key] = ", ".join(sorted(values))
    failures = reports.Failures()
    failure_files = [
        u
        for u in storage.list_files(storage.join(output_dir, "parts"))
        + storage.list_files(storage.join(output_dir, "discovery"))
        if u.endswith("/" + reports.FAILURES)
    ]
    for uri in failure_files:
        for line in storage.read_text(uri).splitlines():
            if line.strip():
                rec = json.loads(line)
                failures.add(rec.pop("item"), rec.pop("reason"), **rec)
    summary["failed"] = len(failures)  # the parts' and discovery's, as listed in failures.jsonl
    notes = [summary["model_set_label"]] if "model_set_label" in summary else []
    reports.write_reports(output_dir, f"build-dataset: {output_dir}", summary, failures, notes)
    storage.write_text(storage.join(output_dir, "stats.md"), stats_markdown(stats))
    return summary


def attribute_stats(rows: list[dict]) -> dict:
    """Distribution of count/color/pattern (the seed's table) and of whole captions."""
    from lanepaint.data.vocab import parse_caption

    attrs = [parse_caption(r["prompt"]) for r in rows]
    out = {
        f"by_{a}": dict(Counter(getattr(x, a) for x in attrs).most_common())
        for a in ("count", "color", "pattern")
    }
    out["by_caption"] = dict(Counter(x.caption for x in attrs).most_common())
    out["clear_rows"] = sum(1 for x in attrs if x.is_clear)
    out["unknown_rows"] = sum(1 for x in attrs if UNKNOWN in x.as_dict().values())
    return out


def stats_markdown(stats: dict) -> str:
    lines = ["# Lane attribute distribution", ""]
    for attr in ("count", "color", "pattern"):
        table = stats[f"by_{attr}"]
        total = sum(table.values()) or 1
        lines += [f"## {attr}", "", "| value | rows | share |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v} | {100 * v / total:.1f} % |" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def run(
    output_dir: str,
    config: BuildConfig,
    source: str | None = None,
    images: str | None = None,
    model_root: str | None = None,
    chunk_start: int = 0,
    chunk_end: int = 199,
    start_index: int = 0,
    limit: int | None = None,
    num_shards: int = 1,
    shard_index: int | None = None,
    do_merge: bool = True,
) -> dict:
    """CLI/compoment entry: discover, process one shard (or all), then merge."""
    if (source is None) == (images is None):
        raise ValueError("give exactly one of --source (videos) or --images (image folder)")
    if images is not None:
        part = build_from_images(list_images(images), output_dir, config, model_root)
        return merge(output_dir) if do_merge else part
    found = discover_videos(source, chunk_start, chunk_end, start_index, limit)
    if found.skipped:
        reports.write_reports(
            storage.join(output_dir, "discovery"),
            "build-dataset discovery",
            {"skipped": len(found.skipped), "videos": len(found.videos)},
            _failures_from(found.skipped),
        )
    indices = range(num_shards) if shard_index is None else [shard_index]
    summary = {}
    for i in indices:
        # By a stable hash of each video's key, not by position: every shard task lists the
        # source itself, and a listing that differs (objects added, a zip unreadable for a
        # moment) must not move videos between shards or drop them.
        mine = [v for v in found.videos if stable_shard(v.key, num_shards) == i]
        summary = build_from_videos(
            mine, output_dir, config, model_root, part_name=f"shard_{i:04d}"
        )
    return merge(output_dir) if do_merge else summary


def _failures_from(items: list[dict]) -> reports.Failures:
    failures = reports.Failures()
    for item in items:
        failures.add(item["item"], item["reason"])
    return failures


def parse_frame_numbers(text: str) -> tuple[int, ...]:
    try:
        numbers = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"frame numbers must be integers: {text!r}") from exc
    return numbers


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-dataset",
        help="road frames from videos (or an image folder) into a captioned FluxFill dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="video source root (chunk_NNNN folders or zip chunks)")
    src.add_argument("--images", help="an image folder instead of videos")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model-root", default=None)
    parser.add_argument("--chunk-start", type=int, default=0)
    parser.add_argument("--chunk-end", type=int, default=199)
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--frame-numbers",
        type=parse_frame_numbers,
        default=",".join(map(str, DEFAULT_FRAMES)),
        help="0-based frame indices, comma-separated (default 1,100,...,500)",
    )
    parser.add_argument("--min-coverage", type=float, default=0.01)
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="sam2")
    parser.add_argument(
        "--captioner",
        choices=CAPTIONERS,
        default="vlm",
        help="vlm (Qwen2.5-VL) or analyzer (weights-free lane analyzer)",
    )
    parser.add_argument("--vlm-size", default="7B", choices=("7B", "72B"))
    parser.add_argument("--no-analyzer-check", action="store_true")
    parser.add_argument(
        "--mask-mode",
        choices=MASK_MODES,
        default="road",
        help="image folders: road masks or synthetic rectangles/strokes",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="process only this shard (others run elsewhere)",
    )
    parser.add_argument("--no-merge", action="store_true", help="skip writing train.csv")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    frame_numbers = args.frame_numbers
    if isinstance(frame_numbers, str):
        frame_numbers = parse_frame_numbers(frame_numbers)
    config = BuildConfig(
        frame_numbers=frame_numbers,
        min_coverage=args.min_coverage,
        segmenter=args.segmenter,
        captioner=args.captioner,
        vlm_size=args.vlm_size,
        analyzer_check=not args.no_analyzer_check,
        batch_size=args.batch_size,
        mask_mode=args.mask_mode,
        seed=args.seed,
        device=args.device,
    )
    summary = run(
        args.output_dir,
        config,
        source=args.source,
        images=args.images,
        model_root=args.model_root,
        chunk_start=args.chunk_start,
        chunk_end=args.chunk_end,
        start_index=args.start_index,
        limit=args.limit,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        do_merge=not args.no_merge,
    )
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=1))
    return 0


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
