"""Stage train-lora: a FLUX.1-Fill-dev LoRA trained on a FluxFill dataset.

Reads ``train.csv`` (image, mask, prompt, prompt_2; local or gs://), caches VAE latents and
text embeddings, trains a LoRA on the transformer's attention projections with the
rectified-flow objective (diffusers + peft + accelerate), checkpoints every N steps and
resumes from the newest complete checkpoint on a rerun. Writes ``lora/`` (loads with stock
``FluxFillPipeline.load_lora_weights``), ``loss.csv``, ``loss.png``, ``summary.json``,
``summary.md`` and ``failures.jsonl`` under the output folder.

Several GPUs: ``--num-processes N`` (0 = every visible GPU) relaunches the same command
under torchrun, one process per GPU, data parallel through accelerate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import fields

from lanepaint.training.config import (
    ATTENTION_BACKENDS,
    LR_SCHEDULERS,
    MIXED_PRECISION,
    WEIGHTING_SCHEMES,
    TrainConfig,
)

log = logging.getLogger(__name__)


def train_lora(
    train_data: str, model_root: str, output_dir: str, config: TrainConfig | None = None
):
    """Train in this process (one GPU, or one rank of a torchrun launch); see module doc."""
    from lanepaint.training.trainer import train

    return train(train_data, model_root, output_dir, config or TrainConfig())


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_lora_multi(
    train_data: str,
    model_root: str,
    output_dir: str,
    config: TrainConfig | None = None,
    num_processes: int = 1,
) -> dict:
    """Train with ``num_processes`` data-parallel processes (0 = one per visible GPU).

    One process runs here; more are started under torchrun, each running the CLI, and the
    summary is read back from the output. Returns the summary.
    """
    from lanepaint.io import reports, storage

    config = config or TrainConfig()
    n = num_processes or max(1, visible_gpus())
    if n == 1:
        return train_lora(train_data, model_root, output_dir, config).summary
    argv = [
        "--train-data",
        train_data,
        "--model-root",
        model_root,
        "--output-dir",
        output_dir,
        *config_to_argv(config),
    ]
    rc = launch_distributed(argv, n)
    summary = json.loads(storage.read_text(storage.join(output_dir, reports.SUMMARY_JSON)))
    if rc != 0:
        raise RuntimeError(
            f"train-lora with {n} processes exited with {rc}: "
            f"{summary.get('status')} {summary.get('error', '')}".strip()
        )
    return summary


def launch_distributed(argv: list[str], num_processes: int) -> int:
    """Run ``lanepaint train-lora ARGV`` in ``num_processes`` processes under torchrun.

    Accelerate reads torchrun's environment (NCCL on GPUs, gloo on CPUs); the caller's
    environment, LANEPAINT_WORK_DIR included, is inherited so every rank shares one cache.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={num_processes}",
        "-m",
        "lanepaint.cli",
        "train-lora",
        *argv,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if not visible_gpus():
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("launching %d processes: %s", num_processes, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode


# --- CLI ------------------------------------------------------------------------------

_DEFAULTS = TrainConfig()
# config field -> (flag help, argparse extras); every TrainConfig field has a flag.
_HELP = {
    "rank": "LoRA rank (default 128)",
    "alpha": "LoRA alpha (default 128; saved in the adapter metadata)",
    "target_modules": "comma-separated module names (default to_q,to_k,to_v,to_out.0)",
    "dropout": "LoRA dropout (default 0)",
    "max_train_steps": "optimizer steps (default 1000)",
    "learning_rate": "AdamW learning rate (default 1e-4)",
    "batch_size": "rows per process per micro-step (default 1)",
    "grad_accum": "micro-steps per optimizer step (default 1)",
    "lr_scheduler": f"one of {', '.join(LR_SCHEDULERS)} (default cosine)",
    "warmup_steps": "LR warm-up steps (default 100)",
    "weight_decay": "AdamW weight decay (default 1e-2)",
    "adam_beta1": "AdamW beta1 (default 0.9)",
    "adam_beta2": "AdamW beta2 (default 0.999)",
    "adam_epsilon": "AdamW epsilon (default 1e-8)",
    "max_grad_norm": "gradient clipping norm (default 1.0)",
    "seed": "seed of LoRA init, data order and noise (default 42)",
    "mixed_precision": f"one of {', '.join(MIXED_PRECISION)}; frozen weights in this dtype, "
    "LoRA parameters in fp32 (default bf16)",
    "weighting_scheme": f"sigma sampling: {', '.join(WEIGHTING_SCHEMES)} (default none)",
    "logit_mean": "mean for logit_normal (default 0)",
    "logit_std": "std for logit_normal (default 1)",
    "mode_scale": "scale for mode (default 1.29)",
    "guidance_scale": "guidance-embedding value in training (default 30, as FluxFill samples)",
    "resolution": "train at about RESOLUTION^2 pixels, aspect kept, sides multiple of 16 "
    "(default 1024)",
    "max_sequence_length": "T5 tokens (default 512)",
    "gradient_checkpointing": "recompute activations in backward (less memory, slower)",
    "attention_backend": f"SDPA kernels: {', '.join(ATTENTION_BACKENDS)}; auto = flash, "
    "efficient or math, never cuDNN (default auto); cudnn = diffusers' _native_cudnn "
    "backend, needs --compile (fastest measured: with --activation-memory-budget 0.5, "
    "0.40 s/step at 34 GiB on an H100)",
    "compile": "regional torch.compile of the transformer blocks on CUDA (faster steps, "
    "less memory; about a minute of compiling once per run)",
    "activation_memory_budget": "with --compile: keep this fraction of the saved activations, "
    "recomputing cheap ones in backward (default 1.0 = all)",
    "checkpointing_steps": "checkpoint every N steps (default 250)",
    "checkpoints_total_limit": "keep at most N checkpoints (default 4)",
    "stop_after_steps": "checkpoint and stop after this step (time-boxed runs; rerun resumes)",
    "log_every": "log the loss every N steps (default 10)",
    "eval_rows": "rows of the fixed-noise evaluation loss (default 8; 0 = off)",
    "workers": "threads for downloads and image decoding (default 8)",
    "work_dir": "local folder for the feature cache and checkpoint staging "
    "(default $LANEPAINT_WORK_DIR or the temp dir)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        default = getattr(_DEFAULTS, f.name)
        flag, help_text = _flag(f.name), _HELP[f.name]
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text)
        elif f.name == "target_modules":
            parser.add_argument(flag, default=",".join(default), help=help_text)
        elif f.name in ("stop_after_steps",):
            parser.add_argument(flag, type=int, default=None, help=help_text)
        elif f.name == "work_dir":
            parser.add_argument(flag, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values["target_modules"] = tuple(
        m.strip() for m in str(values["target_modules"]).split(",") if m.strip()
    )
    return TrainConfig(**values)


def config_to_argv(config: TrainConfig) -> list[str]:
    """The CLI flags that reproduce ``config`` (used to start torchrun ranks)."""
    argv: list[str] = []
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            if value:
                argv.append(_flag(f.name))
        elif value is None:
            continue
        elif f.name == "target_modules":
            argv += [_flag(f.name), ",".join(value)]
        else:
            argv += [_flag(f.name), repr(value) if isinstance(value, float) else str(value)]
    return argv


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-lora",
        help="train a FLUX.1-Fill-dev LoRA on a FluxFill dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--train-data", required=True, help="train.csv or its dataset folder (path or gs://)"
    )
    parser.add_argument(
        "--model-root", required=True, help="model root holding FLUX.1-Fill-dev (path or gs://)"
    )
    parser.add_argument(
        "--output-dir", required=True, help="where lora/, checkpoints/ and reports go"
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        default=1,
        help="data-parallel processes; 0 = one per visible GPU (default 1)",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lanepaint.data.fluxfill import DatasetFormatError
    from lanepaint.models.root import ModelError
    from lanepaint.training.checkpoint import ResumeMismatchError
    from lanepaint.training.trainer import NonFiniteLossError

    try:
        config = config_from_args(args)
        inside_launch = "LOCAL_RANK" in os.environ
        if args.num_processes != 1 and not inside_launch:
            summary = train_lora_multi(
                args.train_data, args.model_root, args.output_dir, config, args.num_processes
            )
            status = summary["status"]
        else:
            result = train_lora(args.train_data, args.model_root, args.output_dir, config)
            summary, status = result.summary, result.status
    except (NonFiniteLossError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1
    except (ValueError, DatasetFormatError, FileNotFoundError, ModelError) as exc:
        # ResumeMismatchError is a ValueError: a clear refusal, not a crash.
        kind = "refused" if isinstance(exc, ResumeMismatchError) else "error"
        log.error("%s: %s", kind, exc)
        return 2
    finally:
        _end_process_group()
    print(
        f"{status}: {summary['lora_dir']} after {summary['steps_done']} steps "
        f"({summary['used_rows']} rows, {summary['rejected']} rejected); "
        f"loss {summary['first_loss']} -> {summary['last_loss']} [{summary['model_set']}]"
    )
    return 0


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
