"""KFP component shared by fan-outs: the shard numbers a ParallelFor iterates over."""

from kfp import dsl

from components.settings import image_for


@dsl.component(base_image=image_for("shard"), install_kfp_package=False)
def shard_indices(num_shards: int) -> list:
    """[0, 1, ..., num_shards-1]: the items of the ParallelFor over shards.

    Args:
        num_shards: how many shards (parallel tasks) the input is split into
    """
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    return list(range(num_shards))


@dsl.component(base_image=image_for("shard"), install_kfp_package=False)
def shard_items(output_dir: str, num_shards: int) -> list:
    """``[{"index": i, "output_dir": ...}, ...]``: loop items that carry the output folder.

    Inside a ParallelFor over an upstream output, kfp.local (2.17) hands the loop item to
    every other upstream parameter as well; fields of the item itself resolve correctly in
    both the local runner and the cluster, so the folder travels inside the item.

    Args:
        output_dir: the folder every shard task writes into
        num_shards: how many shards (parallel tasks) the input is split into
    """
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    return [{"index": i, "output_dir": output_dir} for i in range(num_shards)]
