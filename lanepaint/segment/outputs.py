"""What a segment run writes for one video: the raw mp4, the npz masks, optional PNG
masks and overlay video, and the record content that vouches for them (the layout is
described in :mod:`lanepaint.stages.segment`)."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.io import reports, storage
from lanepaint.segment.inputs import VideoJob
from lanepaint.segment.stream import FrameStream

OVERLAYS_DIR = "overlays"


class MediaSettings(Protocol):
    """The output settings of a run (the segment stage's config has them)."""

    crf: int  # H.264 quality of the raw videos
    png_masks: bool
    overlay: bool


def write_media(
    layout: VideoPainterLayout,
    job: VideoJob,
    frames: list[np.ndarray],
    masks: np.ndarray,
    fps: float,
    settings: MediaSettings,
    old: dict[str, Any],
    timings: reports.Timings,
) -> dict[str, str | None]:
    """mp4, npz and (if asked) PNGs and overlay; those an earlier run wrote (``old``, its
    record's outputs) that are not asked for now are removed. Returns the output URIs."""
    from lanepaint.io.video import write_video

    png_dir = layout.mask_png_dir(job.video_id)
    overlay = storage.join(layout.root, OVERLAYS_DIR, f"{job.video_id}.mp4")
    outputs = {
        "video": layout.raw_video(job.group, job.video_id),
        "masks": layout.masks(job.video_id),
        "png_dir": png_dir if settings.png_masks else None,
        "overlay": overlay if settings.overlay else None,
    }
    with tempfile.TemporaryDirectory(prefix="lanepaint-segment-out-") as tmp:
        with _local_file(outputs["video"], Path(tmp), timings) as path:
            with timings.phase("encode"):
                written = write_video(path, frames, fps, crf=settings.crf)
            if written != len(masks):
                raise RuntimeError(f"encoded {written} frames, segmented {len(masks)}")
        with timings.phase("encode"):
            data = _npz_bytes(masks)
        with timings.phase("upload"):
            storage.write_bytes(outputs["masks"], data)
        if outputs["png_dir"]:
            _write_pngs(outputs["png_dir"], masks, timings)
        elif old.get("png_dir"):
            storage.delete_prefix(png_dir)
        if outputs["overlay"]:
            _write_overlay(outputs["overlay"], frames, masks, fps, Path(tmp), timings)
        elif old.get("overlay"):
            storage.delete(overlay)
    return outputs


def video_record(
    layout: VideoPainterLayout,
    job: VideoJob,
    stream: FrameStream,
    masks: np.ndarray,
    outputs: dict,
    seconds: dict[str, float],
    model: dict[str, Any],
) -> dict:
    """The record content: the meta.csv row, the model set, the source, the road found."""
    t, h, w = masks.shape
    row = VideoRecord(
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
    return {
        "record": asdict(row),
        "model_set": model.get("model_set"),
        "model_set_label": model.get("model_set_label"),
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
        "outputs": outputs,
        "seconds": seconds,
    }


def _write_pngs(uri: str, masks: np.ndarray, timings: reports.Timings) -> None:
    import cv2

    with storage.local_dir_for_write(uri) as png_dir, timings.phase("encode"):
        for i, mask in enumerate(masks):
            cv2.imwrite(str(png_dir / f"{i:05d}.png"), mask * np.uint8(255))


def _write_overlay(uri, frames, masks, fps, staging: Path, timings: reports.Timings) -> None:
    from lanepaint.io.video import write_video
    from lanepaint.segment.postprocess import overlay_frame

    with _local_file(uri, staging, timings) as path, timings.phase("encode"):
        overlays = (overlay_frame(f, m) for f, m in zip(frames, masks, strict=True))
        write_video(path, overlays, fps, crf=23)


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
