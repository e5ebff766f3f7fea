"""VideoPainter on stock diffusers: context branch, dual pipeline, windows, ID resampling.

Names are imported on first use (PEP 562), so a light submodule (``modes``, which the edit
stage's Config reads) does not pull in diffusers and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "VideoPainterBranch": "branch",
    "IDResampleAttnProcessor": "id_resample",
    "IDResampler": "id_resample",
    "BranchInjector": "injection",
    "branch_index_for_block": "injection",
    "token_mask_from_latent_mask": "injection",
    "MODE_NAMES": "modes",
    "PropagationMode": "modes",
    "resolve_mode": "modes",
    "PropagationResult": "pipeline",
    "VideoPainterPipeline": "pipeline",
    "WindowPlan": "windows",
    "plan_windows": "windows",
}

__all__ = [
    "BranchInjector",
    "IDResampleAttnProcessor",
    "IDResampler",
    "MODE_NAMES",
    "PropagationMode",
    "PropagationResult",
    "VideoPainterBranch",
    "VideoPainterPipeline",
    "WindowPlan",
    "branch_index_for_block",
    "plan_windows",
    "resolve_mode",
    "token_mask_from_latent_mask",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


if TYPE_CHECKING:
    from lanepaint.videopainter.branch import VideoPainterBranch
    from lanepaint.videopainter.id_resample import IDResampleAttnProcessor, IDResampler
    from lanepaint.videopainter.injection import (
        BranchInjector,
        branch_index_for_block,
        token_mask_from_latent_mask,
    )
    from lanepaint.videopainter.modes import MODE_NAMES, PropagationMode, resolve_mode
    from lanepaint.videopainter.pipeline import PropagationResult, VideoPainterPipeline
    from lanepaint.videopainter.windows import WindowPlan, plan_windows
