"""Which shards a reader works, in which order: a dataset's committed shards listed from its manifests,
shuffled per epoch from the seed and dealt round-robin (DESIGN.md, Trainer data)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def whole_shard(epoch: int, shard: str) -> dict:
    return {"epoch": epoch, "shard": shard, "start": [0, 0], "end": None}


def rank_shards(shards: Sequence[str], rank: int, world: int, seed: int, epoch: int) -> list[str]:
    """This reader's shards for the epoch: all shards shuffled from (seed, epoch), dealt round-robin."""
    return epoch_order(shards, seed, epoch)[rank::world]


def epoch_order(shards: Sequence[str], seed: int, epoch: int) -> list[str]:
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    ordered = sorted(shards)
    return [ordered[i] for i in order]


def dataset_shards(dataset: str) -> tuple[dict, list[str]]:
    """(duplicate owners, committed shard names) of a dataset: read once per reader from the manifests."""
    from pipeline.shards import DatasetLayout
    from pipeline.shards.manifest import duplicate_owners, read_manifest

    layout = DatasetLayout.of(dataset)
    owners = duplicate_owners(layout)  # which shard owns a recording a retried writer committed twice (usually none)
    shards = sorted(set(read_manifest(layout, columns=["shard"], owners=owners).column("shard").to_pylist()))
    return owners, shards


def dataset_seed(seed: int, index: int) -> int:
    """The seed of the blend's dataset `index` (the first keeps the run's seed)."""
    return seed + 1000 * index
