"""The pinned-Brownian reference process (PIS / gfn-diffusion convention).

    X_0 = 0,   dX_t = sigma dW_t,   t in [0, 1],   so   X_t ~ N(0, sigma^2 t I).

Its time reversal (the Brownian bridge to 0) is exact on any grid:
    X_{t_n} | X_{t_{n+1}} = y  ~  N( (t_n / t_{n+1}) y,  sigma^2 t_n (t_{n+1} - t_n) / t_{n+1} I ),
and the step to t_0 = 0 is deterministic (X_0 = 0), contributing log-density 0.
"""
from __future__ import annotations

import math

import torch


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, var I) summed over the last dim; `var` broadcasts to x[..., :1]."""
    d = x.shape[-1]
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    return -0.5 * ((x - mean) ** 2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)


class PinnedBrownian:
    """Reference process with noise scale sigma (t_scale = sigma^2).

    Subclasses that live on a linear subspace (e.g. centre-of-mass-free particle coordinates)
    override `project`, `noise_like` and `step_log_prob`; every Gaussian kernel of the package
    goes through these three methods."""

    def __init__(self, sigma: float) -> None:
        if not sigma > 0:
            raise ValueError(f"reference sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Projection onto the state space (identity here)."""
        return v

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard Gaussian noise on the state space, shaped like x."""
        return torch.randn_like(x)

    def step_log_prob(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log N(x; mean, var I) on the state space, summed over the last dim."""
        return gaussian_log_prob(x, mean, var)

    def marginal_log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, sigma^2 t I) for t > 0; x (..., d), t (...)."""
        return self.step_log_prob(x, torch.zeros_like(x), self.sigma ** 2 * t)

    def backward_mean_var(self, y: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor):
        """Mean (B, d) and variance (B,) of X_t | X_{t_next} = y (t < t_next, t_next > 0)."""
        r = t / t_next
        return r[:, None] * y, self.sigma ** 2 * t * (t_next - t) / t_next

    def backward_log_prob(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                          t_next: torch.Tensor) -> torch.Tensor:
        """log p(X_t = x | X_{t_next} = y); 0 where t == 0 (deterministic step to the origin).

        Shapes: x, y (..., d); t, t_next (...)."""
        r = t / t_next
        var = self.sigma ** 2 * t * (t_next - t) / t_next
        safe_var = torch.where(t > 0, var, torch.ones_like(var))
        lp = self.step_log_prob(x, r[..., None] * y, safe_var)
        return torch.where(t > 0, lp, torch.zeros_like(lp))

    def sample_backward(self, y: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        mean, var = self.backward_mean_var(y, t, t_next)
        return mean + var.clamp_min(0).sqrt()[:, None] * self.noise_like(y)
