"""The train-lora settings: one ``setting()`` per field (default, help, and whether it shapes
the trained weights).

``output=True`` fields (LoRA shape, optimizer, schedule, batch, seed, objective) are what a
checkpoint must agree with to be resumed and what decides a finished run may be skipped
(``kit.output_settings`` / ``kit.settings_key``). ``output=False`` fields change speed,
bookkeeping or where files go, never the weights: a run may resume with other values.
"""

from __future__ import annotations

from dataclasses import dataclass

from lanepaint.kit import check_finite, setting

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode")
MIXED_PRECISION = ("bf16", "fp16", "no")
LR_SCHEDULERS = ("cosine", "constant_with_warmup", "linear", "cosine_with_restarts")
# "auto" = SDPA with the flash, memory-efficient and math kernels allowed but not cuDNN: the
# cuDNN backend crashed in the backward pass of the full-size Flux transformer on an H100
# (performance.md), and torch prefers it on Hopper when allowed.
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "math", "cudnn")
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _names(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


@dataclass(frozen=True)
class TrainConfig:
    """Every train-lora setting; defaults follow the issue (r/alpha 128, warm-up 100, ...)."""

    # LoRA
    rank: int = setting(128, help="LoRA rank")
    alpha: float = setting(128.0, help="LoRA alpha (saved in the adapter metadata)")
    target_modules: tuple[str, ...] = setting(
        DEFAULT_TARGETS, help="comma-separated module names", parse=_names
    )
    dropout: float = setting(0.0, help="LoRA dropout")
    # optimization (batch_size is per process; global batch = batch * processes * accum)
    max_train_steps: int = setting(1000, help="optimizer steps")
    learning_rate: float = setting(1e-4, help="AdamW learning rate")
    batch_size: int = setting(1, help="rows per process per micro-step")
    grad_accum: int = setting(1, help="micro-steps per optimizer step")
    lr_scheduler: str = setting(
        "cosine", help=f"LR schedule: {', '.join(LR_SCHEDULERS)}", choices=LR_SCHEDULERS
    )
    warmup_steps: int = setting(100, help="LR warm-up steps")
    weight_decay: float = setting(1e-2, help="AdamW weight decay")
    adam_beta1: float = setting(0.9, help="AdamW beta1")
    adam_beta2: float = setting(0.999, help="AdamW beta2")
    adam_epsilon: float = setting(1e-8, help="AdamW epsilon")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm")
    seed: int = setting(42, help="seed of LoRA init, data order and noise")
    mixed_precision: str = setting(
        "bf16",
        help="dtype of the frozen weights and autocast (bf16, fp16, no = fp32); LoRA "
        "parameters stay in fp32",
        choices=MIXED_PRECISION,
    )
    # objective
    weighting_scheme: str = setting(
        "none", help=f"sigma sampling: {', '.join(WEIGHTING_SCHEMES)}", choices=WEIGHTING_SCHEMES
    )
    logit_mean: float = setting(0.0, help="mean for logit_normal")
    logit_std: float = setting(1.0, help="std for logit_normal")
    mode_scale: float = setting(1.29, help="scale for mode")
    # FluxFillPipeline samples with guidance 30 by default and so does our edit stage; the
    # guidance embedding seen in training should match how the LoRA is used (the diffusers
    # Flux Control LoRA example trains with 30 for the same reason).
    guidance_scale: float = setting(
        30.0, help="guidance-embedding value in training (FluxFill samples with 30)"
    )
    resolution: int = setting(
        1024,
        help="train at about RESOLUTION^2 pixels, aspect kept, sides multiple of 16",
    )
    max_sequence_length: int = setting(512, help="T5 tokens")
    base_fp8: bool = setting(
        False,
        help="FP8 matmuls (torchao float8 training, rowwise scales) for the frozen Linears of "
        "the transformer blocks under the LoRA; the adapters stay fp32. Measured on an H100: "
        "0.436 vs 0.445 s/step with --compile, 2.7x slower without it, LoRA "
        "gradients 6e-2 from bf16's; off by default. Part of the settings key; needs compute "
        "capability >= 8.9 on CUDA; not with --attention-backend cudnn",
    )
    # speed
    gradient_checkpointing: bool = setting(
        False, help="recompute activations in backward (less memory, slower)", output=False
    )
    attention_backend: str = setting(
        "auto",
        help=f"SDPA kernels: {', '.join(ATTENTION_BACKENDS)}; auto = flash, efficient or "
        "math, never cuDNN; cudnn = diffusers' _native_cudnn backend, needs --compile "
        "(fastest measured: with --activation-memory-budget 0.5, 0.40 s/step at 34 GiB on "
        "an H100)",
        choices=ATTENTION_BACKENDS,
        output=False,
    )
    compile: bool = setting(
        False,
        help="regional torch.compile of the transformer blocks on CUDA (faster steps, less "
        "memory; about a minute of compiling once per run)",
        output=False,
    )
    activation_memory_budget: float = setting(
        1.0,
        help="with --compile: keep this fraction of the saved activations, recomputing cheap "
        "ones in backward (1.0 = all)",
        output=False,
    )
    # checkpoints and logs
    checkpointing_steps: int = setting(250, help="checkpoint every N steps", output=False)
    checkpoints_total_limit: int = setting(4, help="keep at most N checkpoints", output=False)
    stop_after_steps: int = setting(
        0,
        help="checkpoint and stop after this step (time-boxed runs; a rerun resumes; 0 = no stop)",
        output=False,
    )
    log_every: int = setting(10, help="log the loss every N steps", output=False)
    # Held-fixed evaluation: the first N rows at sigma 0.25/0.5/0.75 with fixed noise, at the
    # start, at every checkpoint and at the end (the training loss is too noisy to read).
    eval_rows: int = setting(
        8, help="rows of the fixed-noise evaluation loss (0 = off)", output=False
    )
    workers: int = setting(8, help="threads for downloads and image decoding", output=False)
    work_dir: str = setting(
        "",
        help="local folder for the feature cache and checkpoint staging; empty = "
        "$LANEPAINT_WORK_DIR or the temp dir",
        output=False,
    )

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for ok, message in self._checks():
            if not ok:
                raise ValueError(message)
        for name, value, allowed in (
            ("weighting scheme", self.weighting_scheme, WEIGHTING_SCHEMES),
            ("mixed precision", self.mixed_precision, MIXED_PRECISION),
            ("lr scheduler", self.lr_scheduler, LR_SCHEDULERS),
            ("attention backend", self.attention_backend, ATTENTION_BACKENDS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.rank >= 1, "rank must be >= 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (len(self.target_modules) > 0, "target modules must not be empty"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.max_train_steps >= 1, "max train steps must be >= 1"),
            (self.learning_rate > 0, "learning rate must be > 0"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.grad_accum >= 1, "gradient accumulation must be >= 1"),
            (self.warmup_steps >= 0, "warm-up steps must be >= 0"),
            (self.max_grad_norm > 0, "max grad norm must be > 0"),
            (self.resolution >= 16, "resolution must be >= 16"),
            (self.max_sequence_length >= 1, "max sequence length must be >= 1"),
            (self.checkpointing_steps >= 1, "checkpointing steps must be >= 1"),
            (self.checkpoints_total_limit >= 1, "checkpoints total limit must be >= 1"),
            (self.log_every >= 1, "log-every must be >= 1"),
            (self.eval_rows >= 0, "eval rows must be >= 0"),
            (self.workers >= 1, "workers must be >= 1"),
            (
                0.0 < self.activation_memory_budget <= 1.0,
                "activation memory budget must be in (0, 1]",
            ),
            (
                self.activation_memory_budget == 1.0 or self.compile,
                "activation memory budget takes effect with --compile only",
            ),
            (
                self.attention_backend != "cudnn" or self.compile,
                "attention backend cudnn needs --compile: its eager backward hit an illegal "
                "memory access on an H100 with torch 2.11 (docs/training.md)",
            ),
            (
                not (self.base_fp8 and self.attention_backend == "cudnn"),
                "--base-fp8 with attention backend cudnn hit an illegal memory access on an "
                "H100 (torch 2.11, torchao 0.18; docs/training.md): use --attention-backend auto",
            ),
            (self.stop_after_steps >= 0, "stop-after-steps must be >= 0 (0 = no stop)"),
            # AdamW and the timestep sampler refuse these only after the model has loaded
            (0.0 <= self.adam_beta1 < 1.0, "adam beta1 must be in [0, 1)"),
            (0.0 <= self.adam_beta2 < 1.0, "adam beta2 must be in [0, 1)"),
            (self.adam_epsilon >= 0, "adam epsilon must be >= 0"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (self.logit_std > 0, "logit std must be > 0"),
            (self.seed >= 0, "seed must be >= 0"),
        ]


def settings_diff(saved: dict, current: dict) -> list[str]:
    """Human-readable ``key: saved -> current`` lines for every differing setting."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
