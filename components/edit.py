"""KFP components of the edit step: one GPU task per shard of videos, then a merge."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.settings import image_for


@dsl.component(base_image=image_for("edit"), install_kfp_package=False)
def edit_shard(
    layout: Input[Dataset],
    output_dir: str,
    model_root: str,
    instruction: str,
    shard_index: int,
    num_shards: int,
    lora: Input[Model] = None,
    lora_uri: str = "",
    lora_scale: float = 1.0,
    judge: bool = True,
    max_attempts: int = 5,
    steps: int = 50,
    first_frame_steps: int = 50,
    max_frames: int = -1,
    compile_blocks: bool = True,
) -> int:
    """Edit one shard of the videos into output_dir; returns how many items it edited.

    The LoRA comes from an upstream train-lora (``lora``) or a URI (``lora_uri``)."""
    from dataclasses import replace

    from lanepaint.edit.first_frame import FirstFrameConfig
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.edit import EditConfig, default_output_dir, edit_videos

    config = EditConfig(
        instructions=instruction,
        first_frame=replace(
            FirstFrameConfig(),
            max_attempts=max_attempts,
            steps=first_frame_steps,
            lora_scale=lora_scale,
        ),
        judge=judge,
        lora=artifacts.resolve_pointer(lora.path) if lora is not None else (lora_uri or None),
        steps=steps,
        max_frames=None if max_frames < 0 else max_frames,
        compile=compile_blocks,
        num_shards=num_shards,
        shard_index=int(shard_index),  # ParallelFor items arrive as JSON numbers (floats)
    )
    data_dir = artifacts.resolve_pointer(layout.path)
    out = output_dir or default_output_dir(data_dir)
    summary_dir = storage.join(out, "_shards", f"shard_{int(shard_index):04d}")
    summary = edit_videos(data_dir, out, model_root, config, summary_dir=summary_dir)
    return int(summary["edited"])


@dsl.component(base_image=image_for("merge"), install_kfp_package=False)
def merge_edits(
    layout: Input[Dataset],
    output_dir: str,
    shard_counts: list,
    edits: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Combine the shards' manifests, summaries and failures."""
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.edit import default_output_dir
    from lanepaint.stages.edit import merge_edits as merge

    out = output_dir or default_output_dir(artifacts.resolve_pointer(layout.path))
    summary = merge(out, num_shards=len(shard_counts))
    artifacts.write_pointer(edits.path, out, "edit-outputs", items=summary["records"])
    edits.metadata.update({"uri": out, "items": summary["records"]})
    for key in ("items", "edited", "skipped_done", "failed", "records"):
        metrics.log_metric(key, summary[key])
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "summary.md")))
