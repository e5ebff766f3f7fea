"""Which SDPA kernels run attention: one explicit, measured choice instead of whatever a
given PyTorch build prefers.

cuDNN's fused attention is the fastest SDPA kernel for every attention shape of our stages
on an H100 (``bench.attention``, docs/perf/attention.json): against FlashAttention-2 it is
2.0x for FluxFill at 1024² (head dim 128), 1.15x for CogVideoX's 17.8k-token clip (head dim
64) and 1.7x for the FluxFill training step's forward + backward, at the same accuracy.
PyTorch 2.11 already dispatches to it inside the diffusers blocks (profiled in situ), but
that order is a build default, not a contract; ``"auto"`` pins cuDNN first, then the stock
order, on compute capability 9.x and leaves other GPUs to PyTorch. Kernels that cannot take
a call fall through to the next in the list. Training does not use this: cuDNN's backward
hit an illegal memory access in the full-size Flux step (``lanepaint.training``).
"""

from __future__ import annotations

import contextlib

BACKENDS = ("auto", "flash", "efficient", "math", "cudnn", "stock")


def kernel_list(name: str) -> list:
    """The SDPBackend list for an explicit choice: flash, efficient, math, cudnn, or
    ``no-cudnn`` (flash, then efficient, then math: PyTorch's order without cuDNN)."""
    from torch.nn.attention import SDPBackend

    no_cudnn = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    lists = {
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "math": [SDPBackend.MATH],
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "no-cudnn": no_cudnn,
    }
    if name not in lists:
        raise ValueError(f"no SDPA kernel list named {name!r}; one of {sorted(lists)}")
    return lists[name]


def backend_order(name: str, device) -> list | None:
    """The SDPBackend list for ``name`` on ``device``; None means PyTorch's own choice."""
    import torch
    from torch.nn.attention import SDPBackend

    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, not {name!r}")
    device = torch.device(device)
    if device.type != "cuda" or name == "stock":
        return None
    if name == "auto":
        major, _ = torch.cuda.get_device_capability(device)
        return [SDPBackend.CUDNN_ATTENTION, *kernel_list("no-cudnn")] if major == 9 else None
    return kernel_list(name)


def sdpa_context(name: str, device):
    """A fresh (single-use) context selecting the kernels; also covers backward passes and
    ``torch.compile`` tracing inside it."""
    order = backend_order(name, device)
    if order is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(order, set_priority=True)


# Repeated blocks of models whose diffusers class does not name them (Flux's does).
REPEATED_BLOCKS = {
    "CogVideoXTransformer3DModel": ("CogVideoXBlock",),
    "VideoPainterBranch": ("CogVideoXBlock",),
}


def compile_regions(*models, **compile_kwargs) -> None:
    """Regional ``torch.compile`` through diffusers' ``compile_repeated_blocks``: each
    repeated transformer block is compiled alone, identical blocks share one graph (compile
    time of one block), and hooks installed later run inside the compiled call. The one way
    lanepaint compiles a diffusers model (FluxFill, CogVideoX + branch, the LoRA trainer)."""
    for model in models:
        if not getattr(model, "_repeated_blocks", None):
            model._repeated_blocks = list(REPEATED_BLOCKS[type(model).__name__])
        model.compile_repeated_blocks(**compile_kwargs)
