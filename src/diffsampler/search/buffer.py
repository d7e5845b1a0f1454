"""Replay buffer of terminal states with their *true* log-reward log R(x) = -E(x).

Sampling is uniform or rank-prioritised (Tripp et al., 2020, as used by gfn-diffusion and SGDS):
with the N stored points ranked by log R (rank 0 = highest reward, i.e. lowest energy),
    P(i) ∝ 1 / (k N + rank(i)).
When full, the lowest-reward points are evicted first ("rank" buffers) or the oldest ("uniform").
"""
from __future__ import annotations

import torch

from ..errors import NonFiniteError, ShapeError


class ReplayBuffer:
    def __init__(self, dim: int, capacity: int = 20000, priority: str = "rank", rank_k: float = 0.01) -> None:
        if priority not in ("rank", "uniform"):
            raise ValueError(f"unknown buffer priority {priority!r}; expected 'rank' or 'uniform'")
        self.dim, self.capacity, self.priority, self.rank_k = dim, int(capacity), priority, float(rank_k)
        self.x = torch.empty(0, dim)
        self.log_r = torch.empty(0)

    def __len__(self) -> int:
        return self.x.shape[0]

    def add(self, x: torch.Tensor, log_r: torch.Tensor) -> int:
        """Store rows with finite true log R; returns how many were stored (non-finite rows are
        dropped, never stored)."""
        x, log_r = x.detach().cpu(), log_r.detach().cpu()
        if x.dim() != 2 or x.shape[1] != self.dim or log_r.shape != (x.shape[0],):
            raise ShapeError(f"buffer.add: expected x (B, {self.dim}) and log_r (B,), got "
                             f"{tuple(x.shape)} and {tuple(log_r.shape)}")
        ok = torch.isfinite(log_r) & torch.isfinite(x).all(1)
        x, log_r = x[ok].to(self.x.dtype), log_r[ok].to(self.x.dtype)
        self.x = torch.cat([self.x, x])
        self.log_r = torch.cat([self.log_r, log_r])
        if len(self) > self.capacity:
            if self.priority == "rank":
                keep = torch.argsort(self.log_r, descending=True)[: self.capacity]
                keep = keep.sort().values
            else:
                keep = torch.arange(len(self) - self.capacity, len(self))
            self.x, self.log_r = self.x[keep], self.log_r[keep]
        return int(ok.sum())

    def weights(self) -> torch.Tensor:
        """Sampling probabilities of the stored points, (N,)."""
        n = len(self)
        if self.priority == "uniform":
            return torch.full((n,), 1.0 / n)
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.argsort(self.log_r, descending=True)] = torch.arange(n)
        w = 1.0 / (self.rank_k * n + rank.double())
        return (w / w.sum()).to(self.x.dtype)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (batch, d), log_r (batch,)) drawn with replacement."""
        if len(self) == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.multinomial(self.weights(), batch, replacement=True)
        return self.x[idx], self.log_r[idx]

    def state_dict(self) -> dict:
        return {"x": self.x, "log_r": self.log_r}

    def load_state_dict(self, s: dict) -> None:
        if not torch.isfinite(s["log_r"]).all():
            raise NonFiniteError("buffer state holds non-finite rewards")
        self.x, self.log_r = s["x"], s["log_r"]
