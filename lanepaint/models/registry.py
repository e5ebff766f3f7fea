"""The models a root may hold: name, place in the layout, required or not, how to load.

This is the extension point for new models: ``check`` and the docs iterate over
:data:`MODEL_SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    VIDEOPAINTER_BRANCH_DIR,
    VIDEOPAINTER_ID_LORA_FILE,
    ModelRoot,
)

Loader = Callable[[ModelRoot], Any]


@dataclass(frozen=True)
class ModelSpec:
    """One slot of the model root layout.

    ``load`` loads the model on the CPU (what ``check`` runs); None means only the files are
    validated (configs parse, safetensors are whole, no pickles).
    """

    name: str
    relpath: str
    required: bool
    description: str
    load: Loader | None = None
    # The stages that read this slot (``lanepaint models check --stage``).
    used_by: tuple[str, ...] = ()


def _flux_fill(root: ModelRoot) -> Any:
    from lanepaint.models.loaders import load_flux_fill

    return load_flux_fill(root)


def _cogvideox_i2v(root: ModelRoot) -> Any:
    from lanepaint.models.loaders import load_cogvideox_i2v

    return load_cogvideox_i2v(root)


def _qwen_vl(size: str) -> Loader:
    def load(root: ModelRoot) -> Any:
        from lanepaint.models.loaders import load_qwen_vl

        return load_qwen_vl(root, size=size)

    return load


def _videopainter_branch(root: ModelRoot) -> Any:
    from lanepaint.models.loaders import load_videopainter_branch

    return load_videopainter_branch(root)


def _videopainter_id_lora(root: ModelRoot) -> Any:
    from lanepaint.models.loaders import load_videopainter_id_lora

    return load_videopainter_id_lora(root)


def _sam2(root: ModelRoot) -> Any:
    from lanepaint.models.loaders import load_sam2_video_predictor

    return load_sam2_video_predictor(root)


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "flux_fill",
            FLUX_FILL_DIR,
            True,
            "FLUX.1-Fill-dev (first frame)",
            _flux_fill,
            ("edit", "train-lora"),
        ),
        ModelSpec(
            "cogvideox_i2v",
            COGVIDEOX_I2V_DIR,
            True,
            "CogVideoX-5B-I2V (propagation backbone)",
            _cogvideox_i2v,
            ("edit",),
        ),
        ModelSpec(
            "videopainter_branch",
            VIDEOPAINTER_BRANCH_DIR,
            True,
            "VideoPainter context branch (edit always loads it)",
            _videopainter_branch,
            ("edit",),
        ),
        ModelSpec(
            "videopainter_id_lora",
            VIDEOPAINTER_ID_LORA_FILE,
            False,
            "VideoPainter ID-resampling LoRA (edit loads it when present)",
            _videopainter_id_lora,
            ("edit",),
        ),
        ModelSpec(
            "qwen_vl_7b",
            QWEN_VL_DIRS["7B"],
            True,
            "Qwen2.5-VL-7B (judge, caption)",
            _qwen_vl("7B"),
            ("caption", "build-dataset", "edit"),
        ),
        ModelSpec(
            "qwen_vl_72b",
            QWEN_VL_DIRS["72B"],
            False,
            "Qwen2.5-VL-72B (option)",
            _qwen_vl("72B"),
            ("caption", "build-dataset", "edit"),
        ),
        ModelSpec(
            "sam2",
            SAM2_CHECKPOINT,
            True,
            "SAM2.1 hiera-large (road masks)",
            _sam2,
            ("segment", "build-dataset"),
        ),
    )
}


STAGES_WITH_MODELS = ("segment", "caption", "build-dataset", "train-lora", "edit")


def specs_for_stage(stage: str) -> list[ModelSpec]:
    """The slots ``stage`` reads, in layout order (``models check --stage``)."""
    if stage not in STAGES_WITH_MODELS:
        raise ValueError(f"--stage: {stage!r} is not one of {', '.join(STAGES_WITH_MODELS)}")
    return [spec for spec in MODEL_SPECS.values() if stage in spec.used_by]
