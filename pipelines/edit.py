"""Pipeline `edit`: videos → segment (road masks in the VideoPainter layout) → edit → evaluate.

Each step is added by one helper that creates the task and applies its cluster settings
(components/settings.yaml); a later step takes the previous step's output artifact, e.g.
``seg.outputs["layout"]`` (a pointer to the VideoPainter root with meta.csv, raw_videos/
and mask_root/). The parameters of each step are the stage's own settings
(pipelines.params): segment's unprefixed, the edit's unprefixed, evaluate's ``evaluate_*``.
"""

from kfp import dsl

from components.edit import edit_shard
from components.evaluate import evaluate
from components.segment import segment
from components.settings import configure
from pipelines.params import Settings, with_settings
from pipelines.steps import add_edit, add_evaluate

SEGMENT = Settings(segment, exclude=("model_root",))
# The layout holds only the frames segment kept, so the edit takes them all.
EDIT = Settings(edit_shard, exclude=("max_frames",))
EVALUATE = Settings(evaluate, prefix="evaluate_")


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
@with_settings(SEGMENT, EDIT, EVALUATE)
def edit_pipeline(
    videos: list, model_root: str, edit_dir: str = "", num_shards: int = 1, **settings
):
    """Edit lane markings in driving videos.

    Args:
        videos: video files or folders (paths or gs:// URIs)
        model_root: model root (path or gs://)
        edit_dir: where the edits go; empty = <layout>__edits beside the segment layout
        num_shards: edit tasks that run in parallel (one GPU each)
    """
    seg = add_segment_step(videos=videos, model_root=model_root, **SEGMENT.pick(settings))
    edits = add_edit(seg.outputs["layout"], edit_dir, model_root, num_shards, **EDIT.pick(settings))
    add_evaluate(edits.outputs["edits"], "", **EVALUATE.pick(settings))
