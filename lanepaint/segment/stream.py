"""Decode one video in a thread while the segmenter consumes its frames.

Frames reach the segmenter through a bounded queue, so decoding (and, for ``gs://``
sources, downloading) overlaps segmentation without holding a whole video twice. Frames
come out at the output fps (variable frame rates resampled by timestamp), downscaled when
the longer side exceeds ``max_side`` and cropped to even sizes (H.264 needs them, and masks
must match the video pixel for pixel).
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lanepaint.io import reports, storage

FRAME_QUEUE = 16  # decoded frames buffered ahead of the segmenter, per video


class TooSmallError(ValueError):
    """A video below ``min_side`` pixels: nothing useful can be segmented or inpainted."""


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even output size: downscaled to ``max_side`` if larger, odd sides cropped by one."""
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        width = max(2, int(round(width * scale / 2)) * 2)
        height = max(2, int(round(height * scale / 2)) * 2)
    return width - width % 2, height - height % 2


class FrameStream:
    """Fetch, probe and decode ``source`` in a thread. ``fps`` 0 keeps the source rate,
    ``max_frames`` 0 decodes every frame. After the first frame (or the end), ``info``,
    ``fps`` and ``size`` describe the source and the output."""

    _DONE = object()

    def __init__(
        self,
        source: str,
        timings: reports.Timings,
        *,
        fps: float = 0.0,
        max_frames: int = 0,
        max_side: int = 1920,
        min_side: int = 16,
        name: str = "decode",
    ):
        self.source, self.timings = source, timings
        self._fps, self._max_frames = fps, max_frames
        self._max_side, self._min_side = max_side, min_side
        self.queue: queue.Queue = queue.Queue(maxsize=FRAME_QUEUE)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.info = None
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> FrameStream:
        self.thread.start()
        return self

    def frames(self) -> Iterator[np.ndarray]:
        """The decoded frames, in order; a decode failure is raised here, in the consumer."""
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

    # --- the decode thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            path = self._local_source()
            self._open(path)
            self._decode(path)
        except BaseException as exc:  # handed to the consumer, which records it
            self.error = exc
        finally:
            self._put(self._DONE)

    def _local_source(self) -> Path:
        src = self.source
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

    def _open(self, path: Path) -> None:
        """Probe the source; refuse tiny videos; settle the output rate and size."""
        from lanepaint.io.video import probe

        with self.timings.phase("decode"):
            info = probe(path)
        if min(info.width, info.height) < self._min_side:
            raise TooSmallError(
                f"too small: {info.width}x{info.height}, need at least "
                f"{self._min_side} px on each side"
            )
        self.info = info
        self.fps = self._fps or info.fps
        self.size = output_size(info.width, info.height, self._max_side)

    def _decode(self, path: Path) -> None:
        from lanepaint.io.video import iter_frames

        frames = iter_frames(path, fps=self.fps, max_frames=self._max_frames or None)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            if frame is not None:
                frame = self._fit(frame)
            self.timings.add("decode", time.perf_counter() - start)
            if frame is None or not self._put(frame):
                return

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """Downscale to the output size, or crop the odd last row/column."""
        import cv2

        w, h = self.size
        fh, fw = frame.shape[:2]
        if (fw, fh) == (w, h):
            return frame
        if fw > w + 1 or fh > h + 1:
            return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[:h, :w])

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False
