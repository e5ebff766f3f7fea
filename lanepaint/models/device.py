"""Where models run and in which dtype: the one place that looks at the machine's GPUs.

``auto`` means the first GPU when CUDA is available, else the CPU; ``auto`` for a role that
should keep off the painter's card (the VLM) means the last GPU. Models run in bfloat16 on
CUDA and float32 on the CPU (CPU kernels for bf16 are slow and the smoke set is tiny).
"""

from __future__ import annotations

DEVICE_HELP = "auto (first GPU, else CPU) | cpu | cuda | cuda:N"


def visible_gpus() -> list[tuple[str, int]]:
    """The inventory of this machine: ``[("cuda:0", free_bytes), ...]``, empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [(f"cuda:{i}", torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str = "auto", last_gpu: bool = False) -> str:
    """``auto`` -> ``cuda`` / ``cuda:N`` (``last_gpu``: the last card) or ``cpu``."""
    if device != "auto":
        return device
    count = gpu_count()
    if not count:
        return "cpu"
    return f"cuda:{count - 1}" if last_gpu else "cuda"


def dtype_for(device) -> object:
    """bfloat16 on CUDA, float32 elsewhere."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def free_gpu_memory() -> None:
    """Return cached blocks after a failure (best effort; never masks the original error)."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
