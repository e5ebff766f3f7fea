"""The FluxFill LoRA training loop (diffusers + peft + accelerate).

One call of :func:`train` runs in every process of an accelerate/torchrun launch; its
steps are the methods of :class:`TrainRun`, in order: ``check`` (read the CSV; skip a run
finished with these settings, refuse an output made with others), ``prepare`` (cache
latents and text embeddings, the rows split over the node's processes, then release the
VAE and text encoders), ``build_model`` (LoRA, optimizer, schedule), ``resume`` (from the
newest complete checkpoint when one exists), ``train_loop`` (publishing checkpoints on the
way) and ``finish`` (final LoRA and the reports).

Exact resume rests on what every checkpoint holds: the accelerate state (optimizer, each
process's RNG states for dropout, LoRA weights in fp32), the LR scheduler's state (JSON),
and the number of samples seen (the data order is a pure function of seed, epoch and
position), plus the position of each row in that stream (each row draws its noise, sigma
and VAE samples from a generator seeded by seed and position, whatever process or
micro-batch it lands in).
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
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from lanepaint.data.fluxfill import DatasetFormatError
from lanepaint.io import reports, storage
from lanepaint.kit import StageReport, StageResult, all_settings, output_settings, settings_key
from lanepaint.models.kernels import compile_regions
from lanepaint.models.loaders import load_flux_fill
from lanepaint.models.root import FLUX_FILL_DIR, ModelRoot
from lanepaint.training import checkpoint as ckpt
from lanepaint.training import data as tdata
from lanepaint.training import objective
from lanepaint.training.config import TrainConfig, settings_diff
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


@dataclass
class Progress:
    """Where training stands: what a checkpoint saves and a resume restores."""

    step: int = 0
    samples_seen: int = 0
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    checkpoint_failures: list[dict] = field(default_factory=list)
    resumed_from: int | None = None


class Feed:
    """The micro-batches of the sample stream, each loaded on a thread while the one before
    it trains."""

    def __init__(self, stream: Iterator[list[int]], load: Callable, pool: Executor):
        self._stream, self._load, self._pool = stream, load, pool
        self._advance()

    def _advance(self) -> None:
        positions = next(self._stream, None)
        self.exhausted = positions is None
        self._pending = None if positions is None else self._pool.submit(self._load, positions)

    def take(self) -> list[tuple[int, dict, dict]]:
        items = self._pending.result()
        self._advance()
        return items


def train(
    train_data: str, model_root: str, output_dir: str, config: TrainConfig | None = None
) -> StageResult:
    """Train a FluxFill LoRA on ``train_data`` into ``output_dir``; see the module doc."""
    run = TrainRun(train_data, model_root, output_dir, config or TrainConfig())
    finished = run.check()
    if finished is not None:
        return finished
    run.prepare()
    run.build_model()
    run.resume()
    return run.finish(run.train_loop())


class TrainRun:
    """One process's training run: the state that the steps of :func:`train` share."""

    def __init__(self, train_data: str, model_root: str, output_dir: str, config: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.train_data, self.output_dir, self.config = train_data, output_dir, config
        self.report = StageReport(STAGE, output_dir)
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)
        self.main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        set_seed(config.seed)
        self.root = ModelRoot.open(model_root)
        self.flux_dir = self.root / FLUX_FILL_DIR
        self.meta = self.root.metadata()
        self.report.set_models(self.meta)
        self.lora_uri = storage.join(output_dir, LORA_DIR)
        self.work = default_work_dir(config)
        self.run_dir = self.work / hashlib.sha256(output_dir.encode()).hexdigest()[:16]
        self.progress = Progress()
        self.publisher: ckpt.Publisher | None = None
        self.step_times: list[float] = []

    # ----------------------------------------------------------------------- check

    def check(self) -> StageResult | None:
        """Read the CSV and decide: skip (the output holds a LoRA finished with these
        settings), refuse (its LoRA or newest checkpoint was made with other settings), or
        go on (fresh or resumed). ``None`` means go on."""
        with self.report.phase("read_csv"):
            self.data = tdata.read_train_data(self.train_data)
        identity = {
            "train_data_csv_sha256": self.data.csv_sha256,
            "model": _model_identity(self.flux_dir),
            "model_set": self.meta["model_set"],
            "num_processes": self.accelerator.num_processes,
        }
        report = self.report
        report.settings = output_settings(self.config)
        report.settings_key = settings_key(self.config, **identity)
        # What a checkpoint must match to be resumed (and names each difference when not).
        self.settings = {**report.settings, **identity}
        report.details = {
            "train_data": self.train_data,
            "lora_dir": self.lora_uri,
            "model_root": self.meta["model_root"],
            "identity": identity,
            "config": all_settings(self.config),
        }
        previous = _read_json(storage.join(self.output_dir, reports.SUMMARY_JSON))
        if previous and (previous.get("details") or {}).get("status") == "complete":
            if previous.get("settings_key") != report.settings_key:
                saved = {
                    **(previous.get("settings") or {}),
                    **previous["details"].get("identity", {}),
                }
                raise ckpt.ResumeMismatchError(
                    f"{self.output_dir} holds a finished LoRA trained with other settings "
                    f"({'; '.join(settings_diff(saved, self.settings))}); use another --output-dir"
                )
            if storage.exists(storage.join(self.lora_uri, WEIGHT_NAME)):
                log.info(
                    "%s is already trained with these settings; nothing to do", self.output_dir
                )
                return StageResult(self.output_dir, _as_skipped(previous))
        self.latest = ckpt.latest_complete(self.output_dir)
        if self.latest is not None:
            saved = ckpt.saved_settings(self.latest[1])
            if saved != self.settings:
                raise ckpt.ResumeMismatchError(
                    f"refusing to resume from {self.latest[0].uri}: it was made with other "
                    f"settings ({'; '.join(settings_diff(saved, self.settings))}); use another "
                    f"--output-dir, or delete {storage.join(self.output_dir, ckpt.CHECKPOINTS)} "
                    "to start over"
                )
        return None

    # ----------------------------------------------------------------------- prepare

    def prepare(self) -> None:
        """Fetch the rows, encode them once (VAE latents, text embeddings), release the
        encoders and keep the usable rows; the rejected ones are the report's failures."""
        config, acc = self.config, self.accelerator
        with self.report.phase("fetch_data"), acc.local_main_process_first():
            local_root = tdata.fetch_dataset(self.data, self.work / "data", config.workers)
        with self.report.phase("load_model"):
            pipe = load_flux_fill(self.root, weight_dtype(config.mixed_precision), self.device)
        with self.report.phase("cache"):
            entries, self.cache = _cache_features(
                acc, pipe, self.flux_dir, self.data, local_root, config, self.work / "cache"
            )
        self.geometry = objective.FillGeometry.from_vae_config(pipe.vae.config)
        self.schedule = objective.FlowSchedule(pipe.scheduler.config)
        self.transformer = pipe.transformer
        self.guidance = config.guidance_scale if self.transformer.config.guidance_embeds else None
        del pipe
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)  # the training peak, not caching's
        self.usable = self._select_rows(entries)
        if not self.usable:
            if self.main:
                self.report.details.update(status="failed", error="no usable rows")
                self.report.write()
            raise DatasetFormatError(
                f"no usable rows in {self.train_data}: {len(self.report.failures)} rejected "
                f"({self.report.failures.by_reason()}); see "
                f"{storage.join(self.output_dir, reports.FAILURES)}"
            )

    def _select_rows(self, entries: list[tdata.CacheEntry]) -> list[tdata.CacheEntry]:
        """The rows that encoded; the CSV's rejections and the rows that did not are
        recorded as failures, in CSV order."""
        rejected = [(r.line, r.image or f"line {r.line}", r.reason) for r in self.data.rejections]
        usable = []
        for entry in entries:
            if entry.latent_key is None:
                rejected.append((entry.line, entry.image, entry.reason or "unusable row"))
            else:
                usable.append(entry)
        for line, item, reason in sorted(rejected, key=lambda r: r[0]):
            self.report.fail(item, reason, line=line)
        self.report.inputs = len(self.data.rows) + len(self.data.rejections)
        self.report.done = len(usable)
        self.report.details.update(
            used_rows=len(usable), unique_prompts=len({e.text_key for e in usable})
        )
        return usable

    # ----------------------------------------------------------------------- model

    def build_model(self) -> None:
        """LoRA on the frozen transformer, the speed switches, AdamW and the LR schedule."""
        from diffusers.optimization import get_scheduler

        config, transformer = self.config, self.transformer
        cuda = self.device.type == "cuda"
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self.params = add_lora(transformer, config)
        if config.base_fp8:
            from lanepaint.models.presets import convert_fp8_training

            converted = convert_fp8_training(transformer)
            self.report.details["base_fp8_linears"] = converted
            log.info("FP8 base: %d block Linears converted (torchao float8)", converted)
        transformer.train()
        if config.attention_backend == "cudnn" and cuda:
            # diffusers' own cuDNN backend: q/k/v made contiguous, then cuDNN attention (1.7x
            # FlashAttention-2's forward + backward at 1024², docs/perf/attention.json).
            transformer.set_attention_backend("_native_cudnn")
        if config.compile and cuda:
            # Read when the graphs are built, so it is set before the first step.
            torch._functorch.config.activation_memory_budget = config.activation_memory_budget
            compile_regions(transformer)
            log.info(
                "compiled the transformer blocks (activation memory budget %.2f)",
                config.activation_memory_budget,
            )
        optimizer = torch.optim.AdamW(
            self.params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
            eps=config.adam_epsilon,
            fused=cuda,
        )
        # Not prepared: accelerate would step it once per process per optimizer step. Not
        # registered for checkpointing either: accelerate pickles custom state; its
        # state_dict is plain numbers and goes into the checkpoint as JSON.
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_train_steps,
        )
        self.model, self.optimizer = self.accelerator.prepare(transformer, optimizer)
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)

    def _save_hook(self, models, weights, out_dir) -> None:
        if self.main:
            for m in models:
                save_lora(out_dir, self.accelerator.unwrap_model(m))
        weights.clear()  # LoRA only; the frozen 12 B weights are never checkpointed

    def _load_hook(self, models, in_dir) -> None:
        while models:
            load_lora_into(self.accelerator.unwrap_model(models.pop()), in_dir)

    # ----------------------------------------------------------------------- resume

    def resume(self) -> None:
        """Restore the newest checkpoint that verifies (every process loads the main
        process's choice), clear leftovers, and set up the data stream."""
        from accelerate.utils import broadcast_object_list

        config = self.config
        with self.report.phase("resume"):
            choice = [None]
            if self.main and self.latest is not None:
                choice = [_pick_checkpoint(self.output_dir, self.run_dir / "resume")]
            broadcast_object_list(choice)
            if choice[0] is not None:
                self._load_checkpoint(Path(choice[0]))
        self.accelerator.wait_for_everyone()
        if self.main:
            ckpt.prune(self.output_dir, config.checkpoints_total_limit, all_incomplete=True)
            shutil.rmtree(self.run_dir / "resume", ignore_errors=True)
            self.publisher = ckpt.Publisher(self.output_dir, config.checkpoints_total_limit)
        self.order = tdata.SampleOrder(len(self.usable), config.seed)
        processes = self.accelerator.num_processes
        self.global_batch = config.batch_size * processes * config.grad_accum
        self.eval_items = [
            (self.cache.get_latents(e.latent_key), self.cache.get_text(e.text_key))
            for e in self.usable[: config.eval_rows]
        ]

    def _load_checkpoint(self, folder: Path) -> None:
        self.accelerator.load_state(str(folder))
        state = json.loads((folder / ckpt.STATE).read_text())
        step = int(state["step"])
        ckpt.load_scheduler_state(self.lr_scheduler, folder, step)
        self.progress = Progress(
            step=step,
            samples_seen=int(state["samples_seen"]),
            history=state.get("history", []),
            evals=state.get("evals", []),
            checkpoint_failures=state.get("checkpoint_failures", []),
            resumed_from=step,
        )
        log.info("resumed from step %d (%d samples seen)", step, self.progress.samples_seen)

    # ----------------------------------------------------------------------- data

    def micro_batches(self, first_step: int, first_seen: int) -> Iterator[list[int]]:
        """Stream positions of this process's rows, micro-batch by micro-batch."""
        config, acc = self.config, self.accelerator
        seen = first_seen
        for _ in range(first_step, config.max_train_steps):
            for a in range(config.grad_accum):
                yield tdata.micro_batch_positions(
                    seen, a, acc.process_index, acc.num_processes, config.batch_size
                )
            seen += self.global_batch

    def load_items(self, positions: list[int]) -> list[tuple[int, dict, dict]]:
        """(position, latents, text embeddings) of the rows at ``positions``."""
        out = []
        for g in positions:
            e = self.usable[self.order[g]]
            out.append((g, self.cache.get_latents(e.latent_key), self.cache.get_text(e.text_key)))
        return out

    # ----------------------------------------------------------------------- train

    def train_loop(self) -> NonFiniteLossError | None:
        """Optimizer steps from the resumed position to the end (or ``stop_after_steps``),
        checkpointing on the way. A non-finite loss stops before its step is applied and
        is returned, so that the reports are still written."""
        config, p = self.config, self.progress
        self.evaluate(p.step)
        # A time-boxed run stops (with a checkpoint) at stop_after_steps; a rerun resumes there.
        stop_at = config.stop_after_steps
        limit = min(config.max_train_steps, stop_at or config.max_train_steps)
        bar = tqdm(
            total=config.max_train_steps,
            initial=p.step,
            disable=not self.main,
            desc=STAGE,
            unit="step",
        )
        error = None
        start = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=1) as prefetch:
                feed = Feed(self.micro_batches(p.step, p.samples_seen), self.load_items, prefetch)
                while not feed.exhausted and p.step < limit:
                    record = self.step(feed)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                    if p.step % config.checkpointing_steps == 0 or p.step == stop_at:
                        self.evaluate(p.step)
                        with self.report.phase("checkpoint"):
                            self.save_checkpoint(p.step)
        except NonFiniteLossError as exc:
            error = exc
        finally:
            bar.close()
            self.report.timings.add("train", time.perf_counter() - start)
            if self.publisher is not None:
                self.publisher.close()
        return error

    def step(self, feed: Feed) -> dict:
        """One optimizer step: ``grad_accum`` micro-batches, gradients all-reduced once,
        clipped and applied; returns the step's history record."""
        config, p, acc = self.config, self.progress, self.accelerator
        t0 = time.perf_counter()
        lr = self.lr_scheduler.get_last_lr()[0]
        loss_sum = torch.zeros((), device=self.device)
        for a in range(config.grad_accum):
            self._micro_step(feed.take(), a == config.grad_accum - 1, loss_sum)
        step_loss = acc.reduce(loss_sum, reduction="mean").item()
        if not math.isfinite(step_loss):
            raise NonFiniteLossError(f"loss is {step_loss} at step {p.step + 1}")
        grad_norm = float(acc.clip_grad_norm_(self.params, config.max_grad_norm))
        # fp16's loss scaler meets inf gradients by design and skips those steps
        if not math.isfinite(grad_norm) and config.mixed_precision != "fp16":
            raise NonFiniteLossError(f"gradient norm is {grad_norm} at step {p.step + 1}")
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        p.step += 1
        p.samples_seen += self.global_batch
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        record = {
            "step": p.step,
            "loss": step_loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "samples_seen": p.samples_seen,
            "step_s": round(dt, 4),
        }
        p.history.append(record)
        if self.main and (p.step % config.log_every == 0 or p.step == 1):
            log.info(
                "step %d/%d loss %.5f lr %.3g grad_norm %.4g %.3fs/step",
                p.step,
                config.max_train_steps,
                step_loss,
                lr,
                grad_norm,
                dt,
            )
        return record

    def _micro_step(self, items: list, last_micro: bool, loss_sum: torch.Tensor) -> None:
        """Forward and backward of one micro-batch (one pass per image size, weighted by its
        rows); adds its share of the loss to ``loss_sum``."""
        config, acc = self.config, self.accelerator
        groups: dict[tuple, list] = {}
        for item in items:
            groups.setdefault(tuple(item[1]["latent_mean"].shape), []).append(item)
        for gi, group in enumerate(groups.values()):
            last = last_micro and gi == len(groups) - 1
            batch = objective.collate([g[1] for g in group], [g[2] for g in group], self.device)
            inputs = objective.sample_inputs(
                batch,
                self.geometry,
                self.schedule,
                generators_for(config.seed, [g[0] for g in group], self.device),
                config.weighting_scheme,
                config.logit_mean,
                config.logit_std,
                config.mode_scale,
            )
            share = len(group) / (config.batch_size * config.grad_accum)
            # Gradients are all-reduced once per optimizer step, on the last backward.
            sync = contextlib.nullcontext() if last else acc.no_sync(self.model)
            with sync, attention_context(config.attention_backend, self.device):
                loss, _ = objective.flow_matching_loss(self.model, inputs, self.guidance)
                acc.backward(loss * share)
            loss_sum += loss.detach() * share

    # ----------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, at_step: int) -> None:
        """Stage the state locally on every process; when all succeeded, the main process
        hands it to the publisher (a failure is recorded and training goes on)."""
        p, acc = self.progress, self.accelerator
        staging = self.run_dir / "staging" / ckpt.checkpoint_name(at_step)
        if self.main:
            self.publisher.wait()
            shutil.rmtree(staging, ignore_errors=True)
        acc.wait_for_everyone()
        error = ""
        try:
            acc.save_state(str(staging))
            if self.main:
                ckpt.save_scheduler_state(self.lr_scheduler, staging)
                state = {
                    "step": at_step,
                    "samples_seen": p.samples_seen,
                    **self._settings_stamp(),
                    "history": p.history,
                    "evals": p.evals,
                    "checkpoint_failures": p.checkpoint_failures + self.publisher.failures,
                    **self.meta,
                }
                (staging / ckpt.STATE).write_text(json.dumps(state) + "\n")
        except Exception as exc:  # full disk while staging (torch.save raises RuntimeError)
            error = f"{type(exc).__name__}: {exc}"
        ok = torch.tensor([0 if error else 1], device=self.device)
        all_ok = bool(acc.gather(ok).min().item())
        if not self.main:
            return
        if all_ok:
            manifest = {
                "step": at_step,
                "samples_seen": p.samples_seen,
                **self._settings_stamp(),
                **self.meta,
                "created_at": reports.now_iso(),
            }
            self.publisher.submit(at_step, staging, manifest)
        else:
            log.error("checkpoint at step %d not written: %s", at_step, error or "another process")
            self.publisher.record_failure(at_step, error or "staging failed on another process")
            shutil.rmtree(staging, ignore_errors=True)

    def _settings_stamp(self) -> dict:
        return {"settings": self.settings, "settings_key": self.report.settings_key}

    def evaluate(self, at_step: int) -> None:
        """The fixed-noise evaluation loss at ``at_step`` (once per step). Main process only;
        the others run ahead and wait in the next all-reduce."""
        evals = self.progress.evals
        if not (self.main and self.eval_items) or any(e["step"] == at_step for e in evals):
            return
        with self.report.phase("eval"):
            value = evaluation_loss(
                self.accelerator.unwrap_model(self.model),
                self.eval_items,
                self.geometry,
                self.schedule,
                self.guidance,
                self.config.seed,
                self.device,
                self.config.attention_backend,
            )
        evals.append({"step": at_step, "eval_loss": value})
        log.info("step %d eval loss %.5f", at_step, value)

    # ----------------------------------------------------------------------- finish

    def finish(self, error: NonFiniteLossError | None) -> StageResult:
        """Final evaluation and LoRA (complete runs), then loss.csv/png and the summary
        (main process); a non-finite loss is raised after the reports are written."""
        p, config = self.progress, self.config
        stopped = p.step < config.max_train_steps
        status = "failed" if error else "stopped" if stopped else "complete"
        if status == "complete":
            self.evaluate(p.step)
        error_text = None
        if error is not None:
            error_text = (
                f"{error}: training stopped without applying this step. The newest complete "
                f"checkpoint under {storage.join(self.output_dir, ckpt.CHECKPOINTS)} is kept; "
                "lower the learning rate or check the data, then rerun to resume from it"
            )
        self.accelerator.wait_for_everyone()
        if status == "complete" and self.main:
            with self.report.phase("save_lora"):
                self.save_lora()
        self._final_details(status, error_text)
        if self.main:
            summary = self.write_outputs()
            shutil.rmtree(self.run_dir / "staging", ignore_errors=True)
        else:
            summary = self.report.summary()
        self.accelerator.wait_for_everyone()
        if error is not None:
            raise NonFiniteLossError(error_text) from error
        return StageResult(self.output_dir, summary)

    def save_lora(self) -> None:
        """``lora/``: the weights stock diffusers loads, and what made them."""
        config = self.config
        with storage.local_dir_for_write(self.lora_uri) as tmp:
            save_lora(tmp, self.accelerator.unwrap_model(self.model))
            info = {
                "base_model": FLUX_FILL_DIR,
                **self.meta,
                "rank": config.rank,
                "alpha": config.alpha,
                "target_modules": list(config.target_modules),
                "steps": self.progress.step,
                **self._settings_stamp(),
            }
            (tmp / LORA_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def _final_details(self, status: str, error: str | None) -> None:
        p = self.progress
        losses = [h["loss"] for h in p.history]
        window = max(1, min(10, len(losses) // 4 or 1))
        checkpoint_failures = p.checkpoint_failures + (
            self.publisher.failures if self.publisher else []
        )
        details = {
            "status": status,
            "steps_done": p.step,
            "max_train_steps": self.config.max_train_steps,
            "samples_seen": p.samples_seen,
            "epochs": round(p.samples_seen / max(1, len(self.usable)), 3),
            "resumed_from_step": p.resumed_from,
            "first_loss": round(statistics.fmean(losses[:window]), 6) if losses else None,
            "last_loss": round(statistics.fmean(losses[-window:]), 6) if losses else None,
            "eval_loss_start": round(p.evals[0]["eval_loss"], 6) if p.evals else None,
            "eval_loss_end": round(p.evals[-1]["eval_loss"], 6) if p.evals else None,
            "eval_losses": {str(e["step"]): round(e["eval_loss"], 6) for e in p.evals},
            "step_time_median_s": (
                round(statistics.median(self.step_times), 4) if self.step_times else None
            ),
            "checkpoints_published": self.publisher.published if self.publisher else [],
            "checkpoint_failures": checkpoint_failures,
        }
        if self.device.type == "cuda":
            details["peak_memory_gib"] = round(
                torch.cuda.max_memory_allocated(self.device) / 2**30, 2
            )
        if error:
            details["error"] = error
            self.report.notes.append(f"error: {error}")
        self.report.details.update(details)

    def write_outputs(self) -> dict:
        """loss.csv, loss.png, then summary.json/md and failures.jsonl (the summary last)."""
        p, meta = self.progress, self.meta
        out = self.output_dir
        storage.write_text(
            storage.join(out, LOSS_CSV), loss_csv(p.history, p.evals, meta["model_set"])
        )
        title = f"{STAGE} loss ({p.step} steps) - {meta['model_set_label']}"
        storage.write_bytes(
            storage.join(out, LOSS_PNG), loss_png(p.history, p.evals, title, meta["model_set"])
        )
        return self.report.write()


def _as_skipped(previous: dict) -> dict:
    """The earlier run's summary, counted as this run's: everything already done."""
    return {**previous, "skipped_done": previous["done"], "done": 0, "failed": 0}


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
