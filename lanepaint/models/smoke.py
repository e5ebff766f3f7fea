"""The smoke model set: tiny random-weight models in exactly the real on-disk layout.

Every stage can then run on a CPU without weights, through the same ``from_pretrained``
code as with real weights. Tokenizers are built locally with the ``tokenizers`` library
(byte-level alphabets, no hub). Shapes follow the tiny configs of models.md, except where
keeping a real-model invariant lets stage code stay unaware of smoke mode: the Flux VAE
keeps 4 levels (scale factor 8, the multiple-of-16 rule), CogVideoX keeps the 2:3 aspect,
49 sample frames and 226 text tokens, Qwen keeps spatial merge 2 (one token per 28x28).

Deterministic: the same seed gives byte-identical files (per-model seeds, no timestamps).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import string
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from diffusers import CogVideoXImageToVideoPipeline, FluxFillPipeline
    from transformers import (
        CLIPTokenizer,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        T5Tokenizer,
    )

log = logging.getLogger(__name__)

SMOKE_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMOKE_SAM2_OVERRIDES = ("++model.image_size=256",)
# Output bias of the smoke SAM2's object-score head (see tiny_sam2): +20, against about -0.1
# from the rest of that random head on road clips, means "the object is present" everywhere.
SMOKE_SAM2_OBJECT_SCORE_BIAS = 20.0

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen chat format (ChatML with vision placeholders), written for this project: a system
# turn when none is given, images/videos as <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Smoke VLM images: at most 256 visual tokens, so CPU runs stay fast.
SMOKE_QWEN_MAX_PIXELS = 256 * 28 * 28


def _seed(seed: int, name: str) -> None:
    """Seed per model, so adding or reordering models leaves the others' bytes unchanged."""
    import torch

    torch.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def _round_up(n: int, multiple: int = 32) -> int:
    return -(-n // multiple) * multiple


# --- tokenizers --------------------------------------------------------------------------


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def clip_vocab() -> dict[str, int]:
    """CLIP BPE vocabulary: both specials, the byte alphabet, and each byte ending a word."""
    alphabet = _byte_alphabet()
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    return {token: i for i, token in enumerate(tokens)}


def clip_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=77)


def write_clip_vocab_files(folder: Path) -> None:
    """Replace tokenizer.json by vocab.json + merges.txt, the layout of the real CLIP folder."""
    from tokenizers import models

    (folder / "tokenizer.json").unlink(missing_ok=True)
    models.BPE(vocab=clip_vocab(), merges=[]).save(str(folder))


def t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    """A Unigram tokenizer over ASCII characters and word-initial letters (< 128 pieces)."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces.append(("▁", -2.0))
    pieces += [("▁" + c, -4.0) for c in string.ascii_lowercase]
    chars = string.ascii_letters + string.digits + ".,;:!?'\"()[]{}-_/|+=*&%#@<>"
    pieces += [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def qwen_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE (no merges) plus the special tokens the Qwen2.5-VL processor uses."""
    from transformers import Qwen2Tokenizer

    alphabet = _byte_alphabet()
    vocab = {token: i for i, token in enumerate([*alphabet, *QWEN_SPECIAL_TOKENS])}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t != "<|endoftext|>"],
        model_max_length=32768,
    )


def qwen_processor(
    tokenizer: Qwen2Tokenizer, merge_size: int = 2, max_pixels: int = SMOKE_QWEN_MAX_PIXELS
) -> Qwen2_5_VLProcessor:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    sizes = dict(
        patch_size=14,
        merge_size=merge_size,
        temporal_patch_size=2,
        min_pixels=4 * 28 * 28,
        max_pixels=max_pixels,
    )
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def qwen_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """The config fields that must agree with the tokenizer's special-token ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


# --- tiny models ----------------------------------------------------------------------------

TINY_T5 = dict(
    d_model=32,
    d_ff=37,
    d_kv=8,
    num_heads=4,
    num_layers=2,
    relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
TINY_FLUX_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=2,
    layers_per_block=1,
    norm_num_groups=2,
    block_out_channels=(8, 8, 8, 8),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=32,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.1159,
    scaling_factor=0.3611,
)
TINY_FLUX_TRANSFORMER = dict(
    # 272 = 4*2 noisy + 4*2 masked-image latent channels + 8*8*4 mask channels (packed 2x2)
    patch_size=1,
    in_channels=272,
    out_channels=8,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(4, 4, 8),
)
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
)
TINY_COGVIDEOX_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=2,
    block_out_channels=(8, 8, 8, 8),
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    temporal_compression_ratio=4,
    sample_height=32,
    sample_width=48,
    scaling_factor=0.7,
)
TINY_COGVIDEOX_TRANSFORMER = dict(
    # sample 4x6 latents = 32x48 pixels (the 2:3 aspect of 480x720); 8 = 2 x 4 latent channels
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=8,
    out_channels=4,
    time_embed_dim=2,
    text_embed_dim=32,
    num_layers=2,  # the VideoPainter branch copies the first two blocks
    sample_width=6,
    sample_height=4,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=True,
)
COGVIDEOX_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    snr_shift_scale=1.0,
    timestep_spacing="trailing",
)
TINY_QWEN_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e6},
)
TINY_QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=32,
    window_size=56,
    fullatt_block_indexes=[1],
    tokens_per_second=2,
)


def _eval(pipe):
    """In-memory tiny pipelines behave like loaded ones: eval mode (T5's dropout is on in
    training mode and would make every call differ)."""
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    return pipe


def tiny_flux_fill(seed: int = 0) -> FluxFillPipeline:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer(model_max_length=512)
    _seed(seed, "flux_fill")
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=_round_up(len(clip_tok)),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=5,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    t5 = T5EncoderModel(T5Config(vocab_size=128, **TINY_T5))
    pipe = FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=AutoencoderKL(**TINY_FLUX_VAE),
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=FluxTransformer2DModel(**TINY_FLUX_TRANSFORMER),
    )
    return _eval(pipe)


def tiny_cogvideox_i2v(seed: int = 0) -> CogVideoXImageToVideoPipeline:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    _seed(seed, "cogvideox_i2v")
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=t5_tokenizer(model_max_length=226),
        text_encoder=T5EncoderModel(T5Config(vocab_size=128, **TINY_T5)),
        vae=AutoencoderKLCogVideoX(**TINY_COGVIDEOX_VAE),
        transformer=CogVideoXTransformer3DModel(**TINY_COGVIDEOX_TRANSFORMER),
        scheduler=CogVideoXDPMScheduler(**COGVIDEOX_SCHEDULER),
    )
    return _eval(pipe)


def tiny_qwen_vl(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    ids = qwen_token_ids(tokenizer)
    text_ids = {k: ids.pop(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(
        text_config={**TINY_QWEN_TEXT, **text_ids, "vocab_size": _round_up(len(tokenizer))},
        vision_config=TINY_QWEN_VISION,
        **ids,
    )
    _seed(seed, "qwen_vl_7b")
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [text_ids["eos_token_id"], text_ids["bos_token_id"]]
    model.generation_config.pad_token_id = text_ids["pad_token_id"]
    return model, qwen_processor(tokenizer)


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
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for module in bars:
            module.enable_progress_bar()
    log.info("smoke model set written to %s in %.1f s", dest, time.perf_counter() - start)
    return dest
