"""Adding the branch's features to the stock CogVideoX blocks, by forward hooks.

The backbone stays the unmodified ``CogVideoXTransformer3DModel``: while a
:class:`BranchInjector` is active, a forward hook on every block adds branch output number
``i // ceil(N / n_branch)`` to the video hidden states that block ``i`` returns. With
``mask_add`` the addition only lands on background tokens (the ones whose 2x2 latent patch holds
no inpaint pixel), which is how VideoPainter runs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle


def token_mask_from_latent_mask(latent_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Masked (inpaint) video tokens, ``[B, F·(h/p)·(w/p)]`` bool, in patch-embedding order.

    ``latent_mask`` is ``[B, F, 1, h, w]`` (1 = inpaint). A token counts as masked when any latent
    pixel of its patch is masked (average pool > 0), matching VideoPainter's token mask.
    """
    b, f, _, h, w = latent_mask.shape
    pooled = F.avg_pool2d(latent_mask.reshape(b * f, 1, h, w).float(), patch_size)
    return (pooled > 0).reshape(b, -1)


def branch_index_for_block(block_index: int, num_blocks: int, num_branch_outputs: int) -> int:
    """Which branch output block ``block_index`` receives (blocks split into equal runs)."""
    return block_index // math.ceil(num_blocks / num_branch_outputs)


class BranchInjector:
    """Context manager that hooks branch features into a transformer's blocks.

    Set :attr:`samples` (the branch outputs of the current step) and :attr:`masked_tokens` before
    each transformer call; with ``samples`` None the hooks leave the blocks untouched.
    """

    def __init__(self, blocks: Sequence[nn.Module], num_branch_outputs: int, mask_add: bool = True):
        if num_branch_outputs < 1:
            raise ValueError("need at least one branch output")
        self.blocks = list(blocks)
        self.num_branch_outputs = num_branch_outputs
        self.mask_add = mask_add
        self.samples: Sequence[torch.Tensor] | None = None
        self.masked_tokens: torch.Tensor | None = None  # [B or 1, N] bool, True = inpaint
        self._handles: list[RemovableHandle] = []

    def _hook(self, index: int):
        branch_index = branch_index_for_block(index, len(self.blocks), self.num_branch_outputs)

        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any):
            if self.samples is None:
                return None
            hidden_states, encoder_hidden_states = output
            added = hidden_states + self.samples[branch_index].to(hidden_states.dtype)
            if self.mask_add:
                if self.masked_tokens is None:
                    raise RuntimeError("mask_add needs masked_tokens")
                added = torch.where(self.masked_tokens.unsqueeze(-1), hidden_states, added)
            return added, encoder_hidden_states

        return hook

    def __enter__(self) -> BranchInjector:
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._hook(i), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.samples = None
