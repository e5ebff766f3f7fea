"""KFP component: train-lora."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import image_for


@dsl.component(base_image=image_for("train-lora"), install_kfp_package=False)
def train_lora(
    train_data: Input[Dataset],
    model_root: str,
    lora: Output[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    output_dir: str = "",
    rank: int = 128,
    alpha: float = 128.0,
    target_modules: str = "to_q,to_k,to_v,to_out.0",
    dropout: float = 0.0,
    max_train_steps: int = 1000,
    learning_rate: float = 1e-4,
    batch_size: int = 1,
    grad_accum: int = 1,
    warmup_steps: int = 100,
    resolution: int = 1024,
    guidance_scale: float = 30.0,
    weighting_scheme: str = "none",
    mixed_precision: str = "bf16",
    gradient_checkpointing: bool = False,
    attention_backend: str = "auto",
    compile_blocks: bool = False,
    activation_memory_budget: float = 1.0,
    checkpointing_steps: int = 250,
    checkpoints_total_limit: int = 4,
    seed: int = 42,
    num_processes: int = 0,
):
    """Train a FluxFill LoRA on the dataset a pointer names; outputs point at the LoRA.

    Checkpoints go to ``output_dir`` (default: a folder beside this task's outputs), so a
    retried task resumes from the newest complete one. ``num_processes`` 0 = every GPU.
    ``compile_blocks`` + ``activation_memory_budget`` 0.5 is the measured fastest setting
    within 40 GiB on an H100 (docs/performance.md).
    """
    import os

    from lanepaint.io import artifacts, storage
    from lanepaint.stages.train_lora import train_lora_multi
    from lanepaint.training.config import TrainConfig

    config = TrainConfig(
        rank=rank,
        alpha=alpha,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        dropout=dropout,
        max_train_steps=max_train_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        grad_accum=grad_accum,
        warmup_steps=warmup_steps,
        resolution=resolution,
        guidance_scale=guidance_scale,
        weighting_scheme=weighting_scheme,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        attention_backend=attention_backend,
        compile=compile_blocks,
        activation_memory_budget=activation_memory_budget,
        checkpointing_steps=checkpointing_steps,
        checkpoints_total_limit=checkpoints_total_limit,
        seed=seed,
    )
    out = output_dir or storage.join(os.path.dirname(lora.uri.rstrip("/")), "train-lora")
    s = train_lora_multi(
        artifacts.resolve_pointer(train_data.path), model_root, out, config, num_processes
    )
    labels = {k: s[k] for k in ("model_set", "model_set_label", "model_root")}
    artifacts.write_pointer(
        lora.path, s["lora_dir"], "flux-fill-lora", steps=s["steps_done"], rank=rank, **labels
    )
    lora.metadata.update(
        {"uri": s["lora_dir"], "rank": rank, "alpha": alpha, "steps": s["steps_done"], **labels}
    )
    for key in (
        "input_rows",
        "used_rows",
        "rejected",
        "steps_done",
        "first_loss",
        "last_loss",
        "eval_loss_start",
        "eval_loss_end",
        "step_time_median_s",
        "peak_memory_gib",
    ):
        if isinstance(s.get(key), int | float):
            metrics.log_metric(key, s[key])
    metrics.metadata.update(labels)
    report.metadata.update(labels)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "summary.md")))
