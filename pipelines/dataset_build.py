"""Pipeline `dataset-build`: videos → sharded build-dataset → merge → filter-dataset.

Meant to run as a recurring run (`make schedule`): every run writes a new dated prefix under
``output_root`` — the schedule's ``run_date`` (its scheduled time), else the run's creation
time — so no run overwrites an earlier dataset. ``output_dir`` pins the folder instead
(e.g. to resume a run).
"""

from kfp import dsl

from components.build_dataset import build_dataset_shard
from components.filter_dataset import filter_dataset
from components.settings import configure
from pipelines.params import Settings, with_settings
from pipelines.steps import add_dataset_build

BUILD = Settings(build_dataset_shard)
# limit/suffix/output folder of the filter are the pipeline's: the filtered dataset sits
# beside the built one, every selected row kept.
FILTER = Settings(
    filter_dataset,
    exclude=("output_dir", "limit", "suffix", "workers"),
    defaults={"require_clear_road": True},
)


@dsl.pipeline(
    name="dataset-build",
    description="Road frames from driving videos into a captioned, filtered FluxFill dataset.",
)
@with_settings(BUILD, FILTER)
def dataset_build_pipeline(
    source: str,
    output_root: str,
    model_root: str = "",
    output_dir: str = "",
    run_date: str = "",
    num_shards: int = 8,
    **settings,
):
    """Build a captioned FluxFill dataset from driving videos, then filter it.

    Args:
        source: videos: chunk_NNNN/ folders or zip chunks (path or gs://)
        output_root: datasets go to {output_root}/{run_date} unless output_dir is given
        model_root: model root (path or gs://); empty with the classical segmenter and the
            analyzer captioner
        output_dir: pin the dataset folder (e.g. to resume a run)
        run_date: the scheduled time of a recurring run (empty = now)
        num_shards: build tasks that run in parallel
    """
    plan, merged = add_dataset_build(
        source, output_root, output_dir, run_date, model_root, num_shards, **BUILD.pick(settings)
    )
    filtered = filter_dataset(input_dir=plan.output, **FILTER.pick(settings)).after(merged)
    configure(filtered, "filter-dataset")
