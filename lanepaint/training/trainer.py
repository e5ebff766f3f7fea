"""The FluxFill LoRA training loop (diffusers + peft + accelerate).

One call of :func:`train` runs in every process of an accelerate/torchrun launch. Order:
read the CSV, cache latents and text embeddings (the rows split over the node's
processes), release the VAE and text encoders, add the LoRA, resume from the newest
complete checkpoint when one exists, train, publish checkpoints on the way, save the final
LoRA and the reports.

Exact resume rests on what every checkpoint holds: the accelerate state (optimizer, LR
scheduler, each process's RNG states for dropout, LoRA weights in fp32) and the number of
samples seen (the data order is a pure function of seed, epoch and position), plus the
position of each row in that stream (each row draws its noise, sigma and VAE samples from
a generator seeded by seed and position, whatever process or micro-batch it lands in).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lanepaint.data.fluxfill import DatasetFormatError
from lanepaint.io import reports, storage
from lanepaint.models.loaders import load_flux_fill
from lanepaint.models.root import FLUX_FILL_DIR, ModelRoot
from lanepaint.training import checkpoint as ckpt
from lanepaint.training import data as tdata
from lanepaint.training import objective
from lanepaint.training.config import TrainConfig, fingerprint_diff
from lanepaint.training.lora import WEIGHT_NAME, add_lora, load_lora_into, save_lora
from lanepaint.training.plot import loss_csv, loss_png

log = logging.getLogger(__name__)

STAGE = "train-lora"
LORA_DIR = "lora"
LORA_INFO = "lanepaint_lora.json"
LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; training stops, checkpoints are kept."""


@dataclass
class TrainResult:
    output_dir: str
    lora_dir: str
    summary: dict
    status: str  # complete | stopped | skipped


# --------------------------------------------------------------------------- helpers


def weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def attention_context(backend: str, device: torch.device):
    """A fresh SDPA-kernel context (single use) for forward *and* backward.

    Backward is covered too because gradient checkpointing recomputes attention there.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    from lanepaint.models.kernels import kernel_list

    # Training's auto never picks cuDNN: its backward crashed in the eager Flux step.
    return sdpa_kernel(kernel_list("no-cudnn" if backend == "auto" else backend))


def sample_seed(seed: int, position: int) -> int:
    """Seed of the generator for the row at ``position`` of the sample stream."""
    digest = hashlib.sha256(f"{seed}:{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generators_for(seed: int, positions: list[int], device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(sample_seed(seed, g)) for g in positions]


EVAL_SIGMAS = (0.25, 0.5, 0.75)


def evaluation_loss(
    model,
    items: list[tuple[dict, dict]],
    geometry,
    schedule,
    guidance,
    seed: int,
    device,
    attention: str = "auto",
) -> float:
    """Mean loss over ``items`` x EVAL_SIGMAS with noise fixed by ``seed`` (no dropout).

    The same inputs at every call, so its trend is the training's trend without the noise
    of random sigmas; it uses its own generator and leaves every RNG state untouched.
    """
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad(), attention_context(attention, device):
            for i, (lat, txt) in enumerate(items):
                batch = objective.collate([lat], [txt], device)
                for j, sigma in enumerate(EVAL_SIGMAS):
                    # negative positions: never used by training rows
                    gens = generators_for(seed, [-1 - i * len(EVAL_SIGMAS) - j], device)
                    inputs = objective.sample_inputs(batch, geometry, schedule, gens)
                    inputs.sigmas.fill_(sigma)
                    inputs.timesteps.fill_(sigma * schedule.num_train_timesteps)
                    loss, _ = objective.flow_matching_loss(model, inputs, guidance)
                    total += float(loss)
    finally:
        model.train(was_training)
    return total / (len(items) * len(EVAL_SIGMAS))


def default_work_dir(config: TrainConfig) -> Path:
    base = config.work_dir or os.environ.get("LANEPAINT_WORK_DIR") or tempfile.gettempdir()
    return Path(base) / "lanepaint-train"


def _model_identity(flux_dir: Path) -> dict:
    """The transformer's config and weight sizes: what a resumed run must load again."""
    folder = flux_dir / "transformer"
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        h.update(f"{path.name}:{path.stat().st_size}".encode())
    return {"transformer": h.hexdigest()[:16]}


def _read_json(uri: str) -> dict | None:
    try:
        value = json.loads(storage.read_text(uri))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- caching


def _cache_features(
    accelerator,
    pipe,
    flux_dir: Path,
    data: tdata.TrainData,
    local_root: Path,
    config: TrainConfig,
    cache_root: Path,
) -> tuple[list[tdata.CacheEntry], tdata.FeatureCache]:
    """Encode this process's share of rows and prompts; every process gets every entry."""
    cache = tdata.FeatureCache(cache_root)
    dtype_tag = str(next(pipe.vae.parameters()).dtype)
    vae_id = tdata.component_id([flux_dir / "vae"], dtype_tag)
    text_id = tdata.component_id(
        [flux_dir / d for d in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")],
        dtype_tag,
    )
    shards = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    shard = accelerator.local_process_index

    def key_of(row) -> str:
        return tdata.text_key(row.prompt, row.prompt_2, config.max_sequence_length, text_id)

    pairs = sorted({(r.prompt, r.prompt_2 or r.prompt) for r in data.rows})
    tdata.build_text_cache(pipe, cache, pairs[shard::shards], text_id, config.max_sequence_length)
    mine = data.rows[shard::shards]
    entries = tdata.build_latent_cache(
        pipe.vae, cache, mine, local_root, config.resolution, vae_id, key_of, config.workers
    )
    index = f"{data.csv_sha256[:16]}-{vae_id[:12]}-{text_id[:12]}-r{config.resolution}"
    cache.write_index(f"{index}-{shard}of{shards}", [e.__dict__ for e in entries])
    accelerator.wait_for_everyone()
    merged: list[tdata.CacheEntry] = []
    for i in range(shards):
        merged += [tdata.CacheEntry(**e) for e in cache.read_index(f"{index}-{i}of{shards}")]
    merged.sort(key=lambda e: e.line)
    return merged, cache


# --------------------------------------------------------------------------- training


def train(
    train_data: str, model_root: str, output_dir: str, config: TrainConfig | None = None
) -> TrainResult:
    """Train a FluxFill LoRA on ``train_data`` into ``output_dir``; see the module doc."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed
    from diffusers.optimization import get_scheduler

    config = config or TrainConfig()
    started = time.perf_counter()
    timings = reports.Timings()
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    main = accelerator.is_main_process
    device = accelerator.device
    dtype = weight_dtype(config.mixed_precision)
    set_seed(config.seed)

    root = ModelRoot.open(model_root)
    flux_dir = root / FLUX_FILL_DIR
    meta = root.metadata()
    with timings.phase("read_csv"):
        data = tdata.read_train_data(train_data)
    fingerprint = {
        **config.fingerprint(),
        "train_data_csv_sha256": data.csv_sha256,
        "model": _model_identity(flux_dir),
        "model_set": meta["model_set"],
        "num_processes": accelerator.num_processes,
    }
    lora_uri = storage.join(output_dir, LORA_DIR)

    previous = _read_json(storage.join(output_dir, reports.SUMMARY_JSON))
    if previous and previous.get("status") == "complete":
        finished = storage.exists(storage.join(lora_uri, WEIGHT_NAME))
        if previous.get("fingerprint") == fingerprint and finished:
            log.info("%s is already trained with these settings; nothing to do", output_dir)
            return TrainResult(output_dir, lora_uri, previous, "skipped")
        if previous.get("fingerprint") != fingerprint:
            raise ckpt.ResumeMismatchError(
                f"{output_dir} holds a finished LoRA trained with other settings "
                f"({'; '.join(fingerprint_diff(previous.get('fingerprint') or {}, fingerprint))})"
                "; use another --output-dir"
            )
    latest = ckpt.latest_complete(output_dir)
    if latest is not None:
        saved = latest[1].get("fingerprint") or {}
        if saved != fingerprint:
            raise ckpt.ResumeMismatchError(
                f"refusing to resume from {latest[0].uri}: it was made with other settings ("
                f"{'; '.join(fingerprint_diff(saved, fingerprint))}); use another "
                f"--output-dir, or delete {storage.join(output_dir, ckpt.CHECKPOINTS)} "
                "to start over"
            )

    work = default_work_dir(config)
    run_dir = work / hashlib.sha256(output_dir.encode()).hexdigest()[:16]
    with timings.phase("fetch_data"), accelerator.local_main_process_first():
        local_root = tdata.fetch_dataset(data, work / "data", config.workers)

    with timings.phase("load_model"):
        pipe = load_flux_fill(root, dtype, device)
    with timings.phase("cache"):
        entries, cache = _cache_features(
            accelerator, pipe, flux_dir, data, local_root, config, work / "cache"
        )
    geometry = objective.FillGeometry.from_vae_config(pipe.vae.config)
    schedule = objective.FlowSchedule(pipe.scheduler.config)
    transformer = pipe.transformer
    guidance = config.guidance_scale if transformer.config.guidance_embeds else None
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)  # report the training peak, not caching's

    failures = reports.Failures()
    for rej in data.rejections:
        failures.add(rej.image or f"line {rej.line}", rej.reason, line=rej.line)
    usable = []
    for entry in entries:
        if entry.latent_key is None:
            failures.add(entry.image, entry.reason or "unusable row", line=entry.line)
        else:
            usable.append(entry)
    failures.records.sort(key=lambda r: r["line"])
    rows_info = {
        "input_rows": len(data.rows) + len(data.rejections),
        "used_rows": len(usable),
        "rejected": len(failures),
        "rejected_by_reason": failures.by_reason(),
        "unique_prompts": len({e.text_key for e in usable}),
    }
    base_summary = {
        "stage": STAGE,
        **meta,
        "train_data": train_data,
        "output": output_dir,
        "lora_dir": lora_uri,
        "config": config.as_dict(),
        "fingerprint": fingerprint,
        **rows_info,
    }
    if not usable:
        if main:
            summary = {**base_summary, "status": "failed", "error": "no usable rows"}
            reports.write_reports(output_dir, f"{STAGE}: {output_dir}", summary, failures)
        raise DatasetFormatError(
            f"no usable rows in {train_data}: {len(failures)} rejected "
            f"({failures.by_reason()}); see {storage.join(output_dir, reports.FAILURES)}"
        )

    # LoRA, optimizer, schedule
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = add_lora(transformer, config)
    transformer.train()
    if config.attention_backend == "cudnn" and device.type == "cuda":
        # diffusers' own cuDNN backend: q/k/v made contiguous, then cuDNN attention (1.7x
        # FlashAttention-2's forward + backward at 1024², docs/perf/attention.json).
        transformer.set_attention_backend("_native_cudnn")
    if config.compile and device.type == "cuda":
        # Read when the graphs are built, so it is set before the first step.
        torch._functorch.config.activation_memory_budget = config.activation_memory_budget
        transformer.compile_repeated_blocks()
        log.info(
            "compiled the transformer blocks (activation memory budget %.2f)",
            config.activation_memory_budget,
        )
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
        fused=device.type == "cuda",
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_train_steps,
    )
    model, optimizer = accelerator.prepare(transformer, optimizer)
    # Not prepared: accelerate would step it once per process per optimizer step.
    accelerator.register_for_checkpointing(lr_scheduler)

    def save_hook(models, weights, out_dir):
        if main:
            for m in models:
                save_lora(out_dir, accelerator.unwrap_model(m))
        weights.clear()  # LoRA only; the frozen 12 B weights are never checkpointed

    def load_hook(models, in_dir):
        while models:
            load_lora_into(accelerator.unwrap_model(models.pop()), in_dir)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    # Resume
    step, samples_seen, history, evals, resumed_from = 0, 0, [], [], None
    checkpoint_failures: list[dict] = []
    with timings.phase("resume"):
        choice = [None]
        if main and latest is not None:
            choice = [_pick_checkpoint(output_dir, run_dir / "resume")]
        broadcast_object_list(choice)
        if choice[0] is not None:
            folder = Path(choice[0])
            accelerator.load_state(str(folder))
            state = json.loads((folder / ckpt.STATE).read_text())
            step, samples_seen = int(state["step"]), int(state["samples_seen"])
            history = state.get("history", [])
            evals = state.get("evals", [])
            checkpoint_failures = state.get("checkpoint_failures", [])
            resumed_from = step
            log.info("resumed from step %d (%d samples seen)", step, samples_seen)
    accelerator.wait_for_everyone()
    if main:
        ckpt.prune(output_dir, config.checkpoints_total_limit, all_incomplete=True)
        shutil.rmtree(run_dir / "resume", ignore_errors=True)

    publisher = ckpt.Publisher(output_dir, config.checkpoints_total_limit) if main else None
    order = tdata.SampleOrder(len(usable), config.seed)
    processes, rank = accelerator.num_processes, accelerator.process_index
    global_batch = config.batch_size * processes * config.grad_accum

    def load_items(positions: list[int]) -> list[tuple[int, dict, dict]]:
        out = []
        for g in positions:
            e = usable[order[g]]
            out.append((g, cache.get_latents(e.latent_key), cache.get_text(e.text_key)))
        return out

    def micro_batches(first_step: int, first_seen: int):
        seen = first_seen
        for s in range(first_step, config.max_train_steps):
            for a in range(config.grad_accum):
                positions = tdata.micro_batch_positions(seen, a, rank, processes, config.batch_size)
                yield s, a, positions
            seen += global_batch

    def save_checkpoint(at_step: int) -> None:
        staging = run_dir / "staging" / ckpt.checkpoint_name(at_step)
        if main:
            publisher.wait()
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        error = ""
        try:
            accelerator.save_state(str(staging))
            if main:
                state = {
                    "step": at_step,
                    "samples_seen": samples_seen,
                    "fingerprint": fingerprint,
                    "history": history,
                    "evals": evals,
                    "checkpoint_failures": checkpoint_failures + publisher.failures,
                    **meta,
                }
                (staging / ckpt.STATE).write_text(json.dumps(state) + "\n")
        except Exception as exc:  # full disk while staging (torch.save raises RuntimeError)
            error = f"{type(exc).__name__}: {exc}"
        ok = torch.tensor([0 if error else 1], device=device)
        all_ok = bool(accelerator.gather(ok).min().item())
        if not main:
            return
        if all_ok:
            manifest = {
                "step": at_step,
                "samples_seen": samples_seen,
                "fingerprint": fingerprint,
                **meta,
                "created_at": reports.now_iso(),
            }
            publisher.submit(at_step, staging, manifest)
        else:
            log.error("checkpoint at step %d not written: %s", at_step, error or "another process")
            publisher.record_failure(at_step, error or "staging failed on another process")
            shutil.rmtree(staging, ignore_errors=True)

    nan_error: NonFiniteLossError | None = None
    stopped = False
    step_times: list[float] = []
    eval_items = [
        (cache.get_latents(e.latent_key), cache.get_text(e.text_key))
        for e in usable[: config.eval_rows]
    ]

    def evaluate(at_step: int) -> None:
        """Main process only; the others run ahead and wait in the next all-reduce."""
        if not (main and eval_items) or any(e["step"] == at_step for e in evals):
            return
        with timings.phase("eval"):
            value = evaluation_loss(
                accelerator.unwrap_model(model),
                eval_items,
                geometry,
                schedule,
                guidance,
                config.seed,
                device,
                config.attention_backend,
            )
        evals.append({"step": at_step, "eval_loss": value})
        log.info("step %d eval loss %.5f", at_step, value)

    evaluate(step)
    # A time-boxed run stops (with a checkpoint) at stop_after_steps; a rerun resumes there.
    stop_at = config.stop_after_steps
    limit = min(config.max_train_steps, stop_at or config.max_train_steps)
    bar = tqdm(
        total=config.max_train_steps, initial=step, disable=not main, desc=STAGE, unit="step"
    )
    train_start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            stream = micro_batches(step, samples_seen)
            nxt = next(stream, None)
            pending = prefetch.submit(load_items, nxt[2]) if nxt else None
            while nxt is not None and step < limit:
                t0 = time.perf_counter()
                lr = lr_scheduler.get_last_lr()[0]
                loss_sum = torch.zeros((), device=device)
                for a in range(config.grad_accum):
                    items = pending.result()
                    nxt = next(stream, None)
                    pending = prefetch.submit(load_items, nxt[2]) if nxt else None
                    groups: dict[tuple, list] = {}
                    for item in items:
                        groups.setdefault(tuple(item[1]["latent_mean"].shape), []).append(item)
                    for gi, group in enumerate(groups.values()):
                        last = a == config.grad_accum - 1 and gi == len(groups) - 1
                        batch = objective.collate(
                            [g[1] for g in group], [g[2] for g in group], device
                        )
                        inputs = objective.sample_inputs(
                            batch,
                            geometry,
                            schedule,
                            generators_for(config.seed, [g[0] for g in group], device),
                            config.weighting_scheme,
                            config.logit_mean,
                            config.logit_std,
                            config.mode_scale,
                        )
                        share = len(group) / (config.batch_size * config.grad_accum)
                        # Gradients are all-reduced once per optimizer step, on the last backward.
                        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
                        with sync, attention_context(config.attention_backend, device):
                            loss, _ = objective.flow_matching_loss(model, inputs, guidance)
                            accelerator.backward(loss * share)
                        loss_sum += loss.detach() * share
                step_loss = accelerator.reduce(loss_sum, reduction="mean").item()
                if not math.isfinite(step_loss):
                    raise NonFiniteLossError(f"loss is {step_loss} at step {step + 1}")
                grad_norm = float(accelerator.clip_grad_norm_(params, config.max_grad_norm))
                # fp16's loss scaler meets inf gradients by design and skips those steps
                if not math.isfinite(grad_norm) and config.mixed_precision != "fp16":
                    raise NonFiniteLossError(f"gradient norm is {grad_norm} at step {step + 1}")
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                samples_seen += global_batch
                dt = time.perf_counter() - t0
                step_times.append(dt)
                history.append(
                    {
                        "step": step,
                        "loss": step_loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "samples_seen": samples_seen,
                        "step_s": round(dt, 4),
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                if main and (step % config.log_every == 0 or step == 1):
                    log.info(
                        "step %d/%d loss %.5f lr %.3g grad_norm %.4g %.3fs/step",
                        step,
                        config.max_train_steps,
                        step_loss,
                        lr,
                        grad_norm,
                        dt,
                    )
                if step % config.checkpointing_steps == 0 or step == stop_at:
                    evaluate(step)
                    with timings.phase("checkpoint"):
                        save_checkpoint(step)
        stopped = step < config.max_train_steps
    except NonFiniteLossError as exc:
        nan_error = exc
    finally:
        bar.close()
        timings.seconds["train"] = time.perf_counter() - train_start
        if publisher is not None:
            publisher.close()
            checkpoint_failures = checkpoint_failures + publisher.failures

    status = "failed" if nan_error else "stopped" if stopped else "complete"
    if status == "complete":
        evaluate(step)
    error_text = None
    if nan_error is not None:
        error_text = (
            f"{nan_error}: training stopped without applying this step. The newest complete "
            f"checkpoint under {storage.join(output_dir, ckpt.CHECKPOINTS)} is kept; lower "
            "the learning rate or check the data, then rerun to resume from it"
        )
    accelerator.wait_for_everyone()
    if status == "complete" and main:
        with timings.phase("save_lora"), storage.local_dir_for_write(lora_uri) as tmp:
            save_lora(tmp, accelerator.unwrap_model(model))
            info = {
                "base_model": FLUX_FILL_DIR,
                **meta,
                "rank": config.rank,
                "alpha": config.alpha,
                "target_modules": list(config.target_modules),
                "steps": step,
                "fingerprint": fingerprint,
            }
            (tmp / LORA_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    summary = _summary(
        base_summary,
        status,
        step,
        samples_seen,
        history,
        evals,
        step_times,
        resumed_from,
        checkpoint_failures,
        publisher,
        timings,
        started,
        device,
        error_text,
    )
    if main:
        _write_outputs(output_dir, summary, failures, history, evals, meta)
        shutil.rmtree(run_dir / "staging", ignore_errors=True)
    accelerator.wait_for_everyone()
    if nan_error is not None:
        raise NonFiniteLossError(error_text) from nan_error
    return TrainResult(output_dir, lora_uri, summary, status)


def _pick_checkpoint(output_dir: str, local_dir: Path) -> str | None:
    """The newest checkpoint that verifies against its manifest, as a local folder."""
    for info in reversed(ckpt.list_checkpoints(output_dir)):
        if not info.complete:
            continue
        manifest = ckpt.read_manifest(info.uri)
        if manifest is None:
            continue
        try:
            return str(ckpt.fetch(info, manifest, local_dir / ckpt.checkpoint_name(info.step)))
        except (ckpt.CheckpointError, FileNotFoundError, OSError) as exc:
            log.warning("skipping damaged checkpoint %s: %s", info.uri, exc)
    return None


def _summary(
    base: dict,
    status: str,
    step: int,
    samples_seen: int,
    history: list[dict],
    evals: list[dict],
    step_times: list[float],
    resumed_from: int | None,
    checkpoint_failures: list[dict],
    publisher,
    timings: reports.Timings,
    started: float,
    device: torch.device,
    error: str | None,
) -> dict:
    losses = [h["loss"] for h in history]
    window = max(1, min(10, len(losses) // 4 or 1))
    summary = {
        **base,
        "status": status,
        "steps_done": step,
        "max_train_steps": base["config"]["max_train_steps"],
        "samples_seen": samples_seen,
        "epochs": round(samples_seen / max(1, base["used_rows"]), 3),
        "resumed_from_step": resumed_from,
        "first_loss": round(statistics.fmean(losses[:window]), 6) if losses else None,
        "last_loss": round(statistics.fmean(losses[-window:]), 6) if losses else None,
        "eval_loss_start": round(evals[0]["eval_loss"], 6) if evals else None,
        "eval_loss_end": round(evals[-1]["eval_loss"], 6) if evals else None,
        "eval_losses": {str(e["step"]): round(e["eval_loss"], 6) for e in evals},
        "step_time_median_s": round(statistics.median(step_times), 4) if step_times else None,
        "checkpoints_published": publisher.published if publisher else [],
        "checkpoint_failures": checkpoint_failures,
        "timings_s": {**timings.as_dict(), "total": round(time.perf_counter() - started, 4)},
        "finished_at": reports.now_iso(),
    }
    if device.type == "cuda":
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if error:
        summary["error"] = error
    return summary


def _write_outputs(
    output_dir: str,
    summary: dict,
    failures: reports.Failures,
    history: list[dict],
    evals: list[dict],
    meta: dict,
) -> None:
    """loss.csv, loss.png, then summary.json/md and failures.jsonl (the summary last)."""
    storage.write_text(
        storage.join(output_dir, LOSS_CSV), loss_csv(history, evals, meta["model_set"])
    )
    title = f"{STAGE} loss ({summary['steps_done']} steps) - {meta['model_set_label']}"
    storage.write_bytes(
        storage.join(output_dir, LOSS_PNG), loss_png(history, evals, title, meta["model_set"])
    )
    notes = [f"model set: {meta['model_set_label']}"]
    if summary.get("error"):
        notes.append(f"error: {summary['error']}")
    reports.write_reports(output_dir, f"{STAGE}: {output_dir}", summary, failures, notes)
