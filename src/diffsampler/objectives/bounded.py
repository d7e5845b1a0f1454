"""Bounded rewards: the learner's view of energies that are astronomically large or non-finite.

Users' energies are often +inf or NaN outside a region (a covariance that stops being positive
definite, an overflow) and astronomically large far out (an exponential inside a likelihood). The
target's counted path turns a non-finite energy into log R = -inf (with a zero score, under the
default `nonfinite_energy=reject` policy). A loss built on such rewards would be infinite, or
overflow float32 once squared (TB: (1e26)^2), and stop the run. The objectives therefore see

    b(log R) = log R                                  if log R >= f,
               f - log(1 + f - log R)                 if log R < f  (finite),
               f - NONFINITE_PENALTY                   if log R = -inf or NaN,

with f = max_batch log R - REWARD_SPAN: the reward keeps its order (the learner is still pushed
towards lower energy, with a gradient scaled by 1 / (1 + f - log R), bounded for exponential
tails), and changes only where the density is below e^-REWARD_SPAN times the batch's best, mass
that no sampler or estimate could resolve. Rewards within the span are returned bit for bit, with
their gradients. Evaluation (ELBO, EUBO, log Z) always uses the true rewards.
"""
from __future__ import annotations

import torch

REWARD_SPAN = 1e6          # nats below the batch's best reward where compression starts
NONFINITE_PENALTY = 1e3    # nats below the floor for a non-finite reward (zero density)


def bounded_log_reward(log_r: torch.Tensor, span: float = REWARD_SPAN) -> torch.Tensor:
    """b(log R) of any shape (module docstring); the floor is taken over all entries."""
    finite = torch.isfinite(log_r)
    best = log_r.detach().masked_fill(~finite, -torch.inf).max() if log_r.numel() else log_r.new_zeros(())
    floor = torch.where(torch.isfinite(best), best, torch.zeros_like(best)) - span
    safe = torch.where(finite, log_r, floor)                    # no gradient at non-finite entries
    excess = (floor - safe).clamp_min(0)
    out = torch.where(safe < floor, floor - torch.log1p(excess), safe)
    return torch.where(finite, out, floor - NONFINITE_PENALTY)


__all__ = ["bounded_log_reward", "REWARD_SPAN", "NONFINITE_PENALTY"]
