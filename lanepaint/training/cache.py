"""The training feature cache: content-keyed safetensors files, each carrying its checksum.

Every entry stores a blake2b digest of its tensors (names, dtypes, shapes, offsets and the
data bytes) in the safetensors metadata. The digest is checked when the cache is built or
reused (``has_latents`` / ``has_text``, once per entry per run), never per training step: a
damaged entry (a full disk, a copy cut short, a flipped byte) is deleted and computed
again with a warning instead of crashing the training loop's prefetch thread or feeding it
wrong numbers. Entries written before the checksum existed (no ``lanepaint.blake2b`` in
their metadata) are trusted once their header matches their size; delete the cache folder
to have them computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from lanepaint.io.atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CHECKSUM_KEY = "lanepaint.blake2b"


def _read_header(fh: BinaryIO, size: int) -> tuple[int, dict]:
    """(header length, header) of a safetensors file; ValueError when it cannot be one."""
    n = int.from_bytes(fh.read(8), "little")
    if not 2 <= n <= size - 8:
        raise ValueError(f"header length {n} does not fit a {size}-byte file")
    return n, json.loads(fh.read(n))


def _digest(tensors: dict, data: bytes | memoryview) -> str:
    """blake2b over the tensor descriptors (without the metadata) and the data bytes."""
    h = hashlib.blake2b(digest_size=32)
    h.update(json.dumps(tensors, sort_keys=True, separators=(",", ":")).encode())
    h.update(data)
    return h.hexdigest()


def serialize(tensors: dict[str, torch.Tensor]) -> bytes:
    """safetensors bytes of ``tensors`` whose metadata holds their checksum.

    Serialized once with a placeholder of the digest's length, which is then overwritten
    in place: the header keeps its length, so the data and offsets stay as hashed."""
    from safetensors.torch import save

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    placeholder = "0" * 64
    raw = bytearray(save(cpu, metadata={CHECKSUM_KEY: placeholder}))
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__")
    digest = _digest(header, memoryview(raw)[8 + n :])
    at = raw.index(f'"{placeholder}"'.encode(), 8, 8 + n) + 1
    raw[at : at + 64] = digest.encode()
    return bytes(raw)


def check_entry(path: Path) -> None:
    """Raise ValueError (or OSError) unless ``path`` is a whole, undamaged entry."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        n, header = _read_header(fh, size)
        meta = header.pop("__metadata__", None) or {}
        ends = [v["data_offsets"][1] for v in header.values()]
        if size != 8 + n + max(ends, default=0):
            raise ValueError(f"{size} bytes, the header describes {8 + n + max(ends, default=0)}")
        want = meta.get(CHECKSUM_KEY)
        if want is not None and _digest(header, fh.read()) != want:
            raise ValueError("checksum mismatch")


class FeatureCache:
    """Content-keyed safetensors files under ``root`` (latents/, text/, index/), atomic
    writes, each entry checked once per run (see the module doc)."""

    def __init__(self, root: Path, text_lru: int = 256):
        self.root = Path(root)
        self._text: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._text_lru = text_lru

    def _path(self, kind: str, key: str, suffix: str = ".safetensors") -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def has_latents(self, key: str) -> bool:
        return self._intact(self._path("latents", key))

    def has_text(self, key: str) -> bool:
        return self._intact(self._path("text", key))

    @staticmethod
    def _intact(path: Path) -> bool:
        """The entry exists and is whole; a damaged one is deleted so it is computed again."""
        try:
            check_entry(path)
            return True
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("feature cache entry %s is damaged (%s); computing it again", path, reason)
        path.unlink(missing_ok=True)
        return False

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write one entry atomically. No fsync: a cache entry cut short by a crash is
        found by its size or checksum on the next run and computed again."""
        data = serialize(tensors)
        with atomic_path(self._path(kind, key)) as tmp:
            tmp.write_bytes(data)

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self._path(kind, key)))

    def get_latents(self, key: str) -> dict[str, torch.Tensor]:
        """Latent posteriors plus the full-resolution mask (stored as packed bits)."""
        entry = self.get("latents", key)
        h, w = (int(v) for v in entry.pop("mask_hw"))
        bits = np.unpackbits(entry.pop("mask_bits").numpy(), count=h * w)
        entry["mask"] = torch.from_numpy(bits.reshape(h, w))
        return entry

    def get_text(self, key: str) -> dict[str, torch.Tensor]:
        """Text embeddings, from a small LRU (a handful of prompts cover most rows)."""
        hit = self._text.get(key)
        if hit is not None:
            self._text.move_to_end(key)
            return hit
        value = self.get("text", key)
        self._text[key] = value
        if len(self._text) > self._text_lru:
            self._text.popitem(last=False)
        return value

    def write_index(self, name: str, entries: list[dict]) -> None:
        atomic_write_text(self.root / "index" / f"{name}.json", json.dumps(entries) + "\n")

    def read_index(self, name: str) -> list[dict]:
        return json.loads((self.root / "index" / f"{name}.json").read_text())
