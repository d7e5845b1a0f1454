"""Drift networks mu_theta(x, t) for the forward SDE dX = mu dt + sigma dW.

`MLPDrift` is the PIS architecture: a state encoder and a harmonic time encoder, summed, then an
MLP with zero-initialised output (so the untrained sampler is the reference process). It works in
units of the reference scale sigma: mu(x, t) = sigma * NN(x / sigma, t), so a target whose modes
lie at |x| ~ 40 (GMM-40, sigma = 10) feeds the network O(1) inputs (sigma = 1 changes nothing).
`LangevinDrift` adds the target's score (Zhang & Chen, 2022; Berner et al.):
    mu(x, t) = NN_1(x, t) + NN_2(t) * clip(grad log R(x), -c, c),
with NN_2(t) a scalar per time whose output layer starts at weight 0, bias 0.01 (gfn-diffusion's
initialisation), so training starts close to the reference process. With `per_dimension=True`
NN_2(t) is a vector in R^d (one score coefficient per coordinate, gfn-diffusion's
`langevin_scaling_per_dimension`): a target whose coordinates differ in stiffness (Manywell's
quartic wells next to unit Gaussians) needs a different Langevin coefficient for each. The score is passed in by the caller (the rollout), which
counts its energy call.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import DRIFTS, DriftOptions, ScoreDriftOptions
from .time_embedding import HarmonicEmbedding, mlp


class MLPDrift(nn.Module):
    """The PIS MLP drift mu(x, t): x (B, d), t (B,) -> (B, d), in units of `scale` (see module)."""
    needs_score = False

    def __init__(self, dim: int, width: int = 128, depth: int = 2, time_features: int = 64,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.dim, self.scale = dim, float(scale)
        self.time_emb = HarmonicEmbedding(time_features)
        self.time_enc = mlp(self.time_emb.out_dim, width, width, 1)
        self.state_enc = nn.Linear(dim, width)
        self.joint = mlp(width, width, dim, depth, zero_last=True)

    def time_context(self, t: torch.Tensor, basis: torch.Tensor | None = None) -> torch.Tensor:
        """The x-independent part of the network, t (M,) -> (M, width). A rollout knows its whole
        time grid in advance, so it computes this once for all steps (one large matmul instead of
        N small ones) and passes the rows of each step as `context`. basis: the harmonic basis
        of t, if already computed (see `HarmonicEmbedding.embed_linear`)."""
        h = self.time_emb.embed_linear(self.time_enc[0], t, basis)
        return self.time_enc[1:](h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, d), t (B,) -> drift (B, d); context: time_context(t), if already computed."""
        c = self.time_context(t) if context is None else context
        return self.scale * self.joint(self.state_enc(x / self.scale) + c)



class LangevinDrift(nn.Module):
    """The Langevin-parametrised drift mu = NN_1(x, t) + NN_2(t) clip(grad log R(x)): x, score (B, d),
    t (B,) -> (B, d) (see module)."""
    needs_score = True

    def __init__(self, dim: int, width: int = 128, depth: int = 2, time_features: int = 64,
                 score_clip: float = 100.0, scale: float = 1.0, per_dimension: bool = False) -> None:
        super().__init__()
        self.base = MLPDrift(dim, width, depth, time_features, scale)
        self.score_clip = score_clip
        self.time_emb = HarmonicEmbedding(time_features)
        self.scale = mlp(self.time_emb.out_dim, width, dim if per_dimension else 1, 1, zero_last=True)
        nn.init.constant_(self.scale[-1].bias, 0.01)

    def time_context(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (M,) -> ((M, width), (M, 1) or (M, d)): the base network's time context and NN_2(t)
        (a pair, not one concatenated tensor: no copy forward, no split/cat backward)."""
        basis = self.time_emb.basis(t)   # both embeddings have the same frequencies: one sin/cos pass
        nn2 = self.scale[1:](self.time_emb.embed_linear(self.scale[0], basis=basis))
        return self.base.time_context(t, basis), nn2

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None,
                context: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if score is None:
            raise ValueError("LangevinDrift needs the target score grad log R(x)")
        c_base, c_scale = self.time_context(t) if context is None else context
        s = score.clamp(-self.score_clip, self.score_clip)
        return self.base(x, t, context=c_base) + c_scale * s


def _unit(options: DriftOptions, sigma: float) -> float:
    return sigma if options.scale_by_sigma else 1.0


DRIFTS.add("mlp", lambda o, target, sigma: MLPDrift(target.dim, o.width, o.depth, o.time_features, _unit(o, sigma)),
           DriftOptions, needs_score=False)
DRIFTS.add("langevin", lambda o, target, sigma: LangevinDrift(target.dim, o.width, o.depth, o.time_features,
                                                              o.score_clip, _unit(o, sigma)),
           ScoreDriftOptions, needs_score=True)
# NN_2(t) in R^d: one Langevin coefficient per coordinate
DRIFTS.add("langevin_per_dim", lambda o, target, sigma: LangevinDrift(target.dim, o.width, o.depth, o.time_features,
                                                                      o.score_clip, _unit(o, sigma),
                                                                      per_dimension=True),
           ScoreDriftOptions, needs_score=True)
