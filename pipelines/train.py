"""Pipeline `train`: filter a FluxFill dataset, then train a FluxFill LoRA on the result.

The filtered dataset reaches train-lora as a pointer artifact (lineage in the UI, data in
place). Checkpoints go to ``output_dir`` when given, so a retried or resubmitted run with the
same settings resumes; left empty, each run trains into its own folder.
"""

from kfp import dsl

from components.filter_dataset import filter_dataset
from components.settings import configure
from components.train_lora import train_lora
from pipelines.params import Settings, with_settings

FILTER = Settings(filter_dataset, exclude=("output_dir",), defaults={"require_clear_road": True})
TRAIN = Settings(train_lora)


@dsl.pipeline(
    name="train",
    description="Filter a FluxFill dataset by lane attributes, then train a FluxFill LoRA.",
)
@with_settings(TRAIN, FILTER)
def train_pipeline(input_dir: str, model_root: str, filtered_dir: str = "", **settings):
    """Filter a FluxFill dataset, then train a FluxFill LoRA on it.

    Args:
        input_dir: FluxFill dataset to filter (path or gs://)
        model_root: model root holding FLUX.1-Fill-dev (path or gs://)
        filtered_dir: where the filtered dataset goes; empty = {input}__{suffix}
    """
    filtered = filter_dataset(input_dir=input_dir, output_dir=filtered_dir, **FILTER.pick(settings))
    configure(filtered, "filter-dataset")
    trained = train_lora(
        train_data=filtered.outputs["dataset"], model_root=model_root, **TRAIN.pick(settings)
    )
    configure(trained, "train-lora")
