"""Importance resampling: turn weighted samples (x_i, w_i) into equally weighted draws.

With self-normalised weights W_i = w_i / sum_j w_j, systematic resampling (Kitagawa 1996; Douc,
Cappé & Moulines 2005) draws one uniform u ~ U(0, 1/n) and takes x_i as many times as the points
u + m/n, m = 0..n-1, fall in the i-th interval of the cumulative weights: each x_i appears
floor(n W_i) or ceil(n W_i) times, so the resampled empirical mean of any f equals the weighted
mean sum_i W_i f(x_i) up to O(1/n) (no multinomial noise). Resampled draws target p as well as the
weights do: when the weights are unreliable (PSIS k̂ > 0.7, tiny ESS) so are the draws. The weights
are Pareto-smoothed first (`psis`), which bounds the largest ones (Vehtari et al. 2024).
"""
from __future__ import annotations

import torch

from .psis import psis


def systematic_indices(log_w: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n indices into log_w (S,) by systematic resampling of the normalised weights."""
    if n < 1:
        raise ValueError(f"resampling: need n >= 1 draws, got {n}")
    lw = log_w.double()
    if not torch.isfinite(lw).any():
        raise ValueError("resampling: every log-weight is -inf or NaN (no sample has positive weight)")
    W = torch.softmax(torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -torch.inf)), 0)
    cdf = torch.cumsum(W, 0)
    cdf[-1] = 1.0
    u = (torch.rand((), dtype=torch.float64, generator=generator) + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, u, right=True).clamp_max(lw.shape[0] - 1)


def importance_resample(x: torch.Tensor, log_w: torch.Tensor, n: int | None = None, *, smooth: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """n equally weighted draws (n, d) from weighted samples x (S, d), log_w (S,) (default n = S);
    `smooth`: Pareto-smooth the weights first."""
    if x.dim() != 2 or log_w.shape != (x.shape[0],):
        raise ValueError(f"resampling: expected x (S, d) and log_w (S,), got {tuple(x.shape)}, {tuple(log_w.shape)}")
    lw = log_w.detach().cpu()
    if smooth:
        lw = torch.as_tensor(psis(lw.numpy()).log_w)
    idx = systematic_indices(lw, n or x.shape[0], generator)
    return x[idx.to(x.device)]


def weighted_moments(x: torch.Tensor, log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised importance-weighted mean and standard deviation (d,) of x (S, d)."""
    W = torch.softmax(log_w.double(), 0).to(x)
    mean = (W[:, None] * x).sum(0)
    var = (W[:, None] * (x - mean) ** 2).sum(0)
    return mean, var.clamp_min(0).sqrt()


__all__ = ["systematic_indices", "importance_resample", "weighted_moments"]
