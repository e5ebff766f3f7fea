"""Full-size models with random weights, allocated directly on the target device.

Speed does not depend on weight values, so benchmarks build the real architectures from the
configs in models.md (values marked "recall" there; real ``config.json`` files win when
weights are at hand). Parameters are created on the device in the target dtype: a
``torch.device`` context plus a temporary default dtype, so 12 B parameters never pass
through CPU memory or fp32. ``device="meta"`` builds the structure only (used by tests to
check the configs and parameter counts without memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from lanepaint.models.smoke import (
    COGVIDEOX_SCHEDULER,
    FLUX_SCHEDULER,
    clip_tokenizer,
    qwen_processor,
    qwen_token_ids,
    qwen_tokenizer,
    t5_tokenizer,
)

if TYPE_CHECKING:
    from diffusers import (
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

Device = str | torch.device

FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=384,
    out_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    layers_per_block=2,
    norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=1024,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.1159,
    scaling_factor=0.3611,
    force_upcast=True,
)
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    is_encoder_decoder=False,
    use_cache=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
COGVIDEOX_TRANSFORMER = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=32,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=True,
)
COGVIDEOX_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    layers_per_block=3,
    norm_num_groups=32,
    block_out_channels=(128, 256, 256, 512),
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
    scaling_factor=0.7,
)
QWEN_VL_7B_TEXT = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
)
QWEN_VL_7B_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=3584,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)
QWEN_MAX_PIXELS = 12845056  # the processor default of the real model
SAM2_LARGE_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"


@contextmanager
def allocate_on(device: Device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on ``device`` in ``dtype`` (no CPU or fp32 detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_flux_transformer(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> FluxTransformer2DModel:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    with allocate_on(device, dtype):
        return FluxTransformer2DModel(**FLUX_TRANSFORMER).eval()


def build_flux_fill_pipeline(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> FluxFillPipeline:
    """The whole FluxFill pipeline (transformer, VAE, CLIP-L, T5-XXL), locally built tokenizers."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = clip_tokenizer()
    ids = dict(bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id)
    transformer = build_flux_transformer(device, dtype, seed)
    with allocate_on(device, dtype):
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, **ids)).eval()
        text_encoder_2 = T5EncoderModel(T5Config(**T5_XXL)).eval()
        vae = AutoencoderKL(**FLUX_VAE).eval()
    return FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(model_max_length=512),
        transformer=transformer,
    )


def build_cogvideox_transformer(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> CogVideoXTransformer3DModel:
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    with allocate_on(device, dtype):
        return CogVideoXTransformer3DModel(**COGVIDEOX_TRANSFORMER).eval()


def build_cogvideox_i2v_pipeline(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> CogVideoXImageToVideoPipeline:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
    )
    from transformers import T5Config, T5EncoderModel

    transformer = build_cogvideox_transformer(device, dtype, seed)
    with allocate_on(device, dtype):
        text_encoder = T5EncoderModel(T5Config(**T5_XXL)).eval()
        vae = AutoencoderKLCogVideoX(**COGVIDEOX_VAE).eval()
    return CogVideoXImageToVideoPipeline(
        tokenizer=t5_tokenizer(model_max_length=226),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDPMScheduler(**COGVIDEOX_SCHEDULER),
    )


def build_qwen_vl(
    device: Device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL-7B with the locally built tokenizer (its special-token ids in the config)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    ids = qwen_token_ids(tokenizer)
    text_ids = {k: ids.pop(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(
        text_config={**QWEN_VL_7B_TEXT, **text_ids}, vision_config=QWEN_VL_7B_VISION, **ids
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = text_ids["pad_token_id"]
    return model.eval(), qwen_processor(tokenizer, merge_size=2, max_pixels=QWEN_MAX_PIXELS)


def build_sam2_video_predictor(device: Device = "cuda", seed: int = 0, vos_optimized: bool = False):
    """SAM2.1 hiera-large (224 M parameters, fp32 like the released checkpoint).

    sam2 instantiates on the CPU before moving (its init calls ``.item()``, which the meta
    device cannot do); at 0.9 GB that detour is harmless.
    """
    from sam2.build_sam import build_sam2_video_predictor as build

    torch.manual_seed(seed)
    return build(SAM2_LARGE_CONFIG, None, device=str(device), vos_optimized=vos_optimized)
