"""Time grids 0 = t_0 < t_1 < ... < t_N = 1, one per trajectory (shape (B, N+1)).

Kinds (Berner et al., "From discrete-time policies to continuous-time diffusion samplers"):
    uniform     t_n = n / N for every trajectory;
    random      increments z_n ~ U[1, 10] i.i.d., t_n = cumsum(z)_n / sum(z);
    equidistant spacing 1/N with one random shift u ~ U(0, 1) per trajectory:
                t_n = (n - u) / N for 0 < n < N (first step (1-u)/N, last (1+u)/N).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

GRID_KINDS = ("uniform", "random", "equidistant")


def make_grid(kind: str, batch: int, n_steps: int, *, device=None, dtype=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Time grid of shape (batch, n_steps + 1), increasing from 0 to 1 along dim 1."""
    if n_steps < 1:
        raise ConfigError(f"number of time steps must be >= 1, got {n_steps}")
    dtype = dtype or torch.get_default_dtype()
    if kind == "uniform":
        t = torch.linspace(0.0, 1.0, n_steps + 1, device=device, dtype=dtype)
        return t.expand(batch, -1).contiguous()
    if kind == "random":
        z = 1.0 + 9.0 * torch.rand(batch, n_steps, device=device, dtype=dtype, generator=generator)
        t = torch.cumsum(z, 1) / z.sum(1, keepdim=True)
        t = torch.cat([torch.zeros(batch, 1, device=device, dtype=dtype), t], 1)
        t[:, -1] = 1.0
        return t
    if kind == "equidistant":
        if n_steps == 1:
            return make_grid("uniform", batch, 1, device=device, dtype=dtype)
        u = torch.rand(batch, 1, device=device, dtype=dtype, generator=generator)
        n = torch.arange(1, n_steps, device=device, dtype=dtype)
        inner = (n[None] - u) / n_steps
        zeros = torch.zeros(batch, 1, device=device, dtype=dtype)
        return torch.cat([zeros, inner, torch.ones_like(zeros)], 1)
    raise ConfigError(f"unknown time grid {kind!r}; expected one of {GRID_KINDS}")
