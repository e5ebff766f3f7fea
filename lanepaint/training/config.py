"""The train-lora settings, and which of them a checkpoint must agree with to be resumed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode")
MIXED_PRECISION = ("bf16", "fp16", "no")
LR_SCHEDULERS = ("cosine", "constant_with_warmup", "linear", "cosine_with_restarts")
# "auto" = SDPA with the flash, memory-efficient and math kernels allowed but not cuDNN: the
# cuDNN backend crashed in the backward pass of the full-size Flux transformer on an H100
# (performance.md), and torch prefers it on Hopper when allowed.
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "math", "cudnn")
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

# Settings that change speed, bookkeeping or where files go, never the trained weights:
# a checkpoint may be resumed with different values for these.
NON_MATH_FIELDS = (
    "gradient_checkpointing",
    "attention_backend",
    "compile",
    "activation_memory_budget",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "stop_after_steps",
    "log_every",
    "eval_rows",
    "workers",
    "work_dir",
)


@dataclass(frozen=True)
class TrainConfig:
    """Every train-lora setting; defaults follow the issue (r/alpha 128, warm-up 100, ...)."""

    # LoRA
    rank: int = 128
    alpha: float = 128.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0
    # optimization (batch_size is per process; global batch = batch * processes * accum)
    max_train_steps: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 1
    grad_accum: int = 1
    lr_scheduler: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: str = "bf16"
    # objective
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    # FluxFillPipeline samples with guidance 30 by default and so does our edit stage; the
    # guidance embedding seen in training should match how the LoRA is used (the diffusers
    # Flux Control LoRA example trains with 30 for the same reason).
    guidance_scale: float = 30.0
    resolution: int = 1024
    max_sequence_length: int = 512
    # speed
    gradient_checkpointing: bool = False
    attention_backend: str = "auto"
    # regional torch.compile of the transformer blocks (CUDA only; ~1 min once per run)
    compile: bool = False
    # with compile: fraction of the default saved activations to keep (inductor's
    # activation_memory_budget; cheap ops are recomputed in backward to fit it)
    activation_memory_budget: float = 1.0
    # checkpoints and logs
    checkpointing_steps: int = 250
    checkpoints_total_limit: int = 4
    stop_after_steps: int | None = None
    log_every: int = 10
    # Held-fixed evaluation: the first N rows at sigma 0.25/0.5/0.75 with fixed noise, at the
    # start, at every checkpoint and at the end (the training loss is too noisy to read).
    eval_rows: int = 8
    workers: int = 8
    work_dir: str | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        checks = [
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
                self.stop_after_steps is None or self.stop_after_steps >= 1,
                "stop-after-steps must be >= 1",
            ),
        ]
        for ok, message in checks:
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

    def fingerprint(self) -> dict:
        """The settings that shape the trained weights (what a resumed run must share)."""
        d = asdict(self)
        for name in NON_MATH_FIELDS:
            d.pop(name)
        d["target_modules"] = list(self.target_modules)
        return d

    def as_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


def fingerprint_diff(saved: dict, current: dict) -> list[str]:
    """Human-readable ``key: saved -> current`` lines for every differing setting."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
