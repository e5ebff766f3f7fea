"""Mask making and shaping: synthetic training masks, dilation, feathering, cleanup.

Convention everywhere: uint8, nonzero (1 or 255) = region to repaint.
"""

from __future__ import annotations

import cv2
import numpy as np


class MaskFileError(ValueError):
    """A mask file that is not what our writers write (uint8 ``arr_0`` in an .npz)."""


def read_masks_npz(data: bytes, source: str, ndim: tuple[int, ...] = (3,)) -> np.ndarray:
    """``arr_0`` of an .npz, never unpickled: an object array (which only a pickle can
    hold) is refused with a clear error, as is a missing ``arr_0`` or a non-numeric one.
    ``ndim``: the shapes accepted ([T,H,W] by default)."""
    import io
    import zipfile

    if not data.startswith(b"PK"):
        raise MaskFileError(f"{source}: not a readable .npz (not a zip archive)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "arr_0" not in npz.files:
                raise MaskFileError(f"{source}: no arr_0 array in the .npz (has {npz.files})")
            masks = npz["arr_0"]
    except MaskFileError:
        raise
    except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
        raise MaskFileError(
            f"{source}: holds pickled object arrays; refusing to load it (masks are "
            f"uint8 arrays): {exc}"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise MaskFileError(f"{source}: not a readable .npz: {exc}") from None
    if masks.dtype.kind not in "biuf" or masks.ndim not in ndim:
        raise MaskFileError(
            f"{source}: arr_0 is {masks.dtype} with shape {masks.shape}; masks are "
            f"numeric with {' or '.join(str(n) for n in ndim)} dimensions"
        )
    return masks


def coverage(mask: np.ndarray) -> float:
    """Fraction of pixels marked for repainting."""
    return float((np.asarray(mask) > 0).mean()) if mask.size else 0.0


def synthetic_mask(
    height: int, width: int, rng: np.random.Generator, kind: str = "mixed"
) -> np.ndarray:
    """A random inpainting mask of rectangles and/or free brush strokes (seeded by ``rng``)."""
    mask = np.zeros((height, width), np.uint8)
    kinds = ("rect", "brush") if kind == "mixed" else (kind,)
    if kind not in ("mixed", "rect", "brush"):
        raise ValueError(f"mask kind must be rect, brush or mixed, got {kind!r}")
    if "rect" in kinds:
        for _ in range(int(rng.integers(1, 3))):
            h = int(rng.uniform(0.2, 0.5) * height)
            w = int(rng.uniform(0.2, 0.6) * width)
            y = int(rng.integers(0, max(1, height - h)))
            x = int(rng.integers(0, max(1, width - w)))
            mask[y : y + h, x : x + w] = 1
    if "brush" in kinds:
        thickness_base = max(2, min(height, width) // 12)
        for _ in range(int(rng.integers(1, 4))):
            pts = [(int(rng.integers(0, width)), int(rng.integers(0, height)))]
            for _ in range(int(rng.integers(3, 8))):
                angle = rng.uniform(0, 2 * np.pi)
                length = rng.uniform(0.1, 0.3) * max(height, width)
                x = int(np.clip(pts[-1][0] + length * np.cos(angle), 0, width - 1))
                y = int(np.clip(pts[-1][1] + length * np.sin(angle), 0, height - 1))
                pts.append((x, y))
            thickness = int(thickness_base * rng.uniform(0.6, 1.6))
            cv2.polylines(mask, [np.array(pts, np.int32)], False, 1, thickness)
    return mask


def dilate(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Grow the repaint region by ``kernel`` pixels (elliptic structuring element)."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if kernel <= 0:
        return binary
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kernel + 1, 2 * kernel + 1))
    if binary.ndim == 3:
        return np.stack([cv2.dilate(m, element) for m in binary])
    return cv2.dilate(binary, element)


def feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soft float mask in [0,1]: Gaussian-blurred edges for seamless blending."""
    binary = (np.asarray(mask) > 0).astype(np.float32)
    if radius <= 0:
        return binary
    size = 2 * radius + 1
    return np.clip(cv2.GaussianBlur(binary, (size, size), radius / 2), 0.0, 1.0)


def clean(
    mask: np.ndarray, min_component_fraction: float = 0.01, fill_holes: bool = True
) -> np.ndarray:
    """Drop connected components smaller than a fraction of the frame; fill enclosed holes."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.ndim == 3:
        return np.stack([clean(m, min_component_fraction, fill_holes) for m in binary])
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    min_area = min_component_fraction * binary.size
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    out = keep[labels].astype(np.uint8)
    if fill_holes and out.any():
        inv = (1 - out).astype(np.uint8)
        n_bg, bg_labels, _, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
        border = set(
            np.unique(
                np.concatenate([bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1]])
            )
        )
        holes = ~np.isin(bg_labels, list(border)) & (inv > 0)
        out[holes] = 1
    return out
