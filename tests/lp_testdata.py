"""Small FluxFill datasets for tests, written with the project's own writer."""

from __future__ import annotations

import numpy as np

from lanepaint.data.fluxfill import DatasetWriter
from lanepaint.data.vocab import LaneAttributes

COMBOS = [
    LaneAttributes("single", "white", "solid"),
    LaneAttributes("single", "white", "dashed"),
    LaneAttributes("double", "yellow", "solid"),
    LaneAttributes("single", "mixed", "mixed"),
    LaneAttributes("single", "white", "unknown"),
]


def make_dataset(root: str, n: int = 10, size: tuple[int, int] = (24, 32), seed: int = 0) -> str:
    """``n`` rows cycling through COMBOS; images are noise, masks cover the bottom half."""
    rng = np.random.default_rng(seed)
    h, w = size
    with DatasetWriter(root) as writer:
        for i in range(n):
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[h // 2 :] = 1
            attrs = COMBOS[i % len(COMBOS)]
            writer.add(f"frame_{i:03d}", image, mask, attrs.caption, f"prompt two {i}")
    return root
