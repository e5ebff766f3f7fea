"""KFP components of the dataset-build pipeline: plan → shard (fanned out) → merge."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for


@dsl.component(base_image=image_for("shard"), install_kfp_package=False)
def plan_dataset_build(output_root: str, output_dir: str, run_date: str) -> str:
    """Where this run writes: ``output_dir`` if given, else a new prefix
    under ``output_root`` dated by ``run_date`` (a schedule's scheduled time) or by now.
    (KFP's creation-time placeholder is not resolved by the local runner, so the plan task,
    which runs once per run, reads the clock itself.)"""
    from lanepaint.stages.build_dataset import dated_output_dir

    return output_dir or dated_output_dir(output_root, run_date)


@dsl.component(base_image=image_for("build-dataset"), install_kfp_package=False)
def build_dataset_shard(
    source: str,
    output_dir: str,
    model_root: str,
    shard_index: int,
    num_shards: int,
    chunk_start: int = 0,
    chunk_end: int = 199,
    start_index: int = 0,
    limit: int = -1,
    frame_numbers: str = "1,100,200,300,400,500",
    min_coverage: float = 0.01,
    segmenter: str = "sam2",
    captioner: str = "vlm",
    vlm_size: str = "7B",
) -> int:
    """Process one shard of the source videos into OUT/parts/shard_NNNN; returns its rows."""
    from lanepaint.stages.build_dataset import BuildConfig, parse_frame_numbers, run

    config = BuildConfig(
        frame_numbers=parse_frame_numbers(frame_numbers),
        min_coverage=min_coverage,
        segmenter=segmenter,
        captioner=captioner,
        vlm_size=vlm_size,
    )
    summary = run(
        output_dir,
        config,
        source=source,
        model_root=model_root or None,
        chunk_start=chunk_start,
        chunk_end=chunk_end,
        start_index=start_index,
        limit=None if limit < 0 else limit,
        num_shards=num_shards,
        shard_index=int(shard_index),  # ParallelFor items arrive as JSON numbers (floats)
        do_merge=False,
    )
    return int(summary["rows_written"])


@dsl.component(base_image=image_for("merge"), install_kfp_package=False)
def merge_dataset(
    output_dir: str,
    shard_rows: list,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Write train.csv, manifest and stats from every shard's records."""
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.build_dataset import merge

    summary = merge(output_dir)
    artifacts.write_pointer(dataset.path, output_dir, "fluxfill-dataset", rows=summary["rows"])
    dataset.metadata.update({"uri": output_dir, "rows": summary["rows"]})
    for key in ("items", "rows", "failed", "missing_frames", "dropped_low_coverage"):
        metrics.log_metric(key, summary[key])
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(output_dir, "summary.md")))
        f.write("\n\n" + storage.read_text(storage.join(output_dir, "stats.md")))
