"""Euler-Maruyama: kernel N(x + h mu(x, t), sigma^2 h), the same kernel, weights and random draws as
`forward_rollout`."""
from __future__ import annotations

import torch

from .base import INTEGRATORS, Simulation, Tensor, start


@INTEGRATORS.register("euler_maruyama")
class EulerMaruyama:
    """Euler-Maruyama: kernel N(x + h mu(x, t), sigma^2 h); reproduces `forward_rollout`."""

    name = "euler_maruyama"
    nfe_per_step = 1

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        field, ref, sigma, B, N, x = start(sampler, grid)
        lpf, lpb = [], []
        for n in range(N):
            t, t_next = grid[:, n], grid[:, n + 1]
            dt = t_next - t
            mu = field(x, t, at_origin=n == 0)
            var = sigma ** 2 * dt
            x_next = x + mu * dt[:, None] + var.sqrt()[:, None] * ref.noise_like(x)
            lpf.append(ref.step_log_prob(x_next, x + mu * dt[:, None], var))
            lpb.append(ref.backward_log_prob(x, x_next, t, t_next))
            x = x_next
        log_r = sampler.target.log_prob(x).detach()
        return Simulation(x, log_r + torch.stack(lpb, 1).sum(1) - torch.stack(lpf, 1).sum(1), N, N)
