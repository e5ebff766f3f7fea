"""Groups of tasks shared by several pipelines (each task gets its cluster settings here)."""

from kfp import dsl

from components.build_dataset import build_dataset_shard, merge_dataset, plan_dataset_build
from components.edit import edit_shard, merge_edits
from components.evaluate import evaluate
from components.settings import configure, settings
from components.shards import shard_indices, shard_items

# KFP 2.17 takes ParallelFor's parallelism at compile time only: settings.yaml sets it.
_PIPELINE_SETTINGS = settings().get("pipelines", {})
DATASET_PARALLELISM = int(_PIPELINE_SETTINGS.get("dataset_build", {}).get("parallelism", 8))
EDIT_PARALLELISM = int(_PIPELINE_SETTINGS.get("edit", {}).get("parallelism", 8))


def add_dataset_build(
    source, output_root, output_dir, run_date, model_root, num_shards, **shard_params
) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
    """plan → build shards in parallel → merge. Returns (plan, merge) tasks; ``plan.output``
    is the dataset folder."""
    plan = plan_dataset_build(output_root=output_root, output_dir=output_dir, run_date=run_date)
    configure(plan, "shard")
    shards = shard_items(output_dir=plan.output, num_shards=num_shards)
    configure(shards, "shard")
    with dsl.ParallelFor(shards.output, parallelism=DATASET_PARALLELISM) as item:
        shard = build_dataset_shard(
            source=source,
            output_dir=item.output_dir,
            model_root=model_root,
            shard_index=item.index,
            num_shards=num_shards,
            **shard_params,
        )
        configure(shard, "build-dataset")
    merged = merge_dataset(output_dir=plan.output, shard_rows=dsl.Collected(shard.output))
    configure(merged, "merge")
    return plan, merged


def add_edit(layout, output_dir, model_root, num_shards, lora=None, **edit_params):
    """Videos split into shards, one GPU task per shard in parallel, then a merge.
    Returns the merge task (output ``edits``: pointer to the edit outputs)."""
    shards = shard_indices(num_shards=num_shards)
    configure(shards, "shard")
    with dsl.ParallelFor(shards.output, parallelism=EDIT_PARALLELISM) as index:
        extra = {"lora": lora} if lora is not None else {}
        task = edit_shard(
            layout=layout,
            output_dir=output_dir,
            model_root=model_root,
            shard_index=index,
            num_shards=num_shards,
            **extra,
            **edit_params,
        )
        configure(task, "edit")
    merged = merge_edits(
        layout=layout, output_dir=output_dir, shard_counts=dsl.Collected(task.output)
    )
    configure(merged, "merge")
    return merged


def add_evaluate(edits, output_dir, **evaluate_params) -> dsl.PipelineTask:
    task = evaluate(edits=edits, output_dir=output_dir, **evaluate_params)
    configure(task, "evaluate")
    return task
