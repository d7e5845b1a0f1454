"""Random network distillation (RND; Burda et al., 2019) as SGDS's novelty score.

A fixed, randomly initialised target network f and a predictor f_hat trained by MSE to match f
on visited points; the novelty of x is the prediction error
    novelty(x) = ||f(x) - f_hat(x)||^2     (B,),
small where the predictor has been trained (familiar points), large elsewhere. It is
differentiable w.r.t. x, so it can enter the SGDS auxiliary energy E(x) - alpha * novelty(x)
(Kim et al., 2025). SGDS re-initialises the predictor between rounds (`reset`).
`state_dict()` (nn.Module) holds both networks; the predictor's Adam state is `rnd.optimizer.state_dict()`.
`make_rnd` picks the networks for a target: invariant, bounded EGNN features for particle systems.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import NonFiniteError, ShapeError

Tensor = torch.Tensor
NetworkFactory = Callable[[int, int], nn.Module]


def mlp(in_dim: int, out_dim: int, hidden: int = 256, n_layers: int = 3) -> nn.Module:
    """`n_layers` linear layers with SiLU in between."""
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RND(nn.Module):
    """RND novelty on R^dim. `factory(in_dim, out_dim) -> nn.Module` builds both networks
    (default: 3-layer MLP of width 256; particle systems can pass an equivariant network).
    `input_scale` divides x before the networks (use the target's length scale)."""

    def __init__(self, dim: int, out_dim: int = 64, *, hidden: int = 256, n_layers: int = 3,
                 factory: NetworkFactory | None = None, lr: float = 1e-3, input_scale: float = 1.0) -> None:
        super().__init__()
        if n_layers < 1 or dim < 1 or out_dim < 1:
            raise ValueError(f"RND: need dim, out_dim, n_layers >= 1; got {dim}, {out_dim}, {n_layers}")
        self.dim, self.out_dim, self.lr, self.input_scale = int(dim), int(out_dim), float(lr), float(input_scale)
        self.factory = factory or (lambda i, o: mlp(i, o, hidden, n_layers))
        self.target_net = self.factory(self.dim, self.out_dim)
        self.predictor = self.factory(self.dim, self.out_dim)
        self.target_net.requires_grad_(False)
        self._optimizer: torch.optim.Optimizer | None = None

    def _param(self) -> Tensor:
        return next(self.predictor.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """novelty(x) = ||f(x) - f_hat(x)||^2, (B,), in x's dtype; differentiable w.r.t. x."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"RND: expected x of shape (B, {self.dim}), got {tuple(x.shape)}")
        p = self._param()
        z = x.to(p) / self.input_scale
        return ((self.target_net(z) - self.predictor(z)) ** 2).sum(-1).to(x.dtype)

    novelty = forward

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.predictor.parameters(), lr=self.lr)
        return self._optimizer

    def fit(self, x: Tensor, steps: int = 1, batch_size: int | None = None, lr: float | None = None) -> float:
        """Train the predictor on the rows of x by `steps` Adam steps on the mean novelty (the
        MSE to f) of random minibatches; returns the last minibatch loss."""
        x = x.detach()
        x = x[torch.isfinite(x).all(1)]
        if x.shape[0] == 0:
            raise NonFiniteError("RND.fit: no finite points to fit")
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = float(lr)
        bs = x.shape[0] if batch_size is None else min(int(batch_size), x.shape[0])
        loss = torch.tensor(float("nan"))
        for _ in range(int(steps)):
            idx = torch.randint(0, x.shape[0], (bs,), device=x.device) if bs < x.shape[0] else slice(None)
            loss = self.forward(x[idx]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    @staticmethod
    def _reinit(net: nn.Module) -> None:
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def reset(self, target: bool = False) -> None:
        """Re-initialise the predictor (and its optimizer); with target=True also draw a new f."""
        self._reinit(self.predictor)
        if target:
            self._reinit(self.target_net)
        self._optimizer = None


class BoundedInvariantFeatures(nn.Module):
    """tanh of invariant EGNN features (`nets.EGNNFeatures`) of a particle configuration: (B, n D) ->
    (B, out), each entry in (-1, 1). Invariant under translations, rotations/reflections and
    permutations of identical particles."""

    def __init__(self, n_particles: int, spatial_dim: int, out_dim: int, width: int, depth: int = 3,
                 particle_types: Tensor | None = None) -> None:
        super().__init__()
        from ..nets import EGNNFeatures
        self.features = EGNNFeatures(n_particles, spatial_dim, out_features=out_dim, width=width, depth=depth,
                                     particle_types=particle_types)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.features(x))


def make_rnd(target, *, width: int = 256, lr: float = 1e-3, input_scale: float = 1.0, out_dim: int = 64) -> RND:
    """The RND novelty for `target`. Particle systems (a declared symmetry with n_particles): both
    networks are `BoundedInvariantFeatures` (SGDS also uses EGNN networks for LJ and alanine), on
    physical coordinates. Then novelty(x) is invariant under the target's group, as E is (an MLP
    on raw coordinates calls a rotated copy of a visited state novel), and novelty <= 4 out_dim, so
    the auxiliary energy E - alpha novelty is bounded below wherever E is. An MLP's novelty grows
    like |x|^2 far from the data: on LJ-13 (alpha = 10, sigma = 0.2) it outgrew the harmonic term,
    and round-2 MALA chains expanded to energies ~3,500. Other targets: MLPs on x / input_scale."""
    n = getattr(target, "n_particles", None)
    if getattr(target, "symmetry", None) is not None and n is not None:
        D = target.spatial_dim
        return RND(target.dim, out_dim, lr=lr,
                   factory=lambda i, o: BoundedInvariantFeatures(n, D, o, width))
    return RND(target.dim, out_dim, hidden=width, lr=lr, input_scale=input_scale)
