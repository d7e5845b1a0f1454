"""What every integrator shares: the registry, the simulation result, the drift field, grid checks.

Integrators of the learned SDE with importance weights that are exact for their own kernels.

The SDE is  dX = mu(X, t) dt + sigma dW,  t in [0, 1],  X_0 = 0  (pinned-Brownian reference,
see `sde.reference`), mu = sampler.drift(x, t, score), score = grad log R(x) when the drift needs
it (one counted energy call per row). Every integrator simulates B trajectories on a grid (B, N+1)
and returns terminal samples with log-weights

    log w = log R(x_N) + sum_n [log pi_bwd(x_n | x_{n+1}) + log L(a_n | x_n, x_{n+1})]
                       - sum_n [log q(a_n | x_n) + log q(x_{n+1} | x_n, a_n)],

pi_bwd the exact Brownian bridge of the reference and a_n the step's auxiliary randomness (none for
Gaussian kernels). With L a normalised conditional density, Z^-1 R(x_N) prod pi_bwd L is a
probability density on the augmented path space, so E[w] = Z (unbiased) and E[log w] <= log Z.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...components import Registry
from ...errors import ShapeError
from ..trajectories import _reward_and_score_at_origin, call_drift, shared_grid

Tensor = torch.Tensor
INTEGRATORS = Registry("integrator")


@dataclass
class Simulation:
    """Terminal samples x (B, d), log-weights log_w (B,), drift evaluations per trajectory (nfe)
    and sequential rounds of drift evaluations (equal to nfe except for the parallel variant)."""

    x: Tensor
    log_w: Tensor
    nfe: int
    rounds: int


class DriftField:
    """x (B, d), t (B,) -> mu (B, d) of a sampler, with the target score when the drift needs it."""

    def __init__(self, sampler, grid: Tensor | None = None) -> None:
        self.target, self.drift, self.ref = sampler.target, sampler.drift, sampler.reference
        # a time shared by every row is encoded once (`call_drift`) only on a grid shared by every
        # row, as `forward_rollout` does: Euler-Maruyama stays bitwise equal to it
        self.shared_grid = grid is not None and shared_grid(grid)

    def __call__(self, x: Tensor, t: Tensor, at_origin: bool = False, create_graph: bool = False) -> Tensor:
        """create_graph: keep the score differentiable in x (second derivatives of E; the energy
        call is counted all the same)."""
        score = None
        if self.drift.needs_score:
            if at_origin:  # x == 0 on every row: one energy call, as in forward_rollout
                score = _reward_and_score_at_origin(self.target, x.shape[0], x.dtype, x.device, True)[1]
            else:
                score = self.target.log_reward_and_score(x, create_graph=create_graph)[1]
        if self.shared_grid:
            return self.ref.project(call_drift(self.drift, x, t, score))
        return self.ref.project(self.drift(x, t, score))


def check_grid(sampler, grid: Tensor) -> None:
    """Check that a grid (B, N+1) starts at 0 and increases strictly (ShapeError / ValueError)."""
    if grid.dim() != 2 or grid.shape[1] < 2:
        raise ShapeError(f"integrator: grid must have shape (B, N+1) with N >= 1, got {tuple(grid.shape)}")
    if not bool((grid[:, 1:] > grid[:, :-1]).all()) or not bool((grid[:, 0] == 0).all()):
        raise ValueError("integrator: grid rows must start at 0 and increase strictly")


def start(sampler, grid: Tensor) -> tuple[DriftField, object, float, int, int, Tensor]:
    """What a simulation starts from: (drift field, reference, sigma, B, N, x_0 = 0 (B, d)) after
    checking the grid (B, N+1)."""
    check_grid(sampler, grid)
    B, N = grid.shape[0], grid.shape[1] - 1
    return (DriftField(sampler, grid), sampler.reference, sampler.reference.sigma, B, N,
            grid.new_zeros(B, sampler.target.dim))


def finish(sampler, x: Tensor, incs: list[Tensor], nfe: int, rounds: int) -> Simulation:
    """A Simulation from terminal states x (B, d) and the per-step log-weight increments (B,) each:
    log w = log R(x) + their sum."""
    log_r = sampler.target.log_prob(x).detach()
    return Simulation(x, log_r + torch.stack(incs, 1).sum(1), nfe, rounds)
