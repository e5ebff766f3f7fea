"""The smoke model set: tiny random-weight models in exactly the real on-disk layout.

Every stage can then run on a CPU without weights, through the same ``from_pretrained``
code as with real weights. The models are the real architectures with the smoke overrides
of ``lanepaint.models.architectures`` (which keep the invariants stage code relies on);
the tokenizers are built locally (``lanepaint.models.tokenizers``, no hub).

Deterministic: the same seed gives byte-identical files (per-model seeds, no timestamps).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanepaint.models.architectures import (
    SMOKE_SAM2_CONFIG,
    SMOKE_SAM2_OVERRIDES,
    cogvideox_i2v_pipeline,
    flux_fill_pipeline,
    qwen_vl_config,
    qwen_vl_processor,
)
from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    SAM2_SIDECAR,
    SMOKE_LABEL,
    SMOKE_MARKER,
    VIDEOPAINTER_BRANCH_DIR,
    ModelError,
)
from lanepaint.models.tokenizers import (
    qwen_tokenizer,
    set_released_generation_config,
    write_clip_vocab_files,
)

if TYPE_CHECKING:
    from diffusers import CogVideoXImageToVideoPipeline, FluxFillPipeline
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

log = logging.getLogger(__name__)

# Output bias of the smoke SAM2's object-score head (see tiny_sam2): +20, against about -0.1
# from the rest of that random head on road clips, means "the object is present" everywhere.
SMOKE_SAM2_OBJECT_SCORE_BIAS = 20.0

# Edit settings (EditConfig fields) that keep an edit on the smoke models to seconds on a
# CPU: a 32-px first frame, two denoising steps each, short judge answers.
SMOKE_EDIT_SETTINGS: dict[str, Any] = {
    "first_frame_size": 32,
    "first_frame_steps": 2,
    "first_frame_dilation": 2,
    "first_frame_feather": 1,
    "judge_backoff_s": 0,
    "steps": 2,
    "mask_dilation": 2,
    "overlap": 1,
    "judge_max_new_tokens": 8,
    "judge_visual_tokens": 64,
}


def _seed(seed: int, name: str) -> None:
    """Seed per model, so adding or reordering models leaves the others' bytes unchanged."""
    import torch

    torch.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


# --- tiny models ----------------------------------------------------------------------------


def tiny_flux_fill(seed: int = 0) -> FluxFillPipeline:
    _seed(seed, "flux_fill")
    return flux_fill_pipeline(smoke=True)


def tiny_cogvideox_i2v(seed: int = 0) -> CogVideoXImageToVideoPipeline:
    _seed(seed, "cogvideox_i2v")
    return cogvideox_i2v_pipeline(smoke=True)


def tiny_qwen_vl(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL with the generation config of the released model: it stops at <|im_end|>
    or <|endoftext|> and pads with <|endoftext|>."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    config = qwen_vl_config(tokenizer, smoke=True)
    _seed(seed, "qwen_vl_7b")
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    set_released_generation_config(model, tokenizer)
    return model, qwen_vl_processor(tokenizer, smoke=True)


def tiny_sam2(seed: int = 0):
    """The hiera-tiny SAM2.1 video predictor at 256 px (random weights, one constant).

    SAM2.1's mask decoder has an object-score head that decides, per frame, whether the
    prompted object is visible; where it says no, the predictor replaces the mask logits
    with ``NO_OBJ_SCORE`` (-1024) and the mask is empty. With random weights its output is
    negative on every frame, so every smoke mask used to be empty and any comparison of
    masks held trivially. Its output bias is set to ``SMOKE_SAM2_OBJECT_SCORE_BIAS``: the
    object is always present (what a trained SAM2 says for road prompted on road), and the
    masks are the random mask decoder's own logits > 0. Every other weight stays random.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    _seed(seed, "sam2")
    predictor = build_sam2_video_predictor(
        SMOKE_SAM2_CONFIG, None, device="cpu", hydra_overrides_extra=list(SMOKE_SAM2_OVERRIDES)
    )
    head = predictor.sam_mask_decoder.pred_obj_score_head  # an MLP in SAM2.1, Linear in 2.0
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.bias.fill_(SMOKE_SAM2_OBJECT_SCORE_BIAS)
    return predictor


# --- writing the model root ------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def tiny_videopainter_branch(transformer, seed: int = 0):
    """The branch initialized from the tiny backbone as specified, with its zero output
    layers given small random weights (like trained ones) so that smoke runs exercise the
    injection numerically."""
    import torch

    from lanepaint.videopainter.branch import VideoPainterBranch

    branch = VideoPainterBranch.from_transformer(transformer)
    _seed(seed, "videopainter_branch")
    with torch.no_grad():
        for layer in branch.branch_blocks:
            layer.weight.normal_(0.0, 0.02)
            layer.bias.zero_()
    return branch


def write_smoke_sam2(dest: str | os.PathLike[str], seed: int = 0) -> Path:
    """The smoke SAM2 checkpoint and its sidecar into ``dest`` (all the segment stage needs;
    ``build_smoke`` writes the same files)."""
    import torch

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_sam2(seed).state_dict().items()}
    torch.save({"model": state}, dest / SAM2_CHECKPOINT)
    sidecar = {"config": SMOKE_SAM2_CONFIG, "hydra_overrides": list(SMOKE_SAM2_OVERRIDES)}
    _write_json(dest / SAM2_SIDECAR, sidecar)
    return dest / SAM2_CHECKPOINT


def _write_smoke_models(dest: Path, seed: int) -> None:
    flux = tiny_flux_fill(seed)
    flux.save_pretrained(dest / FLUX_FILL_DIR)
    write_clip_vocab_files(dest / FLUX_FILL_DIR / "tokenizer")
    del flux

    cog = tiny_cogvideox_i2v(seed)
    cog.save_pretrained(dest / COGVIDEOX_I2V_DIR)
    tiny_videopainter_branch(cog.transformer, seed).save_pretrained(dest / VIDEOPAINTER_BRANCH_DIR)
    del cog

    qwen, processor = tiny_qwen_vl(seed)
    qwen.save_pretrained(dest / QWEN_VL_DIRS["7B"])
    processor.save_pretrained(dest / QWEN_VL_DIRS["7B"])
    del qwen, processor

    write_smoke_sam2(dest, seed)

    _write_json(
        dest / SMOKE_MARKER,
        {
            "smoke": True,
            "seed": seed,
            "label": SMOKE_LABEL,
            "models": {
                "flux_fill": FLUX_FILL_DIR,
                "cogvideox_i2v": COGVIDEOX_I2V_DIR,
                "videopainter_branch": VIDEOPAINTER_BRANCH_DIR,
                "qwen_vl_7b": QWEN_VL_DIRS["7B"],
                "sam2": SAM2_CHECKPOINT,
            },
        },
    )


def _normal_modes(folder: Path) -> None:
    """Give every file and folder the modes a plain write would (the umask's): some
    save_pretrained paths write safetensors through temp files that stay 0600, and a model
    root is read by other users (a container's non-root user, a shared volume)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build_smoke(dest: str | os.PathLike[str], seed: int = 0, overwrite: bool = False) -> Path:
    """Write the smoke model set to ``dest`` (built aside, then renamed into place).

    An existing non-empty ``dest`` is replaced only with ``overwrite`` and only if it is a
    smoke root itself, so a real model root is never deleted by mistake.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    dest = Path(dest).expanduser().resolve()
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise ModelError("smoke set", dest, "destination exists and is not empty")
        if not (dest / SMOKE_MARKER).is_file():
            raise ModelError("smoke set", dest, "refusing to overwrite a non-smoke folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    start = time.perf_counter()
    # The libraries print a progress bar per saved shard; keep the build output readable.
    bars = [m for m in (diffusers_logging, transformers_logging) if m.is_progress_bar_enabled()]
    for module in bars:
        module.disable_progress_bar()
    try:
        _write_smoke_models(work, seed)
        _normal_modes(work)
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for module in bars:
            module.enable_progress_bar()
    log.info("smoke model set written to %s in %.1f s", dest, time.perf_counter() - start)
    return dest
