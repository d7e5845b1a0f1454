"""Replay buffer of terminal states with their *true* log-reward log R(x) = -E(x).

Sampling is uniform or rank-prioritised (Tripp et al., 2020, as used by gfn-diffusion and SGDS):
with the N stored points ranked by log R (rank 0 = highest reward, i.e. lowest energy),
    P(i) ∝ 1 / (k N + rank(i)).
When full, the lowest-reward points are evicted first ("rank" buffers) or the oldest ("uniform").
With `dedup=tol`, a new point is dropped when it falls in the same cell of the grid of side tol
(tol = 0: exact equality) as a stored point or an earlier new point, e.g. the repeated states of
rejected MCMC moves.

Each row may also carry its score grad log R(x) (`score`, NaN while unknown): maximum-likelihood
objectives that mix in the score form of the drift target (`orbit_kappa`) fill it the first time a
row is drawn (`missing_scores` / `set_scores`), so each stored point costs at most one extra call.
"""
from __future__ import annotations

import torch

from ..errors import NonFiniteError, ShapeError


class ReplayBuffer:
    """Terminal states x (N, d) with their true log R (N,) (and scores, NaN until known); uniform or
    rank-prioritised sampling (see module)."""
    def __init__(self, dim: int, capacity: int = 20000, priority: str = "rank", rank_k: float = 0.01,
                 dedup: float | None = None) -> None:
        if priority not in ("rank", "uniform"):
            raise ValueError(f"unknown buffer priority {priority!r}; expected 'rank' or 'uniform'")
        if dedup is not None and not dedup >= 0:
            raise ValueError(f"buffer dedup tolerance must be >= 0 or None, got {dedup}")
        self.dedup = dedup
        self.dim, self.capacity, self.priority, self.rank_k = dim, int(capacity), priority, float(rank_k)
        self.x = torch.empty(0, dim)
        self.log_r = torch.empty(0)
        self.score = torch.empty(0, dim)   # grad log R per row, NaN rows: not computed yet
        self.last_evicted = 0              # rows the last `add` evicted to stay within capacity

    def __len__(self) -> int:
        return self.x.shape[0]

    def add(self, x: torch.Tensor, log_r: torch.Tensor) -> int:
        """Store rows with finite true log R; returns how many were stored (non-finite rows, and
        duplicates when `dedup` is set, are dropped, never stored)."""
        x, log_r = x.detach().cpu(), log_r.detach().cpu()
        if x.dim() != 2 or x.shape[1] != self.dim or log_r.shape != (x.shape[0],):
            raise ShapeError(f"buffer.add: expected x (B, {self.dim}) and log_r (B,), got "
                             f"{tuple(x.shape)} and {tuple(log_r.shape)}")
        ok = torch.isfinite(log_r) & torch.isfinite(x).all(1)
        x, log_r = x[ok].to(self.x.dtype), log_r[ok].to(self.x.dtype)
        score = torch.full_like(x, float("nan"))
        if self.dedup is not None:
            new = self._novel(x)
            x, log_r, score = x[new], log_r[new], score[new]
        self.x = torch.cat([self.x, x])
        self.log_r = torch.cat([self.log_r, log_r])
        self.score = torch.cat([self.score, score])
        self.last_evicted = max(len(self) - self.capacity, 0)
        if self.last_evicted:
            if self.priority == "rank":
                keep = torch.argsort(self.log_r, descending=True)[: self.capacity]
                keep = keep.sort().values
            else:
                keep = torch.arange(len(self) - self.capacity, len(self))
            self.x, self.log_r, self.score = self.x[keep], self.log_r[keep], self.score[keep]
        return x.shape[0]

    def _novel(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) mask of new rows whose grid cell is held neither by a stored row nor an earlier new row."""
        allx = torch.cat([self.x, x])
        keys = allx if self.dedup == 0 else torch.floor(allx / self.dedup)
        _, inv = torch.unique(keys, dim=0, return_inverse=True)
        first = torch.full((int(inv.max()) + 1,) if inv.numel() else (0,), allx.shape[0], dtype=torch.long)
        first = first.scatter_reduce(0, inv, torch.arange(allx.shape[0]), reduce="amin")
        n_old = len(self)
        return (first[inv] == torch.arange(allx.shape[0]))[n_old:]

    def weights(self) -> torch.Tensor:
        """Sampling probabilities of the stored points, (N,)."""
        n = len(self)
        if self.priority == "uniform":
            return torch.full((n,), 1.0 / n)
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.argsort(self.log_r, descending=True)] = torch.arange(n)
        w = 1.0 / (self.rank_k * n + rank.double())
        return (w / w.sum()).to(self.x.dtype)

    def sample_index(self, batch: int) -> torch.Tensor:
        """Row indices (batch,) drawn with replacement by the buffer's priority."""
        if len(self) == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return torch.multinomial(self.weights(), batch, replacement=True)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (batch, d), log_r (batch,)) drawn with replacement."""
        idx = self.sample_index(batch)
        return self.x[idx], self.log_r[idx]

    def missing_scores(self, idx: torch.Tensor) -> torch.Tensor:
        """The distinct rows among idx whose score is not stored yet."""
        idx = torch.unique(idx)
        return idx[torch.isnan(self.score[idx]).any(1)]

    def set_scores(self, idx: torch.Tensor, score: torch.Tensor) -> None:
        """Store grad log R (len(idx), d) for rows idx."""
        if score.shape != (idx.shape[0], self.dim) or not torch.isfinite(score).all():
            raise ShapeError(f"buffer.set_scores: expected finite scores of shape ({idx.shape[0]}, {self.dim}), "
                             f"got {tuple(score.shape)}")
        self.score[idx] = score.detach().cpu().to(self.score.dtype)

    def state_dict(self) -> dict:
        return {"x": self.x, "log_r": self.log_r, "score": self.score}

    def load_state_dict(self, s: dict) -> None:
        if not torch.isfinite(s["log_r"]).all():
            raise NonFiniteError("buffer state holds non-finite rewards")
        self.x, self.log_r = s["x"], s["log_r"]
        score = s.get("score")   # checkpoints written before scores were kept: none known
        self.score = torch.full_like(self.x, float("nan")) if score is None else score
        if self.score.shape != self.x.shape:
            raise ShapeError(f"buffer state: score {tuple(self.score.shape)} does not match x {tuple(self.x.shape)}")
