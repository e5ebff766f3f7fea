"""``python -m bench.presets --size full|smoke``: every speed preset beside exact, same run.

First frame (FluxFill 1024², 50 steps) and propagation (CogVideoX-5B-I2V + branch, 49 frames
at 480x720, 50 steps, CFG), each on one set of random full-size weights, with the presets of
``lanepaint.models.presets`` switched on in place one after the other, as the edit stage
applies them (regional compile on CUDA; FluxFill's QKV fused for the bf16 presets only):
exact, cache, fp8+cache, fp8 (FP8 quantization cannot be undone, so its presets come last).
Per preset: time of one call (after a warm-up call that compiles every graph the preset
needs, predicted steps included), peak memory, and drift from exact on the same inputs:
relative L2 of the final latents and of the output frames, PSNR of the frames against exact
(propagation: over the repainted pixels, since the rest is pasted back from the input). FP8
presets are skipped where torchao cannot run them (the CPU), with the reason recorded.

Random weights say how long a preset takes and how far it moves the numbers, not how it
changes the look of a real edit: docs/performance.md gives the ``lanepaint evaluate``
comparison to run on real weights.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import bench_parser, perf_record, rel_l2, sync
from bench.edit import ATTENTION, _clock, _peak, build_flux, build_painter
from lanepaint.models import presets
from lanepaint.models.kernels import sdpa_context

ORDER = ("exact", "cache", "fp8+cache", "fp8")
WARMUP_STEPS = 10  # > presets.WARMUP: the warm-up call also runs (and compiles) predicted steps


def psnr(reference: np.ndarray, other: np.ndarray, where: np.ndarray | None = None) -> float | None:
    """PSNR in dB of uint8-scaled images (``where``: only those pixels); None when equal."""
    a, b = reference.astype(np.float64), other.astype(np.float64)
    if where is not None:
        a, b = a[where], b[where]
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    return None if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def switch(models: list, current: presets.Preset, target: presets.Preset, steps: int) -> None:
    """From ``current`` to ``target`` in place (FP8 only ever switched on)."""
    if current.fp8 and not target.fp8:
        raise ValueError("FP8 quantization cannot be undone: run the fp8 presets last")
    if current.cache and not target.cache:
        models[0].disable_cache()
    if target.fp8 and not current.fp8:
        for model in models:
            if getattr(model, "fused_projections", False) or any(
                getattr(m, "fused_projections", False) for m in model.modules()
            ):
                model.unfuse_qkv_projections()  # the stage quantizes unfused projections
            presets.quantize_fp8(model)
    if target.cache and not current.cache:
        models[0].enable_cache(presets.cache_config(steps))


def runnable(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The presets this machine runs, in ORDER, and why the others were not run."""
    ordered = [n for n in ORDER if n in names]
    skipped: dict[str, str] = {}
    for name in ordered:
        try:
            presets.check_supported(name)
        except ValueError as exc:
            skipped[name] = str(exc)
    return [n for n in ordered if n not in skipped], skipped


def run_presets(part: str, models: list, call, steps: int, names: list[str], compare) -> list:
    """Time each preset (warm-up call first) and compare its output with exact's."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records, reference, current = [], None, presets.parse("exact")
    for name in names:
        target = presets.parse(name)
        switch(models, current, target, steps)
        current = target
        t0, graphs = time.perf_counter(), _graphs()
        with sdpa_context(ATTENTION, device):
            call(WARMUP_STEPS if target.cache else 2)
        sync()
        warm_s = time.perf_counter() - t0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with sdpa_context(ATTENTION, device):
            seconds, out = _clock(call)
        if reference is None:
            reference, reference_s = out, seconds
        extra = {
            "preset": name,
            "work": f"{steps} steps",
            "warmup_call_s": round(warm_s, 1),
            "compiled_graphs_added": _graphs() - graphs,
            "computed_steps": presets.computed_steps(steps) if target.cache else steps,
            **compare(reference, out),
        }
        record = perf_record(part, seconds, reference_s, None, None, _peak(), extra)
        record["rel_err"] = extra["latents_rel_l2"]
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def bench_first_frame(size: str, device: str, names: list[str]) -> list[dict]:
    from lanepaint.edit.first_frame import compile_flux

    pipe, call, _, steps, _ = build_flux(size, device)
    if device == "cuda":
        compile_flux(pipe)  # fused QKV + regional compile, as the stage does for bf16

    def traced(n_steps=steps):
        kept = {}

        def keep(_pipe, _i, _t, tensors):
            kept["latents"] = tensors["latents"].float().cpu()
            return tensors

        with presets.cache_scope(pipe.transformer, "cond"):  # as FirstFramePainter.run
            image = call(
                n_steps, callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["latents"]
            )
        return image, kept["latents"]

    def compare(ref, out) -> dict:
        (ref_img, ref_lat), (img, lat) = ref, out
        ref8, img8 = (np.clip(x, 0, 1) * 255 for x in (ref_img, img))
        return {
            "latents_rel_l2": rel_l2(ref_lat, lat),
            "frames_rel_l2": rel_l2(ref_img, img),
            "psnr_db_vs_exact": psnr(ref8, img8),
        }

    return run_presets("first_frame", [pipe.transformer], traced, steps, names, compare)


def bench_propagate(size: str, device: str, names: list[str]) -> list[dict]:
    painter, call, steps = build_painter(size, device)
    if device == "cuda":
        painter.compile_blocks()

    def compare(ref, out) -> dict:
        return {
            "latents_rel_l2": rel_l2(ref.latents, out.latents),
            "frames_rel_l2": rel_l2(ref.frames, out.frames),
            "psnr_db_vs_exact": psnr(ref.frames, out.frames),
            "psnr_db_vs_exact_repainted": psnr(ref.frames, out.frames, ref.masks.astype(bool)),
            "timings": {k: round(v, 2) for k, v in out.timings.items()},
        }

    models = [painter.pipe.transformer, painter.branch]
    return run_presets("propagate", models, call, steps, names, compare)


def run(size: str, out_dir: Path, parts: list[str], names: list[str]) -> dict:
    device = "cuda" if size == "full" else "cpu"
    # Every preset adds graphs of the same block code; a stage run uses one preset, this
    # run all four: keep dynamo from falling back to eager for the later ones.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 4096
    todo, skipped = runnable(names)
    result: dict = {"presets": todo, "not_run": skipped}
    suffix = ".json" if size == "full" else ".smoke.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    benches = {"first_frame": bench_first_frame, "propagate": bench_propagate}
    for part in parts:  # in the order given
        bench = benches[part]
        result[part] = bench(size, device, todo)
        path = out_dir / f"presets_{part}{suffix}"
        path.write_text(json.dumps({**result, part: result[part]}, indent=2, default=str) + "\n")
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def table(result: dict) -> str:
    lines = [
        f"{'part':<12} {'preset':<10} {'s':>8} {'x exact':>8} {'GiB':>6} {'lat L2':>9} "
        f"{'PSNR dB':>8}"
    ]
    for part in ("first_frame", "propagate"):
        for r in result.get(part, []):
            e = r["extra"]
            lines.append(
                f"{part:<12} {e['preset']:<10} {r['ours_s']:>8.2f} {r['ratio']:>8.2f} "
                f"{(r['peak_gib'] or 0):>6.1f} {e['latents_rel_l2']:>9.2e} "
                f"{e['psnr_db_vs_exact'] or math.inf:>8.1f}"
            )
    for name, why in result["not_run"].items():
        lines.append(f"not run: {name}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--parts", default="first_frame,propagate")
    parser.add_argument("--presets", default=",".join(ORDER))
    args = parser.parse_args(argv)
    result = run(args.size, args.out_dir, args.parts.split(","), args.presets.split(","))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
