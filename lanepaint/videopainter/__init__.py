"""VideoPainter on stock diffusers: context branch, dual pipeline, windows, ID resampling."""

from lanepaint.videopainter.branch import VideoPainterBranch
from lanepaint.videopainter.id_resample import IDResampleAttnProcessor, IDResampler
from lanepaint.videopainter.injection import (
    BranchInjector,
    branch_index_for_block,
    token_mask_from_latent_mask,
)
from lanepaint.videopainter.pipeline import PropagationResult, VideoPainterPipeline
from lanepaint.videopainter.windows import WindowPlan, plan_windows

__all__ = [
    "BranchInjector",
    "IDResampleAttnProcessor",
    "IDResampler",
    "PropagationResult",
    "VideoPainterBranch",
    "VideoPainterPipeline",
    "WindowPlan",
    "branch_index_for_block",
    "plan_windows",
    "token_mask_from_latent_mask",
]
