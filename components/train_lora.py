"""KFP component: train-lora."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import stage_component
from lanepaint.training.config import TrainConfig


@stage_component(
    "train-lora",
    TrainConfig,
    "Train a FluxFill LoRA on the dataset a pointer names; outputs point at the LoRA. "
    "Checkpoints go to output_dir, so a retried task resumes from the newest complete one. "
    "compile + attention_backend cudnn + activation_memory_budget 0.5 is the measured "
    "fastest setting within 40 GiB on an H100 (docs/performance.md).",
    extra={
        "train_data": "FluxFill dataset pointer (usually filter-dataset's output)",
        "model_root": "model root holding FLUX.1-Fill-dev (path or gs://)",
        "output_dir": "where lora/, checkpoints/ and reports go; empty = a folder beside "
        "this task's outputs",
        "num_processes": "data-parallel processes; 0 = one per visible GPU",
    },
)
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
    compile: bool = False,  # noqa: A002 - the setting's name
    activation_memory_budget: float = 1.0,
    base_fp8: bool = False,
    checkpointing_steps: int = 250,
    checkpoints_total_limit: int = 4,
    seed: int = 42,
    num_processes: int = 0,
):
    import os

    from lanepaint.io import artifacts, storage
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.train_lora import train_lora_multi
    from lanepaint.training.config import TrainConfig

    config = from_params(TrainConfig, locals())
    out = output_dir or storage.join(os.path.dirname(lora.uri.rstrip("/")), "train-lora")
    result = train_lora_multi(
        artifacts.resolve_pointer(train_data.path), model_root, out, config, num_processes
    )
    s, d = result.summary, result.summary["details"]
    labels = {"model_set": s["model_set"], "model_set_label": s["model_set_label"]}
    labels["model_root"] = d["model_root"]
    steps = d["steps_done"]
    artifacts.write_pointer(
        lora.path, d["lora_dir"], "flux-fill-lora", steps=steps, rank=config.rank, **labels
    )
    lora.metadata.update(
        {"uri": d["lora_dir"], "rank": config.rank, "alpha": config.alpha, "steps": steps}
    )
    lora.metadata.update(labels)
    for key in ("inputs", "done", "skipped_done", "failed"):
        metrics.log_metric(key, s[key])
    for key in (
        "used_rows",
        "steps_done",
        "first_loss",
        "last_loss",
        "eval_loss_start",
        "eval_loss_end",
        "step_time_median_s",
        "peak_memory_gib",
    ):
        if isinstance(d.get(key), int | float):
            metrics.log_metric(key, d[key])
    metrics.metadata.update(labels)
    report.metadata.update(labels)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(result.output, "summary.md")))
