"""Per-shard random streams: what makes a run's numbers depend on its shards, not its processes.

A run with `shards = S` splits each learner batch into S sub-batches, and shard k draws its
sub-batch from its own random stream: a torch RNG state (the CPU's, and the GPU's on CUDA) that
starts from a seed derived from (seed, k) and is carried from iteration to iteration (and in the
checkpoint). Process r of W owns shards r, r + W, r + 2W, ...; whichever process draws shard k, it
draws the same numbers. Everything else that is random either runs on the main stream identically on
every process (network initialisation, re-initialisation, the novelty networks) or in a stream of its
own seeded from (seed, what, when) (a search block, the log Z warm start, an in-run evaluation).

Seeds are derived without Python's `hash` (which varies between processes): a SplitMix64 chain.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import torch

MASK = (1 << 64) - 1


class Tag(IntEnum):
    """What a derived seed is for (the first key after the run's seed)."""

    SHARD = 1
    SEARCH_BLOCK = 2
    WARM_START = 3
    TARGET_SAMPLES = 4
    IN_RUN_EVAL = 5


def _splitmix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """A seed in [0, 2^63) from the run's seed and integer keys (e.g. Tag.SHARD, k); the same on
    every process and every Python."""
    z = _splitmix(int(seed) & MASK)
    for k in keys:
        z = _splitmix(z ^ (int(k) & MASK))
    return z >> 1


def _capture(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


@contextmanager
def rng_fork(device: torch.device, *, seed: int | None = None, state: dict | None = None) -> Iterator[dict]:
    """Run the block on its own random stream: from `state` (a dict of `_capture`) or from `seed`,
    on the CPU and, for a CUDA device, that GPU. The main stream is untouched afterwards; the
    yielded dict holds the stream's state at the block's end under 'state'."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if state is not None:
            torch.set_rng_state(state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(state["cuda"], device)
        else:
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
        box: dict = {}
        yield box
        box["state"] = _capture(device)


class ShardRNG:
    """The random streams of a run's `shards`; this process (`ctx`) owns and advances shards
    ctx.rank, ctx.rank + ctx.world, ... ."""

    def __init__(self, seed: int, shards: int, ctx, device: torch.device) -> None:
        self.seed, self.shards, self.ctx, self.device = int(seed), int(shards), ctx, torch.device(device)
        self.owned = list(range(ctx.rank, self.shards, ctx.world))
        self.states: dict[int, dict] = {}
        for k in self.owned:
            with rng_fork(self.device, seed=derive_seed(seed, Tag.SHARD, k)) as box:
                pass
            self.states[k] = box["state"]

    @contextmanager
    def fork(self, k: int) -> Iterator[None]:
        """The block draws from shard k's stream (which it advances); the main stream is untouched."""
        with rng_fork(self.device, state=self.states[k]) as box:
            yield
        self.states[k] = box["state"]

    def state_dict(self) -> list[dict]:
        """Every shard's state, in shard order (a collective: each process gives its own)."""
        merged: dict[int, dict] = {}
        for part in self.ctx.all_gather_objects(self.states):
            merged.update(part)
        return [merged[k] for k in range(self.shards)]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != self.shards:
            raise ValueError(f"checkpoint holds {len(states)} shard random states, the run has shards={self.shards}")
        self.states = {k: dict(states[k]) for k in self.owned}
        for k, st in self.states.items():
            if self.device.type == "cuda" and "cuda" not in st:   # written on the CPU, resumed on a GPU
                with rng_fork(self.device, seed=derive_seed(self.seed, Tag.SHARD, k, 1)) as box:
                    pass
                st["cuda"] = box["state"]["cuda"]


__all__ = ["Tag", "derive_seed", "rng_fork", "ShardRNG"]
