"""Harmonic time embedding of PIS (Zhang & Chen, 2022):
    emb(t) = [sin(w t + phi), cos(w t + phi)],  w = linspace(0.1, 100, K),  phi learned (K,).

A linear layer that reads this embedding can instead read the phase-free basis
b(t) = [sin(w t), cos(w t)] through a rotated weight (angle addition):
    W emb(t) = (W_s cos(phi) - W_c sin(phi)) sin(w t) + (W_s sin(phi) + W_c cos(phi)) cos(w t),
with W = [W_s, W_c]. b(t) has no parameters, so it is computed once per time grid (shared by every
embedding with the same frequencies) and never differentiated; only the small (width, 2K) weight
rotation carries the phase gradient. `embed_linear` computes this; it equals `linear(emb(t))`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HarmonicEmbedding(nn.Module):
    """Harmonic features of time t (M,) -> (M, 2k): sin and cos at k frequencies from 0.1 to 100 with
    learned phases (the PIS time embedding)."""
    def __init__(self, n_features: int = 64, f_min: float = 0.1, f_max: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.linspace(f_min, f_max, n_features))
        self.phase = nn.Parameter(torch.randn(n_features))
        self.out_dim = 2 * n_features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) -> (B, 2K)."""
        a = t[:, None] * self.freqs[None] + self.phase[None]
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

    def basis(self, t: torch.Tensor) -> torch.Tensor:
        """The phase-free basis [sin(w t), cos(w t)], t (B,) -> (B, 2K)."""
        a = t[:, None] * self.freqs[None]
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

    def embed_linear(self, linear: nn.Linear, t: torch.Tensor | None = None,
                     basis: torch.Tensor | None = None) -> torch.Tensor:
        """linear(self(t)) computed from the basis (given, or computed from t) by angle addition."""
        if basis is None:
            basis = self.basis(t)
        w_s, w_c = linear.weight.chunk(2, dim=1)
        cp, sp = torch.cos(self.phase), torch.sin(self.phase)
        w = torch.cat([w_s * cp - w_c * sp, w_s * sp + w_c * cp], 1)
        return F.linear(basis, w, linear.bias)


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
