"""The config rules that cross sections, and the few single-key rules a range cannot state (each
key's own range, and each component's own options, are checked where they are defined). What an objective can serve is read from its declarations
(`objectives/base.py`), not from its name."""
from __future__ import annotations

from ..errors import ConfigError
from ..objectives import objective_class


def need(cfg, cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key!r} = {getattr(cfg, key)!r}: {msg}")


def check_objective_rules(cfg) -> None:
    """What the configured objectives need from the behaviour policy and the optimiser."""
    main = objective_class(cfg.objective)
    fwd = objective_class(cfg.objective_fwd) if cfg.objective_fwd else main
    need(cfg, not (cfg.objective_fwd and fwd.off_policy_only), "objective_fwd",
         f"{cfg.objective_fwd!r} needs backward trajectories from samples; on-policy batches cannot serve it")
    need(cfg, not (cfg.grad_chunk_steps and (main.pathwise or fwd.pathwise)), "grad_chunk_steps",
         "must be 0 with a pathwise objective (KL / PIS), which differentiates through the states themselves")
    need(cfg, not (main.on_policy_only and cfg.trajectory_reuse > 0), "trajectory_reuse",
         f"the {cfg.objective!r} objective differentiates through fresh rollouts; stored trajectories cannot serve it")
    need(cfg, not (main.on_policy_only and cfg.behaviour != "forward"), "behaviour",
         f"the {cfg.objective!r} objective differentiates through forward rollouts; use behaviour=forward")
    need(cfg, not (main.off_policy_only and cfg.behaviour == "forward"), "behaviour",
         f"the {cfg.objective!r} objective needs backward trajectories from samples; use behaviour=backward or mixed")


def check_round_rules(cfg) -> None:
    """Rounds against iterations, and round_iterations as one integer per round summing to iterations."""
    need(cfg, cfg.iterations >= cfg.rounds or cfg.iterations == 0, "rounds", "more rounds than iterations")
    if cfg.round_iterations is None:
        return
    try:
        lengths = cfg.round_lengths()
    except ValueError:
        lengths = []
    need(cfg, len(lengths) == cfg.rounds and all(v >= 1 for v in lengths), "round_iterations",
         f"must be {cfg.rounds} comma-separated integers >= 1 (one per round; rounds = {cfg.rounds})")
    need(cfg, sum(lengths) == cfg.iterations, "round_iterations",
         f"must sum to iterations = {cfg.iterations} (they sum to {sum(lengths)})")


SHARDED_UNSUPPORTED = (("trajectory_reuse", 0), ("local_search_every", 0), ("orbit_K", 0))


def check_shard_rules(cfg) -> None:
    """shards > 1 (training/sharded.py): a batch that splits evenly, and the features not sharded yet."""
    if cfg.precision == "bf16":
        need(cfg, cfg.dtype == "float32", "precision", "bf16 autocast needs dtype=float32")
    if (cfg.shards or 1) == 1:
        return
    need(cfg, cfg.batch_size % cfg.shards == 0, "shards", f"must divide batch_size = {cfg.batch_size}")
    for key, off in SHARDED_UNSUPPORTED:
        need(cfg, getattr(cfg, key) == off, key, f"must be {off} with shards = {cfg.shards} (not sharded yet)")
    need(cfg, cfg.objective != "orbit_ml", "objective", f"orbit_ml is not sharded yet (shards = {cfg.shards})")


def check_cross_section_rules(cfg) -> None:
    """Every rule that involves keys of two sections."""
    check_objective_rules(cfg)
    check_round_rules(cfg)
    check_shard_rules(cfg)
    need(cfg, not (cfg.offpolicy_data == "search" and cfg.searcher == "none"), "offpolicy_data",
         "'search' needs a searcher (set searcher=NAME, a registered searcher: docs/CONFIG.md)")
    need(cfg, cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"), "device",
         "must be cpu, cuda, cuda:N or auto")
    need(cfg, cfg.init_from is None or cfg.init_from.strip() != "", "init_from",
         "must be a run directory or checkpoint path")


__all__ = ["check_cross_section_rules", "check_objective_rules", "check_round_rules", "check_shard_rules"]
