"""Cheap checks of model files before any library touches them.

The libraries report a missing folder, a half-copied safetensors file or a stray pickle
with messages that name neither the model nor the file (or, worse, fall back to unpickling).
These checks read only JSON and safetensors headers, so they cost milliseconds even for
24 GB checkpoints, and raise :class:`ModelError` naming the model and the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lanepaint.models.root import ModelError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# A safetensors header larger than this is corrupt, not real (real ones are < 10 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def require_dir(model: str, path: Path) -> Path:
    if not path.is_dir():
        raise ModelError(model, path, "model folder not found")
    return path


def require_file(model: str, path: Path) -> Path:
    if not path.is_file():
        raise ModelError(model, path, "model file not found")
    return path


def read_json(model: str, path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a clear ModelError."""
    require_file(model, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(model, path, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(model, path, "expected a JSON object")
    return data


def check_safetensors(model: str, path: Path) -> int:
    """Validate the header and length of a safetensors file; returns its tensor count."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ModelError(model, path, "truncated safetensors file (no header)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise ModelError(model, path, "truncated or corrupt safetensors file (bad header)")
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(model, path, f"corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelError(model, path, "corrupt safetensors header")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        data_end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise ModelError(model, path, f"corrupt safetensors header: {exc}") from exc
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelError(
            model, path, f"truncated safetensors file: {size} bytes, header needs {expected}"
        )
    if size > expected:
        raise ModelError(model, path, f"corrupt safetensors file: {size - expected} extra bytes")
    return len(tensors)


def check_safetensors_in(model: str, folder: Path) -> list[Path]:
    """Every safetensors file of ``folder`` is whole and every indexed shard exists.

    Refuses a folder whose weights exist only as pickles: loading those would unpickle
    arbitrary objects from the model root. Returns the safetensors files (maybe none).
    """
    weights = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not weights:
        raise ModelError(
            model,
            pickles[0],
            "pickled checkpoint where safetensors weights are expected; "
            "refusing to unpickle, convert it to .safetensors",
        )
    for index in sorted(folder.glob("*.safetensors.index.json")):
        weight_map = read_json(model, index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelError(model, index, "index has no weight_map")
        for shard in sorted(set(weight_map.values())):
            require_file(model, folder / str(shard))
    for path in weights:
        check_safetensors(model, path)
    return weights


def check_weights_dir(model: str, folder: Path) -> None:
    """A loadable component folder: config.json plus intact safetensors weights."""
    require_dir(model, folder)
    read_json(model, folder / "config.json")
    if not check_safetensors_in(model, folder):
        raise ModelError(model, folder, "no .safetensors weights in folder")


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder); symlinks are followed."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
