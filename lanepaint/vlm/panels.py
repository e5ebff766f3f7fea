"""The judge's 3-panel image: original | mask | result, sized for a fixed visual-token budget.

Qwen2.5-VL turns each 28x28 area into one visual token, so the panel size sets the judge's
cost; the default (~990 tokens) is the work unit of performance.md.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

PATCH = 28
DEFAULT_TOKENS = 990
GAP = PATCH // 4


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        array = array[..., :3]
    return array.astype(np.uint8)


def panel_size(height: int, width: int, tokens: int = DEFAULT_TOKENS) -> tuple[int, int]:
    """(h, w) of one panel: aspect kept, three panels ≈ ``tokens`` tokens, multiples of 28."""
    scale = math.sqrt(tokens * PATCH * PATCH / (3 * height * width))
    h = max(PATCH, round(height * scale / PATCH) * PATCH)
    w = max(PATCH, round(width * scale / PATCH) * PATCH)
    return h, w


def judge_panels(
    original: np.ndarray, mask: np.ndarray, result: np.ndarray, tokens: int = DEFAULT_TOKENS
) -> Image.Image:
    """Side-by-side original | mask (white = repainted) | result, each resized alike."""
    original, result = _rgb(original), _rgb(result)
    if original.shape[:2] != result.shape[:2]:
        raise ValueError(f"original {original.shape[:2]} and result {result.shape[:2]} differ")
    mask_vis = _rgb(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))
    h, w = panel_size(*original.shape[:2], tokens=tokens)
    canvas = Image.new("RGB", (3 * w + 2 * GAP, h), (128, 128, 128))
    for i, panel in enumerate((original, mask_vis, result)):
        resample = Image.NEAREST if i == 1 else Image.BICUBIC
        canvas.paste(Image.fromarray(panel).resize((w, h), resample), (i * (w + GAP), 0))
    return canvas
