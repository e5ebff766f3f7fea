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
goes on; a video whose record, mp4 and npz exist with the same source and settings is
skipped, so a rerun (or a KFP retry) resumes where the last one stopped.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import queue
import re
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord, safe_video_id
from lanepaint.io import reports, storage
from lanepaint.segment.postprocess import PostprocessSettings
from lanepaint.segment.prompts import DEFAULT_POINTS, Point, format_points, parse_points

log = logging.getLogger(__name__)

STAGE = "segment"
SEGMENTERS = ("sam2", "classical")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
RECORDS_DIR = "records"
OVERLAYS_DIR = "overlays"
DEFAULT_GROUP = "videos"
CLASSICAL_LABEL = (
    "classical (weights-free fallback: colour/texture statistics + perspective prior; "
    "a sanity check, not SAM2 quality)"
)
_GROUP_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_FRAME_QUEUE = 16  # decoded frames buffered ahead of the segmenter, per video


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of one segment run.

    ``max_frames`` / ``fps``: None means all frames / the source rate. Frames whose longer
    side exceeds ``max_side`` are downscaled (4K sources); odd sizes lose their last row
    or column (H.264 needs even sizes, and masks must match the video pixel for pixel).
    ``device`` / ``vos_optimized`` / ``compile_tracking`` / ``encoder_batch`` / ``workers``
    change speed, not
    output, and are left out of the resume fingerprint.
    """

    segmenter: str = "sam2"
    max_frames: int | None = 150
    fps: float | None = 8.0
    points: tuple[Point, ...] = DEFAULT_POINTS
    dilate_px: int = 4
    min_component: float = 0.002
    max_hole: float = 0.003
    png_masks: bool = False
    overlay: bool = False
    max_side: int = 1920
    min_side: int = 16
    crf: int = 18
    device: str = "auto"
    vos_optimized: bool = False
    compile_tracking: str | None = None
    encoder_batch: int = 8
    workers: int = 4
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {self.segmenter!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1 (or None for all frames)")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be > 0 (or None for the source rate)")
        if self.min_side < 2 or self.max_side < max(self.min_side, 32):
            raise ValueError("need 2 <= min_side and 32 <= max_side, min_side <= max_side")
        if not 0 <= self.crf <= 51:
            raise ValueError("crf must be in [0, 51]")
        if self.encoder_batch < 1 or self.workers < 1:
            raise ValueError("encoder_batch and workers must be >= 1")
        from lanepaint.segment.prompts import validate_points

        object.__setattr__(self, "points", validate_points(self.points))
        _ = self.postprocess  # validates the mask settings

    @property
    def postprocess(self) -> PostprocessSettings:
        return PostprocessSettings(self.dilate_px, self.min_component, self.max_hole)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape the outputs (compared on resume)."""
        return {
            "segmenter": self.segmenter,
            "max_frames": self.max_frames,
            "fps": self.fps,
            "points": format_points(self.points),
            "dilate_px": self.dilate_px,
            "min_component": self.min_component,
            "max_hole": self.max_hole,
            "png_masks": self.png_masks,
            "overlay": self.overlay,
            "max_side": self.max_side,
            "crf": self.crf,
        }


@dataclass(frozen=True)
class VideoJob:
    source: str
    group: str
    video_id: str


@dataclass
class SegmentResult:
    output_dir: str
    summary: dict
    records: list[VideoRecord] = field(default_factory=list)


@dataclass
class LoadedSegmenter:
    """A segmenter ready for many videos, and what outputs must say about its model."""

    segmenter: Any
    metadata: dict[str, Any]


class TooSmallError(ValueError):
    """A video below ``min_side`` pixels: nothing useful can be segmented or inpainted."""


# --- inputs and ids -----------------------------------------------------------------------


def _is_video_name(uri: str) -> bool:
    return uri.lower().endswith(VIDEO_EXTENSIONS)


def read_video_list(uri: str) -> list[str]:
    """URIs from a list file (local or gs://): one per line, blank lines and # comments skipped."""
    lines = storage.read_text(uri).splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def list_inputs(uris: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Video files named directly or found under folders/prefixes: (sorted unique sources,
    [(uri, reason)] for folders that hold no video). Missing files are left to fail later,
    per video, so one typo does not stop the batch."""
    sources: set[str] = set()
    problems: list[tuple[str, str]] = []
    for uri in uris:
        if _is_video_name(uri):
            sources.add(uri)
            continue
        found = [f for f in storage.list_files(uri) if _is_video_name(f)]
        if found:
            sources.update(found)
        else:
            problems.append((uri, f"missing input: no video files at or under {uri}"))
    return sorted(sources), problems


def group_of(source: str) -> str:
    """The parent folder's name (``chunk_0003``), or ``videos`` when there is none."""
    parts = [p for p in source.rstrip("/").split("/") if p]
    if storage.is_gcs(source):
        parts = parts[2:]  # drop "gs:" and the bucket
    parent = parts[-2] if len(parts) >= 2 else ""
    name = _GROUP_RE.sub("_", parent).strip("._")
    return name or DEFAULT_GROUP


def assign_ids(sources: Sequence[str], existing: dict[str, str] | None = None) -> list[VideoJob]:
    """Deterministic unique ids: ``safe_video_id(file name)``.

    A source that already has a record keeps its id (so reruns resume it). Where several
    new sources share a name, or a name is taken by another source's record, every one of
    them is prefixed with its group (``chunk_0003__clip``), and a short hash of the URI is
    appended if that still collides.
    """
    import hashlib

    existing = existing or {}
    taken = set(existing.values())
    jobs: dict[str, VideoJob] = {}
    fresh = []
    for src in sorted(set(sources)):
        if src in existing:
            jobs[src] = VideoJob(src, group_of(src), existing[src])
        else:
            fresh.append(src)
    base = {src: safe_video_id(src) for src in fresh}
    counts: dict[str, int] = {}
    for b in base.values():
        counts[b] = counts.get(b, 0) + 1
    for src in fresh:
        group = group_of(src)
        vid = base[src]
        if counts[vid] > 1 or vid in taken:
            vid = f"{group}__{vid}"
        if vid in taken:
            vid = f"{vid}_{hashlib.sha1(src.encode()).hexdigest()[:8]}"
        taken.add(vid)
        jobs[src] = VideoJob(src, group, vid)
    return [jobs[s] for s in sorted(jobs)]


# --- model --------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_segmenter(config: SegmentConfig, model_root: str | None = None) -> LoadedSegmenter:
    """The configured segmenter, loaded once for the whole run."""
    if config.segmenter == "classical":
        from lanepaint.segment.classical import ClassicalRoadSegmenter

        meta = {"model_set": "classical", "model_set_label": CLASSICAL_LABEL, "model_root": None}
        return LoadedSegmenter(ClassicalRoadSegmenter(), meta)
    if not model_root:
        raise ValueError("--model-root is required with --segmenter sam2 (or use classical)")
    from lanepaint.models.loaders import load_sam2_video_predictor
    from lanepaint.models.root import ModelRoot
    from lanepaint.segment.sam2_video import Sam2RoadSegmenter, Sam2Settings

    root = ModelRoot.open(model_root)
    device = resolve_device(config.device)
    vos = config.vos_optimized
    predictor = load_sam2_video_predictor(root, device=device, vos_optimized=vos)
    settings = Sam2Settings(
        encoder_batch=config.encoder_batch, compile_tracking=config.compile_tracking
    )
    segmenter = Sam2RoadSegmenter(predictor, config.points, settings)
    meta = {**root.metadata(), "device": device, "vos_optimized": vos}
    return LoadedSegmenter(segmenter, meta)


# --- decoding -----------------------------------------------------------------------------


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even output size: downscaled to ``max_side`` if larger, odd sides cropped by one."""
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        width = max(2, int(round(width * scale / 2)) * 2)
        height = max(2, int(round(height * scale / 2)) * 2)
    return width - width % 2, height - height % 2


class _FrameStream:
    """Fetch, probe and decode one video in a thread; frames reach the segmenter through
    a bounded queue, so decoding overlaps segmentation without holding a whole video twice."""

    _DONE = object()

    def __init__(self, job: VideoJob, config: SegmentConfig, timings: reports.Timings):
        self.job = job
        self.config = config
        self.timings = timings
        self.queue: queue.Queue = queue.Queue(maxsize=_FRAME_QUEUE)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.info = None
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.thread = threading.Thread(target=self._run, name=f"decode-{job.video_id}", daemon=True)

    def start(self) -> _FrameStream:
        self.thread.start()
        return self

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _local_source(self) -> Path:
        src = self.job.source
        if not storage.is_gcs(src):
            if not Path(src).is_file():
                raise FileNotFoundError(f"missing input: {src}")
            return Path(src)
        self._tmp = tempfile.TemporaryDirectory(prefix="lanepaint-segment-")
        path = Path(self._tmp.name) / src.rsplit("/", 1)[-1]
        with self.timings.phase("download"):
            try:
                storage.download_file(src, path)
            except FileNotFoundError:
                raise FileNotFoundError(f"missing input: {src}") from None
        return path

    def _run(self) -> None:
        import cv2

        from lanepaint.io.video import iter_frames, probe

        try:
            path = self._local_source()
            with self.timings.phase("decode"):
                info = probe(path)
            if min(info.width, info.height) < self.config.min_side:
                raise TooSmallError(
                    f"too small: {info.width}x{info.height}, need at least "
                    f"{self.config.min_side} px on each side"
                )
            self.info = info
            self.fps = self.config.fps or info.fps
            w, h = output_size(info.width, info.height, self.config.max_side)
            self.size = (w, h)
            frames = iter_frames(path, fps=self.fps, max_frames=self.config.max_frames)
            while True:
                start = time.perf_counter()
                frame = next(frames, None)
                if frame is not None:
                    fh, fw = frame.shape[:2]
                    if (fw, fh) != (w, h):
                        if fw > w + 1 or fh > h + 1:  # downscale, else crop the odd edge
                            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                        else:
                            frame = np.ascontiguousarray(frame[:h, :w])
                self.timings.add("decode", time.perf_counter() - start)
                if frame is None or not self._put(frame):
                    break
        except BaseException as exc:  # handed to the consumer, which records it
            self.error = exc
        finally:
            self._put(self._DONE)

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        if self._tmp is not None:
            self._tmp.cleanup()


# --- writing ------------------------------------------------------------------------------


@contextmanager
def _local_file(uri: str, staging: Path, timings: reports.Timings) -> Iterator[Path]:
    """A local path to write ``uri`` at: the destination itself for local outputs (the
    writers are atomic), else a staging file uploaded on exit."""
    if not storage.is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        yield Path(uri)
        return
    path = staging / uri.rsplit("/", 1)[-1]
    yield path
    with timings.phase("upload"):
        storage.upload_file(path, uri)


def _npz_bytes(masks: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, arr_0=masks)
    return buf.getvalue()


def _publish(
    job: VideoJob,
    stream: _FrameStream,
    segmentation,
    layout: VideoPainterLayout,
    config: SegmentConfig,
    meta: dict[str, Any],
    previous: dict | None,
    timings: reports.Timings,
    seconds: dict[str, float],
) -> dict:
    """Post-process, encode and upload one video's outputs; the record goes last."""
    import cv2

    from lanepaint.io.video import write_video
    from lanepaint.segment.postprocess import overlay_frame, postprocess_masks

    frames = segmentation.frames
    started = time.perf_counter()
    with timings.phase("postprocess"):
        masks = postprocess_masks(segmentation.masks, config.postprocess, config.workers)
    t, h, w = masks.shape
    root = layout.root
    mp4_uri = layout.raw_video(job.group, job.video_id)
    npz_uri = layout.masks(job.video_id)
    png_uri = layout.mask_png_dir(job.video_id)
    overlay_uri = storage.join(root, OVERLAYS_DIR, f"{job.video_id}.mp4")
    with tempfile.TemporaryDirectory(prefix="lanepaint-segment-out-") as tmp:
        staging = Path(tmp)
        with _local_file(mp4_uri, staging, timings) as path:
            with timings.phase("encode"):
                written = write_video(path, frames, stream.fps, crf=config.crf)
            if written != t:
                raise RuntimeError(f"encoded {written} frames, segmented {t}")
        with timings.phase("encode"):
            data = _npz_bytes(masks)
        with timings.phase("upload"):
            storage.write_bytes(npz_uri, data)
        if config.png_masks:
            with storage.local_dir_for_write(png_uri) as png_dir:
                with timings.phase("encode"):
                    for i in range(t):
                        cv2.imwrite(str(png_dir / f"{i:05d}.png"), masks[i] * np.uint8(255))
        elif previous and previous.get("outputs", {}).get("png_dir"):
            storage.delete_prefix(png_uri)
        if config.overlay:
            with _local_file(overlay_uri, staging, timings) as path, timings.phase("encode"):
                overlays = (overlay_frame(f, m) for f, m in zip(frames, masks, strict=True))
                write_video(path, overlays, stream.fps, crf=23)
        elif previous and previous.get("outputs", {}).get("overlay"):
            storage.delete(overlay_uri)
    record = VideoRecord(
        video_id=job.video_id,
        path=layout.raw_video_rel(job.group, job.video_id),
        mask_id=job.video_id,
        fps=round(float(stream.fps), 6),
        frames=t,
        width=w,
        height=h,
        start_frame=0,
        end_frame=t,
        caption="",
        source=job.source,
    )
    info = stream.info
    per_frame = masks.reshape(t, -1).mean(axis=1)
    seconds = {**seconds, "write": round(time.perf_counter() - started, 4)}
    content = {
        "record": asdict(record),
        "fingerprint": config.fingerprint(),
        "model_set": meta.get("model_set"),
        "model_set_label": meta.get("model_set_label"),
        "source_info": {
            "fps": info.fps,
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration,
            "codec": info.codec,
            "variable_frame_rate": info.variable_frame_rate,
        },
        "road_fraction": round(float(per_frame.mean()), 6),
        "frames_without_road": int((per_frame == 0).sum()),
        "empty_mask": bool(per_frame.max() == 0),
        "outputs": {
            "video": mp4_uri,
            "masks": npz_uri,
            "png_dir": png_uri if config.png_masks else None,
            "overlay": overlay_uri if config.overlay else None,
        },
        "seconds": seconds,
        "finished_at": reports.now_iso(),
    }
    with timings.phase("upload"):
        storage.write_text(_record_uri(root, job.video_id), json.dumps(content, indent=2) + "\n")
    return content


def _record_uri(root: str, video_id: str) -> str:
    return storage.join(root, RECORDS_DIR, f"{video_id}.json")


def read_records(root: str) -> dict[str, dict]:
    """video id -> record content, for every complete video under ``root``."""
    out: dict[str, dict] = {}
    for uri in storage.list_files(storage.join(root, RECORDS_DIR)):
        if not uri.endswith(".json"):
            continue
        try:
            content = json.loads(storage.read_text(uri))
            record = VideoRecord(**content["record"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable record %s: %s", uri, exc)
            continue
        out[record.video_id] = content
    return out


def _is_complete(layout: VideoPainterLayout, job: VideoJob, content: dict | None, fp: dict) -> bool:
    if not content or content.get("fingerprint") != fp:
        return False
    record = content["record"]
    if record.get("source") != job.source:
        return False
    return storage.exists(layout.raw_video(job.group, job.video_id)) and storage.exists(
        layout.masks(job.video_id)
    )


def _failure_reason(exc: BaseException, step: str = "segment") -> str:
    from lanepaint.io.video import VideoError
    from lanepaint.segment.base import EmptyVideoError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return text if text.startswith("missing input") else f"missing input: {text}"
    if isinstance(exc, TooSmallError):
        return text
    if isinstance(exc, VideoError):
        return f"unreadable video: {text}"
    if isinstance(exc, EmptyVideoError):
        return f"no frames: {text}"
    if type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text.splitlines()[0]}"
    return f"{step} error: {type(exc).__name__}: {text}"


# --- the stage ----------------------------------------------------------------------------


def segment_videos(
    inputs: Sequence[str],
    output_dir: str,
    model_root: str | None = None,
    config: SegmentConfig | None = None,
    loaded: LoadedSegmenter | None = None,
) -> SegmentResult:
    """Segment every video in ``inputs`` (files, folders or prefixes) into ``output_dir``.

    ``loaded`` lets a caller reuse a segmenter across calls (its settings win over the
    config's model fields); otherwise it is loaded from ``model_root`` once.
    """
    config = config or SegmentConfig()
    started = time.perf_counter()
    timings = reports.Timings()
    failures = reports.Failures()
    layout = VideoPainterLayout(output_dir.rstrip("/") if output_dir != "/" else output_dir)

    with timings.phase("list"):
        sources, problems = list_inputs(inputs)
        previous = read_records(layout.root)
    for uri, reason in problems:
        failures.add(uri, reason)
    by_source = {c["record"]["source"]: vid for vid, c in previous.items()}
    jobs = assign_ids(sources, by_source)
    fp = config.fingerprint()
    todo: list[VideoJob] = []
    skipped: list[VideoJob] = []
    with timings.phase("list"):
        for job in jobs:
            complete = _is_complete(layout, job, previous.get(job.video_id), fp)
            (skipped if complete and not config.overwrite else todo).append(job)
    log.info("%d videos: %d to segment, %d already complete", len(jobs), len(todo), len(skipped))

    if loaded is None and todo:
        with timings.phase("load_model"):
            loaded = load_segmenter(config, model_root)
    meta = loaded.metadata if loaded else _metadata_without_model(config, model_root)

    done: dict[str, dict] = {}
    frames_done = 0
    if todo:
        done, frames_done = _run_jobs(todo, layout, config, loaded, previous, timings, failures)

    all_records = {**previous, **done}
    with timings.phase("write_meta"):
        records = [VideoRecord(**c["record"]) for c in all_records.values()]
        if records or storage.exists(layout.meta):
            layout.write_meta(records)

    wall = time.perf_counter() - started
    phase_s = timings.as_dict()
    no_road = sorted(vid for vid, c in done.items() if c["empty_mask"])
    summary = {
        "stage": STAGE,
        "output": layout.root,
        "config": fp,
        "segmenter": config.segmenter,
        "model_set": meta.get("model_set"),
        "model_set_label": meta.get("model_set_label"),
        "model_root": meta.get("model_root"),
        "device": meta.get("device"),
        "inputs": len(jobs) + len(problems),
        "segmented": len(done),
        "skipped_complete": len(skipped),
        "failed": len(failures),
        "no_road": len(no_road),
        "no_road_videos": no_road,
        "frames_segmented": frames_done,
        "videos_in_meta": len(records),
        "failures_by_reason": failures.by_reason(),
        "timings_s": {**phase_s, "wall": round(wall, 4)},
        "wall_share": {k: round(v / wall, 4) for k, v in phase_s.items() if wall > 0},
        "frames_per_second": round(frames_done / wall, 3) if wall > 0 else None,
        "finished_at": reports.now_iso(),
    }
    notes = [f"model set: {summary['model_set_label']}"]
    if no_road:
        notes.append(f"no road found (empty masks) in: {', '.join(no_road)}")
    notes.append(
        "phases run in parallel threads (decode next, segment current, write previous), "
        "so wall_share can sum to more than 1"
    )
    reports.write_reports(layout.root, f"segment: {layout.root}", summary, failures, notes)
    log.info(
        "segmented %d, skipped %d complete, %d failed -> %s",
        len(done),
        len(skipped),
        len(failures),
        layout.root,
    )
    return SegmentResult(layout.root, summary, sorted(records, key=lambda r: r.video_id))


def _metadata_without_model(config: SegmentConfig, model_root: str | None) -> dict:
    """What to report when nothing needed a model (every video was already complete)."""
    if config.segmenter == "classical":
        return {"model_set": "classical", "model_set_label": CLASSICAL_LABEL, "model_root": None}
    if not model_root:
        return {"model_set": None, "model_set_label": None, "model_root": None}
    from lanepaint.models.root import SMOKE_LABEL, SMOKE_MARKER

    # Only the marker is read: opening a gs:// root would download every model in it.
    smoke = storage.exists(storage.join(model_root, SMOKE_MARKER))
    label = SMOKE_LABEL if smoke else f"real weights at {model_root}"
    return {
        "model_set": "smoke" if smoke else "real",
        "model_set_label": label,
        "model_root": model_root,
    }


def _run_jobs(
    todo: list[VideoJob],
    layout: VideoPainterLayout,
    config: SegmentConfig,
    loaded: LoadedSegmenter,
    previous: dict[str, dict],
    timings: reports.Timings,
    failures: reports.Failures,
) -> tuple[dict[str, dict], int]:
    """Decode ahead, segment on the main thread, write behind; failures stay per video."""
    done: dict[str, dict] = {}
    frames_done = 0
    pending: deque[tuple[VideoJob, Future]] = deque()

    def collect(job: VideoJob, future: Future) -> None:
        nonlocal frames_done
        try:
            content = future.result()
        except Exception as exc:
            log.error("writing %s failed: %s", job.source, exc)
            failures.add(job.source, _failure_reason(exc, "write"), video_id=job.video_id)
            return
        done[job.video_id] = content
        frames_done += content["record"]["frames"]

    streams: dict[int, _FrameStream] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-write") as writer:
        streams[0] = _FrameStream(todo[0], config, timings).start()
        for i, job in enumerate(todo):
            stream = streams.pop(i)
            if i + 1 < len(todo):  # decode the next video while this one is segmented
                streams[i + 1] = _FrameStream(todo[i + 1], config, timings).start()
            t0 = time.perf_counter()
            try:
                with timings.phase("segment"):
                    segmentation = loaded.segmenter.segment(stream.frames())
            except Exception as exc:
                reason = _failure_reason(exc)
                if reason.startswith(("segment error", "out of memory")):
                    log.error("%s failed:\n%s", job.source, traceback.format_exc())
                    _free_gpu_memory()
                else:
                    log.warning("%s: %s", job.source, reason)
                failures.add(job.source, reason, video_id=job.video_id)
                stream.close()
                continue
            stream.close()
            seconds = {"segment": round(time.perf_counter() - t0, 4)}
            future = writer.submit(
                _publish,
                job,
                stream,
                segmentation,
                layout,
                config,
                loaded.metadata,
                previous.get(job.video_id),
                timings,
                seconds,
            )
            del segmentation
            pending.append((job, future))
            while len(pending) > 1:  # bound memory: at most one video waits for its writer
                collect(*pending.popleft())
        while pending:
            collect(*pending.popleft())
    return done, frames_done


def _free_gpu_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort after a failure; never mask the original error
        pass


# --- CLI ----------------------------------------------------------------------------------


def _optional_positive(value: str, kind: type) -> Any:
    number = kind(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number or None


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segmenter",
        choices=SEGMENTERS,
        default="sam2",
        help="sam2 (needs --model-root) or classical (weights-free fallback)",
    )
    parser.add_argument(
        "--max-frames",
        type=lambda v: _optional_positive(v, int),
        default=150,
        help="frames per video at the output fps (0 = all; default 150)",
    )
    parser.add_argument(
        "--fps",
        type=lambda v: _optional_positive(v, float),
        default=8.0,
        help="output frame rate (0 = the source's; default 8)",
    )
    parser.add_argument(
        "--points",
        type=parse_points,
        default=DEFAULT_POINTS,
        help=f"positive prompts, normalized x,y;x,y... (default {format_points(DEFAULT_POINTS)})",
    )
    parser.add_argument("--dilate", type=int, default=4, help="mask dilation radius in px")
    parser.add_argument(
        "--min-component",
        type=float,
        default=0.002,
        help="drop road components below this fraction of the frame",
    )
    parser.add_argument(
        "--max-hole",
        type=float,
        default=0.003,
        help="fill enclosed holes up to this fraction of the frame (0 = no hole filling)",
    )
    parser.add_argument("--png-masks", action="store_true", help="also write per-frame PNGs")
    parser.add_argument("--overlay", action="store_true", help="also write an overlay video")
    parser.add_argument("--max-side", type=int, default=1920, help="downscale larger videos")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality of the raw videos")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--vos",
        action="store_true",
        help="sam2's VOS predictor: tracking modules compiled once per run (CUDA; see "
        "docs/segment.md for what was measured)",
    )
    parser.add_argument(
        "--compile-tracking",
        default=None,
        choices=("default", "max-autotune-no-cudagraphs"),
        help="torch.compile mode for SAM2's per-frame tracking modules (CUDA; ~1 min once "
        "per run; see docs/performance.md for what it buys)",
    )
    parser.add_argument("--encoder-batch", type=int, default=8, help="frames per encoder call")
    parser.add_argument("--workers", type=int, default=4, help="threads for mask clean-up")
    parser.add_argument(
        "--overwrite", action="store_true", help="redo videos that are already complete"
    )


def config_from_args(args: argparse.Namespace) -> SegmentConfig:
    return SegmentConfig(
        segmenter=args.segmenter,
        max_frames=args.max_frames,
        fps=args.fps,
        points=args.points,
        dilate_px=args.dilate,
        min_component=args.min_component,
        max_hole=args.max_hole,
        png_masks=args.png_masks,
        overlay=args.overlay,
        max_side=args.max_side,
        crf=args.crf,
        device=args.device,
        vos_optimized=args.vos,
        compile_tracking=args.compile_tracking,
        encoder_batch=args.encoder_batch,
        workers=args.workers,
        overwrite=args.overwrite,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="SAM2.1 road masks for videos, in the VideoPainter layout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", nargs="+", metavar="URI", help="video files or folders")
    source.add_argument("--video-list", metavar="FILE", help="file with one video URI a line")
    parser.add_argument("--output-dir", required=True, help="VideoPainter root (path or gs://)")
    parser.add_argument("--model-root", default=None, help="model root (path or gs://)")
    add_segment_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lanepaint.models.root import ModelError

    try:
        config = config_from_args(args)
        inputs = args.videos or read_video_list(args.video_list)
        result = segment_videos(inputs, args.output_dir, args.model_root, config)
    except (ValueError, FileNotFoundError, ModelError) as exc:
        log.error("%s", exc)
        return 2
    s = result.summary
    print(
        f"{result.output_dir}: segmented {s['segmented']}, skipped {s['skipped_complete']} "
        f"complete, failed {s['failed']}, no road in {s['no_road']} "
        f"[{s['model_set_label']}]"
    )
    nothing_done = s["segmented"] == 0 and s["skipped_complete"] == 0
    return 1 if s["failed"] and nothing_done else 0
