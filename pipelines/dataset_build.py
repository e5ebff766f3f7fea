"""Pipeline `dataset-build`: videos → sharded build-dataset → merge → filter-dataset.

Meant to run as a recurring run (`make schedule`): every run writes a new dated prefix under
``output_root`` — the schedule's ``run_date`` (its scheduled time), else the run's creation
time — so no run overwrites an earlier dataset. ``output_dir`` pins the folder instead
(e.g. to resume a run).
"""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.settings import configure
from pipelines.steps import add_dataset_build


@dsl.pipeline(
    name="dataset-build",
    description="Road frames from driving videos into a captioned, filtered FluxFill dataset.",
)
def dataset_build_pipeline(
    source: str,
    output_root: str,
    model_root: str = "",
    output_dir: str = "",
    run_date: str = "",
    num_shards: int = 8,
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
    count: str = "any",
    color: str = "any",
    pattern: str = "any",
    require_clear_road: bool = True,
):
    plan, merged = add_dataset_build(
        source,
        output_root,
        output_dir,
        run_date,
        model_root,
        num_shards,
        chunk_start=chunk_start,
        chunk_end=chunk_end,
        start_index=start_index,
        limit=limit,
        frame_numbers=frame_numbers,
        min_coverage=min_coverage,
        segmenter=segmenter,
        captioner=captioner,
        vlm_size=vlm_size,
        analyzer_check=analyzer_check,
        batch_size=batch_size,
    )
    filtered = filter_dataset(
        input_dir=plan.output,
        count=count,
        color=color,
        pattern=pattern,
        require_clear_road=require_clear_road,
    ).after(merged)
    configure(filtered, "filter-dataset")
