"""Window planning for any-length videos, and the mask geometry the pipeline needs.

A video of T frames is cut into windows of ``window`` frames (49 for CogVideoX) that overlap by
``overlap`` frames. ``window - overlap`` must be a multiple of the VAE's temporal compression so
that the windows' latent frames line up on one global latent grid: global latent 0 is frame 0
and global latent g ≥ 1 holds frames 4g-3..4g. Window k starts at frame ``k·stride`` and its
latent i lands on global latent ``k·stride/4 + i``. The last window is padded by repeating the
final frame; the padding is cropped after decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class WindowPlan:
    """Where every window sits, in frames and in global latent frames."""

    num_frames: int  # real input frames
    window: int
    overlap: int
    temporal_compression: int
    starts: tuple[int, ...]  # first frame of each window

    @property
    def stride(self) -> int:
        return self.window - self.overlap

    @property
    def padded_frames(self) -> int:
        return self.starts[-1] + self.window

    @property
    def latent_window(self) -> int:
        return (self.window - 1) // self.temporal_compression + 1

    @property
    def latent_stride(self) -> int:
        return self.stride // self.temporal_compression

    @property
    def latent_frames(self) -> int:
        return (self.padded_frames - 1) // self.temporal_compression + 1

    def latent_start(self, k: int) -> int:
        return k * self.latent_stride


def plan_windows(
    num_frames: int, window: int, overlap: int, temporal_compression: int = 4
) -> WindowPlan:
    """Windows covering ``num_frames`` frames (at least one, padded at the end)."""
    if num_frames < 1:
        raise ValueError("video has no frames")
    if (window - 1) % temporal_compression:
        raise ValueError(f"window {window} must be {temporal_compression}·k + 1 frames")
    if not 0 < overlap < window:
        raise ValueError(f"overlap {overlap} must be in 1..{window - 1}")
    if (window - overlap) % temporal_compression:
        raise ValueError(
            f"window - overlap ({window} - {overlap}) must be a multiple of {temporal_compression}"
        )
    stride = window - overlap
    count = 1 if num_frames <= window else 1 + math.ceil((num_frames - window) / stride)
    return WindowPlan(
        num_frames=num_frames,
        window=window,
        overlap=overlap,
        temporal_compression=temporal_compression,
        starts=tuple(k * stride for k in range(count)),
    )


def pad_frames(frames: torch.Tensor, length: int) -> torch.Tensor:
    """``frames`` (time first) extended to ``length`` by repeating the last frame."""
    missing = length - frames.shape[0]
    if missing <= 0:
        return frames[:length]
    return torch.cat([frames, frames[-1:].expand(missing, *frames.shape[1:])], dim=0)


def dilate_masks(masks: torch.Tensor, kernel: int, chunk: int = 16) -> torch.Tensor:
    """Binary masks ``[T, H, W]`` grown by a ``kernel``-pixel square (0 or 1 = unchanged)."""
    binary = masks > 0
    if kernel <= 1:
        return binary
    height, width = binary.shape[-2:]
    out = torch.empty_like(binary)
    for start in range(0, binary.shape[0], chunk):
        part = binary[start : start + chunk].unsqueeze(1).float()
        grown = F.max_pool2d(part, kernel, stride=1, padding=kernel // 2)
        out[start : start + chunk] = grown[:, 0, :height, :width] > 0
    return out


def latent_mask_from_masks(masks: torch.Tensor, latent_frames: int, scale: int) -> torch.Tensor:
    """Pixel masks ``[T, H, W]`` → latent mask ``[1, latent_frames, 1, H/scale, W/scale]``.

    Nearest-neighbour in time and space, as VideoPainter downsamples its masks.
    """
    height, width = masks.shape[-2:]
    grid = masks.float()[None, None]  # [1, 1, T, H, W]
    small = F.interpolate(
        grid, size=(latent_frames, height // scale, width // scale), mode="nearest"
    )
    return small.permute(0, 2, 1, 3, 4)
