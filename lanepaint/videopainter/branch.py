"""The VideoPainter context branch as a diffusers model.

The branch is a shallow copy of the CogVideoX I2V backbone: its own patch embedding that reads
``noisy latents | masked-video latents | latent mask`` (2·C + 1 channels), the backbone's time
embedding and its first ``num_layers`` blocks. After each branch block the video tokens pass a
zero-initialized ``Linear(inner, inner)`` (``branch_blocks``); those per-block outputs are what the
backbone adds to its own hidden states (see :mod:`lanepaint.videopainter.injection`).

Module names follow the released checkpoint (``VideoPainter/checkpoints/branch``): ``patch_embed``,
``time_embedding``, ``transformer_blocks.{i}``, ``branch_blocks.{i}``, so ``from_pretrained`` loads
it directly. The constructor takes the same arguments as ``CogVideoXTransformer3DModel`` because
the released ``config.json`` is a transformer config (``in_channels`` 32, ``num_layers`` 2).
"""

from __future__ import annotations

import inspect

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import nn


class VideoPainterBranch(ModelMixin, ConfigMixin):
    """Context branch: per-block video-token features for the backbone, scaled by a strength."""

    _supports_gradient_checkpointing = False
    _no_split_modules = ["CogVideoXBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]
    # The released file also holds unused heads of the reference class (never called there).
    _keys_to_ignore_on_load_unexpected = [
        r"^norm_final\.",
        r"^norm_out\.",
        r"^proj_out\.",
        r"^branch_x_embedder\.",
    ]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 30,
        attention_head_dim: int = 64,
        in_channels: int = 16,
        out_channels: int | None = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        text_embed_dim: int = 4096,
        num_layers: int = 2,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 49,
        patch_size: int = 2,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = False,
        use_learned_positional_embeddings: bool = False,
        patch_bias: bool = True,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        latent_channels = out_channels or in_channels
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            in_channels=2 * latent_channels + 1,
            embed_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=patch_bias,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_positional_embeddings=not use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings,
        )
        self.embedding_dropout = nn.Dropout(dropout)
        self.time_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)
        self.transformer_blocks = nn.ModuleList(
            [
                CogVideoXBlock(
                    dim=inner_dim,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    time_embed_dim=time_embed_dim,
                    dropout=dropout,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )
        self.branch_blocks = nn.ModuleList(
            [nn.Linear(inner_dim, inner_dim) for _ in range(num_layers)]
        )
        # Zero output layers: a fresh branch leaves the backbone untouched until trained.
        for linear in self.branch_blocks:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @property
    def latent_channels(self) -> int:
        return self.config.out_channels or self.config.in_channels

    @classmethod
    def from_transformer(
        cls, transformer: CogVideoXTransformer3DModel, num_layers: int = 2
    ) -> VideoPainterBranch:
        """A branch initialized from an I2V backbone, as VideoPainter trains it from.

        Both latent slices of the patch-embedding conv get the backbone's noisy-latent slice and
        the mask channel starts at zero, so at initialization the branch sees the masked video
        like a second copy of the noisy input. Bias, text projection, learned positional
        embedding, time embedding and the first ``num_layers`` blocks are copied.
        """
        config = transformer.config
        if config.get("patch_size_t") is not None or config.get("ofs_embed_dim"):
            raise ValueError("only CogVideoX 1.0 backbones (no patch_size_t / ofs) are supported")
        if num_layers > config.num_layers:
            raise ValueError(f"num_layers {num_layers} > backbone's {config.num_layers}")
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        kwargs = {k: v for k, v in dict(config).items() if k in accepted}
        kwargs["num_layers"] = num_layers
        param = next(transformer.parameters())
        branch = cls(**kwargs)
        # nn.Module.to: ModelMixin.to warns about fp32 modules on every dtype cast.
        nn.Module.to(branch, device=param.device, dtype=param.dtype)

        c = branch.latent_channels
        src_embed, dst_embed = transformer.patch_embed, branch.patch_embed
        with torch.no_grad():
            noisy_slice = src_embed.proj.weight[:, :c]
            dst_embed.proj.weight.zero_()
            dst_embed.proj.weight[:, :c].copy_(noisy_slice)
            dst_embed.proj.weight[:, c : 2 * c].copy_(noisy_slice)
            if src_embed.proj.bias is not None:
                dst_embed.proj.bias.copy_(src_embed.proj.bias)
            dst_embed.text_proj.load_state_dict(src_embed.text_proj.state_dict())
            if getattr(src_embed, "pos_embedding", None) is not None:
                dst_embed.pos_embedding.copy_(src_embed.pos_embedding)
        branch.time_embedding.load_state_dict(transformer.time_embedding.state_dict())
        for i in range(num_layers):
            branch.transformer_blocks[i].load_state_dict(
                transformer.transformer_blocks[i].state_dict()
            )
        return branch

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor | int | float,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        conditioning_scale: float | torch.Tensor = 1.0,
        timestep_cond: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per-block video-token features ``[B, F·H/p·W/p, inner]``, one per branch block.

        ``hidden_states`` is ``[B, F, 2·C+1, H, W]``: noisy latents, masked-video latents and the
        latent mask (1 = inpaint), concatenated on the channel axis.
        """
        expected = 2 * self.latent_channels + 1
        if hidden_states.shape[2] != expected:
            raise ValueError(
                f"branch input has {hidden_states.shape[2]} channels, expects {expected}"
            )
        t_emb = self.time_proj(timestep).to(dtype=hidden_states.dtype)
        temb = self.time_embedding(t_emb, timestep_cond)

        tokens = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
        text_len = encoder_hidden_states.shape[1]
        encoder_states, video_states = tokens[:, :text_len], tokens[:, text_len:]

        outputs: list[torch.Tensor] = []
        for block, out_layer in zip(self.transformer_blocks, self.branch_blocks, strict=True):
            video_states, encoder_states = block(
                hidden_states=video_states,
                encoder_hidden_states=encoder_states,
                temb=temb,
                image_rotary_emb=image_rotary_emb,
            )
            outputs.append(out_layer(video_states) * conditioning_scale)
        return outputs
