"""Manywell: a product of d/2 independent double wells (Midgley et al., FAB, 2023; used by
gfn-diffusion and SGDS).

    E(x) = sum_k [ x_{2k-1}^4 - 6 x_{2k-1}^2 - 0.5 x_{2k-1} + 0.5 x_{2k}^2 ],   k = 1..d/2

(1-based indices; in code the double-well coordinates are x[:, 0::2] and the Gaussian ones
x[:, 1::2]). Each pair contributes log Z_pair = ln 11784.50927 + ln sqrt(2 pi) = 10.29348, so
log Z = (d/2) * 10.29348 and there are 2^(d/2) modes. Exact samples: x_{2k} ~ N(0, 1) and the
double-well coordinate by rejection sampling from a two-Gaussian envelope.
"""
from __future__ import annotations

import math

import torch

from .base import Target

DOUBLE_WELL_INTEGRAL = 11784.50927  # ∫ exp(-(x^4 - 6x^2 - 0.5x)) dx over R
LOG_Z_PAIR = math.log(DOUBLE_WELL_INTEGRAL) + 0.5 * math.log(2 * math.pi)  # 10.29348...
WELL_SPLIT = -0.04167  # the local maximum of exp(-E1) between the two wells


def double_well_energy(x: torch.Tensor) -> torch.Tensor:
    """E1(x) = x^4 - 6x^2 - 0.5x (elementwise)."""
    return x ** 4 - 6 * x ** 2 - 0.5 * x


class ManyWell(Target):
    """Manywell in any even dimension d >= 2 (named ``manywell{d}`` in the registry)."""

    sigma = 1.0

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"ManyWell needs an even dimension >= 2, got {dim}")
        self.dim = dim
        self.name = f"manywell{dim}"
        self.log_Z = (dim // 2) * LOG_Z_PAIR
        self.plot_dims = (0, 2)
        # Rejection envelope for the 1-D density exp(-E1): equal mixture of N(+-1.73, 0.5^2).
        grid = torch.linspace(-6.0, 6.0, 24001, dtype=torch.float64)
        self._env_means = torch.tensor([-1.711, 1.7526], dtype=torch.float64)
        self._env_std = 0.5
        log_ratio = -double_well_energy(grid) - self._log_envelope(grid)
        self._log_M = float(log_ratio.max()) + math.log(1.1)  # safety margin on a smooth ratio
        p = torch.exp(-double_well_energy(grid))
        self.p_right = float(p[grid > WELL_SPLIT].sum() / p.sum())  # mass of the right well

    def _log_envelope(self, x: torch.Tensor) -> torch.Tensor:
        s = self._env_std
        z = (x[..., None] - self._env_means.to(x)) / s
        return torch.logsumexp(-0.5 * z ** 2, -1) - math.log(2 * s * math.sqrt(2 * math.pi))

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return double_well_energy(x[:, 0::2]).sum(-1) + 0.5 * (x[:, 1::2] ** 2).sum(-1)

    def _energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E and grad E in closed form: dE/dx_{2k-1} = 4x^3 - 12x - 0.5, dE/dx_{2k} = x_{2k}."""
        a, b = x[:, 0::2], x[:, 1::2]
        a2 = a * a
        e = (a2 * (a2 - 6) - 0.5 * a).sum(-1) + 0.5 * (b * b).sum(-1)
        g = torch.empty_like(x)
        g[:, 0::2] = a * (4 * a2 - 12) - 0.5
        g[:, 1::2] = b
        return e, g

    def sample_double_well(self, n: int) -> torch.Tensor:
        """n exact samples of the 1-D density ∝ exp(-(x^4 - 6x^2 - 0.5x)), float64."""
        out = torch.empty(0, dtype=torch.float64)
        while out.numel() < n:
            m = 2 * (n - out.numel()) + 64
            comp = torch.randint(0, 2, (m,))
            y = self._env_means[comp] + self._env_std * torch.randn(m, dtype=torch.float64)
            log_acc = -double_well_energy(y) - self._log_envelope(y) - self._log_M
            keep = torch.log(torch.rand(m, dtype=torch.float64)) < log_acc
            out = torch.cat([out, y[keep]])
        return out[:n]

    def _sample(self, n: int) -> torch.Tensor:
        x = torch.empty(n, self.dim, dtype=torch.float64)
        x[:, 0::2] = self.sample_double_well(n * (self.dim // 2)).view(n, self.dim // 2)
        x[:, 1::2] = torch.randn(n, self.dim // 2, dtype=torch.float64)
        return x.to(torch.get_default_dtype())

    def mode_coverage(self, x: torch.Tensor) -> dict:
        """Coverage of the d half-modes (well k, side s): a half-mode counts as covered when its
        empirical frequency is at least 10% of its true probability. Also reports the mean
        absolute error of the right-well frequencies."""
        right = (x[:, 0::2] > WELL_SPLIT).double().mean(0)
        p = self.p_right
        covered = (right >= 0.1 * p).sum() + ((1 - right) >= 0.1 * (1 - p)).sum()
        return {"mode_coverage": float(covered) / self.dim,
                "modes_covered": int(covered), "n_modes": self.dim,
                "right_well_freq_error": float((right - p).abs().mean())}
