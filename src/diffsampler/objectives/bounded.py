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
their gradients. Evaluation (ELBO, EUBO, log Z) always uses the true rewards. The balance losses
square their residuals through `robust_square`, linear beyond RESIDUAL_SCALE nats, so a trajectory
gone astronomically far cannot overflow the loss either.
"""
from __future__ import annotations

import torch

REWARD_SPAN = 1e6          # nats below the batch's best reward where compression starts
NONFINITE_PENALTY = 1e3    # nats below the floor for a non-finite reward (zero density)
RESIDUAL_SCALE = 1e6       # nats: balance residuals beyond it are penalised linearly (Huber), not squared


def bounded_log_reward(log_r: torch.Tensor, span: float = REWARD_SPAN) -> torch.Tensor:
    """b(log R) of any shape (module docstring); the floor is taken over all entries."""
    finite = torch.isfinite(log_r)
    best = log_r.detach().masked_fill(~finite, -torch.inf).max() if log_r.numel() else log_r.new_zeros(())
    floor = torch.where(torch.isfinite(best), best, torch.zeros_like(best)) - span
    safe = torch.where(finite, log_r, floor)                    # no gradient at non-finite entries
    excess = (floor - safe).clamp_min(0)
    out = torch.where(safe < floor, floor - torch.log1p(excess), safe)
    return torch.where(finite, out, floor - NONFINITE_PENALTY)


def robust_square(res: torch.Tensor, delta: float = RESIDUAL_SCALE) -> torch.Tensor:
    """res^2 for |res| <= delta, 2 delta |res| - delta^2 beyond (Huber, 1964): the same value and
    gradient for every residual a sampler meets in training, but a trajectory that wandered
    astronomically far (log pi_bwd of -1e19: its square overflows float32) gives a finite loss and a
    gradient of norm 2 delta instead of an infinity."""
    a = res.abs()
    return torch.where(a <= delta, res ** 2, 2 * delta * a - delta ** 2)


__all__ = ["bounded_log_reward", "robust_square", "REWARD_SPAN", "NONFINITE_PENALTY", "RESIDUAL_SCALE"]
