"""Running one training run on several processes (torchrun, one or several machines).

`context` says who this process is (rank, world size, device) and holds the few collectives
training needs, each a no-op on one process; `shards` derives the per-shard random streams that make
a run's numbers depend on its number of shards, never on its number of processes (docs/distributed.md).
"""
from .context import Context, RankZeroError, launch
from .shards import ShardRNG, Tag, derive_seed, rng_fork

__all__ = ["Context", "RankZeroError", "launch", "ShardRNG", "Tag", "derive_seed", "rng_fork"]
