"""Still images in and out of storage (PNG frames, masks and attempts)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lanepaint.io import storage


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an HxW or HxWx3 uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(uri: str, array: np.ndarray) -> None:
    """An image written atomically to a local path or gs:// URI."""
    storage.write_bytes(uri, encode_png(array))


def read_rgb(uri: str) -> np.ndarray:
    """RGB uint8 from any image file PIL decodes (gray, RGBA, palette converted)."""
    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(im.convert("RGB"))


def try_read_rgb(uri: str) -> tuple[np.ndarray | None, Exception | None]:
    """(image, None), or (None, the error): one bad file is a recorded failure."""
    try:
        return read_rgb(uri), None
    except Exception as exc:  # noqa: BLE001 - any decode error is one bad file
        return None, exc
