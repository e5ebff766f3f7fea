"""KFP components of the dataset-build pipeline: plan → shard (fanned out) → merge."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for, stage_component
from lanepaint.stages.build_dataset import BuildConfig


@dsl.component(base_image=image_for("shard"), install_kfp_package=False)
def plan_dataset_build(output_root: str, output_dir: str, run_date: str) -> str:
    """Where this run writes: ``output_dir`` if given, else a new prefix
    under ``output_root`` dated by ``run_date`` (a schedule's scheduled time) or by now.
    (KFP's creation-time placeholder is not resolved by the local runner, so the plan task,
    which runs once per run, reads the clock itself.)

    Args:
        output_root: where dated dataset folders are created
        output_dir: a fixed dataset folder (e.g. to resume a run); empty = a new dated one
        run_date: the run's scheduled time (ISO 8601); empty or unresolved = now
    """
    from lanepaint.data.dataset_build import dated_output_dir

    return output_dir or dated_output_dir(output_root, run_date)


@stage_component(
    "build-dataset",
    BuildConfig,
    "Process one shard of the source videos into OUT/parts/shard_NNNN; returns its rows.",
    extra={
        "source": "video source root: chunk_NNNN folders or zip chunks (path or gs://)",
        "output_dir": "the dataset folder (from the plan task)",
        "model_root": "model root (folder or gs://); empty for weights-free runs",
        "shard_index": "which shard this task processes (0-based)",
        "num_shards": "how many shards the videos are split into (by a hash of each key)",
    },
)
def build_dataset_shard(
    source: str,
    output_dir: str,
    model_root: str,
    shard_index: int,
    num_shards: int,
    chunk_start: int = 0,
    chunk_end: int = 199,
    start_index: int = 0,
    limit: int = 0,
    frame_numbers: str = "1,100,200,300,400,500",
    min_coverage: float = 0.01,
    segmenter: str = "sam2",
    captioner: str = "vlm",
    vlm_size: str = "7B",
    analyzer_check: bool = True,
    batch_size: int = 8,
) -> int:
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.build_dataset import BuildConfig, run

    config = from_params(BuildConfig, locals())
    result = run(
        output_dir,
        config,
        source=source,
        model_root=model_root or None,
        num_shards=num_shards,
        shard_index=int(shard_index),  # ParallelFor items arrive as JSON numbers (floats)
        do_merge=False,
    )
    return int(result.summary["details"]["rows_written"])


@dsl.component(base_image=image_for("merge"), install_kfp_package=False)
def merge_dataset(
    output_dir: str,
    shard_rows: list,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Write train.csv, manifest and stats from every shard's records.

    Args:
        output_dir: the dataset folder the shards wrote into
        shard_rows: the shards' row counts (collected: makes the merge wait for them all)
    """
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.build_dataset import merge

    result = merge(output_dir)
    artifacts.publish_stage(result, dataset, metrics, report, "fluxfill-dataset")
    dataset.metadata["rows"] = result.summary["details"]["rows"]
    with open(report.path, "a") as f:
        f.write("\n\n" + storage.read_text(storage.join(output_dir, "stats.md")))
