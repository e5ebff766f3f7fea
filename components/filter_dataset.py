"""KFP component: filter-dataset."""

from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import stage_component
from lanepaint.stages.filter_dataset import FilterConfig


@stage_component(
    "filter-dataset",
    FilterConfig,
    "Select FluxFill rows by lane attributes; the output points at the filtered dataset.",
    extra={
        "input_dir": "FluxFill dataset: path, gs:// URI or an upstream dataset pointer",
        "output_dir": "where to write; empty = {input}__{suffix} beside the input",
    },
)
def filter_dataset(
    input_dir: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    output_dir: str = "",
    count: str = "any",
    color: str = "any",
    pattern: str = "any",
    require_clear_road: bool = False,
    link_mode: str = "copy",
    suffix: str = "",
    sort_by: str = "",
    limit: int = 0,
    workers: int = 8,
):
    from lanepaint.io import artifacts
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.filter_dataset import FilterConfig
    from lanepaint.stages.filter_dataset import filter_dataset as run

    config = from_params(FilterConfig, locals())
    result = run(artifacts.resolve_pointer(input_dir), output_dir, config)
    artifacts.publish_stage(result, dataset, metrics, report, "fluxfill-dataset")
