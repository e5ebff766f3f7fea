"""What every road segmenter returns, and frame checks they share (no torch import, so
the classical segmenter runs where torch is absent)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# torch.compile modes for SAM2's per-frame tracking modules ("" = eager). No CUDA-graph
# modes: the plain predictor keeps the memory encoder's outputs across frames and updates
# them in place, which graph replays would overwrite (sam2's VOS predictor clones them for
# that reason). Here, not in sam2_video, so the stage's settings can name them without torch.
SEGMENTERS = ("sam2", "classical")  # SAM2.1, or the weights-free fallback
TRACKING_COMPILE_MODES = ("", "default", "max-autotune-no-cudagraphs")


class EmptyVideoError(ValueError):
    """No frame reached the segmenter."""


@dataclass
class Segmentation:
    """Full-resolution RGB frames as decoded, raw masks and (optionally) SAM2 logits."""

    frames: list[np.ndarray]
    masks: np.ndarray  # bool [T,H,W], True = road
    logits: np.ndarray | None = None  # float32 [T,H,W]


class RoadSegmenter(Protocol):
    name: str

    def segment(self, frames: Iterable[np.ndarray]) -> Segmentation: ...


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from RGB, gray HxW or HxWx1 (grayscale sources)."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3 RGB or HxW gray, got shape {arr.shape}")
    return arr


def check_same_size(first: np.ndarray, frame: np.ndarray, index: int) -> None:
    if frame.shape != first.shape:
        raise ValueError(
            f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, the video started at "
            f"{first.shape[1]}x{first.shape[0]}"
        )
