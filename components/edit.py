"""KFP components of the edit step: one GPU task per shard of videos, then a merge."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import image_for, stage_component
from lanepaint.stages.edit import EditConfig


@stage_component(
    "edit",
    EditConfig,
    "Edit one shard of the videos into output_dir; returns how many items it edited. "
    "A rerun skips items already edited with the same settings, models and LoRA content.",
    extra={
        "layout": "VideoPainter layout pointer (segment's output)",
        "output_dir": "where the edits go; empty = <layout>__edits beside the layout",
        "model_root": "model root (path or gs://)",
        "lora": "FluxFill LoRA from an upstream train-lora (optional)",
        "lora_uri": "FluxFill LoRA folder (path or gs://) when no upstream LoRA is given; "
        "empty = none",
    },
    rename={"instruction": "instructions"},
)
def edit_shard(
    layout: Input[Dataset],
    output_dir: str,
    model_root: str,
    shard_index: int,
    num_shards: int,
    lora: Input[Model] = None,
    lora_uri: str = "",
    instruction: str = "lane single white solid",
    judge: bool = True,
    vlm_size: str = "7B",
    judge_max_new_tokens: int = 128,
    judge_visual_tokens: int = 990,
    first_frame_size: int = 1024,
    first_frame_steps: int = 50,
    first_frame_guidance: float = 30.0,
    first_frame_dilation: int = 16,
    first_frame_feather: int = 8,
    max_attempts: int = 5,
    lora_scale: float = 1.0,
    judge_retries: int = 2,
    judge_backoff_s: float = 1.0,
    steps: int = 50,
    guidance: float = 6.0,
    conditioning_scale: float = 1.0,
    mask_dilation: int = 16,
    mask_feather: int = 8,
    geometry: str = "fit",
    overlap: int = 5,
    id_resample: bool = True,
    prev_clip_weight: float = 1.0,
    propagation: str = "reference",
    max_frames: int = 0,
    seed: int = 42,
    preset: str = "exact",
    compile: bool = True,
    attention: str = "auto",
    video_ids: str = "",
    parallel_items: int = 1,
) -> int:
    from lanepaint.edit.layout import default_output_dir
    from lanepaint.io import artifacts, storage
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.edit import EditConfig, edit_videos

    # ParallelFor items arrive as JSON numbers (floats).
    config = from_params(
        EditConfig, locals(), rename={"instruction": "instructions"}, shard_index=int(shard_index)
    )
    lora_dir = artifacts.resolve_pointer(lora.path) if lora is not None else lora_uri
    data_dir = artifacts.resolve_pointer(layout.path)
    out = output_dir or default_output_dir(data_dir)
    summary_dir = storage.join(out, "_shards", f"shard_{int(shard_index):04d}")
    result = edit_videos(data_dir, out, model_root, config, lora=lora_dir, summary_dir=summary_dir)
    return int(result.summary["done"])


@dsl.component(base_image=image_for("merge"), install_kfp_package=False)
def merge_edits(
    layout: Input[Dataset],
    output_dir: str,
    shard_counts: list,
    edits: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Combine the shards' records, summaries and failures; the output points at the edits.

    Args:
        layout: VideoPainter layout pointer (locates the default output folder)
        output_dir: the shards' output folder; empty = <layout>__edits beside the layout
        shard_counts: items each shard edited (collected; its length is the shard count)
    """
    from lanepaint.edit.layout import default_output_dir
    from lanepaint.io import artifacts
    from lanepaint.stages.edit import merge_edits as merge

    out = output_dir or default_output_dir(artifacts.resolve_pointer(layout.path))
    result = merge(out, num_shards=len(shard_counts))
    artifacts.publish_stage(result, edits, metrics, report, "edit-outputs")
