"""Importance-weight metrics of a sampler (all in nats).

With log w from forward trajectories: ELBO = mean log w <= log Z; log Z(IS) = log mean exp log w
(consistent, biased low for finite n); ESS = (sum w)^2 / (n sum w^2), a fraction in (0, 1].
With log w along backward trajectories from true samples: EUBO = mean log w >= log Z.
"""
from __future__ import annotations

import math

import torch


def elbo(log_w: torch.Tensor) -> float:
    """ELBO = mean of log w (n,) of forward trajectories, in nats (<= log Z)."""
    return float(log_w.mean())


def log_z_is(log_w: torch.Tensor) -> float:
    """log Z (IS) = log mean exp log w over log-weights (n,), in float64 (consistent, biased low)."""
    return float(torch.logsumexp(log_w.double(), 0) - math.log(log_w.shape[0]))


def ess_fraction(log_w: torch.Tensor) -> float:
    """Kish ESS of log-weights (n,) as a fraction of n: (sum w)^2 / (n sum w^2), in (0, 1]."""
    lw = log_w.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / lw.shape[0])
