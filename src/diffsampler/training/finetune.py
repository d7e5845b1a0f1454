"""Starting a run from another run (`init_from`): its weights, log Z, replay buffer and novelty model,
a deeper EGNN grown from a shallower one, and the lineage of energy calls and wall time.

The source's averaged weights are taken when it kept an EMA (they are the weights it reported and
sampled with). The network must have the same architecture keys, except that an EGNN drift may be
deeper than the source's (`EGNNDrift.load_shallower`: inserted layers end in zero Linears, so the
deeper network starts at the source's function). A flow network (SubTB/DB) that only one side has
is left as initialised. Optimiser states, iteration, energy-call counts and RNG start anew, so the
run's budgets count its own work; its report also gives the cumulative calls and training time of
its whole lineage (the source's lineage plus the source's own), so a chain of fine-tunes is quoted
honestly.
"""
from __future__ import annotations

import os

from ..errors import CheckpointError
from ..nets import EGNNDrift
from ..targets.view import user_target
from .checkpoint import CHECKPOINT, load_checkpoint

ARCHITECTURE_KEYS = ("drift", "width", "depth", "time_features", "sigma", "scale_by_sigma", "time_warp",
                     "coordinates")
# a resume must match these (shards: a checkpoint from before the key, or of an unresolved config, had one)
RESUME_KEYS = ("drift", "width", "depth", "time_features", "objective", "dtype", "time_warp", "shards",
               "coordinates")


def first_mismatch(cfg, state: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
    """The first of `keys` on which a checkpoint's config (keys added since: their defaults) differs
    from `cfg`, with the checkpoint's value; (None, None) if none does."""
    saved = {**type(cfg)().to_dict(), **state["config"]}
    for k in keys:
        have, want = saved.get(k), getattr(cfg, k)
        if k == "shards":
            have, want = have or 1, want or 1
        if have != want:
            return k, saved.get(k)
    return None, None


def checkpoint_path(source: str) -> str:
    return os.path.join(source, CHECKPOINT) if os.path.isdir(source) else source


def start_from(source: str, target, cfg, learner, behaviour, rounds) -> dict:
    """Load `source` (a run directory or checkpoint of the same target) into the learner, buffer and
    novelty model (see module); returns the lineage record of the new run."""
    path = checkpoint_path(source)
    state = load_checkpoint(path, target_name=target.name, dim=user_target(target).dim)
    k, have = first_mismatch(cfg, state, tuple(a for a in ARCHITECTURE_KEYS if a != "depth"))
    if k is not None:
        raise CheckpointError(f"config key 'init_from': {path} has {k}={have!r}, this config has "
                              f"{getattr(cfg, k)!r} (the network must match)")
    load_network(path, state, cfg, learner)
    if state.get("buffer") is not None:
        behaviour.buffer.add(state["buffer"]["x"], state["buffer"]["log_r"])
    rnd = (state.get("rnd") or {}).get("net")
    if rounds.rnd is not None and rnd is not None:
        mine = rounds.rnd.state_dict()
        if set(mine) == set(rnd) and all(mine[k].shape == rnd[k].shape for k in mine):
            rounds.rnd.load_state_dict(rnd)
    learner.warm_start_log_Z = False
    if learner.ema is not None:
        learner.ema.reset(learner.sampler)
    return lineage_of(path, state)


def load_network(path: str, state: dict, cfg, learner) -> None:
    """The source's (averaged) network weights into the learner's sampler, deepened if needed."""
    weights = dict(state["sampler"])
    if state.get("ema") is not None:
        weights.update(state["ema"]["shadow"])
    _, source_depth = first_mismatch(cfg, state, ("depth",))
    if source_depth is not None:
        weights = deepened(learner.sampler.drift, weights, int(source_depth), cfg.depth, path)
    mine = learner.sampler.state_dict()
    mismatched = sorted(k for k in set(mine) ^ set(weights) if not k.startswith("flow."))
    if mismatched:
        raise CheckpointError(f"config key 'init_from': {path} does not match this network: {mismatched}")
    try:
        learner.sampler.load_state_dict({k: v for k, v in weights.items() if k in mine}, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"config key 'init_from': {path} does not match this network: {e}") from None


def deepened(drift, weights: dict, source_depth: int, depth: int, path: str) -> dict:
    """`weights` of a shallower EGNN drift rewritten for the deeper `drift`, computing the same
    function (`EGNNDrift.load_shallower`); any other depth change is an error."""
    if not (isinstance(drift, EGNNDrift) and source_depth < depth):
        raise CheckpointError(f"config key 'init_from': {path} has depth={source_depth}, this config has "
                              f"depth={depth} (only an EGNN drift can start from a shallower one)")
    try:
        drift.load_shallower({k[len("drift."):]: v for k, v in weights.items() if k.startswith("drift.")},
                             source_depth)
    except RuntimeError as e:
        raise CheckpointError(f"config key 'init_from': {path} does not match this network: {e}") from None
    grown = {f"drift.{k}": v for k, v in drift.state_dict().items()}
    return {**{k: v for k, v in weights.items() if not k.startswith("drift.")}, **grown}


def lineage_of(path: str, state: dict) -> dict:
    """The ancestors' totals for a run started from checkpoint `path`: their search + train energy
    calls, eval calls, training seconds, and the runs themselves (oldest first)."""
    before = state.get("lineage") or {"runs": [], "energy_calls": 0, "eval_calls": 0, "train_seconds": 0.0}
    calls = state.get("energy_calls", {})
    own = int(calls.get("search", 0)) + int(calls.get("train", 0))
    return {"runs": [*before["runs"], os.path.dirname(os.path.abspath(path))],
            "energy_calls": int(before["energy_calls"]) + own,
            "eval_calls": int(before.get("eval_calls", 0)) + int(calls.get("eval", 0)),
            "train_seconds": float(before["train_seconds"]) + float(state.get("train_seconds", 0.0))}


def cumulative(lineage: dict | None, counts: dict, train_seconds: float) -> dict | None:
    """The report's `lineage` entry: ancestors' totals plus this run's own (None for a run from scratch)."""
    if not lineage:
        return None
    own = int(counts.get("search", 0)) + int(counts.get("train", 0))
    return {"runs": lineage["runs"], "energy_calls_total": lineage["energy_calls"] + own,
            "train_seconds_total": round(lineage["train_seconds"] + train_seconds, 2),
            "ancestors_energy_calls": lineage["energy_calls"]}


__all__ = ["start_from", "first_mismatch", "deepened", "lineage_of", "cumulative", "ARCHITECTURE_KEYS"]
