"""Neal's funnel in d = 10 (the "hard" variant of gfn-diffusion / DDS / PIS):

    x_0 ~ N(0, 3^2),   x_{1:d-1} | x_0 ~ N(0, exp(x_0) I),   log Z = 0,

    E(x) = x_0^2 / 18 + 0.5 log(2 pi 9) + sum_{i>=1} [ x_i^2 exp(-x_0) / 2 + x_0 / 2 + 0.5 log(2 pi) ].
"""
from __future__ import annotations

import math

import torch

from .base import Target


class Funnel(Target):
    """Neal's funnel in d dimensions: v ~ N(0, 3^2), x_i | v ~ N(0, e^v); exact samples and log Z."""
    sigma = 1.0

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"Funnel needs dim >= 2, got {dim}")
        self.dim, self.scale = dim, float(scale)
        self.name = "funnel" if dim == 10 else f"funnel{dim}"
        self.log_Z = 0.0

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        x0, rest = x[:, 0], x[:, 1:]
        e0 = 0.5 * (x0 / self.scale) ** 2 + 0.5 * math.log(2 * math.pi * self.scale ** 2)
        k = self.dim - 1
        e_rest = 0.5 * (rest ** 2).sum(-1) * torch.exp(-x0) + 0.5 * k * (x0 + math.log(2 * math.pi))
        return e0 + e_rest

    def _sample(self, n: int) -> torch.Tensor:
        x0 = self.scale * torch.randn(n, 1, dtype=torch.float64)
        rest = torch.randn(n, self.dim - 1, dtype=torch.float64) * torch.exp(0.5 * x0)
        return torch.cat([x0, rest], 1).to(torch.get_default_dtype())
