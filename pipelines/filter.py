"""Pipeline `filter-dataset`: one FluxFill dataset in, a filtered dataset out."""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.settings import configure
from pipelines.params import Settings, with_settings

FILTER = Settings(filter_dataset)


@dsl.pipeline(
    name="filter-dataset",
    description="Select FluxFill rows by lane count/color/pattern into a new dataset.",
)
@with_settings(FILTER)
def filter_pipeline(input_dir: str, **settings):
    """Select FluxFill rows by lane attributes into a new dataset.

    Args:
        input_dir: FluxFill dataset (path or gs://)
    """
    task = filter_dataset(input_dir=input_dir, **FILTER.pick(settings))
    configure(task, "filter-dataset")
