"""E(n)-equivariant graph networks for particle systems (Satorras, Hoogeboom & Welling, ICML 2021).

One layer on a fully connected graph of n particles (x_i in R^D, invariant features h_i):
    m_ij  = phi_e(h_i, h_j, ||x_i - x_j||^2, a_ij)                      (a_ij = ||x_i^0 - x_j^0||^2)
    x_i' = x_i + 1/(n-1) sum_{j != i} (x_i - x_j) / (||x_i - x_j|| + 1) * phi_x(m_ij)
    h_i' = h_i + phi_h(h_i, sum_{j != i} m_ij)
(the coordinate update is normalised as in EDM, Hoogeboom et al. 2022, for stability). The x
update is equivariant under rotations/reflections and permutations and invariant under
translations; h stays invariant.

`EGNNDrift` is a drift mu(x, t) for the mean-free SDE: the displacement x^L - x^0 after L layers,
with the time embedding in h^0, projected onto the centre-of-mass-free subspace, optionally plus
a Langevin term NN(t) * P clip(grad log R) in which the score is clipped per particle by its norm
(clipping each coordinate would break rotation equivariance).
`EGNNFeatures` gives invariant features (sum-pooled h^L followed by an MLP), e.g. for the RND
novelty networks of SGDS.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import ShapeError
from .registry import DRIFTS, ScoreDriftOptions
from .time_embedding import HarmonicEmbedding, mlp


class EGNNLayer(nn.Module):
    """One EGNN layer; the last layer of a drift needs no feature update (update_features=False)
    and the last layer of a feature network no coordinate update (update_coords=False)."""

    def __init__(self, width: int, edge_features: int = 1, zero_coord: bool = True,
                 update_coords: bool = True, update_features: bool = True) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * width + 1 + edge_features, width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU())
        self.coord = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1)) if update_coords else None
        self.node = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width)) \
            if update_features else None
        if update_coords and zero_coord:  # start at the zero displacement (the reference process)
            nn.init.zeros_(self.coord[-1].weight)
            nn.init.zeros_(self.coord[-1].bias)

    def edge_input(self, h: torch.Tensor, d2: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """The first edge layer, W [h_i, h_j, d2_ij, a_ij] + b, (B, n, n, width). Computed as
        (W_i h)_i + (W_j h)_j + w_d d2_ij + W_a a_ij + b: the two feature blocks of W act on the n
        nodes, not on the n^2 edges, and the (B, n, n, 2 width + 2) concatenation is never built.
        The same function (and parameters) as applying the Linear to the concatenation."""
        lin = self.edge[0]
        F = h.shape[-1]
        w_i, w_j, w_d, w_a = lin.weight.split([F, F, 1, lin.weight.shape[1] - 2 * F - 1], dim=1)
        out = (h @ w_i.T + lin.bias)[:, :, None] + (h @ w_j.T)[:, None]
        return out + d2 * w_d[:, 0] + edge_attr @ w_a.T

    def forward(self, x: torch.Tensor, h: torch.Tensor, edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n, D), h (B, n, F), edge_attr (B, n, n, E) -> (x', h')."""
        B, n, _ = x.shape
        diff = x[:, :, None] - x[:, None]                         # (B, n, n, D): x_i - x_j
        d2 = (diff ** 2).sum(-1, keepdim=True)
        off = (1 - torch.eye(n, dtype=x.dtype, device=x.device))[None, :, :, None]
        m = self.edge[1:](self.edge_input(h, d2, edge_attr)) * off
        if self.coord is not None:
            w = self.coord(m) * off / ((d2 + 1e-8).sqrt() + 1)
            x = x + (diff * w).sum(2) / (n - 1)
        if self.node is not None:
            h = h + self.node(torch.cat([h, m.sum(2)], -1))
        return x, h


def _initial_state(x: torch.Tensor, n: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 2 or x.shape[1] != n * D:
        raise ShapeError(f"EGNN for {n} particles in {D}-D expects x of shape (B, {n * D}), got {tuple(x.shape)}")
    v = x.reshape(x.shape[0], n, D)
    v = v - v.mean(1, keepdim=True)
    return v, ((v[:, :, None] - v[:, None]) ** 2).sum(-1, keepdim=True)


class EGNNDrift(nn.Module):
    """Equivariant, centre-of-mass-free drift mu(x, t): (B, n*D), (B,) -> (B, n*D).

    particle_types: (n,) integer type per particle (default: all identical)."""

    def __init__(self, n_particles: int, spatial_dim: int, width: int = 64, depth: int = 3,
                 time_features: int = 64, score_clip: float = 100.0, langevin: bool = False,
                 particle_types: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n, self.D = int(n_particles), int(spatial_dim)
        types = torch.zeros(self.n, dtype=torch.long) if particle_types is None else torch.as_tensor(particle_types)
        self.register_buffer("types", types.long())
        self.type_emb = nn.Embedding(int(types.max()) + 1, width)
        self.time_emb = HarmonicEmbedding(time_features)
        self.time_enc = mlp(self.time_emb.out_dim, width, width, 1)
        self.layers = nn.ModuleList(EGNNLayer(width, update_features=k < depth - 1) for k in range(depth))
        self.needs_score = bool(langevin)
        self.score_clip = float(score_clip)
        if langevin:
            self.scale = mlp(self.time_emb.out_dim, width, 1, 1, zero_last=True)
            nn.init.constant_(self.scale[-1].bias, 0.01)

    @property
    def activation_elems_per_row(self) -> int:
        """Size of one edge activation (n, n, width) per configuration: what bounds a batch's memory."""
        return self.n * self.n * self.layers[0].edge[2].out_features

    def load_shallower(self, state: dict[str, torch.Tensor], depth: int) -> None:
        """Load the weights of a drift of the same width but `depth` < len(self.layers) layers so
        that this deeper drift computes the same function (function-preserving deepening, as in
        Net2Net, Chen, Goodfellow & Shlens, ICLR 2016). Layer k < depth - 1 goes to layer k, the
        source's last layer (coordinates only) to the last layer here, and the inserted layers start
        as the identity: their coordinate and feature updates end in a zero Linear, so
        x' = x and h' = h until training moves them. `state` is the source's state dict (keys
        relative to this module)."""
        L = len(self.layers)
        if not 1 <= depth < L:
            raise ValueError(f"load_shallower: source depth {depth} must be between 1 and {L - 1}")
        moved = {}
        for key, value in state.items():
            m = re.match(r"layers\.(\d+)\.(.*)", key)
            if m is None:
                moved[key] = value
            else:
                k = int(m.group(1))
                moved[f"layers.{k if k < depth - 1 else L - 1}.{m.group(2)}"] = value
        for k in range(depth - 1, L - 1):
            layer = self.layers[k]
            for last in (layer.coord[-1], layer.node[-1]):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
            moved.update({f"layers.{k}.{name}": p.detach().clone() for name, p in layer.state_dict().items()})
        self.load_state_dict(moved, strict=True)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        u = v.reshape(v.shape[0], self.n, self.D)
        return (u - u.mean(1, keepdim=True)).reshape(v.shape[0], -1)

    def clip_score(self, s: torch.Tensor) -> torch.Tensor:
        """Rescale each particle's score vector to norm <= score_clip, then remove the mean."""
        u = s.reshape(s.shape[0], self.n, self.D)
        norm = u.norm(dim=-1, keepdim=True)
        u = u * (self.score_clip / norm.clamp_min(1e-30)).clamp(max=1.0)
        return self.project(u.reshape(s.shape[0], -1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        x0, a = _initial_state(x, self.n, self.D)
        te = self.time_emb(t.expand(x.shape[0]) if t.dim() == 0 else t)
        h = self.type_emb(self.types)[None] + self.time_enc(te)[:, None]
        v = x0
        for layer in self.layers:
            v, h = layer(v, h, a)
        mu = self.project((v - x0).reshape(x.shape[0], -1))
        if self.needs_score:
            if score is None:
                raise ValueError("EGNNDrift(langevin=True) needs the target score grad log R(x)")
            mu = mu + self.scale(te) * self.clip_score(score)
        return mu


class EGNNFeatures(nn.Module):
    """Invariant features f(x) (B, out_features) of a configuration x (B, n*D): EGNN layers,
    sum-pooled node features, then an MLP. Invariant under E(D) and permutations of particles of
    equal type. Optionally time-conditioned (pass t)."""

    def __init__(self, n_particles: int, spatial_dim: int, out_features: int = 1, width: int = 64,
                 depth: int = 3, time_features: int = 0, particle_types: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n, self.D = int(n_particles), int(spatial_dim)
        types = torch.zeros(self.n, dtype=torch.long) if particle_types is None else torch.as_tensor(particle_types)
        self.register_buffer("types", types.long())
        self.type_emb = nn.Embedding(int(types.max()) + 1, width)
        self.time_emb = HarmonicEmbedding(time_features) if time_features else None
        self.time_enc = mlp(self.time_emb.out_dim, width, width, 1) if time_features else None
        self.layers = nn.ModuleList(EGNNLayer(width, zero_coord=False, update_coords=k < depth - 1)
                                    for k in range(depth))
        self.head = mlp(width, width, out_features, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        v, a = _initial_state(x, self.n, self.D)
        h = self.type_emb(self.types)[None].expand(x.shape[0], -1, -1)
        if self.time_emb is not None:
            if t is None:
                raise ValueError("this EGNNFeatures was built with time_features > 0: pass t")
            h = h + self.time_enc(self.time_emb(t))[:, None]
        for layer in self.layers:
            v, h = layer(v, h, a)
        return self.head(h.sum(1))


def _egnn(options: ScoreDriftOptions, target, langevin: bool) -> EGNNDrift:
    sym = target.symmetry
    if sym is None or not getattr(sym, "n_particles", 0):
        raise ValueError(f"the EGNN drift needs a particle target (one with a symmetry group); "
                         f"{getattr(target, 'name', target)!r} is not one")
    return EGNNDrift(sym.n_particles, sym.spatial_dim, options.width, options.depth, options.time_features,
                     options.score_clip, langevin=langevin)


# particle targets: equivariant, CoM-free; "egnn" needs no score (SGDS's LJ budgets), the Langevin
# variant adds NN(t) * P clip(grad log R) (one energy call per state)
DRIFTS.add("egnn", lambda o, target, sigma: _egnn(o, target, False), ScoreDriftOptions, needs_score=False)
DRIFTS.add("egnn_langevin", lambda o, target, sigma: _egnn(o, target, True), ScoreDriftOptions, needs_score=True)
