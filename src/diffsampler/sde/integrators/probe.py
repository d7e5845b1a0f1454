"""A reference whose "noise" is a probe: exact moments of an integrator's kernel.

`ProbeNoise` replaces the k-th Gaussian draw of a simulation by the unit vector of coordinate k + 1
(coordinate 0 never gets noise). With a drift that is linear and identical in every coordinate,
coordinate 0 of x_N is then the mean of x_N given the integrator's uniform draws, and
sum_k (x_k - x_0)^2 its variance: the scheme's exact first two moments, with Monte Carlo only over
its uniform draws (the weak-order tests and the integrator experiment use it)."""
from __future__ import annotations

import torch

from ..reference import PinnedBrownian


class ProbeNoise(PinnedBrownian):
    """A pinned-Brownian reference whose noise draws are successive unit vectors (see module)."""

    def __init__(self, sigma: float) -> None:
        super().__init__(sigma)
        self.calls = 0

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        v = out.view(x.shape[0], -1, x.shape[-1])
        for i in range(v.shape[1]):
            v[:, i, self.calls + 1 + i] = 1.0
        self.calls += v.shape[1]
        return out


__all__ = ["ProbeNoise"]
