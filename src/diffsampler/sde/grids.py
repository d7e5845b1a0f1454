"""Time grids 0 = t_0 < t_1 < ... < t_N = 1, one per trajectory (shape (B, N+1)).

Kinds (Berner et al., "From discrete-time policies to continuous-time diffusion samplers"):
    uniform     t_n = n / N for every trajectory;
    random      increments z_n ~ U[1, 10] i.i.d., t_n = cumsum(z)_n / sum(z);
    equidistant spacing 1/N with one random shift u ~ U(0, 1) per trajectory:
                t_n = (n - u) / N for 0 < n < N (first step (1-u)/N, last (1+u)/N).

Time warp (power rho >= 1; rho = 1 leaves the grid as it is): each grid u is mapped to
    t = 1 - (1 - u)^rho,
which keeps its kind (a random grid stays random) but packs the steps toward the target end t = 1.
Why: near t = 1 the optimal drift is as stiff as the target. For a target of curvature kappa (pinned
Brownian reference, sigma = 1) the drift's Lipschitz constant at time t is about
(kappa - 1) / (1 + kappa (1 - t)), so an Euler step h is stable and accurate only while
h * kappa / (1 + kappa (1 - t)) stays small. A uniform grid must then use h < ~1/kappa everywhere
(Manywell's wells: kappa ~ 25, so ~100 steps); a warped grid spends small steps only near t = 1
(rho = 2, 10 steps: last step 0.01, first 0.19). The same idea as the noise-level schedules of
diffusion models (Karras et al., 2022, "Elucidating the design space...", rho-spaced sigmas).
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError

GRID_KINDS = ("uniform", "random", "equidistant")


def make_grid(kind: str, batch: int, n_steps: int, *, warp: float = 1.0, device=None, dtype=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Time grid of shape (batch, n_steps + 1), increasing from 0 to 1 along dim 1; `warp`: the
    power rho of the time warp t = 1 - (1 - u)^rho (module docstring)."""
    if n_steps < 1:
        raise ConfigError(f"number of time steps must be >= 1, got {n_steps}")
    if not (math.isfinite(warp) and warp >= 1.0):
        raise ConfigError(f"time warp must be a finite number >= 1, got {warp}")
    u = _unit_grid(kind, batch, n_steps, device=device, dtype=dtype, generator=generator)
    if warp == 1.0:
        return u
    t = 1.0 - (1.0 - u).pow(warp)
    t[:, 0], t[:, -1] = 0.0, 1.0
    return t


def _unit_grid(kind: str, batch: int, n_steps: int, *, device=None, dtype=None,
               generator: torch.Generator | None = None) -> torch.Tensor:
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
            return _unit_grid("uniform", batch, 1, device=device, dtype=dtype)
        u = torch.rand(batch, 1, device=device, dtype=dtype, generator=generator)
        n = torch.arange(1, n_steps, device=device, dtype=dtype)
        inner = (n[None] - u) / n_steps
        zeros = torch.zeros(batch, 1, device=device, dtype=dtype)
        return torch.cat([zeros, inner, torch.ones_like(zeros)], 1)
    raise ConfigError(f"unknown time grid {kind!r}; expected one of {GRID_KINDS}")
