"""Pipeline `edit`: videos → segment (road masks in the VideoPainter layout) → edit → evaluate.

Each step is added by one helper that creates the task and applies its cluster settings
(components/settings.yaml); a later step takes the previous step's output artifact, e.g.
``seg.outputs["layout"]`` (a pointer to the VideoPainter root with meta.csv, raw_videos/
and mask_root/), so a step is added with one helper and one call in the pipeline body.
"""

from kfp import dsl

from components.segment import segment
from components.settings import configure


def add_segment_step(**params) -> dsl.PipelineTask:
    """Road masks for every input video (one model load for the whole list)."""
    task = segment(**params)
    configure(task, "segment")
    return task


@dsl.pipeline(
    name="edit",
    description="Lane-marking edits of driving videos: SAM2.1 road masks, then the edit.",
)
def edit_pipeline(
    videos: list,
    model_root: str,
    video_list: str = "",
    output_dir: str = "",
    segmenter: str = "sam2",
    max_frames: int = 150,
    fps: float = 8.0,
    points: str = "",
    dilate: int = 4,
    png_masks: bool = False,
    overlay: bool = False,
):
    add_segment_step(
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
    )
