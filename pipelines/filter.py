"""Pipeline `filter-dataset`: one FluxFill dataset in, a filtered dataset out."""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.settings import configure


@dsl.pipeline(
    name="filter-dataset",
    description="Select FluxFill rows by lane count/color/pattern into a new dataset.",
)
def filter_pipeline(
    input_dir: str,
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
    task = filter_dataset(
        input_dir=input_dir,
        output_dir=output_dir,
        count=count,
        color=color,
        pattern=pattern,
        require_clear_road=require_clear_road,
        link_mode=link_mode,
        suffix=suffix,
        sort_by=sort_by,
        limit=limit,
        workers=workers,
    )
    configure(task, "filter-dataset")
