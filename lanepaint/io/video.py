"""Video decode/encode with PyAV: probing, RGB frame iteration, time-based resampling.

Stages work on RGB uint8 arrays at a chosen output fps (SAM2 at 8 fps, CogVideoX clips at
8 fps), so resampling is done here once, by presentation timestamps, which also makes
variable-frame-rate dash-cam files come out at a true constant rate. Timestamps are
compared as exact fractions so that resampling at the source rate is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lanepaint.io.atomic import atomic_path

# File names every stage treats as videos (compare lower-cased, with str.endswith).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")

# Packets inspected by probe() for variable-frame-rate detection.
_VFR_PACKETS = 120
_MAX_RATE_DENOMINATOR = 10000  # enough for 30000/1001-style NTSC rates


def is_video_name(name: str) -> bool:
    """True when a file name or URI ends in one of :data:`VIDEO_EXTENSIONS`."""
    return name.lower().endswith(VIDEO_EXTENSIONS)


class VideoError(Exception):
    """An input that cannot be decoded (corrupt, truncated, empty, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """What stages need to know about a source video before decoding it."""

    fps: float
    frames: int
    width: int
    height: int
    duration: float
    codec: str
    variable_frame_rate: bool
    #: the display rotation (degrees counter-clockwise) decoded frames are turned by;
    #: width and height are the displayed (turned) size
    rotation: int = 0


def _rate(fps: float | Fraction) -> Fraction:
    if fps is None or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return Fraction(fps).limit_denominator(_MAX_RATE_DENOMINATOR)


def _open(path: str | Path) -> av.container.InputContainer:
    """Open for reading; missing files raise FileNotFoundError, the rest VideoError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video: {path}")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path}")
    return container


def _is_vfr(pts: list[int]) -> bool:
    """True when frame intervals differ by more than rounding of the time base allows."""
    if len(pts) < 3:
        return False
    ordered = sorted(pts)  # decode order differs from presentation order with B-frames
    deltas = np.diff(np.asarray(ordered, dtype=np.int64))
    deltas = deltas[deltas > 0]
    if deltas.size < 2:
        return False
    median = float(np.median(deltas))
    tolerance = max(1.0, 0.01 * median)
    return bool(np.any(np.abs(deltas - median) > tolerance))


def probe(path: str | Path) -> VideoInfo:
    """Stream facts from one demux pass, decoding only the first frame.

    A constant-rate file stops after its first packets and trusts the container's frame
    count and duration. When the container gives no count, or the first packets show a
    variable rate (where mp4 durations derived from dts can be wrong), every packet is
    scanned: frames = presented packets, duration = end of the last frame minus start of
    the first, fps = frames / duration. Edit-list pre-roll packets are never counted, so
    ``frames`` equals what iter_frames yields. Raises VideoError if no frame decodes.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        known_frames = stream.frames or 0
        pts: list[int] = []
        packets = discarded = 0
        first_pts: int | None = None
        end_pts: int | None = None
        vfr: bool | None = None
        complete, turns, decoded_one = True, 0, False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.is_discard:  # edit-list pre-roll: decoded but never presented
                    discarded += 1
                    packet.decode()
                    continue
                packets += 1
                if packet.pts is not None:
                    if len(pts) < _VFR_PACKETS:
                        pts.append(packet.pts)
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    stop = packet.pts + (packet.duration or 0)
                    end_pts = stop if end_pts is None else max(end_pts, stop)
                if not decoded_one:
                    decoded_one, turns = _first_frame(packet.decode(), path)
                if vfr is None and len(pts) >= _VFR_PACKETS:
                    vfr = _is_vfr(pts)
                if known_frames and decoded_one and vfr is False:
                    complete = False
                    break
            if not decoded_one:
                decoded_one, turns = _first_frame(stream.codec_context.decode(None), path)
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode video {path}: {exc}") from exc
        if not decoded_one:
            raise VideoError(f"no decodable video frames in {path}")
        if vfr is None:
            vfr = _is_vfr(pts)
        if complete:
            frames = packets
        else:
            frames = max(known_frames - discarded, 0)
        duration = 0.0
        if complete and end_pts is not None and end_pts > first_pts and stream.time_base:
            duration = float((end_pts - first_pts) * stream.time_base)
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        rate = None if vfr else (stream.average_rate or stream.guessed_rate)
        if not rate:
            if not duration:
                rate = stream.average_rate or stream.guessed_rate
                if not rate:
                    raise VideoError(f"cannot determine the frame rate of {path}")
            else:
                rate = Fraction(frames) / Fraction(duration)
        if not duration:
            duration = float(frames / rate)
        return VideoInfo(
            fps=float(rate),
            frames=frames,
            width=stream.codec_context.height if turns % 2 else stream.codec_context.width,
            height=stream.codec_context.width if turns % 2 else stream.codec_context.height,
            duration=duration,
            codec=stream.codec_context.name,
            variable_frame_rate=vfr,
            rotation=turns * 90,
        )


def _decoded(path: str | Path) -> Iterator[tuple[Fraction, Fraction, av.VideoFrame]]:
    """(time since the first frame, frame duration, frame) in presentation order.

    Frames without a timestamp are placed one nominal interval after the previous one.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1)
        nominal = Fraction(1) / Fraction(stream.average_rate or stream.guessed_rate or 25)
        first: int | None = None
        last_t: Fraction | None = None
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    t = Fraction(0) if last_t is None else last_t + nominal
                else:
                    if first is None:
                        first = frame.pts
                    t = (frame.pts - first) * time_base
                duration = frame.duration * time_base if frame.duration else nominal
                last_t = t
                count += 1
                yield t, duration, frame
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode video {path}: {exc}") from exc
        if count == 0:
            raise VideoError(f"no decodable video frames in {path}")


def _quarter_turns(frame: av.VideoFrame, path: str | Path = "") -> int:
    """Counter-clockwise quarter turns of the frame's display matrix (phones record
    portrait video as landscape frames plus a rotation). Flips are not read."""
    degrees = frame.rotation or 0
    if degrees % 90:
        raise VideoError(f"{path or 'video'} has a display rotation of {degrees} degrees")
    return (degrees // 90) % 4


def _first_frame(frames: list[av.VideoFrame], path: str | Path) -> tuple[bool, int]:
    """(whether a frame decoded, its quarter turns) for :func:`probe`."""
    return (True, _quarter_turns(frames[0], path)) if frames else (False, 0)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB as displayed: the display rotation applied (ffmpeg's autorotate does the same)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def iter_frames(
    path: str | Path, fps: float | None = None, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """RGB uint8 [H,W,3] frames; with ``fps``, resampled to that constant rate.

    Output frame k (time k/fps) is the latest source frame with pts <= k/fps, for every
    k/fps before the end of the last source frame, so a CFR source of duration D gives
    ceil(D*fps) frames and VFR sources are duplicated/dropped by time.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    if fps is None:
        for n, (_, _, frame) in enumerate(_decoded(path), start=1):
            yield _rgb(frame)
            if n == max_frames:
                return
        return
    step = Fraction(1) / _rate(fps)
    k = 0
    prev: av.VideoFrame | None = None
    prev_rgb: np.ndarray | None = None
    end = Fraction(0)

    def emit() -> np.ndarray:
        nonlocal prev_rgb
        if prev_rgb is None:
            prev_rgb = _rgb(prev)
            return prev_rgb
        return prev_rgb.copy()  # a repeated frame must not alias the one already yielded

    for t, duration, frame in _decoded(path):
        if prev is not None:
            while k * step < t:
                yield emit()
                k += 1
                if k == max_frames:
                    return
        prev, prev_rgb = frame, None
        end = max(end, t + duration)
    while prev is not None and k * step < end:
        yield emit()
        k += 1
        if k == max_frames:
            return


def read_frames(
    path: str | Path, fps: float | None = None, max_frames: int | None = None
) -> np.ndarray:
    """All (resampled) frames as one uint8 array [T,H,W,3]."""
    return np.stack(list(iter_frames(path, fps=fps, max_frames=max_frames)))


def read_frames_at(path: str | Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Source frames by 0-based index in presentation order; missing indices are absent.

    One sequential decode up to the largest wanted index: exact for any codec and
    container, where seeking is only keyframe-accurate.
    """
    wanted = {int(i) for i in indices if int(i) >= 0}
    out: dict[int, np.ndarray] = {}
    if not wanted:
        _open(path).close()
        return out
    last = max(wanted)
    for i, (_, _, frame) in enumerate(_decoded(path)):
        if i in wanted:
            out[i] = _rgb(frame)
        if i >= last:
            break
    return out


def _prepare(frame: np.ndarray, path: str | Path, pad: bool = True) -> tuple[np.ndarray, str]:
    """Validate one input frame; with ``pad``, pad odd sides by edge replication (yuv420p
    needs even ones)."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames for {path} must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        fmt = "gray"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        fmt = "rgb24"
    else:
        raise ValueError(f"frames for {path} must be HxWx3 RGB or HxW gray, got {arr.shape}")
    pad_h, pad_w = (arr.shape[0] % 2, arr.shape[1] % 2) if pad else (0, 0)
    if pad_h or pad_w:
        pad = ((0, pad_h), (0, pad_w)) + (((0, 0),) if arr.ndim == 3 else ())
        arr = np.pad(arr, pad, mode="edge")
    return np.ascontiguousarray(arr), fmt


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> int:
    """Encode frames to an H.264 file at exactly ``fps``; returns the frame count.

    ``pix_fmt`` yuv420p (default, plays everywhere) pads odd sides by one edge row or
    column; yuv444p keeps any size exactly.

    Written to a temp file and renamed, so a crashed or retried task leaves no half video.
    Local paths only (publish with storage.upload_file).
    """
    if str(path).startswith("gs://"):
        raise ValueError(f"write_video needs a local path, got {path}")
    rate = _rate(fps)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError(f"no frames to write to {path}")
    pad = pix_fmt == "yuv420p"
    arr, fmt = _prepare(first, path, pad)
    height, width = arr.shape[:2]
    count = 0
    with atomic_path(path) as tmp:
        try:
            # the temp name always has a suffix of its own: the target's decides the format
            fmt_name = None if Path(path).suffix else "mp4"
            with av.open(str(tmp), "w", format=fmt_name) as container:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
                if codec in ("libx264", "libx265"):
                    stream.options = {"crf": str(crf)}
                time_base = Fraction(1) / rate
                while True:
                    if arr.shape[:2] != (height, width):
                        raise ValueError(
                            f"frame {count} for {path} is {arr.shape[1]}x{arr.shape[0]} after "
                            f"padding, expected {width}x{height}"
                        )
                    video_frame = av.VideoFrame.from_ndarray(arr, format=fmt)
                    video_frame.pts, video_frame.time_base = count, time_base
                    container.mux(stream.encode(video_frame))
                    count += 1
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    arr, fmt = _prepare(nxt, path, pad)
                container.mux(stream.encode(None))
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot encode video {path}: {exc}") from exc
    return count
