"""Energy-call budgets: what a search round and a learner iteration cost, the learner's iterations
sized to a budget, and a budget the searches alone would exhaust refused up front.

Calls are counted strictly (every evaluation of E or grad E at one point is one call; a value and
gradient together count once):
- search round: MALA / underdamped chains C x (burn-in + steps) + C at initialisation; the
  randomized-midpoint Langevin searcher evaluates twice per step; AIS C (1 + levels x inner);
  parallel tempering T C (burn-in + steps + 1) for T temperatures; the pilot C_p x steps_p (once).
- learner iteration (batch B, N steps): a forward (on-policy) batch needs log R at the B terminal
  states, and a drift that takes the score (Langevin drifts) the score at every state before the
  last: B (N - 1) + 1 more (x_0 = 0 is shared by the batch; by each sub-batch of `shards`). A buffer batch reuses the stored
  terminal reward: B (N - 1) + 1 calls for a score-taking drift, 0 otherwise. Adjoint matching adds
  B M score calls at its bridge states for a score-taking drift. `behaviour=mixed` alternates
  (k - 1) forward batches with one buffer batch; with trajectory reuse R, R of every R + 1
  iterations replay stored batches at no call.
The sizes are exact for these recipes up to the log Z warm start (one batch) and local search; the
trainer's own check (`Trainer.budget_exhausted`) stops the run before it would overrun the budget.
"""
from __future__ import annotations

from ..errors import ConfigError

MIN_ITERATIONS = 100


def search_calls_per_round(cfg) -> int:
    """Energy calls of one search phase of `cfg`'s searcher (0 without one): the searcher's own count."""
    if cfg.searcher == "none":
        return 0
    from ..search import SEARCHERS
    return SEARCHERS.build(cfg.searcher, cfg.to_dict()).calls()


PILOT_BUDGET_SHARE = 0.1   # the most of max_energy_calls that the pilot's MALA stages may take ...
MIN_PILOT_STEPS = 400      # ... unless that leaves fewer steps per chain than this


def pilot_steps(cfg) -> int:
    """MALA steps per pilot chain: `pilot_steps`, cut under max_energy_calls so that the pilot's
    chains x steps take at most a tenth of the budget, but not below 400 steps (or pilot_steps)."""
    if cfg.max_energy_calls is None:
        return cfg.pilot_steps
    share = int(PILOT_BUDGET_SHARE * cfg.max_energy_calls / cfg.pilot_chains)
    return min(cfg.pilot_steps, max(MIN_PILOT_STEPS, share))


def pilot_calls(cfg, pilot: bool) -> int:
    return cfg.pilot_chains * pilot_steps(cfg) if pilot else 0


def calls_per_iteration(cfg) -> float:
    """Mean energy calls of one learner iteration of `cfg` (module docstring)."""
    B, N = cfg.batch_size, cfg.train_steps
    from ..nets import DRIFTS
    score = DRIFTS.trait(cfg.drift, "needs_score", False)
    inner = B * (N - 1) + (cfg.shards or 1) if score else 0   # x_0 = 0: one call per (sub-)batch
    forward, backward = B + inner, inner
    if cfg.objective == "adjoint" and score:
        forward += B * cfg.adjoint_times
    k = cfg.offpolicy_every
    fresh = {"forward": forward, "backward": backward, "mixed": ((k - 1) * forward + backward) / k}[cfg.behaviour]
    return fresh / (1 + cfg.trajectory_reuse)


def fixed_calls(cfg, pilot: bool = False) -> int:
    """Calls spent outside the learner's iterations: every round's search, and the pilot."""
    return cfg.rounds * search_calls_per_round(cfg) + pilot_calls(cfg, pilot)


def size_iterations(cfg, pilot: bool = False) -> int:
    """The learner's iterations that fit in max_energy_calls after the searches (and pilot);
    ConfigError naming the numbers when fewer than MIN_ITERATIONS fit."""
    if cfg.max_energy_calls is None:
        raise ConfigError("config key 'iterations' = None (sized to the budget) needs max_energy_calls")
    check_budget(cfg, pilot)
    left = cfg.max_energy_calls - fixed_calls(cfg, pilot)
    per = calls_per_iteration(cfg)
    iterations = int(left / per) if per > 0 else cfg.max_energy_calls
    if iterations < MIN_ITERATIONS:
        raise ConfigError(f"config key 'max_energy_calls' = {cfg.max_energy_calls:,}: after {fixed_calls(cfg, pilot):,} "
                          f"calls of search, {left:,} calls buy {iterations} learner iterations of ~{per:,.0f} "
                          f"calls (fewer than {MIN_ITERATIONS}); raise the budget or lower rounds/search_chains")
    return iterations


def local_search_calls(cfg, iteration: int) -> int:
    """Calls of the TB+LS local search that iteration `iteration` starts with (MALA from B buffer
    samples for S steps: B (S + 1), counted as 'search'), 0 where it runs none."""
    every = cfg.local_search_every
    return cfg.local_search_batch * (cfg.local_search_steps + 1) if every and iteration % every == 0 else 0


def exhausted(cfg, iteration: int, seconds: float, counts: dict, step_calls: list[int]) -> str | None:
    """Which budget is spent before the next iteration ('iterations', 'max_seconds',
    'max_energy_calls') or None. The call budget stops before an iteration that could overrun it:
    the next one is assumed to cost as much as the dearest of the last few (`step_calls`; on-policy
    and buffer iterations alternate), plus the local search it starts with, if any."""
    if iteration >= cfg.iterations:
        return "iterations"
    if cfg.max_seconds is not None and seconds >= cfg.max_seconds:
        return "max_seconds"
    used = counts["search"] + counts["train"]
    next_cost = max(step_calls, default=0) + local_search_calls(cfg, iteration)
    if cfg.max_energy_calls is not None and (used >= cfg.max_energy_calls
                                             or used + next_cost > cfg.max_energy_calls):
        return "max_energy_calls"
    return None


def check_budget(cfg, pilot: bool = False) -> None:
    """Refuse up front a budget that the searches (and pilot) alone would use up."""
    if cfg.max_energy_calls is None:
        return
    need = fixed_calls(cfg, pilot)
    if need >= cfg.max_energy_calls:
        raise ConfigError(
            f"config key 'max_energy_calls' = {cfg.max_energy_calls:,}: the search alone needs {need:,} calls "
            f"({cfg.rounds} round(s) x {search_calls_per_round(cfg):,} of {cfg.searcher}: {cfg.search_chains} chains"
            + (f" x {cfg.search_steps} levels x {cfg.search_inner} steps" if cfg.searcher == "ais" else
               f" x {cfg.search_burnin + cfg.search_steps} steps")
            + (f", plus the pilot's {pilot_calls(cfg, pilot):,}" if pilot else "")
            + "), leaving nothing to the learner; raise the budget or lower rounds / search_chains / search_steps")


__all__ = ["pilot_steps", "pilot_calls", "search_calls_per_round", "calls_per_iteration", "fixed_calls",
           "size_iterations", "check_budget", "local_search_calls", "exhausted"]
