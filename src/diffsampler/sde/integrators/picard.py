"""PicardMidpoint  the parallel-in-time variant (Gupta, Cai & Chen 2024): windows of `window` grid
                  steps [u_{i-1}, u_i]; one random point s_i = u_{i-1} + alpha_i delta_i per sub-step;
                  predictor path P (the Brownian path seen with independent noise of relative
                  variance theta, as above); Picard rounds
                      y_i <- x + sum_{j<i} delta_j mu(y_j, s_j) + alpha_i delta_i mu(y_i, s_i) + P(s_i),
                  all R drift calls of a round in one batched call, started from
                  y_i = x + (s_i - t) mu_n + P(s_i); the window ends at
                  x' = x + sum_j delta_j mu(y_j, s_j) + sigma (W(t') - W(t)), whose noise given the
                  auxiliaries P(s_1..s_R) is N(P(s_R)/(1+theta), sigma^2 (t' - s_R) + theta sigma^2
                  (s_R - t)/(1+theta)). Weights as for RandomizedMidpoint (the window is one transition;
                  L = multi-point bridge); window = rounds = 1 is RandomizedMidpoint with kappa = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...components import option
from ...errors import ConfigError
from .base import INTEGRATORS, DriftField, Simulation, Tensor, check_grid, finish
from .midpoint import _check_theta


@dataclass
class PicardOptions:
    window: int = option(4, "grid steps per Picard window", alias="integrator_window", low=1)
    rounds: int = option(2, "Picard rounds per window", alias="integrator_rounds", low=1)
    theta: float = option(0.5, "relative variance of the predictor's independent noise", alias="integrator_theta",
                          low=0.0)


@INTEGRATORS.register("picard_midpoint", PicardOptions)
class PicardMidpoint:
    """Parallel-in-time randomized midpoint (module doc): `rounds` batched drift calls of `window`
    points per window of `window` grid steps, plus one call at the window start."""

    name = "picard_midpoint"

    def __init__(self, window: int | PicardOptions = 4, rounds: int = 2, theta: float = 0.5) -> None:
        if isinstance(window, PicardOptions):
            window, rounds, theta = window.window, window.rounds, window.theta
        if int(window) < 1 or int(rounds) < 1:
            raise ConfigError(f"Picard midpoint: need window >= 1 and rounds >= 1, got {window}, {rounds}")
        _check_theta(theta)
        self.window, self.rounds, self.theta = int(window), int(rounds), float(theta)

    @property
    def nfe_per_step(self) -> float:
        return self.rounds + 1 / self.window

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        check_grid(sampler, grid)
        field, ref, sigma, th = DriftField(sampler, grid), sampler.reference, sampler.reference.sigma, self.theta
        B, N, d = grid.shape[0], grid.shape[1] - 1, sampler.target.dim
        x = grid.new_zeros(B, d)
        incs, nfe, rounds, n = [], 0, 0, 0
        while n < N:
            R = min(self.window, N - n)
            u = grid[:, n:n + R + 1]
            t0, t1 = u[:, 0], u[:, -1]
            H, delta = t1 - t0, u[:, 1:] - u[:, :-1]                       # (B,), (B, R)
            mu0 = field(x, t0, at_origin=n == 0)
            alpha = torch.rand_like(delta)
            s = u[:, :-1] + alpha * delta                                   # random points (B, R)
            seg = torch.diff(s, dim=1, prepend=t0[:, None])                 # Brownian segments
            noise = ref.noise_like(x.new_empty(B, R, d))
            W = torch.cumsum(sigma * ((1 + th) * seg).sqrt()[..., None] * noise, 1)  # predictor path
            y = x[:, None] + (s - t0[:, None])[..., None] * mu0[:, None] + W
            for _ in range(self.rounds):
                M = field(y.reshape(B * R, d), s.reshape(-1)).view(B, R, d)
                dM = delta[..., None] * M
                y = x[:, None] + torch.cumsum(dM, 1) - dM + alpha[..., None] * dM + W
            drift_part = x + dM.sum(1)
            w_last = W[:, -1] / (1 + th)                                    # E[sigma (W(t1)-W(t0)) | W_pred]
            s_last = s[:, -1] - t0
            v_aux = sigma ** 2 * ((H - s_last) + th * s_last / (1 + th))
            x_next = drift_part + w_last + v_aux.sqrt()[:, None] * ref.noise_like(x)
            em = x + H[:, None] * mu0
            incs.append(ref.backward_log_prob(x, x_next, t0, t1) - ref.step_log_prob(x_next, em, sigma ** 2 * H)
                        + ref.step_log_prob(x_next, em + w_last, v_aux)
                        - ref.step_log_prob(x_next, drift_part + w_last, v_aux))
            x, n = x_next, n + R
            nfe, rounds = nfe + 1 + self.rounds * R, rounds + 1 + self.rounds
        return finish(sampler, x, incs, nfe, rounds)
