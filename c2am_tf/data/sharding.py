"""Which part of a dataset one input pipeline reads: on a cluster every worker reads its own files.

Sharding happens on the list of files, before anything is decoded, so that N workers
each open 1/N of the images (tf.data's auto-shard policy FILE, done where the file
list is known). Where a dataset has fewer files than workers (a few TFRecord shards),
the elements themselves are split (policy DATA).
"""

import collections

Shard = collections.namedtuple("Shard", ["count", "index"])
Shard.__doc__ = "Input pipeline ``index`` of ``count``: it reads items index, index + count, ..."


def take_shard(items, shard, what="items"):
    """``items[index::count]``: this pipeline's part of a list of files (all of it for ``shard`` None).

    >>> take_shard(["a", "b", "c", "d", "e"], Shard(2, 1))
    ['b', 'd']

    Raises ValueError when the part is empty (more pipelines than ``what``).
    """
    if shard is None:
        return list(items)
    if not 0 <= shard.index < shard.count:
        raise ValueError(f"shard index {shard.index} is outside 0..{shard.count - 1}")
    part = list(items)[shard.index::shard.count]
    if not part:
        raise ValueError(f"{len(items)} {what} cannot be split among {shard.count} input pipelines")
    return part


def shard_dataset(ds, shard):
    """Element-wise split of a tf.data dataset (the DATA policy), for sources without a file list."""
    return ds if shard is None else ds.shard(shard.count, shard.index)
