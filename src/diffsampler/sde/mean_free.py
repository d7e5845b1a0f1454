"""Pinned Brownian motion on the centre-of-mass-free subspace of n particles in D dimensions.

State x in R^(n*D), flattened per particle. The subspace V = {x : sum_i x_i = 0} has dimension
k = (n-1) D; P = I - (1/n) 1 1^T (per coordinate) is the orthogonal projection onto it. The
reference is  X_0 = 0,  dX_t = sigma P dW_t,  so X_t ~ N_V(0, sigma^2 t) (isotropic on V), and
every Gaussian kernel of the package is a density w.r.t. Lebesgue measure on V:
    log N_V(x; m, v) = -||P(x - m)||^2 / (2 v) - (k / 2) log(2 pi v).
With these densities log w = log R(x_N) + sum log pi_bwd - sum log pi_fwd stays a Radon-Nikodym
derivative between path measures on V. (The same mean-free Gaussian is the prior of E(n)
equivariant flows, Satorras et al. 2021, and of EDM, Hoogeboom et al. 2022.)
"""
from __future__ import annotations

import math

import torch

from ..errors import ShapeError
from .reference import PinnedBrownian


class MeanFreePinnedBrownian(PinnedBrownian):
    """`PinnedBrownian` restricted to the centre-of-mass-free subspace of (n, D) particles."""

    def __init__(self, n_particles: int, spatial_dim: int, sigma: float) -> None:
        super().__init__(sigma)
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(f"mean-free reference needs n_particles >= 2 and spatial_dim >= 1, "
                             f"got {n_particles}, {spatial_dim}")
        self.n_particles, self.spatial_dim = int(n_particles), int(spatial_dim)
        self.free_dim = (self.n_particles - 1) * self.spatial_dim

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Remove the centre of mass: (..., n*D) -> (..., n*D) with sum over particles 0."""
        n, D = self.n_particles, self.spatial_dim
        if v.shape[-1] != n * D:
            raise ShapeError(f"mean-free reference for {n} particles in {D}-D expects last dim {n * D}, "
                             f"got shape {tuple(v.shape)}")
        u = v.reshape(*v.shape[:-1], n, D)
        return (u - u.mean(-2, keepdim=True)).reshape(v.shape)

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard Gaussian on the subspace: P eps, eps ~ N(0, I)."""
        return self.project(torch.randn_like(x))

    def step_log_prob(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log N_V(x; mean, var) on the (n-1)D-dimensional subspace, summed over the last dim."""
        var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
        r = self.project(x - mean)
        return -0.5 * (r ** 2).sum(-1) / var - 0.5 * self.free_dim * torch.log(2 * math.pi * var)
