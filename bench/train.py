"""``python -m bench.train --size full|smoke``: one FluxFill LoRA training step.

Full size: FLUX.1-Fill-dev with random bf16 weights built on the GPU
(``lanepaint.models.fullsize``), 1024², batch 1, LoRA rank 128 on to_q/to_k/to_v/to_out.0
(fp32 LoRA parameters, bf16 autocast), AdamW and gradient clipping included. Variants:

- ``reference``: the plain loop of the diffusers Flux LoRA examples, written out here
  (cached latents and prompt embeddings, inline packing, ``torch.optim.AdamW``),
- ``ours``: the trainer's building blocks (``lanepaint.training.objective``, fused AdamW,
  the trainer's attention-kernel choice) with cached latents and embeddings,
- ``ours+gc``: the same with gradient checkpointing,
- ``ours-uncached`` / ``ours-uncached+gc``: VAE, CLIP and T5 encode every step,
- ``ours+compile`` / ``ours+gc+compile`` (opt-in through ``--variants``): regional
  ``torch.compile`` of the transformer blocks (always run last: blocks stay compiled).
- ``+fp8``, appended to any ``ours`` variant: the trainer's ``--base-fp8`` (torchao float8
  training, rowwise scales, on the frozen block Linears under the LoRA); undone after the
  variant, so the next one runs on the bf16 layers again.
- modifiers, appended to any ``ours`` variant: ``+cudnn`` / ``+flash`` (that variant's SDPA
  kernels instead of ``--attention``), ``+dcudnn`` (diffusers' ``_native_cudnn`` attention
  backend: q/k/v made contiguous, then cuDNN) and ``+budgetF`` (with ``+compile``: inductor's
  ``activation_memory_budget`` = F, i.e. the partitioner recomputes cheap activations in
  backward until the saved ones fit F times the default).

The record's ``ours`` is the fastest bf16 ``ours`` variant (``+fp8`` ones are rows only)
whose peak stays within ``--memory-goal`` GiB (performance.md's 40), named in
``extra.ours_variant``; its first-step error is measured with its own attention kernels
against the reference loop.

All variants run in one process on the same weights, one after the other; each gets a fresh
adapter with the same initialisation, its memory is freed afterwards, and an out-of-memory
(or any other failure) is recorded for that variant while the next one still runs. The
attention kernels are chosen for every variant alike (``--attention``; the default never
picks cuDNN, whose backward crashed on the full-size Flux transformer on an H100).
``rel_err`` compares the loss and the LoRA gradients of each variant, as it runs (compiled,
with its own kernels), with the reference loop on the same first step: same weights, same
inputs, same adapter values (every row has its own ``rel_err``).

Smoke size: the tiny FluxFill on the CPU in fp32, so CI runs the script in seconds.
Prints the table last; writes docs/perf/train_step.json (train_step.smoke.json for smoke).
"""

from __future__ import annotations

import gc
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import bench_parser, perf_record, sync, write_json

GiB = 1024**3
PEAK_TFLOPS = 790e12  # bf16 matrix products measured on an H100 (performance.md)
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class Size:
    resolution: int
    rank: int
    text_tokens: int
    steps: int
    warmup: int


SIZES = {
    "full": Size(resolution=1024, rank=128, text_tokens=512, steps=10, warmup=3),
    "smoke": Size(resolution=64, rank=8, text_tokens=32, steps=3, warmup=1),
}


def flux_forward_flops(config, image_tokens: int, text_tokens: int) -> float:
    """Matrix FLOPs of one Flux transformer forward (linear layers + attention)."""
    d = config.num_attention_heads * config.attention_head_dim
    n = image_tokens + text_tokens
    # per block: q,k,v,out (4d^2) + MLP 4x (8d^2) per token; single blocks: qkv 3d^2 +
    # mlp-in 4d^2 + proj-out 5d^2; attention QK^T and AV: 4 n^2 d.
    block = 2 * n * 12 * d * d + 4 * n * n * d
    blocks = (config.num_layers + config.num_single_layers) * block
    embed = (
        2
        * d
        * (
            image_tokens * (config.in_channels + config.out_channels)
            + text_tokens * config.joint_attention_dim
        )
    )
    return float(blocks + embed)


# --------------------------------------------------------------------------- setup


@dataclass
class Draws:
    """The random inputs of one step, so two loops can be fed identically."""

    eps_x0: torch.Tensor
    eps_masked: torch.Tensor
    noise: torch.Tensor
    index: torch.Tensor  # into the scheduler's training sigmas


class Bench:
    def __init__(self, size: str, device: str):
        from lanepaint.training import objective

        self.size, self.sz, self.device = size, SIZES[size], torch.device(device)
        self.dtype = torch.bfloat16 if size == "full" else torch.float32
        if size == "full":
            from lanepaint.models.fullsize import build_flux_fill_pipeline

            self.pipe = build_flux_fill_pipeline(device, self.dtype)
        else:
            from lanepaint.models.smoke import tiny_flux_fill

            self.pipe = tiny_flux_fill().to(device)
        self.transformer = self.pipe.transformer
        self.geometry = objective.FillGeometry.from_vae_config(self.pipe.vae.config)
        self.schedule = objective.FlowSchedule(self.pipe.scheduler.config)
        res = self.sz.resolution
        gen = torch.Generator().manual_seed(0)
        axis = torch.linspace(-1, 1, res)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        image = torch.stack([xx, yy, xx * yy]) * 0.8 + 0.1 * torch.randn(3, res, res, generator=gen)
        self.image = image.clamp(-1, 1)[None].to(self.device)
        mask = torch.zeros(1, 1, res, res)
        mask[..., res // 2 :, :] = 1.0
        self.mask = mask.to(self.device)
        self.prompt = "road with single white solid lane markings"
        self.batch = self.encode()
        self.guidance = 30.0 if self.transformer.config.guidance_embeds else None
        self.autocast = self.dtype != torch.float32

    def encode(self):
        """The cached features (what the trainer caches once): VAE posteriors + text."""
        from lanepaint.training import data, objective

        latents = data.encode_images(self.pipe.vae, self.image, self.mask)
        embeds, pooled = data.encode_text(
            self.pipe, [self.prompt], [""], max_sequence_length=self.sz.text_tokens
        )
        return objective.collate(
            [{k: v[0] for k, v in latents.items()} | {"mask": self.mask[0, 0]}],
            [{"prompt_embeds": embeds[0], "pooled": pooled[0]}],
            self.device,
        )

    def encoders_to(self, device) -> None:
        for module in (self.pipe.vae, self.pipe.text_encoder, self.pipe.text_encoder_2):
            module.to(device)
        _free(self.device)

    def draws(self, seed: int) -> Draws:
        gen = torch.Generator(self.device).manual_seed(seed)
        b = self.batch

        def randn(like):
            return torch.randn(like.shape, generator=gen, device=self.device)

        return Draws(
            randn(b.latent_std),
            randn(b.masked_std),
            randn(b.latent_std),
            torch.randint(0, len(self.schedule.sigmas), (1,), generator=gen, device=self.device),
        )

    def ours_inputs(self, d: Draws):
        from lanepaint.training import objective

        b, g = self.batch, self.geometry
        index = d.index.cpu()
        return objective.StepInputs(
            x0=g.scale(b.latent_mean + b.latent_std * d.eps_x0),
            noise=d.noise,
            sigmas=self.schedule.sigmas[index].to(self.device),
            timesteps=self.schedule.timesteps[index].to(self.device),
            condition=g.condition(b.masked_mean + b.masked_std * d.eps_masked, b.mask),
            prompt_embeds=b.prompt_embeds,
            pooled=b.pooled,
        )

    # ---------------------------------------------------------------- the two losses

    def reference_loss(self, d: Draws) -> torch.Tensor:
        """The diffusers-example loop, inline: pack, noise, predict, unpack, MSE."""
        from diffusers import FluxFillPipeline as P

        b, vae = self.batch, self.pipe.vae.config
        f = 2 ** (len(vae.block_out_channels) - 1)
        bsz, c, h, w = b.latent_mean.shape
        shift, scale = vae.shift_factor, vae.scaling_factor
        model_input = (b.latent_mean + b.latent_std * d.eps_x0 - shift) * scale
        masked = (b.masked_mean + b.masked_std * d.eps_masked - shift) * scale
        index = d.index.cpu()
        sigmas = self.schedule.sigmas[index].to(self.device).view(-1, 1, 1, 1)
        timesteps = self.schedule.timesteps[index].to(self.device)
        noisy = (1.0 - sigmas) * model_input + sigmas * d.noise
        mask = b.mask[:, 0].view(bsz, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(bsz, f * f, h, w)
        hidden = torch.cat(
            [
                P._pack_latents(noisy, bsz, c, h, w),
                P._pack_latents(masked, bsz, c, h, w),
                P._pack_latents(mask, bsz, f * f, h, w),
            ],
            dim=2,
        )
        guidance = None
        if self.guidance is not None:
            guidance = torch.tensor([self.guidance], device=self.device).expand(bsz)
        ids = P._prepare_latent_image_ids(bsz, h // 2, w // 2, self.device, torch.float32)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            pred = self.transformer(
                hidden_states=hidden,
                timestep=timesteps / 1000,
                guidance=guidance,
                pooled_projections=b.pooled,
                encoder_hidden_states=b.prompt_embeds,
                txt_ids=torch.zeros(b.prompt_embeds.shape[1], 3, device=self.device),
                img_ids=ids,
                return_dict=False,
            )[0]
        pred = P._unpack_latents(pred, h * f, w * f, f)
        target = d.noise - model_input
        return torch.mean(((pred.float() - target.float()) ** 2).reshape(bsz, -1), 1).mean()

    def ours_loss(self, inputs) -> torch.Tensor:
        from lanepaint.training import objective

        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            loss, _ = objective.flow_matching_loss(self.transformer, inputs, self.guidance)
        return loss


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _add_adapter(bench: Bench, seed: int = 0) -> list[torch.nn.Parameter]:
    from lanepaint.training.config import TrainConfig
    from lanepaint.training.lora import add_lora

    torch.manual_seed(seed)
    params = add_lora(
        bench.transformer, TrainConfig(rank=bench.sz.rank, alpha=float(bench.sz.rank))
    )
    bench.transformer.train()
    return params


def _drop_adapter(bench: Bench) -> None:
    from lanepaint.training.lora import ADAPTER

    bench.transformer.delete_adapters(ADAPTER)
    bench.transformer.disable_gradient_checkpointing()
    _free(bench.device)


# --------------------------------------------------------------------------- variants


_BUDGET_RE = re.compile(r"\+budget(0?\.\d+|1(?:\.0*)?)")


def variant_attention(variant: str, default: str) -> str:
    for kernel in ("cudnn", "flash", "efficient"):
        if f"+{kernel}" in variant:
            return kernel
    return default


def variant_budget(variant: str) -> float | None:
    match = _BUDGET_RE.search(variant)
    return float(match.group(1)) if match else None


def check_variant(variant: str) -> None:
    base = _BUDGET_RE.sub("", variant)
    for mod in ("+dcudnn", "+cudnn", "+flash", "+efficient", "+fp8"):
        base = base.replace(mod, "")
    if base not in KNOWN_VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(KNOWN_VARIANTS)}")
    if variant_budget(variant) is not None and "+compile" not in variant:
        raise SystemExit(f"{variant}: +budget needs +compile")


def _revert_fp8(model: torch.nn.Module) -> None:
    """Put plain Linears back where ``convert_fp8_training`` put torchao's Float8Linear
    (same Parameters, so nothing is copied): torchao converts one way only."""
    from torchao.float8.float8_linear import Float8Linear

    for name, module in list(model.named_modules()):
        if type(module) is not Float8Linear:
            continue
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
        plain.weight, plain.bias = module.weight, module.bias
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, plain)


def _step_fn(bench: Bench, variant: str, params, optimizer, attention: str):
    """One optimizer step of ``variant`` (draws from a fresh seed each call)."""
    from lanepaint.training.trainer import attention_context

    attention = variant_attention(variant, attention)

    counter = {"n": 0}
    cached = "uncached" not in variant

    def step() -> float:
        counter["n"] += 1
        d = bench.draws(1000 + counter["n"])
        with attention_context(attention, bench.device):
            if variant == "reference":
                loss = bench.reference_loss(d)
            else:
                if not cached:
                    with torch.no_grad():
                        bench.batch = bench.encode()
                loss = bench.ours_loss(bench.ours_inputs(d))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def run_variant(bench: Bench, variant: str, attention: str, steps: int, warmup: int) -> dict:
    device = bench.device
    row: dict = {"variant": variant, "step_s": None, "peak_gib": None, "error": None}
    optimizer = params = None
    try:
        bench.encoders_to(device if "uncached" in variant else "cpu")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        params = _add_adapter(bench)
        if "+fp8" in variant:
            from lanepaint.models.presets import convert_fp8_training

            row["fp8_linears"] = convert_fp8_training(bench.transformer)
        if "+gc" in variant:
            bench.transformer.enable_gradient_checkpointing()
        dcudnn = "+dcudnn" in variant and device.type == "cuda"  # cuDNN: CUDA only
        if dcudnn:
            # diffusers' own cuDNN backend: contiguous q/k/v, then cuDNN attention
            bench.transformer.set_attention_backend("_native_cudnn")
        if "+compile" in variant:
            # a fresh compile per variant: the budget is read when the graphs are built
            torch._dynamo.reset()
            torch._functorch.config.activation_memory_budget = variant_budget(variant) or 1.0
            from lanepaint.models.kernels import compile_regions

            compile_regions(bench.transformer)
        # The variant's own first step on fixed inputs (compiled variants compile here).
        row["probe"] = _probe_grads(bench, variant, params, attention)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fused = device.type == "cuda" and variant != "reference"
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, fused=fused)
        step = _step_fn(bench, variant, params, optimizer, attention)
        for _ in range(warmup):
            step()
        times = []
        for _ in range(steps):
            sync(device)
            t0 = time.perf_counter()
            row["loss"] = step()
            sync(device)
            times.append(time.perf_counter() - t0)
        row["step_s"] = statistics.median(times)
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GiB
    except torch.OutOfMemoryError:
        row["error"] = "OOM"
    except Exception as exc:  # record and go on with the next variant
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        del optimizer, params
        try:
            if "+dcudnn" in variant and device.type == "cuda":
                bench.transformer.reset_attention_backend()
            _drop_adapter(bench)
            if "+fp8" in variant:
                _revert_fp8(bench.transformer)
        except Exception as exc:  # a broken adapter must not hide the variant's own error
            row["error"] = row["error"] or f"cleanup: {exc}"
    return row


def _probe_grads(bench: Bench, variant: str, params, attention: str) -> tuple[float, torch.Tensor]:
    """Loss and LoRA gradients of ``variant`` for fixed inputs and fixed adapter values.

    LoRA B starts at zero (no gradient would reach A), so the adapter is set to small
    random values first, the same for every variant; it is restored afterwards. Each
    variant is checked as it runs (compiled, its own kernels), against the reference's.
    """
    from lanepaint.training.trainer import attention_context

    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * 1e-2)
    d = bench.draws(7)
    with attention_context(variant_attention(variant, attention), bench.device):
        if variant == "reference":
            loss = bench.reference_loss(d)
        else:
            loss = bench.ours_loss(bench.ours_inputs(d))
        loss.backward()
    grad = torch.cat([p.grad.flatten() for p in params]).float().cpu()
    with torch.no_grad():
        for p, value in zip(params, saved, strict=True):
            p.copy_(value)
            p.grad = None
    return float(loss.detach()), grad


def _probe_error(ref: tuple[float, torch.Tensor], ours: tuple[float, torch.Tensor]) -> dict:
    (ref_loss, ref_grad), (our_loss, our_grad) = ref, ours
    return {
        "loss": abs(our_loss - ref_loss) / max(abs(ref_loss), 1e-30),
        "grad": float((our_grad - ref_grad).norm() / ref_grad.norm().clamp_min(1e-30)),
    }


# --------------------------------------------------------------------------- main


DEFAULT_VARIANTS = ("reference", "ours", "ours+gc", "ours-uncached", "ours-uncached+gc")
KNOWN_VARIANTS = (*DEFAULT_VARIANTS, "ours+compile", "ours+gc+compile")


def run(
    size: str,
    out_dir: Path,
    attention: str = "auto",
    steps: int | None = None,
    warmup: int | None = None,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    memory_goal: float = 40.0,
) -> tuple[dict, list[dict]]:
    device = "cuda" if size == "full" else "cpu"
    if size == "full" and not torch.cuda.is_available():
        raise SystemExit("--size full needs a CUDA GPU")
    bench = Bench(size, device)
    sz = bench.sz
    steps, warmup = steps or sz.steps, warmup if warmup is not None else sz.warmup
    for v in variants:
        check_variant(v)
    # the reference and ours are always measured; compiled variants last (blocks stay compiled)
    order = ["reference", "ours", *(v for v in variants if v not in ("reference", "ours"))]
    order.sort(key=lambda v: "+compile" in v)
    rows = []
    for v in order:
        rows.append(run_variant(bench, v, attention, steps, warmup))
        shown = {k: x for k, x in rows[-1].items() if k != "probe"}
        print(f"done {v}: {shown}", file=sys.stderr, flush=True)
    ref = next(r for r in rows if r["variant"] == "reference")
    for r in rows:
        r["ratio"] = (ref["step_s"] / r["step_s"]) if ref["step_s"] and r["step_s"] else None
    fits = [
        r
        for r in rows
        if r["variant"].startswith("ours")
        and "+fp8" not in r["variant"]  # changes the numerics: an opt-in, its own row only
        and r["step_s"]
        and (r["peak_gib"] is None or r["peak_gib"] <= memory_goal)
    ]
    ours = min(fits, key=lambda r: r["step_s"]) if fits else rows[1]
    ref_probe = ref.pop("probe", None)
    for r in rows:
        probe = r.pop("probe", None)
        r["rel_err"] = _probe_error(ref_probe, probe) if ref_probe and probe else None
    errors = ours["rel_err"] or {"loss": float("nan"), "grad": float("nan")}
    c = bench.transformer.config
    h, w = bench.batch.latent_mean.shape[-2:]
    flops = flux_forward_flops(c, (h // 2) * (w // 2), sz.text_tokens)
    floor_s = 3 * flops / PEAK_TFLOPS  # forward + backward (~2x forward)
    record = perf_record(
        "train_step",
        ours_s=ours["step_s"] or float("nan"),
        reference_s=ref["step_s"] or float("nan"),
        rel_err=max(errors.values()),
        floor_s=float(f"{floor_s:.4g}"),
        peak_gib=ours["peak_gib"],
        extra={
            "size": size,
            "unit": f"one optimizer step, {sz.resolution}^2, batch 1, LoRA rank {sz.rank}",
            "attention": attention,
            "ours_variant": ours["variant"],
            "ours_attention": variant_attention(ours["variant"], attention),
            "memory_goal_gib": memory_goal,
            "forward_tflop": round(flops / 1e12, 3),
            "rel_err_parts": errors,
            "variants": rows,
        },
    )
    write_json([record], out_dir, size)
    return record, rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'variant':<30} {'step_s':>8} {'peak_gib':>9} {'ref/ours':>9}  note"]
    for r in rows:
        step = "-" if r["step_s"] is None else f"{r['step_s']:.4f}"
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        lines.append(f"{r['variant']:<30} {step:>8} {peak:>9} {ratio:>9}  {r['error'] or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--attention", choices=("auto", "flash", "efficient", "math", "cudnn"), default="auto"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, of {', '.join(KNOWN_VARIANTS)} (reference and ours always "
        "run), each optionally with +fp8, +cudnn/+flash and, compiled, +budgetF",
    )
    parser.add_argument("--memory-goal", type=float, default=40.0, help="GiB; see the doc")
    args = parser.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    record, rows = run(
        args.size,
        args.out_dir,
        args.attention,
        args.steps,
        args.warmup,
        variants,
        args.memory_goal,
    )
    print(json.dumps({k: v for k, v in record.items() if k != "extra"}))
    print(
        f"train_step {record['card']}: floor {record['floor_s']} s, rel_err {record['rel_err']:.2e}"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
