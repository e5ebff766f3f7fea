"""Full-size models with random weights, allocated directly on the target device.

Speed does not depend on weight values, so benchmarks build the real architectures from the
released configs (``lanepaint.models.architectures.FULL``; real ``config.json`` files win
when weights are at hand). Parameters are created on the device in the target dtype: a
``torch.device`` context plus a temporary default dtype, so 12 B parameters never pass
through CPU memory or fp32. ``device="meta"`` builds the structure only (used by tests to
check the configs and parameter counts without memory).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from lanepaint.models.architectures import (
    SAM2_CONFIG,
    allocate_on,
    cogvideox_i2v_pipeline,
    cogvideox_transformer,
    flux_fill_pipeline,
    flux_transformer,
    qwen_vl_config,
    qwen_vl_processor,
)
from lanepaint.models.root import FLUX_FILL_DIR, RANDOM_MARKER
from lanepaint.models.tokenizers import (
    qwen_tokenizer,
    set_released_generation_config,
    write_clip_vocab_files,
)

if TYPE_CHECKING:
    from diffusers import (
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

__all__ = [
    "allocate_on",
    "build_cogvideox_i2v_pipeline",
    "build_cogvideox_transformer",
    "build_flux_fill_pipeline",
    "build_flux_transformer",
    "build_qwen_vl",
    "build_sam2_video_predictor",
]

Device = str | torch.device
Model = TypeVar("Model")


def _seeded(build: Callable[[], Model], device: Device, dtype: torch.dtype, seed: int) -> Model:
    torch.manual_seed(seed)
    with allocate_on(device, dtype):
        return build()


def build_flux_transformer(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> FluxTransformer2DModel:
    return _seeded(flux_transformer, device, dtype, seed)


def build_flux_fill_pipeline(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> FluxFillPipeline:
    """The whole FluxFill pipeline (transformer, VAE, CLIP-L, T5-XXL), locally built tokenizers."""
    transformer = build_flux_transformer(device, dtype, seed)
    return flux_fill_pipeline(device=device, dtype=dtype, transformer=transformer)


def build_cogvideox_transformer(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> CogVideoXTransformer3DModel:
    return _seeded(cogvideox_transformer, device, dtype, seed)


def build_cogvideox_i2v_pipeline(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> CogVideoXImageToVideoPipeline:
    transformer = build_cogvideox_transformer(device, dtype, seed)
    return cogvideox_i2v_pipeline(device=device, dtype=dtype, transformer=transformer)


def build_qwen_vl(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL-7B with the locally built tokenizer (its special-token ids in the config)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    config = qwen_vl_config(tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    set_released_generation_config(model, tokenizer)
    return model.eval(), qwen_vl_processor(tokenizer)


def build_sam2_video_predictor(device: Device = "cuda", seed: int = 0, vos_optimized: bool = False):
    """SAM2.1 hiera-large (224 M parameters, fp32 like the released checkpoint).

    sam2 instantiates on the CPU before moving (its init calls ``.item()``, which the meta
    device cannot do); at 0.9 GB that detour is harmless.
    """
    from sam2.build_sam import build_sam2_video_predictor as build

    torch.manual_seed(seed)
    return build(SAM2_CONFIG, None, device=str(device), vos_optimized=vos_optimized)


def save_flux_fill_root(pipe: FluxFillPipeline, root_dir) -> None:
    """A FluxFill pipeline written in a model root's layout (the CLIP folder as vocab.json +
    merges.txt, as the released one has it), so the stages load it like real weights."""
    folder = Path(root_dir) / FLUX_FILL_DIR
    pipe.save_pretrained(folder)
    write_clip_vocab_files(folder / "tokenizer")


def mark_random_weights(root_dir, built_by: str, **note) -> None:
    """``RANDOM_WEIGHTS.json``: the stages load the root like real weights and label their
    outputs ``random`` (lanepaint.models.root)."""
    marker = {"random_weights": True, "built_by": built_by, **note}
    (Path(root_dir) / RANDOM_MARKER).write_text(json.dumps(marker) + "\n")
