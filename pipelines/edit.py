"""Pipeline `edit`: videos → segment (road masks in the VideoPainter layout) → edit → evaluate.

Each step is added by one helper that creates the task and applies its cluster settings
(components/settings.yaml); a later step takes the previous step's output artifact, e.g.
``seg.outputs["layout"]`` (a pointer to the VideoPainter root with meta.csv, raw_videos/
and mask_root/), so a step is added with one helper and one call in the pipeline body.
"""

from kfp import dsl

from components.segment import segment
from components.settings import configure
from pipelines.steps import add_edit, add_evaluate


def add_segment_step(**params) -> dsl.PipelineTask:
    """Road masks for every input video (one model load for the whole list)."""
    task = segment(**params)
    configure(task, "segment")
    return task


@dsl.pipeline(
    name="edit",
    description="Lane-marking edits of driving videos: SAM2.1 road masks, the edit (FluxFill "
    "first frame + VLM judge, VideoPainter propagation) in parallel shards, then evaluation.",
)
def edit_pipeline(
    videos: list,
    model_root: str,
    video_list: str = "",
    output_dir: str = "",
    segmenter: str = "sam2",
    max_frames: int = 150,
    fps: float = 8.0,
    points: str = (
        "0.45,0.68;0.5,0.68;0.55,0.68;0.4,0.75;0.5,0.75;0.6,0.75;0.35,0.85;0.5,0.85;0.65,0.85"
    ),
    dilate: int = 4,
    png_masks: bool = False,
    overlay: bool = False,
    compile_tracking: str = "",
    instruction: str = "lane single white solid",
    lora_uri: str = "",
    lora_scale: float = 1.0,
    edit_dir: str = "",
    num_shards: int = 1,
    judge: bool = True,
    max_attempts: int = 5,
    steps: int = 50,
    first_frame_steps: int = 50,
    compile: bool = True,
    attention: str = "auto",
):
    seg = add_segment_step(
        videos=videos,
        video_list=video_list,
        output_dir=output_dir,
        model_root=model_root,
        segmenter=segmenter,
        max_frames=max_frames,
        fps=fps,
        points=points,
        dilate=dilate,
        png_masks=png_masks,
        overlay=overlay,
        compile_tracking=compile_tracking,
    )
    edits = add_edit(
        seg.outputs["layout"],
        edit_dir,
        model_root,
        instruction,
        num_shards,
        lora_uri=lora_uri,
        lora_scale=lora_scale,
        judge=judge,
        max_attempts=max_attempts,
        steps=steps,
        first_frame_steps=first_frame_steps,
        compile=compile,
        attention=attention,
    )
    add_evaluate(edits.outputs["edits"], "")
