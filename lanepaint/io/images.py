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


class ImageDepthError(ValueError):
    """An image whose samples cannot be brought to 8 bits without guessing (float)."""


def to_8bit(im: Image.Image, name: str = "image") -> Image.Image:
    """8-bit samples for any bit depth PIL decodes.

    PIL opens a 16-bit grey PNG as ``I;16`` (or ``I``) and ``convert("RGB"/"L")`` clips
    every value above 255 to white; here 0..65535 is scaled to 0..255 instead. 16-bit
    colour PNGs PIL already reduces to 8 bits correctly. Float images are refused (their
    range is unknown). Masks are not read through this: a 16-bit 0/1 mask must stay 0/1.
    """
    if im.mode == "F":
        raise ImageDepthError(f"{name} has 32-bit float samples: save it as 8- or 16-bit")
    if not (im.mode == "I" or im.mode.startswith("I;16")):
        return im
    values = np.asarray(im).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageDepthError(f"{name} has 32-bit integer samples: save it as 8- or 16-bit")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def read_rgb(uri: str) -> np.ndarray:
    """RGB uint8 from any image file PIL decodes (gray, RGBA, palette converted; 16-bit
    scaled to 8 by :func:`to_8bit`)."""
    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(to_8bit(im, uri).convert("RGB"))


def try_read_rgb(uri: str) -> tuple[np.ndarray | None, Exception | None]:
    """(image, None), or (None, the error): one bad file is a recorded failure."""
    try:
        return read_rgb(uri), None
    except Exception as exc:  # noqa: BLE001 - any decode error is one bad file
        return None, exc
