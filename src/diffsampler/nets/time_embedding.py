"""Harmonic time embedding of PIS (Zhang & Chen, 2022):
    emb(t) = [sin(w t + phi), cos(w t + phi)],  w = linspace(0.1, 100, K),  phi learned (K,)."""
from __future__ import annotations

import torch
from torch import nn


class HarmonicEmbedding(nn.Module):
    def __init__(self, n_features: int = 64, f_min: float = 0.1, f_max: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.linspace(f_min, f_max, n_features))
        self.phase = nn.Parameter(torch.randn(n_features))
        self.out_dim = 2 * n_features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) -> (B, 2K)."""
        a = t[:, None] * self.freqs[None] + self.phase[None]
        return torch.cat([torch.sin(a), torch.cos(a)], -1)


def mlp(d_in: int, width: int, d_out: int, depth: int, zero_last: bool = False) -> nn.Sequential:
    """depth hidden layers of `width` with GELU; optional zero-initialised output layer."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.GELU()]
        d = width
    last = nn.Linear(d, d_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)
