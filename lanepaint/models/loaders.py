"""Load the stock diffusers / transformers / sam2 objects from a model root.

The same code loads real weights and the smoke set. Components are loaded one by one so
that every failure names the model and the folder, and so that loading is strict: both
libraries silently re-initialize weights missing from a checkpoint, which here is an error.
Only safetensors are read for diffusers/transformers weights; the SAM2 ``.pt`` checkpoint is
read with ``torch.load(weights_only=True)``, never with a full unpickler.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanepaint.models.architectures import SAM2_CONFIG
from lanepaint.models.files import (
    check_safetensors,
    check_weights_dir,
    read_json,
    require_dir,
    require_file,
)
from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    SAM2_SIDECAR,
    VIDEOPAINTER_ID_LORA_FILE,
    ModelError,
    ModelRoot,
    as_model_root,
)

if TYPE_CHECKING:
    from diffusers import CogVideoXImageToVideoPipeline, FluxFillPipeline
    from sam2.sam2_video_predictor import SAM2VideoPredictor
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

log = logging.getLogger(__name__)

RootLike = ModelRoot | str | os.PathLike[str]
Device = str | torch.device

# A sidecar may only pick a config shipped with sam2 and set the image size: hydra overrides
# can instantiate any `_target_`, which would be code execution from the model root.
_SAM2_CONFIG_RE = re.compile(r"configs/sam2(\.1)?/sam2(\.1)?_hiera_(t|s|b\+|l)\.yaml")
_SAM2_OVERRIDE_RE = re.compile(r"\+\+model\.image_size=\d+")


def _load_weights(model: str, folder: Path, cls: type, dtype: torch.dtype | None) -> Any:
    """``cls.from_pretrained(folder)`` from safetensors only; missing weights are an error."""
    check_weights_dir(model, folder)
    try:
        obj, info = cls.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, output_loading_info=True
        )
    except Exception as exc:  # the libraries raise many types; all mean "does not load"
        raise ModelError(model, folder, f"{cls.__name__} failed to load: {exc}") from exc
    _check_loading_info(model, folder, info)
    return obj.eval()


def _check_loading_info(model: str, folder: Path, info: dict[str, Any]) -> None:
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        detail = ", ".join((missing + mismatched)[:5])
        raise ModelError(
            model,
            folder,
            f"{len(missing)} weights missing and {len(mismatched)} of the wrong shape "
            f"in the checkpoint (config and weights disagree): {detail}",
        )
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        log.warning("%s: %d unused weights in %s", model, len(unexpected), folder)


def _load_files(model: str, folder: Path, cls: type, config_name: str) -> Any:
    """Tokenizers and schedulers: plain files, no weights."""
    require_dir(model, folder)
    read_json(model, folder / config_name)
    try:
        return cls.from_pretrained(folder)
    except Exception as exc:
        raise ModelError(model, folder, f"{cls.__name__} failed to load: {exc}") from exc


def has_sentencepiece() -> bool:
    return importlib.util.find_spec("sentencepiece") is not None


def _load_tokenizer(model: str, folder: Path, cls: type) -> Any:
    """A tokenizer; a SentencePiece-only folder needs the (absent) sentencepiece package."""
    spm_only = not (folder / "tokenizer.json").is_file() and any(folder.glob("*.model"))
    if spm_only and not has_sentencepiece():
        raise ModelError(
            model,
            folder,
            "tokenizer has only a SentencePiece .model file and sentencepiece is not "
            "installed: add its tokenizer.json (for the T5 v1.1 tokenizer it is the same file "
            "as FLUX.1-Fill-dev/tokenizer_2/tokenizer.json)",
        )
    return _load_files(model, folder, cls, "tokenizer_config.json")


def _load_pipeline(
    model: str, folder: Path, pipeline: type, parts: dict[str, type], dtype: torch.dtype
) -> Any:
    """A diffusers pipeline from its folder, part by part in the order of ``parts``: the
    scheduler and tokenizers as files, every other part as weights."""
    require_dir(model, folder)
    read_json(model, folder / "model_index.json")
    loaded = {}
    for part, cls in parts.items():
        if part == "scheduler":
            loaded[part] = _load_files(model, folder / part, cls, "scheduler_config.json")
        elif part.startswith("tokenizer"):
            loaded[part] = _load_tokenizer(model, folder / part, cls)
        else:
            loaded[part] = _load_weights(model, folder / part, cls, dtype)
    return pipeline(**loaded)


def load_flux_fill(
    root: RootLike, dtype: torch.dtype = torch.bfloat16, device: Device = "cpu"
) -> FluxFillPipeline:
    """FLUX.1-Fill-dev as a stock ``FluxFillPipeline`` on ``device``."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    parts = {
        "scheduler": FlowMatchEulerDiscreteScheduler,
        "tokenizer": CLIPTokenizer,
        "tokenizer_2": T5TokenizerFast,
        "text_encoder": CLIPTextModel,
        "text_encoder_2": T5EncoderModel,
        "vae": AutoencoderKL,
        "transformer": FluxTransformer2DModel,
    }
    folder = as_model_root(root) / FLUX_FILL_DIR
    return _load_pipeline("flux_fill", folder, FluxFillPipeline, parts, dtype).to(device)


def load_cogvideox_i2v(
    root: RootLike, dtype: torch.dtype = torch.bfloat16, device: Device = "cpu"
) -> CogVideoXImageToVideoPipeline:
    """CogVideoX-5B-I2V as a stock ``CogVideoXImageToVideoPipeline`` on ``device``."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5EncoderModel, T5Tokenizer

    parts = {
        "tokenizer": T5Tokenizer,
        "text_encoder": T5EncoderModel,
        "vae": AutoencoderKLCogVideoX,
        "transformer": CogVideoXTransformer3DModel,
        "scheduler": CogVideoXDPMScheduler,
    }
    folder = as_model_root(root) / COGVIDEOX_I2V_DIR
    pipeline = CogVideoXImageToVideoPipeline
    return _load_pipeline("cogvideox_i2v", folder, pipeline, parts, dtype).to(device)


def load_videopainter_branch(
    root: RootLike, dtype: torch.dtype = torch.bfloat16, device: Device = "cpu"
):
    """The VideoPainter context branch (``VideoPainter/checkpoints/branch``)."""
    from lanepaint.models.root import VIDEOPAINTER_BRANCH_DIR
    from lanepaint.videopainter.branch import VideoPainterBranch

    return _load_weights(
        "videopainter_branch",
        as_model_root(root) / VIDEOPAINTER_BRANCH_DIR,
        VideoPainterBranch,
        dtype,
    ).to(device)


def load_videopainter_id_lora(root: RootLike) -> dict[str, torch.Tensor]:
    """The tensors of the VideoPainter ID-resampling LoRA (edit hands the file to diffusers'
    ``load_lora_weights``); a whole safetensors file without LoRA weights is an error."""
    from safetensors.torch import load_file

    path = require_file("videopainter_id_lora", as_model_root(root) / VIDEOPAINTER_ID_LORA_FILE)
    check_safetensors("videopainter_id_lora", path)
    state = load_file(path)
    if not any(".lora_" in key or ".lora." in key for key in state):
        raise ModelError("videopainter_id_lora", path, "no LoRA weights in the file")
    return state


def load_qwen_vl(
    root: RootLike, size: str = "7B", dtype: torch.dtype = torch.bfloat16, device: Device = "cpu"
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL (7B or 72B folder) and its processor.

    ``device="auto"`` spreads the model over all visible GPUs (transformers device_map),
    for a model larger than one card; any other device receives the whole model. The vision
    tower uses packed varlen attention (``lanepaint.vlm.attention``; same result, one kernel
    per layer instead of one per window).
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from lanepaint.vlm.attention import use_varlen_vision_attention

    if size not in QWEN_VL_DIRS:
        raise ValueError(f"Qwen2.5-VL size must be one of {sorted(QWEN_VL_DIRS)}, not {size!r}")
    name = f"qwen_vl_{size.lower()}"
    folder = as_model_root(root) / QWEN_VL_DIRS[size]
    check_weights_dir(name, folder)
    read_json(name, folder / "tokenizer_config.json")
    device_map = None if str(device) == "cpu" else str(device)
    try:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder,
            dtype=dtype,
            use_safetensors=True,
            output_loading_info=True,
            device_map=device_map,
        )
        processor = AutoProcessor.from_pretrained(folder)
    except Exception as exc:
        raise ModelError(name, folder, f"Qwen2.5-VL failed to load: {exc}") from exc
    _check_loading_info(name, folder, info)
    use_varlen_vision_attention(model)
    return model.eval(), processor


def sam2_config(root: RootLike) -> tuple[str, list[str]]:
    """The sam2 config name and hydra overrides the root's checkpoint needs.

    Real weights have no sidecar and use hiera-large; the smoke set's sidecar names
    hiera-tiny at 256 px. Only shipped configs and an image-size override are accepted.
    """
    sidecar = as_model_root(root) / SAM2_SIDECAR
    if not sidecar.exists():
        return SAM2_CONFIG, []
    data = read_json("sam2", sidecar)
    config = data.get("config", SAM2_CONFIG)
    overrides = data.get("hydra_overrides", [])
    if not isinstance(config, str) or not _SAM2_CONFIG_RE.fullmatch(config):
        raise ModelError("sam2", sidecar, f"config {config!r} is not a sam2 hiera config")
    if not isinstance(overrides, list) or not all(
        isinstance(o, str) and _SAM2_OVERRIDE_RE.fullmatch(o) for o in overrides
    ):
        raise ModelError("sam2", sidecar, f"overrides {overrides!r} not allowed (image size only)")
    return config, overrides


def read_sam2_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a SAM2 checkpoint, loaded with ``weights_only=True``."""
    require_file("sam2", path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, disallowed pickle globals, not a checkpoint
        raise ModelError("sam2", path, f"not a loadable weights-only checkpoint: {exc}") from exc
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError("sam2", path, "checkpoint has no 'model' state dict of tensors")
    return state


def load_sam2_video_predictor(
    root: RootLike, device: Device = "cpu", vos_optimized: bool = False
) -> SAM2VideoPredictor:
    """The stock SAM2.1 video predictor with the root's weights, in eval mode on ``device``.

    ``vos_optimized`` selects sam2's VOS predictor, which torch-compiles its components on
    first use (worth it on a GPU, minutes on a CPU).
    """
    from sam2.build_sam import build_sam2_video_predictor

    root = as_model_root(root)
    config, overrides = sam2_config(root)
    path = root / SAM2_CHECKPOINT
    state = read_sam2_state_dict(path)
    # sam2's own loader raises an empty RuntimeError on a key mismatch; load it ourselves.
    predictor = build_sam2_video_predictor(
        config, None, device="cpu", hydra_overrides_extra=overrides, vos_optimized=vos_optimized
    )
    try:
        result = predictor.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise ModelError("sam2", path, f"checkpoint does not fit {config}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        detail = ", ".join((result.missing_keys + result.unexpected_keys)[:5])
        raise ModelError(
            "sam2",
            path,
            f"checkpoint does not fit {config}: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys ({detail})",
        )
    return predictor.to(device).eval()
