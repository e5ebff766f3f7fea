"""The model architectures, each written once: the released config and the smoke overrides.

``FULL`` holds the configs of the released models: the values of their ``config.json`` files
as the shared models.md gives them (several marked "recall" there). Loaders never use these:
they read a real folder's own ``config.json``; these serve the random-weight builders. The
smoke set is the same architectures with ``SMOKE``'s few overrides (layers, widths, heads,
vocabulary); whatever it does not override it keeps, which is how the smoke models keep the
real invariants stage code relies on (see ``lanepaint.models.smoke``).

The builders below create a model or pipeline of either size in the caller's seed, on the
given device and in the given dtype; ``smoke`` and ``fullsize`` seed and save them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lanepaint.models.tokenizers import (
    clip_tokenizer,
    qwen_processor,
    qwen_token_ids,
    t5_tokenizer,
)

if TYPE_CHECKING:
    import torch
    from diffusers import (
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTokenizer,
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        T5EncoderModel,
    )

    Device = str | torch.device

FULL: dict[str, dict[str, Any]] = {
    "flux_transformer": dict(
        patch_size=1,
        in_channels=384,  # 64 noisy + 64 masked-image latent channels + 256 mask channels
        out_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ),
    "flux_vae": dict(
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
    ),
    "clip_text": dict(  # CLIP ViT-L/14 text model; token ids come from the tokenizer
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        projection_dim=768,
        hidden_act="quick_gelu",
    ),
    "t5_encoder": dict(  # T5 v1.1 XXL, encoder only (Flux and CogVideoX)
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
    ),
    "cogvideox_transformer": dict(
        num_attention_heads=48,
        attention_head_dim=64,
        in_channels=32,  # 16 noisy + 16 image latent channels
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
    ),
    "cogvideox_vae": dict(
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
    ),
    "qwen_vl_text": dict(  # Qwen2.5-VL-7B; special-token ids come from the tokenizer
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    ),
    "qwen_vl_vision": dict(
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
    ),
    # The processor's pixel range (its defaults in the released model); patch and merge
    # sizes come from qwen_vl_vision.
    "qwen_vl_pixels": dict(min_pixels=4 * 28 * 28, max_pixels=12845056),
}

# Both smoke VAEs: 4 levels of 8 channels, one layer per block.
_SMOKE_VAE = dict(layers_per_block=1, norm_num_groups=2, block_out_channels=(8, 8, 8, 8))

# What the smoke set changes. Kept on purpose (so stage code never branches on smoke mode):
# the Flux VAE's 4 levels (scale factor 8, the multiple-of-16 rule, 8x8 mask packing),
# CogVideoX's 49 sample frames, 226 text tokens and the 2:3 aspect of its learned positions,
# Qwen's patch 14 with spatial merge 2 (one token per 28x28). The CLIP and Qwen vocabularies
# are the local tokenizers' (``smoke_vocab_size``).
SMOKE: dict[str, dict[str, Any]] = {
    "flux_transformer": dict(
        in_channels=272,  # 4*2 noisy + 4*2 masked-image latent channels + 8*8*4 mask channels
        out_channels=8,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    ),
    "flux_vae": _SMOKE_VAE | dict(latent_channels=2, sample_size=32),
    "clip_text": dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        projection_dim=32,
    ),
    "t5_encoder": dict(
        vocab_size=128,
        d_model=32,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        relative_attention_num_buckets=8,
    ),
    "cogvideox_transformer": dict(
        # sample 4x6 latents = 32x48 pixels (the 2:3 aspect of 480x720); 8 = 2 x 4 latent ch
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=2,  # the VideoPainter branch copies the first two blocks
        sample_width=6,
        sample_height=4,
    ),
    "cogvideox_vae": _SMOKE_VAE | dict(latent_channels=4, sample_height=32, sample_width=48),
    "qwen_vl_text": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"mrope_section": [2, 1, 1]},
    ),
    "qwen_vl_vision": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=32,
        window_size=56,
        fullatt_block_indexes=[1],
    ),
    "qwen_vl_pixels": dict(max_pixels=256 * 28 * 28),  # at most 256 visual tokens: fast CPU runs
}

FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
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

# SAM2.1 ships its architectures as hydra configs inside the sam2 package. The released
# checkpoint is hiera-large at 1024 px; the smoke SAM2 is the shipped hiera-tiny at 256 px
# (another shipped config, not overrides of hiera-large: a smoke root's sidecar may only name
# a shipped config and set the image size, see ``loaders.sam2_config``).
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
SMOKE_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMOKE_SAM2_OVERRIDES = ("++model.image_size=256",)


def arch_config(name: str, smoke: bool = False) -> dict[str, Any]:
    """The full-size config of ``name``, or with ``SMOKE``'s overrides (a nested dict such as
    ``rope_parameters`` is updated, not replaced). Always a fresh copy: configs may mutate it."""
    config = copy.deepcopy(FULL[name])
    for key, value in (SMOKE[name] if smoke else {}).items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else copy.deepcopy(value)
    return config


def smoke_vocab_size(tokenizer: Any) -> int:
    """A smoke model's vocabulary: the local tokenizer's, rounded up to a multiple of 32."""
    return -(-len(tokenizer) // 32) * 32


@contextmanager
def allocate_on(device: Device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on ``device`` in ``dtype`` (no CPU or fp32 detour)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    import torch

    return torch.float32 if dtype is None else dtype


def clip_text_encoder(tokenizer: CLIPTokenizer, smoke: bool = False) -> CLIPTextModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = arch_config("clip_text", smoke)
    if smoke:
        config["vocab_size"] = smoke_vocab_size(tokenizer)
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    return CLIPTextModel(CLIPTextConfig(**config, **ids)).eval()


def t5_encoder(smoke: bool = False) -> T5EncoderModel:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**arch_config("t5_encoder", smoke))).eval()


def flux_transformer(smoke: bool = False) -> FluxTransformer2DModel:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(**arch_config("flux_transformer", smoke)).eval()


def cogvideox_transformer(smoke: bool = False) -> CogVideoXTransformer3DModel:
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(**arch_config("cogvideox_transformer", smoke)).eval()


def flux_fill_pipeline(
    smoke: bool = False,
    device: Device = "cpu",
    dtype: torch.dtype | None = None,
    transformer: FluxTransformer2DModel | None = None,
) -> FluxFillPipeline:
    """FLUX.1-Fill: CLIP-L, T5, VAE, then the transformer unless given, in that order (the
    smoke set's random weights depend on it); schedulers hold tensors, so outside the context."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline

    clip_tok = clip_tokenizer()
    with allocate_on(device, _dtype(dtype)):
        text_encoder = clip_text_encoder(clip_tok, smoke)
        text_encoder_2 = t5_encoder(smoke)
        vae = AutoencoderKL(**arch_config("flux_vae", smoke)).eval()
        transformer = flux_transformer(smoke) if transformer is None else transformer
    return FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(model_max_length=512),
        transformer=transformer,
    )


def cogvideox_i2v_pipeline(
    smoke: bool = False,
    device: Device = "cpu",
    dtype: torch.dtype | None = None,
    transformer: CogVideoXTransformer3DModel | None = None,
) -> CogVideoXImageToVideoPipeline:
    """CogVideoX-5B-I2V: T5, VAE, then the transformer unless given, in that order."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
    from diffusers import CogVideoXImageToVideoPipeline as Pipeline

    with allocate_on(device, _dtype(dtype)):
        text_encoder = t5_encoder(smoke)
        vae = AutoencoderKLCogVideoX(**arch_config("cogvideox_vae", smoke)).eval()
        transformer = cogvideox_transformer(smoke) if transformer is None else transformer
    return Pipeline(
        tokenizer=t5_tokenizer(model_max_length=226),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDPMScheduler(**COGVIDEOX_SCHEDULER),
    )


def qwen_vl_config(tokenizer: Qwen2Tokenizer, smoke: bool = False) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL's config, its special-token ids those of the local ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    ids = qwen_token_ids(tokenizer)
    text = arch_config("qwen_vl_text", smoke)
    text |= {k: ids.pop(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if smoke:
        text["vocab_size"] = smoke_vocab_size(tokenizer)
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=arch_config("qwen_vl_vision", smoke), **ids
    )


def qwen_vl_processor(tokenizer: Qwen2Tokenizer, smoke: bool = False) -> Qwen2_5_VLProcessor:
    """The processor: patches and merges as the vision tower, the pixel range of the size."""
    vision = arch_config("qwen_vl_vision", smoke)
    return qwen_processor(
        tokenizer,
        patch_size=vision["patch_size"],
        merge_size=vision["spatial_merge_size"],
        temporal_patch_size=vision["temporal_patch_size"],
        **arch_config("qwen_vl_pixels", smoke),
    )
