"""``python -m bench.caption --size full|smoke``: VLM judge latency and caption throughput.

Full size: Qwen2.5-VL-7B with random bf16 weights built on the GPU, generation lengths fixed
(min = max new tokens) so random weights cannot stop early. Two work units (performance.md):
- judge: one 3-panel image (≈ 990 visual tokens) + the judge prompt, 64 new tokens;
- caption_batch: road frames (1280x720) + the caption prompt, 32 new tokens, batched.
The reference is the stock path a user would write: processor + ``model.generate`` one image
at a time with transformers' default ``sdpa`` vision attention (one SDPA call per 112-px
window). Ours switches the vision tower to packed varlen attention
(``lanepaint.vlm.attention``), batches captions with left padding (batch 16 and 32 timed),
and for the judge adds a static KV cache (transformers then compiles the decode step).
Every variant is listed in the JSON; prefill time (one new token) is recorded so the
decode cost per token can be read off. Outputs are compared
with the reference: the relative L2 error of the first generated step's logits and the share
of identical generated tokens.

Smoke size: the tiny model on the CPU, so CI runs the script itself in seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import bench_parser, format_table, perf_record, rel_l2, sync, write_json

GiB = 1024**3


def _timed(fn, device: str, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (kernels, allocator, compile)
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _inputs(processor, images, prompts, device):
    from lanepaint.vlm.qwen import chat_text, to_pil

    texts = [chat_text(processor, p) for p in prompts]
    return processor(
        text=texts, images=[to_pil(i) for i in images], padding=True, return_tensors="pt"
    ).to(device)


def _generate(model, inputs, new_tokens: int, **kwargs):
    with torch.inference_mode():
        return model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )


def _try(variants: dict, name: str, fn) -> None:
    """Time one variant; a failure is recorded in the table instead of ending the run."""
    try:
        seconds, out = fn()
        variants[name] = (seconds, out, None)
    except Exception as exc:  # noqa: BLE001 - recorded, the table says what failed
        variants[name] = (None, None, f"{type(exc).__name__}: {exc}"[:300])


def set_vision_attention(model, name: str) -> None:
    model.set_attn_implementation({"vision_config": name})


def _compare(ref_outputs: list, ours) -> tuple[float, float]:
    """(rel L2 of first-step logits, share of equal tokens) of batch vs per-image runs."""
    errs, same, total = [], 0, 0
    for i, ref in enumerate(ref_outputs):
        a = ref.logits[0][0].float()
        b = ours.logits[0][i].float()
        errs.append(float((a - b).norm() / a.norm().clamp_min(1e-12)))
        ref_new = ref.sequences[0, -len(ref.logits) :]
        our_new = ours.sequences[i, -len(ours.logits) :]
        same += int((ref_new == our_new).sum())
        total += len(ref_new)
    return max(errs), same / max(total, 1)


def run(size: str, out_dir: Path, repeats: int) -> list[dict]:
    from lanepaint.vlm.attention import use_varlen_vision_attention
    from lanepaint.vlm.panels import judge_panels
    from lanepaint.vlm.prompts import CAPTION_PROMPT, judge_prompt

    full = size == "full"
    device = "cuda" if full else "cpu"
    if full:
        from lanepaint.models.fullsize import build_qwen_vl

        model, processor = build_qwen_vl(device)
        h, w, judge_tokens, caption_tokens, batch = 720, 1280, 64, 32, 16
        judge_budget = 990
    else:
        from lanepaint.models.smoke import tiny_qwen_vl

        model, processor = tiny_qwen_vl()
        h, w, judge_tokens, caption_tokens, batch = 56, 84, 8, 4, 4
        judge_budget = 60
    processor.tokenizer.padding_side = "left"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(2 * batch)]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2 :] = 1
    panel = judge_panels(frames[0], mask, frames[1], tokens=judge_budget)
    judge_text = judge_prompt("road with single white solid lane markings")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = []

    # --- judge: one call, 64 new tokens --------------------------------------------------
    judge_in = _inputs(processor, [panel], [judge_text], device)
    visual = int((judge_in["input_ids"] == model.config.image_token_id).sum())
    static = {"cache_implementation": "static"}  # transformers compiles the decode step
    ref_s, ref_out = _timed(lambda: _generate(model, judge_in, judge_tokens), device, repeats)
    variants: dict[str, tuple] = {"stock generate (dynamic cache)": (ref_s, ref_out, None)}
    prefill = {"stock": _timed(lambda: _generate(model, judge_in, 1), device, repeats)[0]}
    _try(
        variants,
        "static cache + compiled decode",
        lambda: _timed(lambda: _generate(model, judge_in, judge_tokens, **static), device, repeats),
    )
    use_varlen_vision_attention(model)
    prefill["varlen vision"] = _timed(lambda: _generate(model, judge_in, 1), device, repeats)[0]
    _try(
        variants,
        "varlen vision + static cache + compiled decode",
        lambda: _timed(lambda: _generate(model, judge_in, judge_tokens, **static), device, repeats),
    )
    best_name = min(
        (k for k, v in variants.items() if v[0] is not None), key=lambda k: variants[k][0]
    )
    best_s, best_out, _ = variants[best_name]
    err, agree = _compare([ref_out], best_out)
    results.append(
        perf_record(
            "judge",
            ours_s=best_s,
            reference_s=ref_s,
            rel_err=err,
            floor_s=None,
            peak_gib=torch.cuda.max_memory_allocated() / GiB if full else None,
            extra={
                "variant": best_name,
                "visual_tokens": visual,
                "new_tokens": judge_tokens,
                "token_agreement": agree,
                "variants": {k: (v[0] if v[2] is None else v[2]) for k, v in variants.items()},
                "prefill_s (1 new token)": prefill,
                "decode_s_per_token": (best_s - prefill["varlen vision"]) / (judge_tokens - 1)
                if "varlen" in best_name
                else None,
            },
        )
    )

    # --- caption batch --------------------------------------------------------------------
    set_vision_attention(model, "sdpa")  # the stock path, for the reference
    singles = [_inputs(processor, [f], [CAPTION_PROMPT], device) for f in frames[:batch]]

    def reference():
        return [_generate(model, s, caption_tokens) for s in singles]

    ref_s, ref_outs = _timed(reference, device, max(1, repeats // 2))
    ref_per = ref_s / len(singles)
    use_varlen_vision_attention(model)
    start = time.perf_counter()
    _inputs(processor, frames, [CAPTION_PROMPT] * len(frames), "cpu")
    processor_cpu_s = (time.perf_counter() - start) / len(frames)
    per_caption: dict[str, float] = {}
    outs = {}
    for n in sorted({batch, 2 * batch} if full else {batch}):
        batched_in = _inputs(processor, frames[:n], [CAPTION_PROMPT] * n, device)
        t, outs[n] = _timed(
            lambda b=batched_in: _generate(model, b, caption_tokens), device, repeats
        )
        per_caption[f"varlen vision, batch {n}"] = t / n
    best = min(per_caption, key=per_caption.get)
    best_n = int(best.rsplit(" ", 1)[1])
    # The stage's path: VLMGenerator over several batches, processor included (it prepares
    # the next batch on a thread while the GPU generates), answers decoded to text.
    from lanepaint.vlm.qwen import VLMGenerator

    gen = VLMGenerator(model, processor)
    images = frames * 2
    stage_s, _ = _timed(
        lambda: gen.generate(
            images,
            [CAPTION_PROMPT] * len(images),
            caption_tokens,
            min_new_tokens=caption_tokens,
            batch_size=best_n,
        ),
        device,
        1,
    )
    stage_per = stage_s / len(images)
    err, agree = _compare(ref_outs, outs[best_n])
    results.append(
        perf_record(
            "caption_batch",
            ours_s=stage_per,
            reference_s=ref_per,
            rel_err=err,
            floor_s=None,
            peak_gib=torch.cuda.max_memory_allocated() / GiB if full else None,
            extra={
                "unit": "seconds per caption, the stage's path (processor included)",
                "variant": f"VLMGenerator, {best}",
                "batch": best_n,
                "captions_per_s": 1 / stage_per,
                "images_in_stage_path_run": len(images),
                "model_only_captions_per_s": 1 / per_caption[best],
                "reference_captions_per_s": 1 / ref_per,
                "variants_s_per_caption": per_caption,
                # the stage prepares the next batch on a CPU thread while the GPU works
                "processor_cpu_s_per_image": processor_cpu_s,
                "visual_tokens_per_image": int(
                    (singles[0]["input_ids"] == model.config.image_token_id).sum()
                ),
                "new_tokens": caption_tokens,
                "token_agreement": agree,
            },
        )
    )
    # Scale for the errors above: the same first-step logits in float32 (stock attention,
    # one image at a time), against which both the stock bf16 path and ours are measured.
    set_vision_attention(model, "sdpa")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    model.float()
    n = min(4, len(singles))
    with torch.inference_mode():
        judge32 = model(**judge_in).logits[0, -1].float()
        caps32 = [model(**singles[i]).logits[0, -1].float() for i in range(n)]
    torch.backends.cuda.matmul.allow_tf32 = tf32

    results[0]["extra"]["first_step_rel_err_vs_fp32"] = {
        "reference (stock bf16)": rel_l2(judge32, ref_out.logits[0][0]),
        "ours": rel_l2(judge32, best_out.logits[0][0]),
    }
    results[1]["extra"]["first_step_rel_err_vs_fp32"] = {
        "reference (stock bf16)": max(
            rel_l2(caps32[i], ref_outs[i].logits[0][0]) for i in range(n)
        ),
        "ours": max(rel_l2(caps32[i], outs[best_n].logits[0][i]) for i in range(n)),
    }
    write_json(results, out_dir, size)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.size, args.out_dir, args.repeats)
    print(json.dumps([{k: v for k, v in r.items() if k == "extra"} for r in results]))
    print(format_table(results))  # last, as every bench does
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
