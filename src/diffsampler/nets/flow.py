"""Learned log-flow for detailed / sub-trajectory balance, in the forward-looking form
(Berner et al.; Zhang et al. 2023):

    log F_n(x) = NN(x, t_n) + (1 - t_n) log N(x; 0, sigma^2 t_n I) + t_n log R(x),   0 < t_n < 1,
    log F_0 = log Z (the learned scalar),   log F_N(x) = log R(x).
"""
from __future__ import annotations

import torch
from torch import nn

from .time_embedding import HarmonicEmbedding, mlp


class LogFlow(nn.Module):
    """The learned log-flow NN(x, t) of DB/SubTB: x (B, d), t (B,) -> (B,), zero-initialised."""
    def __init__(self, dim: int, width: int = 128, depth: int = 2, time_features: int = 64) -> None:
        super().__init__()
        self.time_emb = HarmonicEmbedding(time_features)
        self.net = mlp(dim + self.time_emb.out_dim, width, 1, depth, zero_last=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, d), t (B,) -> learned correction (B,)."""
        return self.net(torch.cat([x, self.time_emb(t)], -1)).squeeze(-1)
