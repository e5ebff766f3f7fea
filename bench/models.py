"""``python -m bench.models --size full|smoke``: build each model, run one forward.

Full size: the real architectures with random bf16 weights built directly on the GPU
(``lanepaint.models.fullsize``), one forward at the stage's working size: the Flux
transformer at 1024² (4096 image + 512 text tokens), the CogVideoX transformer on 49 frames
at 480x720 with CFG (batch 2), a Qwen2.5-VL-7B prefill of 990 visual + ~150 text tokens and
the SAM2.1 hiera-large image encoder on one 1024² frame (bf16 autocast). Smoke size: the
tiny models on the CPU, so CI runs the script itself in seconds.

Each model is built, timed and freed in turn; an out-of-memory or other failure is recorded
for that model and the next one still runs. Prints a table and writes JSON (``--out``;
by default docs/perf/models.json, or models.smoke.json for the smoke size).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import card, commit, sync

GiB = 1024**3
MODELS = ("flux_transformer", "cogvideox_transformer", "qwen_vl_7b", "sam2_hiera_large")


@dataclass(frozen=True)
class Work:
    """Input sizes of the forward for one size (full or smoke)."""

    flux_tokens: tuple[int, int]  # (image, text)
    cog_frames: int  # latent frames
    qwen_image: tuple[int, int]  # (width, height) in pixels
    qwen_text: str


FULL = Work(
    flux_tokens=(4096, 512),
    cog_frames=13,
    qwen_image=(924, 840),  # 33 x 30 merged patches of 28 px = 990 visual tokens
    qwen_text="Compare the three panels: original, mask, result. " * 3,  # ~150 tokens
)
SMOKE = Work(flux_tokens=(64, 32), cog_frames=3, qwen_image=(112, 112), qwen_text="Lanes?")


# --- builders: (size, device, dtype) -> (module, one forward call) -------------------------


def _flux(size: str, device: str, dtype: torch.dtype) -> tuple[Any, Callable[[], Any]]:
    if size == "full":
        from lanepaint.models.fullsize import build_flux_transformer

        model = build_flux_transformer(device, dtype)
    else:
        from lanepaint.models.smoke import tiny_flux_fill

        model = tiny_flux_fill().transformer.to(device, dtype)
    image, text = (FULL if size == "full" else SMOKE).flux_tokens
    c = model.config
    side = int(image**0.5)
    img_ids = torch.zeros(side, side, 3, device=device)
    img_ids[..., 1] = torch.arange(side, device=device)[:, None]
    img_ids[..., 2] = torch.arange(side, device=device)[None, :]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    kwargs = dict(
        hidden_states=randn(1, side * side, c.in_channels),
        encoder_hidden_states=randn(1, text, c.joint_attention_dim),
        pooled_projections=randn(1, c.pooled_projection_dim),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text, 3, device=device),
        guidance=torch.tensor([30.0], device=device, dtype=dtype),
        return_dict=False,
    )
    return model, lambda: model(**kwargs)


def _cogvideox(size: str, device: str, dtype: torch.dtype) -> tuple[Any, Callable[[], Any]]:
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import (
        get_resize_crop_region_for_grid,
    )

    if size == "full":
        from lanepaint.models.fullsize import build_cogvideox_transformer

        model = build_cogvideox_transformer(device, dtype)
    else:
        from lanepaint.models.smoke import tiny_cogvideox_i2v

        model = tiny_cogvideox_i2v().transformer.to(device, dtype)
    c = model.config
    frames = (FULL if size == "full" else SMOKE).cog_frames
    grid = (c.sample_height // c.patch_size, c.sample_width // c.patch_size)
    rotary = get_3d_rotary_pos_embed(
        embed_dim=c.attention_head_dim,
        crops_coords=get_resize_crop_region_for_grid(grid, grid[1], grid[0]),
        grid_size=grid,
        temporal_size=frames,
        device=device,
    )
    batch = 2  # classifier-free guidance
    kwargs = dict(
        hidden_states=torch.randn(
            (batch, frames, c.in_channels, c.sample_height, c.sample_width),
            device=device,
            dtype=dtype,
        ),
        encoder_hidden_states=torch.randn(
            batch, c.max_text_seq_length, c.text_embed_dim, device=device, dtype=dtype
        ),
        timestep=torch.full((batch,), 500, device=device, dtype=torch.long),
        image_rotary_emb=rotary,
        return_dict=False,
    )
    return model, lambda: model(**kwargs)


def _qwen(size: str, device: str, dtype: torch.dtype) -> tuple[Any, Callable[[], Any]]:
    import numpy as np
    from PIL import Image

    if size == "full":
        from lanepaint.models.fullsize import build_qwen_vl

        model, processor = build_qwen_vl(device, dtype)
    else:
        from lanepaint.models.smoke import tiny_qwen_vl

        model, processor = tiny_qwen_vl()
        model = model.to(device, dtype)
    work = FULL if size == "full" else SMOKE
    width, height = work.qwen_image
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": work.qwen_text}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.fromarray(pixels)], return_tensors="pt")
    inputs = inputs.to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return model, lambda: model(**inputs, use_cache=False)


def _sam2(size: str, device: str, dtype: torch.dtype) -> tuple[Any, Callable[[], Any]]:
    if size == "full":
        from lanepaint.models.fullsize import build_sam2_video_predictor

        model = build_sam2_video_predictor(device)
    else:
        from lanepaint.models.smoke import tiny_sam2

        model = tiny_sam2().to(device)
    frame = torch.randn(1, 3, model.image_size, model.image_size, device=device)
    # bf16 autocast like the stage (full size); plain fp32 for the CPU smoke run
    autocast = torch.autocast(
        device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32
    )

    def forward() -> Any:
        with autocast:
            return model.forward_image(frame)

    return model, forward


BUILDERS: dict[str, Callable[[str, str, torch.dtype], tuple[Any, Callable[[], Any]]]] = {
    "flux_transformer": _flux,
    "cogvideox_transformer": _cogvideox,
    "qwen_vl_7b": _qwen,
    "sam2_hiera_large": _sam2,
}


# --- measuring ---------------------------------------------------------------------------


def _time(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up (CUDA events on a GPU)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def bench_one(name: str, size: str, device: str, dtype: torch.dtype, repeats: int) -> dict:
    cuda = device.startswith("cuda")
    record: dict[str, Any] = {"model": name, "status": "ok"}
    model = forward = None
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        model, forward = BUILDERS[name](size, device, dtype)
        sync(device)
        record["build_s"] = round(time.perf_counter() - t0, 3)
        record["params"] = sum(p.numel() for p in model.parameters())
        if cuda:
            record["weights_gib"] = round(torch.cuda.memory_allocated(device) / GiB, 3)
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            record["forward_s"] = round(_time(forward, device, repeats), 4)
        if cuda:
            record["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / GiB, 3)
    except torch.OutOfMemoryError as exc:
        record.update(status="oom", error=str(exc).splitlines()[0])
    except Exception as exc:  # one broken model must not hide the others' numbers
        record.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        del model, forward
        _free(device)
    return record


def _count(n: int) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.2f} B"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"


def format_table(results: list[dict]) -> str:
    rows = [("model", "params", "build s", "peak GiB", "forward s", "status")]
    for r in results:
        params = _count(r["params"]) if "params" in r else "-"
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
        rows.append(
            (
                r["model"],
                params,
                f"{r.get('build_s', float('nan')):.2f}",
                peak,
                f"{r.get('forward_s', float('nan')):.4f}",
                r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument("--size", choices=("full", "smoke"), default="smoke")
    parser.add_argument("--device", default=None, help="default: cuda for full, cpu for smoke")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 3/1)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default docs/perf/models.json (full) or docs/perf/models.smoke.json (smoke)",
    )
    args = parser.parse_args(argv)

    full = args.size == "full"
    device = args.device or ("cuda" if full else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --size full needs a CUDA GPU (use --size smoke on a CPU)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if full else torch.float32
    repeats = args.repeats or (3 if full else 1)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")

    results = []
    for name in names:
        results.append(bench_one(name, args.size, device, dtype, repeats))
        print(f"{name}: {results[-1]}", file=sys.stderr, flush=True)
    report = {
        "bench": "models",
        "size": args.size,
        "card": card() if device.startswith("cuda") else "cpu",
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repeats": repeats,
        "results": results,
    }
    # a smoke run (CI) never overwrites a measured full-size result
    out = args.out or Path("docs/perf", "models.json" if full else "models.smoke.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.size} size on {report['card']} ({report['dtype']}), JSON in {out}")
    print(format_table(results))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
