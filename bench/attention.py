"""``python -m bench.attention --size full|smoke``: which SDPA kernel is fastest for our shapes.

The stages spend much of their time in ``F.scaled_dot_product_attention`` at a few fixed
shapes (below). PyTorch picks FlashAttention-2 by default on Hopper; cuDNN's fused attention
is another built-in backend. Each backend is timed (CUDA events, median) on the same random
inputs and checked against a float32 reference on a slice of the queries (relative L2), so
a faster kernel is only chosen when it computes the same thing. Forward and, for the
training shape, forward + backward. Writes ``attention.json`` (no perf record: a kernel
table, not a stage).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import bench_parser

# name: (batch, heads, q tokens, kv tokens, head dim, backward?)
SHAPES_FULL = {
    "cogvideox_cfg (49x480x720)": (2, 48, 17776, 17776, 64, False),
    "flux_fill (1024², infer)": (1, 24, 4608, 4608, 128, False),
    "flux_fill (1024², train)": (1, 24, 4608, 4608, 128, True),
    "qwen_vit_full (1280x720)": (1, 16, 4784, 4784, 80, False),
}
SHAPES_SMOKE = {"tiny": (1, 2, 64, 64, 16, True)}
REF_ROWS = 512


def _backends():
    from torch.nn.attention import SDPBackend

    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }


def _reference(q, k, v, rows: int) -> torch.Tensor:
    """Float32 attention for the first ``rows`` queries (full keys)."""
    qf = q[:, :, :rows].float()
    scores = qf @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v.float()


def _time(fn, device: str, repeats: int) -> float:
    if device != "cuda":
        import time

        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") / 1e3


def run(size: str, out_dir: Path) -> dict:
    from torch.nn.attention import sdpa_kernel

    device = "cuda" if size == "full" else "cpu"
    shapes = SHAPES_FULL if size == "full" else SHAPES_SMOKE
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    out: dict[str, dict] = {}
    for name, (b, h, nq, nk, d, backward) in shapes.items():
        g = torch.Generator(device).manual_seed(0)
        q = torch.randn(b, h, nq, d, device=device, dtype=dtype, generator=g)
        k = torch.randn(b, h, nk, d, device=device, dtype=dtype, generator=g)
        v = torch.randn(b, h, nk, d, device=device, dtype=dtype, generator=g)
        ref = _reference(q, k, v, min(REF_ROWS, nq))
        flop = 4 * b * h * nq * nk * d * (3.5 if backward else 1.0)
        row: dict[str, dict] = {}
        for label, backend in _backends().items():
            if label == "math" and device == "cuda":
                continue  # materialises the score matrix: tens of GB at these sizes
            try:
                with sdpa_kernel([backend]):
                    o = F.scaled_dot_product_attention(q, k, v)
                    err = float((o[:, :, : ref.shape[2]].float() - ref).norm() / ref.norm())
                    if backward:
                        qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                        do = torch.randn_like(o)

                        def step(qg=qg, kg=kg, vg=vg, do=do):
                            F.scaled_dot_product_attention(qg, kg, vg).backward(do)

                        seconds = _time(step, device, 3)
                    else:
                        seconds = _time(
                            lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
                            device,
                            3,
                        )
                row[label] = {
                    "ms": round(seconds * 1e3, 3),
                    "tflops": round(flop / seconds / 1e12, 1),
                    "rel_err_vs_fp32": float(f"{err:.3e}"),
                }
            except RuntimeError as exc:  # a backend that does not support the shape
                row[label] = {"error": str(exc).splitlines()[0][:160]}
        fastest = min((k for k in row if "ms" in row[k]), key=lambda k: row[k]["ms"])
        out[name] = {"shape": [b, h, nq, nk, d], "backward": backward, "fastest": fastest, **row}
    record = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "sdpa": out}
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "attention.json" if size == "full" else "attention.smoke.json"
    (out_dir / name).write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    args = parser.parse_args(argv)
    record = run(args.size, args.out_dir)
    for name, row in record["sdpa"].items():
        cells = "  ".join(
            f"{k}={v['ms']}ms/{v['tflops']}TF/{v['rel_err_vs_fp32']:.1e}"
            if "ms" in v
            else f"{k}=n/a"
            for k, v in row.items()
            if isinstance(v, dict)
        )
        print(f"{name:<28} fastest={row['fastest']:<9} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
