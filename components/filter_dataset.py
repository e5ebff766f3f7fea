"""KFP component: filter-dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for


@dsl.component(base_image=image_for("filter-dataset"), install_kfp_package=False)
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
    limit: int = -1,
):
    """Select FluxFill rows by lane attributes; output points at the filtered dataset."""
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.filter_dataset import FilterConfig
    from lanepaint.stages.filter_dataset import filter_dataset as run

    config = FilterConfig(
        count=count,
        color=color,
        pattern=pattern,
        require_clear_road=require_clear_road,
        link_mode=link_mode,
        suffix=suffix or None,
        sort_by=sort_by or None,
        limit=None if limit < 0 else limit,
    )
    result = run(artifacts.resolve_pointer(input_dir), output_dir or None, config)
    s = result.summary
    artifacts.write_pointer(dataset.path, result.output_dir, "fluxfill-dataset", rows=s["kept"])
    dataset.metadata.update({"uri": result.output_dir, "rows": s["kept"]})
    for key in ("input_rows", "selected", "kept", "rejected", "not_selected"):
        metrics.log_metric(key, s[key])
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(result.output_dir, "summary.md")))
