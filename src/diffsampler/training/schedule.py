"""The schedule of a run: rounds, the maximum-likelihood warm-up, learning-rate decay, exploration,
and which iterations draw fresh batches or buffer batches. Everything here is a function of the
iteration (and the config), so a resumed run follows it exactly; its one piece of state is how many
rounds have run their search."""
from __future__ import annotations

import math


class Schedule:
    """When what happens, for config `cfg` (see module)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.starts = cfg.round_starts()
        self.searched_rounds = 0

    def round(self, it: int) -> int:
        """The round (0-based) that iteration `it` belongs to."""
        return max(r for r, start in enumerate(self.starts) if start <= it)

    def needs_search(self, it: int) -> bool:
        """Whether the round of `it` has not started yet (search, re-initialisation)."""
        return self.round(it) >= self.searched_rounds

    def in_ml_warmup(self, it: int) -> bool:
        """The first `ml_warmup` iterations of each round train by maximum likelihood."""
        return it - self.starts[self.round(it)] < self.cfg.ml_warmup

    def warmup_ends(self, it: int) -> bool:
        """Whether `it` is the first iteration after a warm-up with its own learning rate (SGDS then
        replaces the warm-up's Adam by a fresh one)."""
        cfg = self.cfg
        return cfg.lr_ml is not None and cfg.ml_warmup > 0 and it - self.starts[self.round(it)] == cfg.ml_warmup

    def lr_factor(self, it: int) -> float:
        """Cosine decay within the current round: with f = lr_final and u in [0, 1) the round's progress,
        every group's rate is its configured rate times f + (1 - f) (1 + cos(pi u)) / 2 (1 at each round's
        start, near f at its end)."""
        f = self.cfg.lr_final
        if f == 1.0:
            return 1.0
        r = self.round(it)
        start = self.starts[r]
        end = self.starts[r + 1] if r + 1 < len(self.starts) else self.cfg.iterations
        length = max(1, min(end, self.cfg.iterations) - start)
        u = min(1.0, (it - start) / length)
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * u))

    def exploration(self, it: int) -> float:
        """Extra behaviour noise, decayed linearly to 0 at `exploration_until` of the iterations."""
        cfg = self.cfg
        end = cfg.exploration_until * cfg.iterations
        if cfg.exploration == 0 or end <= 0:
            return 0.0
        return cfg.exploration * max(0.0, 1.0 - it / end)

    def is_fresh(self, it: int, have_store: bool) -> bool:
        """Whether iteration `it` draws new trajectories (else it trains on stored ones)."""
        return it % (1 + self.cfg.trajectory_reuse) == 0 or not have_store

    def wants_buffer_batch(self, it: int) -> bool:
        """Whether a fresh iteration trains on backward trajectories from buffer samples (else on
        forward, on-policy ones): always for behaviour=backward and in the ML warm-up, every
        `offpolicy_every`-th fresh iteration for mixed (the caller also needs a non-empty buffer)."""
        cfg = self.cfg
        fresh_index = it // (1 + cfg.trajectory_reuse)
        return (cfg.behaviour == "backward" or self.in_ml_warmup(it)
                or (cfg.behaviour == "mixed" and fresh_index % cfg.offpolicy_every == cfg.offpolicy_every - 1))

    def state_dict(self) -> dict:
        return {"searched_rounds": self.searched_rounds}

    def load_state_dict(self, state: dict) -> None:
        self.searched_rounds = int(state.get("searched_rounds", 0))


__all__ = ["Schedule"]
