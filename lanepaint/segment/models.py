"""The segmenter a segment run uses: what it says about its model set before loading
(part of the settings key, so a run with nothing to do never loads a model), and the
loading itself, once per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lanepaint.io import storage
from lanepaint.segment.base import RoadSegmenter
from lanepaint.segment.prompts import Point

CLASSICAL_LABEL = (
    "classical (weights-free fallback: colour/texture statistics + perspective prior; "
    "a sanity check, not SAM2 quality)"
)


class SegmenterSettings(Protocol):
    """The settings a segmenter is loaded with (the segment stage's config has them)."""

    segmenter: str  # "sam2" or "classical"
    device: str
    vos: bool
    points: tuple[Point, ...]
    encoder_batch: int
    compile_tracking: str


@dataclass
class LoadedSegmenter:
    """A segmenter ready for many videos, and what outputs must say about its model."""

    segmenter: RoadSegmenter  # SAM2 or the classical fallback
    metadata: dict[str, Any]


def model_metadata(config: SegmenterSettings, model_root: str | None) -> dict[str, Any]:
    """The model set a run uses, known without loading it: it is part of the settings key,
    and a run with nothing left to do never loads a model."""
    if config.segmenter == "classical":
        return {"model_set": "classical", "model_set_label": CLASSICAL_LABEL, "model_root": None}
    if not model_root:
        raise ValueError("--model-root is required with --segmenter sam2 (or use classical)")
    from lanepaint.kit.guard import require_input

    require_input(model_root, "model root (--model-root)")  # before the output is claimed
    from lanepaint.models.root import RANDOM_MARKER, SMOKE_MARKER, model_set_metadata

    # Only the markers are read: opening a gs:// root would download every model in it.
    smoke = storage.exists(storage.join(model_root, SMOKE_MARKER))
    random = storage.exists(storage.join(model_root, RANDOM_MARKER))
    return model_set_metadata(model_root, smoke, random)


def load_segmenter(config: SegmenterSettings, model_root: str | None = None) -> LoadedSegmenter:
    """The configured segmenter, loaded once for the whole run."""
    meta = model_metadata(config, model_root)
    if config.segmenter == "classical":
        from lanepaint.segment.classical import ClassicalRoadSegmenter

        return LoadedSegmenter(ClassicalRoadSegmenter(), meta)
    from lanepaint.models.device import resolve_device
    from lanepaint.models.loaders import load_sam2_video_predictor
    from lanepaint.models.root import ModelRoot
    from lanepaint.segment.sam2_video import Sam2RoadSegmenter, Sam2Settings

    root = ModelRoot.open(model_root)
    device = resolve_device(config.device)
    predictor = load_sam2_video_predictor(root, device=device, vos_optimized=config.vos)
    settings = Sam2Settings(
        encoder_batch=config.encoder_batch, compile_tracking=config.compile_tracking
    )
    segmenter = Sam2RoadSegmenter(predictor, config.points, settings)
    return LoadedSegmenter(segmenter, {**root.metadata(), "device": device, "vos": config.vos})


def model_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What of the model decides the masks (not the device it ran on)."""
    return {"model_set": meta.get("model_set"), "model_root": meta.get("model_root")}
