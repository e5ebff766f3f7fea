"""The model root: where weights live, and whether they are the smoke set.

A model root is a local folder (or a ``gs://`` prefix fetched once into a local cache) laid
out like the hub repositories. This module stays free of torch imports so that the CLI and
stage metadata can use it cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Layout of a model root, relative to its top folder (the hub repository names).
FLUX_FILL_DIR = "FLUX.1-Fill-dev"
COGVIDEOX_I2V_DIR = "CogVideoX-5b-I2V"
VIDEOPAINTER_BRANCH_DIR = "VideoPainter/checkpoints/branch"
# The ID-resampling LoRA edit loads into the backbone when present (the reference's layout).
VIDEOPAINTER_ID_LORA_FILE = "VideoPainterID/checkpoints/pytorch_lora_weights.safetensors"
QWEN_VL_DIRS = {"7B": "Qwen2.5-VL-7B-Instruct", "72B": "Qwen2.5-VL-72B-Instruct"}
SAM2_CHECKPOINT = "sam2.1_hiera_large.pt"
# Optional sidecar naming the sam2 config a checkpoint needs (absent for the real weights).
SAM2_SIDECAR = "sam2.1_hiera_large.json"
SMOKE_MARKER = "SMOKE.json"

SMOKE_LABEL = "smoke (random tiny weights — proves wiring, not quality)"
# Full-size architectures with random weights (bench.train_run writes one): timings, not quality.
RANDOM_MARKER = "RANDOM_WEIGHTS.json"
DEFAULT_CACHE_ENV = "LANEPAINT_MODEL_CACHE"


def model_set_metadata(uri: str, smoke: bool, random: bool = False) -> dict[str, Any]:
    """``model_set`` / ``model_set_label`` / ``model_root`` of a root whose markers were
    looked at (``SMOKE.json``: smoke; ``RANDOM_WEIGHTS.json``: random; neither: real)."""
    if smoke:
        kind, label = "smoke", SMOKE_LABEL
    elif random:
        kind, label = "random", f"random full-size weights at {uri} (timings, not quality)"
    else:
        kind, label = "real", f"real weights at {uri}"
    return {"model_set": kind, "model_set_label": label, "model_root": uri}


class ModelError(RuntimeError):
    """A model is missing or cannot be loaded; names the model and the offending path."""

    def __init__(self, model: str, path: Path | str, reason: str):
        self.model = model
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{model}: {reason} ({self.path})")


def default_cache_root() -> Path:
    """Where ``gs://`` model roots are cached: $LANEPAINT_MODEL_CACHE or ~/.cache/lanepaint."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "lanepaint" / "models"


@dataclass(frozen=True)
class ModelRoot:
    """A resolved, local model root; ``uri`` keeps what the user gave (for metadata)."""

    path: Path
    uri: str

    @classmethod
    def open(cls, uri: str | os.PathLike[str], cache_root: Path | None = None) -> ModelRoot:
        """Resolve a local folder or a ``gs://`` prefix (downloaded once, under a lock)."""
        text = os.fspath(uri)
        if text.startswith("gs://"):
            # Imported here: the storage layer pulls in google-cloud-storage.
            from lanepaint.io.storage import cache_dir

            path = Path(cache_dir(text, cache_root or default_cache_root()))
        else:
            path = Path(text).expanduser().resolve()
        if not path.is_dir():
            raise ModelError("model root", path, "model root folder not found")
        return cls(path=path, uri=text)

    def __truediv__(self, relpath: str) -> Path:
        return self.path / relpath

    @property
    def is_smoke(self) -> bool:
        """True when the marker written by build-smoke is present (even if unreadable)."""
        return (self.path / SMOKE_MARKER).is_file()

    @property
    def is_random(self) -> bool:
        """True for a full-size root of random weights (its marker is present)."""
        return not self.is_smoke and (self.path / RANDOM_MARKER).is_file()

    def model_set_label(self) -> str:
        """Human label every stage output carries, so smoke results are never mistaken."""
        return self.metadata()["model_set_label"]

    def metadata(self) -> dict[str, Any]:
        """The fields stages put into each output's metadata."""
        return model_set_metadata(self.uri, self.is_smoke, self.is_random)


def as_model_root(root: ModelRoot | str | os.PathLike[str]) -> ModelRoot:
    """Accept a ModelRoot, a path or a URI wherever a root is expected."""
    return root if isinstance(root, ModelRoot) else ModelRoot.open(root)


def model_set_label(root: ModelRoot | str | os.PathLike[str]) -> str:
    """Shortcut for ``as_model_root(root).model_set_label()``."""
    return as_model_root(root).model_set_label()
