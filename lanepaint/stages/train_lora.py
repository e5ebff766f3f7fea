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

from lanepaint.kit import (
    StageResult,
    check_apart,
    from_args,
    guard_output,
    keyed_path,
    require_input,
    settings_key,
    to_argv,
)
from lanepaint.kit.cli import register_stage
from lanepaint.kit.settings import KEY_FIELD
from lanepaint.models.device import gpu_count
from lanepaint.training.config import TrainConfig

log = logging.getLogger(__name__)

STAGE = "train-lora"


def train_lora(
    train_data: str, model_root: str, output_dir: str, config: TrainConfig | None = None
) -> StageResult:
    """Train in this process (one GPU, or one rank of a torchrun launch); see module doc."""
    from lanepaint.training.trainer import train

    config = config or TrainConfig()
    _check_machine(config)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    output_dir = _keyed_output(output_dir, train_data, model_root, config, processes)
    with _guarded(train_data, model_root, output_dir):
        return train(train_data, model_root, output_dir, config)


def _check_machine(config: TrainConfig) -> None:
    """Settings this machine cannot run are user errors before anything is read or loaded."""
    if config.base_fp8:
        from lanepaint.models.presets import check_fp8_training

        check_fp8_training()
        import torch

        if torch.cuda.is_available() and not config.compile:
            log.warning(
                "--base-fp8 without --compile: measured 2.7x slower per step than bf16 and "
                "13 GiB more memory on an H100 (docs/training.md)"
            )


def _keyed_output(
    output_dir: str, train_data: str, model_root: str, config: TrainConfig, processes: int
) -> str:
    """``output_dir`` with ``{settings_key}`` replaced (a folder per settings, data and
    models: a pipeline's rerun finds its LoRA, other settings train beside it)."""
    if KEY_FIELD not in output_dir:
        return output_dir
    import hashlib

    from lanepaint.io import storage
    from lanepaint.training.data import split_train_data

    _, csv_uri = split_train_data(train_data)
    require_input(csv_uri, "training CSV")
    csv_sha = hashlib.sha256(storage.read_text(csv_uri).encode()).hexdigest()
    key = settings_key(config, csv_sha256=csv_sha, model_root=model_root, processes=processes)
    return keyed_path(output_dir, key)


def _guarded(train_data: str, model_root: str, output_dir: str):
    """The output apart from the data and models, ours, and written by one run at a time
    (the ranks of one torchrun launch share the lock); the training CSV must exist."""
    from lanepaint.training.data import split_train_data

    root, csv_uri = split_train_data(train_data)
    check_apart([root, csv_uri, model_root], [output_dir])
    require_input(csv_uri, "training CSV")
    require_input(model_root, "model root (--model-root)")  # before the output is claimed
    return guard_output(STAGE, output_dir)


def train_lora_multi(
    train_data: str,
    model_root: str,
    output_dir: str,
    config: TrainConfig | None = None,
    num_processes: int = 1,
) -> StageResult:
    """Train with ``num_processes`` data-parallel processes (0 = one per visible GPU).

    One process runs here; more are started under torchrun, each running the CLI, and the
    summary is read back from the output.
    """
    config = config or TrainConfig()
    n = num_processes or max(1, gpu_count())
    if n == 1:
        return train_lora(train_data, model_root, output_dir, config)
    _check_machine(config)  # before torchrun starts the ranks
    output_dir = _keyed_output(output_dir, train_data, model_root, config, n)
    with _guarded(train_data, model_root, output_dir):  # the ranks inherit the lock
        return _launch(train_data, model_root, output_dir, config, n)


def _launch(
    train_data: str, model_root: str, output_dir: str, config: TrainConfig, n: int
) -> StageResult:
    """Run ``n`` ranks under torchrun and read their summary back."""
    from lanepaint.io import reports, storage

    argv = [
        "--train-data",
        train_data,
        "--model-root",
        model_root,
        "--output-dir",
        output_dir,
        *to_argv(config),
    ]
    rc = launch_distributed(argv, n)
    summary = json.loads(storage.read_text(storage.join(output_dir, reports.SUMMARY_JSON)))
    if rc != 0:
        details = summary.get("details", {})
        raise RuntimeError(
            f"train-lora with {n} processes exited with {rc}: "
            f"{details.get('status')} {details.get('error', '')}".strip()
        )
    return StageResult(output_dir, summary)


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
        STAGE,
        *argv,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if not gpu_count():
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("launching %d processes: %s", num_processes, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, TrainConfig, _add_io, _run)


def _add_io(parser: argparse.ArgumentParser) -> None:
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


def _run(args: argparse.Namespace) -> int:
    """User errors (bad settings, missing data, a checkpoint made with other settings:
    ResumeMismatchError is a ValueError) exit 2 through the kit; a failed training 1."""
    config = from_args(TrainConfig, args)
    try:
        if args.num_processes != 1 and "LOCAL_RANK" not in os.environ:
            result = train_lora_multi(
                args.train_data, args.model_root, args.output_dir, config, args.num_processes
            )
        else:
            result = train_lora(args.train_data, args.model_root, args.output_dir, config)
    except RuntimeError as exc:  # NonFiniteLossError, a failed rank
        log.error("%s", exc)
        return 1
    finally:
        _end_process_group()
    s, d = result.summary, result.summary["details"]
    print(
        f"{'skipped' if result.skipped else d['status']}: {d['lora_dir']} after "
        f"{d['steps_done']} steps ({d['used_rows']} rows, {s['failed']} rejected); "
        f"loss {d['first_loss']} -> {d['last_loss']} [{s['model_set']}]"
    )
    return 0


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
