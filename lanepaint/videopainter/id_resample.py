"""Target-region ID resampling between consecutive windows of a long video.

At the last denoising step of window k each backbone block's video hidden states inside the
inpainted region are kept. In window k+1 every block turns the kept states into extra keys and
values for its self-attention: normalized and modulated with the *current* timestep by the
block's own ``norm1``, projected by ``attn1.to_k`` / ``attn1.to_v`` (keys through ``norm_k``, as
the processor does for ordinary keys), values scaled by ``prev_clip_weight``. The extra tokens
carry no rotary embedding: they come from another window, so no position of the current clip
is theirs. This keeps what was painted (the "identity" of the edit) consistent across windows.

Composition only: a pre-hook per stock block computes the extra keys/values and hands them to an
:class:`IDResampleAttnProcessor` installed on that block's ``attn1`` for the duration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn
from torch.utils.hooks import RemovableHandle


class IDResampleAttnProcessor:
    """CogVideoX joint text+video self-attention with optional appended keys/values.

    Same computation as diffusers' ``CogVideoXAttnProcessor2_0`` (and its fused variant when the
    projections are fused); when :attr:`extra_kv` is set (``[B, heads, M, head_dim]`` each) the
    extra entries are concatenated to the keys and values before attention.
    """

    def __init__(self) -> None:
        self.extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_len = encoder_hidden_states.size(1)
        joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, seq_len, _ = joint.shape

        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
            query, key, value = attn.to_qkv(joint).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(joint), attn.to_k(joint), attn.to_v(joint)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_len:] = apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_len:] = apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if self.extra_kv is not None:
            extra_key, extra_value = self.extra_kv
            key = torch.cat([key, extra_key.to(key.dtype)], dim=2)
            value = torch.cat([value, extra_value.to(value.dtype)], dim=2)
            if attention_mask is not None:
                pad = (0, extra_key.shape[2])
                attention_mask = F.pad(
                    attention_mask, pad, value=0.0 if attention_mask.is_floating_point() else True
                )

        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video_out = out.split([text_len, seq_len - text_len], dim=1)
        return video_out, encoder_out


def extra_kv_from_states(
    block: nn.Module, states: torch.Tensor, temb: torch.Tensor, value_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values ``[B, heads, M, head_dim]`` of kept video states for ``block`` at ``temb``."""
    normed, _, _, _ = block.norm1(states, states[:, :0], temb)
    attn = block.attn1
    key, value = attn.to_k(normed), attn.to_v(normed)
    batch = states.shape[0]
    head_dim = key.shape[-1] // attn.heads
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return key, value * value_weight


class IDResampler:
    """Keeps inpainted-region states of one window and feeds them to the next one.

    Use as a context manager around the whole multi-window run; wrap the transformer call of a
    window's last step in :meth:`capture`, and call :meth:`next_window` between windows.
    ``source="input"`` keeps each block's input states (what its attention reads);
    ``"output"`` keeps what the block returned, as the reference implementation does.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        prev_clip_weight: float = 1.0,
        source: Literal["input", "output"] = "input",
    ):
        if source not in ("input", "output"):
            raise ValueError(f"source must be 'input' or 'output', not {source!r}")
        self.blocks = list(blocks)
        self.prev_clip_weight = prev_clip_weight
        self.source = source
        self.memory: list[torch.Tensor | None] = [None] * len(self.blocks)
        self._captured: list[torch.Tensor | None] = [None] * len(self.blocks)
        self._capture_index: torch.Tensor | None = None
        self._processors = [IDResampleAttnProcessor() for _ in self.blocks]
        self._saved_processors: list[Any] = []
        self._handles: list[RemovableHandle] = []

    @contextmanager
    def capture(self, token_index: torch.Tensor) -> Iterator[None]:
        """Keep each block's video states at ``token_index`` (inpainted tokens) during the call."""
        self._capture_index = token_index
        try:
            yield
        finally:
            self._capture_index = None

    def next_window(self) -> None:
        """What was captured becomes the memory the next window attends to."""
        self.memory = self._captured
        self._captured = [None] * len(self.blocks)

    # Runs once per window; kept out of compiled blocks so it never specializes on ``index``.
    @torch.compiler.disable
    def _keep(self, index: int, states: torch.Tensor) -> None:
        self._captured[index] = states[:, self._capture_index].detach()

    def _pre_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            if self._capture_index is not None and self.source == "input":
                self._keep(index, states)
            memory = self.memory[index]
            processor = self._processors[index]
            if memory is None or self.prev_clip_weight == 0:
                processor.extra_kv = None
                return
            temb = kwargs["temb"] if "temb" in kwargs else args[2]
            processor.extra_kv = extra_kv_from_states(
                module, memory.to(states.dtype), temb, self.prev_clip_weight
            )

        return hook

    def _post_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
            if self._capture_index is not None:
                self._keep(index, output[0])

        return hook

    def __enter__(self) -> IDResampler:
        for i, block in enumerate(self.blocks):
            self._saved_processors.append(block.attn1.get_processor())
            block.attn1.set_processor(self._processors[i])
            self._handles.append(
                block.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True)
            )
            if self.source == "output":
                self._handles.append(
                    block.register_forward_hook(self._post_hook(i), with_kwargs=True)
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for block, processor in zip(self.blocks, self._saved_processors, strict=True):
            block.attn1.set_processor(processor)
        self._saved_processors.clear()
        for processor in self._processors:
            processor.extra_kv = None
        self.memory = [None] * len(self.blocks)
        self._captured = [None] * len(self.blocks)
