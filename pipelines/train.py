"""Pipeline `train`: filter a FluxFill dataset, then train a FluxFill LoRA on the result.

The filtered dataset reaches train-lora as a pointer artifact (lineage in the UI, data in
place). Checkpoints go to ``output_dir`` when given, so a retried or resubmitted run with the
same settings resumes; left empty, each run trains into its own folder.
"""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.settings import configure
from components.train_lora import train_lora


@dsl.pipeline(
    name="train",
    description="Filter a FluxFill dataset by lane attributes, then train a FluxFill LoRA.",
)
def train_pipeline(
    input_dir: str,
    model_root: str,
    output_dir: str = "",
    count: str = "any",
    color: str = "any",
    pattern: str = "any",
    require_clear_road: bool = True,
    filtered_dir: str = "",
    suffix: str = "",
    limit: int = 0,
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
    compile: bool = False,  # noqa: A002 - train-lora's setting
    activation_memory_budget: float = 1.0,
    checkpointing_steps: int = 250,
    checkpoints_total_limit: int = 4,
    seed: int = 42,
):
    filtered = filter_dataset(
        input_dir=input_dir,
        output_dir=filtered_dir,
        count=count,
        color=color,
        pattern=pattern,
        require_clear_road=require_clear_road,
        suffix=suffix,
        limit=limit,
    )
    configure(filtered, "filter-dataset")
    trained = train_lora(
        train_data=filtered.outputs["dataset"],
        model_root=model_root,
        output_dir=output_dir,
        rank=rank,
        alpha=alpha,
        target_modules=target_modules,
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
        compile=compile,
        activation_memory_budget=activation_memory_budget,
        checkpointing_steps=checkpointing_steps,
        checkpoints_total_limit=checkpoints_total_limit,
        seed=seed,
    )
    configure(trained, "train-lora")
