"""Pipeline `end-to-end`: dataset-build → filter-dataset → train-lora → segment → edit with
the new LoRA → evaluate, in one DAG."""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.segment import segment
from components.settings import configure
from components.train_lora import train_lora
from pipelines.steps import add_dataset_build, add_edit, add_evaluate


@dsl.pipeline(
    name="end-to-end",
    description="Build and filter a lane dataset, train a FluxFill LoRA, edit videos with it "
    "and evaluate the edits.",
)
def end_to_end_pipeline(
    source: str,
    videos: list,
    output_root: str,
    model_root: str,
    instruction: str = "lane single white solid",
    output_dir: str = "",
    run_date: str = "",
    num_shards: int = 2,
    frame_numbers: str = "1,100,200,300,400,500",
    segmenter: str = "sam2",
    captioner: str = "vlm",
    caption_batch_size: int = 8,
    count: str = "any",
    color: str = "any",
    pattern: str = "any",
    require_clear_road: bool = True,
    rank: int = 128,
    alpha: float = 128.0,
    max_train_steps: int = 1000,
    resolution: int = 1024,
    train_gradient_checkpointing: bool = False,
    train_attention_backend: str = "auto",
    train_compile: bool = False,
    train_activation_memory_budget: float = 1.0,
    edit_shards: int = 1,
    edit_dir: str = "",
    max_frames: int = 150,
    compile_tracking: str = "",
    judge: bool = True,
    max_attempts: int = 5,
    steps: int = 50,
    first_frame_steps: int = 50,
    compile: bool = True,
    attention: str = "auto",
):
    plan, merged = add_dataset_build(
        source,
        output_root,
        output_dir,
        run_date,
        model_root,
        num_shards,
        frame_numbers=frame_numbers,
        segmenter=segmenter,
        captioner=captioner,
        batch_size=caption_batch_size,
    )
    filtered = filter_dataset(
        input_dir=plan.output,
        count=count,
        color=color,
        pattern=pattern,
        require_clear_road=require_clear_road,
    ).after(merged)
    configure(filtered, "filter-dataset")
    trained = train_lora(
        train_data=filtered.outputs["dataset"],
        model_root=model_root,
        rank=rank,
        alpha=alpha,
        max_train_steps=max_train_steps,
        resolution=resolution,
        gradient_checkpointing=train_gradient_checkpointing,
        attention_backend=train_attention_backend,
        compile=train_compile,
        activation_memory_budget=train_activation_memory_budget,
    )
    configure(trained, "train-lora")
    seg = segment(
        videos=videos,
        model_root=model_root,
        segmenter=segmenter,
        max_frames=max_frames,
        compile_tracking=compile_tracking,
    )
    configure(seg, "segment")
    edits = add_edit(
        seg.outputs["layout"],
        edit_dir,
        model_root,
        instruction,
        edit_shards,
        lora=trained.outputs["lora"],
        judge=judge,
        max_attempts=max_attempts,
        steps=steps,
        first_frame_steps=first_frame_steps,
        compile=compile,
        attention=attention,
    )
    add_evaluate(edits.outputs["edits"], "")
