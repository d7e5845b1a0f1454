"""What the processes of a run agree on after each iteration (one small all-reduce): the energy calls
of all processes (summed: reports, budgets and checkpoints count global calls), the clock (rank 0's:
the time budget) and a stop signal (SIGTERM/SIGINT on any process stops them all). Every process
then makes the same decisions (stop, checkpoint, search) at the same iteration. On one process
nothing is communicated and the live signal flag is read as before."""
from __future__ import annotations

import torch


class World:
    """The collective view of the run for `ctx`'s processes over the target's energy counter."""

    def __init__(self, ctx, counter) -> None:
        self.ctx, self.counter = ctx, counter
        self.signal: str | None = None
        self.mark()

    def mark(self) -> None:
        """The counter now holds the global counts (a new run, a loaded checkpoint, a sync)."""
        self.base = (dict(self.counter.counts), dict(self.counter.nonfinite))

    def sync(self, seconds: float, signal: str | None) -> tuple[float, str | None]:
        """(rank 0's seconds, the signal of any process); the counter afterwards holds the global counts
        on every process (this process's calls since the last sync plus everyone else's)."""
        if not self.ctx.active:
            self.signal = signal
            return seconds, signal
        c, (counts, nonfinite) = self.counter, self.base
        phases = list(counts)
        vals = [c.counts[p] - counts[p] for p in phases] + [c.nonfinite[p] - nonfinite[p] for p in phases]
        vals += [signal == "SIGTERM", signal == "SIGINT", seconds if self.ctx.is_main else 0.0]
        v = self.ctx.all_reduce_sum(torch.tensor(vals, dtype=torch.float64, device=self.ctx.device)).tolist()
        P = len(phases)
        c.load({p: counts[p] + round(v[i]) for i, p in enumerate(phases)},
               {p: nonfinite[p] + round(v[P + i]) for i, p in enumerate(phases)})
        self.mark()
        self.signal = "SIGTERM" if v[2 * P] > 0 else "SIGINT" if v[2 * P + 1] > 0 else None
        return v[-1], self.signal

    def live_signal(self, local: str | None) -> str | None:
        """The signal a check acts on: the flag itself on one process, the agreed one on several."""
        return self.signal if self.ctx.active else local


__all__ = ["World"]
