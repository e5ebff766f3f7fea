"""Pipeline `end-to-end`: dataset-build → filter-dataset → train-lora → segment → edit with
the new LoRA → evaluate, in one DAG.

Parameters come from the stages (pipelines.params): dataset-build's and filter-dataset's
unprefixed, train-lora's ``train_*``, segment's ``segment_*``, the edit's unprefixed and
evaluate's ``evaluate_*``. One ``segmenter`` serves dataset-build and segment, one
``vlm_size`` the captions and the judge.

Rerunning the same DAG redoes nothing: the dataset, the road masks and the LoRA live in
stable folders under ``output_root`` (masks and LoRA keyed by their settings), and every
stage skips what it finished with the same settings and inputs.
"""

from kfp import dsl

from components.build_dataset import build_dataset_shard
from components.edit import edit_shard
from components.evaluate import evaluate
from components.filter_dataset import filter_dataset
from components.segment import segment
from components.settings import configure
from components.train_lora import train_lora
from pipelines.params import Settings, with_settings
from pipelines.steps import add_dataset_build, add_edit, add_evaluate

BUILD = Settings(build_dataset_shard)
FILTER = Settings(
    filter_dataset,
    exclude=("output_dir", "limit", "suffix", "workers"),
    defaults={"require_clear_road": True},
)
TRAIN = Settings(train_lora, exclude=("output_dir",), prefix="train_")
SEGMENT = Settings(
    segment, exclude=("model_root", "output_dir", "video_list", "segmenter"), prefix="segment_"
)
EDIT = Settings(edit_shard, exclude=("lora_uri", "max_frames", "vlm_size"))
EVALUATE = Settings(evaluate, prefix="evaluate_")


@dsl.pipeline(
    name="end-to-end",
    description="Build and filter a lane dataset, train a FluxFill LoRA, edit videos with it "
    "and evaluate the edits.",
)
@with_settings(BUILD, FILTER, TRAIN, SEGMENT, EDIT, EVALUATE)
def end_to_end_pipeline(
    source: str,
    videos: list,
    output_root: str,
    model_root: str,
    output_dir: str = "",
    run_date: str = "",
    num_shards: int = 2,
    edit_shards: int = 1,
    edit_dir: str = "",
    **settings,
):
    """Dataset, LoRA and edits in one DAG.

    Args:
        source: videos for the dataset: chunk_NNNN/ folders or zip chunks (path or gs://)
        videos: videos to edit (files or folders, paths or gs:// URIs)
        output_root: the dataset, road masks and LoRA go under this folder (path or gs://)
        model_root: model root (path or gs://)
        output_dir: pin the dataset folder; empty = {output_root}/{run_date}
        run_date: the scheduled time of a recurring run (empty = now)
        num_shards: dataset-build tasks that run in parallel
        edit_shards: edit tasks that run in parallel (one GPU each)
        edit_dir: where the edits go; empty = <layout>__edits beside the road masks
    """
    plan, merged = add_dataset_build(
        source, output_root, output_dir, run_date, model_root, num_shards, **BUILD.pick(settings)
    )
    filtered = filter_dataset(input_dir=plan.output, **FILTER.pick(settings)).after(merged)
    configure(filtered, "filter-dataset")
    trained = train_lora(
        train_data=filtered.outputs["dataset"],
        model_root=model_root,
        output_dir=f"{output_root}/loras/{{settings_key}}",
        **TRAIN.pick(settings),
    )
    configure(trained, "train-lora")
    seg = segment(
        videos=videos,
        model_root=model_root,
        output_dir=f"{output_root}/segments/{{settings_key}}",
        segmenter=settings["segmenter"],
        **SEGMENT.pick(settings),
    )
    configure(seg, "segment")
    edits = add_edit(
        seg.outputs["layout"],
        edit_dir,
        model_root,
        edit_shards,
        lora=trained.outputs["lora"],
        vlm_size=settings["vlm_size"],
        **EDIT.pick(settings),
    )
    add_evaluate(edits.outputs["edits"], "", **EVALUATE.pick(settings))
