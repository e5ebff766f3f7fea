"""Packed (variable-length) attention for Qwen2.5-VL's vision tower, without flash-attn.

The vision tower attends within 112-px windows (and, in 4 of 32 layers, within each
image). With transformers' ``sdpa`` implementation it splits the packed sequence at the
window boundaries and calls SDPA once per window: a 1280x720 frame is 84 windows, so one
frame costs ~2,400 tiny kernel launches and a batch of 16 ~38,000, which is what bounded
caption throughput. PyTorch's own FlashAttention varlen kernel
(``torch.nn.attention.varlen.varlen_attn``) does all windows of a layer in one launch.

transformers routes a vision attention implementation whose name contains "flash" to the
``cu_seqlens`` path, so the function is registered under such a name and set on the
vision tower only (the language model keeps ``sdpa``). Where the kernel is unavailable
(CPU, older torch, fp32, GPUs before Ampere) the function falls back to the per-window
SDPA loop, which is exactly the stock computation.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

NAME = "lanepaint_flash_varlen"


def _varlen_kernel():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch without the varlen API
        return None
    return varlen_attn


def _per_window_sdpa(query, key, value, cu_seqlens, scaling):
    """The stock computation: one SDPA call per window ([1, H, T, D] in, [T, H, D] out)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    outs = [
        F.scaled_dot_product_attention(q, k, v, scale=scaling)
        for q, k, v in zip(
            *(torch.split(t, lengths, dim=2) for t in (query, key, value)), strict=True
        )
    ]
    return torch.cat(outs, dim=2)[0].transpose(0, 1)


def varlen_attention_forward(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    is_causal: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: ``query`` etc. ``[1, heads, tokens, dim]`` packed,
    returns ``([1, tokens, heads, dim], None)`` like the flash-attention functions."""
    if cu_seq_lens_q is None or is_causal or attention_mask is not None:
        raise ValueError(f"{NAME} only handles packed non-causal vision attention")
    kernel = _varlen_kernel()
    head_dim = query.shape[-1]
    default_scale = scaling is None or abs(scaling - head_dim**-0.5) < 1e-12
    usable = (
        kernel is not None
        and query.device.type == "cuda"
        and query.dtype in (torch.float16, torch.bfloat16)
        and torch.cuda.get_device_capability(query.device)[0] >= 8
    )
    if not usable or not default_scale:
        return _per_window_sdpa(query, key, value, cu_seq_lens_q, scaling).unsqueeze(0), None
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
    cu = cu_seq_lens_q.to(torch.int32)
    cu_k = cu if cu_seq_lens_k is None else cu_seq_lens_k.to(torch.int32)
    max_q = int(max_length_q) if max_length_q is not None else int((cu[1:] - cu[:-1]).max())
    max_k = int(max_length_k) if max_length_k is not None else max_q
    out = kernel(q, k, v, cu, cu_k, max_q, max_k)
    return out.unsqueeze(0), None


def use_varlen_vision_attention(model) -> bool:
    """Switch the vision tower of a Qwen2.5-VL model to ``varlen_attention_forward``.

    Returns whether the switch happened (models without a vision sub-config are left alone).
    """
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, varlen_attention_forward)
    if getattr(model.config, "vision_config", None) is None:
        return False
    model.set_attn_implementation({"vision_config": NAME})
    log.info("vision attention: %s (one varlen kernel per layer)", NAME)
    return True
