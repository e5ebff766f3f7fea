"""Stage segment: road masks for many videos, written in the VideoPainter layout.

One call loads the model once and goes through every input video (local paths or
``gs://`` URIs, files or folders of videos). Per video: decode at the output fps (source
fps detected, variable frame rates resampled by timestamp) up to ``max_frames``, segment
the road (SAM2.1 prompted with positive points on frame 0 and propagated, or the
weights-free classical segmenter), clean the masks (small components, holes, dilation) and
write::

    OUT/raw_videos/<group>/<video_id>.0.mp4   the frames that were segmented, at the output fps
    OUT/mask_root/<video_id>/all_masks.npz    arr_0: uint8 [T,H,W], 1 = road to inpaint
    OUT/mask_root/<video_id>/png/00000.png    optional, 0 keep / 255 inpaint
    OUT/overlays/<video_id>.mp4               optional, masks tinted on the video
    OUT/records/<video_id>.json               written last: the video is complete
    OUT/meta.csv                              one row per complete video (old and new)
    OUT/summary.json, summary.md, failures.jsonl

Decoding of the next video and writing of the previous one run in threads while the
current one is on the GPU. A video that fails is recorded in failures.jsonl and the batch
goes on; a video whose record (same source, settings and model set), mp4 and npz exist is
skipped, so a rerun (or a KFP retry) resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.io import reports, storage
from lanepaint.kit import (
    Ledger,
    StageReport,
    StageResult,
    WriteBehind,
    check_finite,
    from_args,
    guard_output,
    keyed_path,
    output_settings,
    setting,
    settings_key,
)
from lanepaint.kit.cli import register_stage
from lanepaint.models.device import DEVICE_HELP
from lanepaint.segment.base import SEGMENTERS, TRACKING_COMPILE_MODES
from lanepaint.segment.failures import failure_reason
from lanepaint.segment.inputs import (
    VideoJob,
    assign_ids,
    list_inputs,
    read_video_list,
    require_some,
)
from lanepaint.segment.models import LoadedSegmenter, load_segmenter, model_identity, model_metadata
from lanepaint.segment.outputs import video_record, write_media
from lanepaint.segment.postprocess import PostprocessSettings
from lanepaint.segment.prompts import (
    DEFAULT_POINTS,
    Point,
    format_points,
    parse_points,
    validate_points,
)
from lanepaint.segment.stream import FrameStream

log = logging.getLogger(__name__)

STAGE = "segment"


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of one segment run (see docs/segment.md)."""

    segmenter: str = setting(
        "sam2",
        help="sam2 (needs --model-root) or classical (weights-free fallback)",
        choices=SEGMENTERS,
    )
    max_frames: int = setting(150, help="frames per video at the output fps (0 = all)")
    fps: float = setting(8.0, help="output frame rate (0 = the source's)")
    points: tuple[Point, ...] = setting(
        DEFAULT_POINTS,
        help="positive prompts on frame 0, normalized x,y;x,y;...",
        parse=parse_points,
        show=format_points,
    )
    dilate: int = setting(4, help="mask dilation radius in px")
    min_component: float = setting(
        0.002, help="drop road components below this fraction of the frame"
    )
    max_hole: float = setting(
        0.003, help="fill enclosed holes up to this fraction of the frame (0 = no hole filling)"
    )
    png_masks: bool = setting(False, help="also write per-frame PNG masks (0 keep / 255 inpaint)")
    overlay: bool = setting(False, help="also write an overlay video (masks tinted on the frames)")
    max_side: int = setting(1920, help="downscale videos whose longer side is larger (4K)")
    crf: int = setting(18, help="H.264 quality of the raw videos (0-51, lower is better)")
    min_side: int = setting(
        16,
        help="refuse videos with a side below this many px (never changes a written video)",
        output=False,
    )
    device: str = setting("auto", help=DEVICE_HELP, output=False)
    vos: bool = setting(
        False,
        help="sam2's VOS predictor (CUDA): its tracking modules compiled with inductor's "
        "default mode, not sam2's CUDA graphs, which crashed on an H100 (docs/segment.md); "
        "slower than the default plain predictor on an H100 (6.0 vs 4.9 s per video)",
        output=False,
    )
    compile_tracking: str = setting(
        "",
        help="torch.compile mode for SAM2's per-frame tracking modules, empty = eager (CUDA; "
        "~1 min once per run; see docs/performance.md for what it buys)",
        choices=TRACKING_COMPILE_MODES,
        output=False,
    )
    encoder_batch: int = setting(8, help="frames per image-encoder call", output=False)
    workers: int = setting(4, help="threads for mask clean-up", output=False)
    overwrite: bool = setting(False, help="redo videos that are already complete", output=False)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {self.segmenter!r}")
        if self.max_frames < 0:
            raise ValueError("max_frames must be >= 0 (0 = all frames)")
        if self.fps < 0:
            raise ValueError("fps must be >= 0 (0 = the source rate)")
        if self.min_side < 2 or self.max_side < max(self.min_side, 32):
            raise ValueError("need 2 <= min_side and 32 <= max_side, min_side <= max_side")
        if not 0 <= self.crf <= 51:
            raise ValueError("crf must be in [0, 51]")
        if self.encoder_batch < 1 or self.workers < 1:
            raise ValueError("encoder_batch and workers must be >= 1")
        if self.compile_tracking not in TRACKING_COMPILE_MODES:
            raise ValueError(f"compile_tracking must be one of {TRACKING_COMPILE_MODES}")
        object.__setattr__(self, "points", validate_points(self.points))
        _ = self.postprocess  # validates the mask settings

    @property
    def postprocess(self) -> PostprocessSettings:
        return PostprocessSettings(self.dilate, self.min_component, self.max_hole)


@dataclass
class _Run:
    """What the steps of one run share."""

    layout: VideoPainterLayout
    config: SegmentConfig
    ledger: Ledger
    report: StageReport
    meta: dict[str, Any]
    previous: dict[str, dict]  # records before this run: stale PNGs/overlays to remove


# --- the stage ----------------------------------------------------------------------------


def segment_videos(
    inputs: Sequence[str],
    output_dir: str,
    model_root: str | None = None,
    config: SegmentConfig | None = None,
    loaded: LoadedSegmenter | None = None,
) -> StageResult:
    """Segment every video in ``inputs`` (files, folders or prefixes) into ``output_dir``
    (which may hold ``{settings_key}``, see :func:`lanepaint.kit.settings.keyed_path`).

    ``loaded`` lets a caller reuse a segmenter across calls (its model wins over
    ``model_root``); otherwise it is loaded from ``model_root`` once, if anything is to do.
    """
    config = config or SegmentConfig()
    require_some(inputs)
    meta = loaded.metadata if loaded else model_metadata(config, model_root)
    key = settings_key(config, **model_identity(meta))
    output_dir = keyed_path(output_dir, key)  # "{settings_key}" in it: a folder per settings
    layout = VideoPainterLayout(output_dir.rstrip("/") if output_dir != "/" else output_dir)
    with guard_output(STAGE, layout.root, inputs=[*inputs, model_root]):
        return _segment_run(inputs, layout, model_root, config, loaded, meta)


def _segment_run(
    inputs: Sequence[str],
    layout: VideoPainterLayout,
    model_root: str | None,
    config: SegmentConfig,
    loaded: LoadedSegmenter | None,
    meta: dict[str, Any],
) -> StageResult:
    """The run itself, with the output locked and claimed (see :func:`segment_videos`)."""
    report = StageReport(STAGE, layout.root)
    ledger = Ledger(layout.root, settings_key(config, **model_identity(meta)))
    report.settings_key, report.settings = ledger.key, output_settings(config)
    run = _Run(layout, config, ledger, report, meta, {})
    with report.phase("list"):
        todo = _plan(run, inputs)
    if loaded is None and todo:
        with report.phase("load_model"):
            loaded = load_segmenter(config, model_root)
    if loaded is not None:
        run.meta = loaded.metadata
    report.set_models(run.meta)
    done = _segment_all(run, todo, loaded) if todo else {}
    with report.phase("write_meta"):
        videos_in_meta = _write_meta(run)
    return _finish(run, done, videos_in_meta)


def _plan(run: _Run, inputs: Sequence[str]) -> list[VideoJob]:
    """List the inputs, give each video its id, and return those not yet complete."""
    sources, problems = list_inputs(inputs)
    for uri, reason in problems:
        run.report.fail(uri, reason)
    run.previous = _video_records(run.ledger)
    by_source = {c["record"]["source"]: vid for vid, c in run.previous.items()}
    jobs = assign_ids(sources, by_source)
    todo = [
        job
        for job in jobs
        if run.config.overwrite
        or not run.ledger.is_done(job.video_id, partial(_outputs_complete, run.layout, job))
    ]
    run.report.inputs = len(jobs) + len(problems)
    run.report.skipped_done = len(jobs) - len(todo)
    log.info("%d videos: %d to segment, the rest complete", len(jobs), len(todo))
    return todo


def _video_records(ledger: Ledger) -> dict[str, dict]:
    """video id -> record, for every record that holds a readable meta.csv row."""
    out: dict[str, dict] = {}
    for vid, content in ledger.records().items():
        try:
            VideoRecord(**content["record"])
        except (KeyError, TypeError) as exc:
            log.warning("ignoring unreadable record of %s: %s", vid, exc)
            continue
        out[vid] = content
    return out


def _outputs_complete(layout: VideoPainterLayout, job: VideoJob, content: dict) -> bool:
    """The record is this source's, and its mp4 and npz are there."""
    if content.get("record", {}).get("source") != job.source:
        return False
    return storage.exists(layout.raw_video(job.group, job.video_id)) and storage.exists(
        layout.masks(job.video_id)
    )


def _segment_all(run: _Run, todo: list[VideoJob], loaded: LoadedSegmenter) -> dict[str, dict]:
    """Decode ahead, segment on the main thread, write behind; failures stay per video."""
    done: dict[str, dict] = {}

    def written(job: VideoJob, content: dict) -> None:
        done[job.video_id] = content

    def write_failed(job: VideoJob, exc: BaseException) -> None:
        log.error("writing %s failed: %s", job.source, exc)
        run.report.fail(job.source, failure_reason(exc, "write"), video_id=job.video_id)

    with WriteBehind(written, write_failed, name="segment-write") as writer:
        for job, stream in _decoded_ahead(todo, run.config, run.report.timings):
            segmented = _segment_one(run, job, stream, loaded)
            if segmented is None:
                continue
            # Outputs are about to be rewritten: an old record must not vouch for them.
            if job.video_id in run.ledger.records():
                run.ledger.withdraw(job.video_id)
            writer.submit(job, _publish, run, job, stream, *segmented)
            del segmented  # the writer holds the frames; let them go once written
    return done


def _decoded_ahead(
    todo: list[VideoJob], config: SegmentConfig, timings: reports.Timings
) -> Iterator[tuple[VideoJob, FrameStream]]:
    """Each job with its started frame stream; the next video decodes while this one is
    segmented. A stream is closed when the caller moves on (its outputs keep fps/info)."""

    def start(job: VideoJob) -> FrameStream:
        return FrameStream(
            job.source,
            timings,
            fps=config.fps,
            max_frames=config.max_frames,
            max_side=config.max_side,
            min_side=config.min_side,
            name=f"decode-{job.video_id}",
        ).start()

    upcoming = start(todo[0])
    try:
        for i, job in enumerate(todo):
            stream = upcoming
            upcoming = start(todo[i + 1]) if i + 1 < len(todo) else None
            try:
                yield job, stream
            finally:
                stream.close()
    finally:
        if upcoming is not None:
            upcoming.close()


def _segment_one(run: _Run, job: VideoJob, stream: FrameStream, loaded: LoadedSegmenter):
    """(segmentation, seconds) for one video, or None after recording its failure."""
    t0 = time.perf_counter()
    try:
        with run.report.phase("segment"):
            segmentation = loaded.segmenter.segment(stream.frames())
    except Exception as exc:  # noqa: BLE001 - one video's failure; the batch goes on
        reason = failure_reason(exc)
        if reason.startswith(("segment error", "out of memory")):
            from lanepaint.models.device import free_gpu_memory

            log.error("%s failed:\n%s", job.source, traceback.format_exc())
            free_gpu_memory()
        else:
            log.warning("%s: %s", job.source, reason)
        run.report.fail(job.source, reason, video_id=job.video_id)
        return None
    return segmentation, {"segment": round(time.perf_counter() - t0, 4)}


# --- writing (on the writer thread) -------------------------------------------------------


def _publish(
    run: _Run, job: VideoJob, stream: FrameStream, segmentation, seconds: dict[str, float]
) -> dict:
    """Clean the masks, write one video's outputs, then its record (the commit point)."""
    from lanepaint.segment.postprocess import postprocess_masks

    started = time.perf_counter()
    config, layout, timings = run.config, run.layout, run.report.timings
    with timings.phase("postprocess"):
        masks = postprocess_masks(segmentation.masks, config.postprocess, config.workers)
    old = (run.previous.get(job.video_id) or {}).get("outputs", {})
    frames, fps = segmentation.frames, stream.fps
    outputs = write_media(layout, job, frames, masks, fps, config, old, timings)
    seconds = {**seconds, "write": round(time.perf_counter() - started, 4)}
    content = video_record(layout, job, stream, masks, outputs, seconds, run.meta)
    with timings.phase("upload"):
        return run.ledger.commit(job.video_id, content)


# --- the end of a run ---------------------------------------------------------------------


def _write_meta(run: _Run) -> int:
    """meta.csv from every complete video's record on disk now (this run's, earlier ones,
    and any another writer committed meanwhile), never from this run's view alone."""
    run.ledger.reload()
    rows = [VideoRecord(**c["record"]) for c in _video_records(run.ledger).values()]
    if rows or storage.exists(run.layout.meta):
        run.layout.write_meta(rows)
    return len(rows)


def _finish(run: _Run, done: dict[str, dict], videos_in_meta: int) -> StageResult:
    report = run.report
    frames = sum(c["record"]["frames"] for c in done.values())
    no_road = sorted(vid for vid, c in done.items() if c["empty_mask"])
    wall = report.elapsed
    report.done = len(done)
    report.details = {
        "frames_segmented": frames,
        "no_road": len(no_road),
        "no_road_videos": no_road,
        "videos_in_meta": videos_in_meta,
        "frames_per_second": round(frames / wall, 3) if wall > 0 else 0.0,
        "wall_share": {
            k: round(v / wall, 4) for k, v in report.timings.as_dict().items() if wall > 0
        },
        "model_root": run.meta.get("model_root"),
        "device": run.meta.get("device"),
    }
    if no_road:
        report.notes.append(f"no road found (empty masks) in: {', '.join(no_road)}")
    report.notes.append(
        "phases run in parallel threads (decode next, segment current, write previous), "
        "so wall_share can sum to more than 1"
    )
    summary = report.write()
    result = StageResult(run.layout.root, summary)
    log.info("%s", result.line())
    return result


# --- CLI ----------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, SegmentConfig, _add_io, _run)


def _add_io(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", nargs="+", metavar="URI", help="video files or folders")
    source.add_argument("--video-list", metavar="FILE", help="file with one video URI a line")
    parser.add_argument("--output-dir", required=True, help="VideoPainter root (path or gs://)")
    parser.add_argument("--model-root", default="", help="model root (path or gs://)")


def _run(args) -> int:
    config = from_args(SegmentConfig, args)
    inputs = args.videos or read_video_list(args.video_list)
    result = segment_videos(inputs, args.output_dir, args.model_root, config)
    s, d = result.summary, result.summary["details"]
    print(
        f"{result.output}: segmented {s['done']}, skipped {s['skipped_done']} complete, "
        f"failed {s['failed']}, no road in {d['no_road']} [{s['model_set_label']}]"
    )
    return result.exit_code
