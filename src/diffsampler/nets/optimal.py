"""The target's exact optimal drift as a drift module: no parameters, nothing to learn.

`OptimalDrift` wraps `Target.optimal_drift` (the Föllmer drift of the pinned-Brownian reference),
so the whole sampler machinery (rollouts, integrators, evaluation) runs on the exact continuous-time
optimum. Its ELBO / EUBO on a grid is the discretisation floor of that grid: what no learner can
beat by learning the continuous-time drift (a learner trained on the same grid can do a little
better, since the Föllmer drift is optimal only as the steps go to 0). `drift=optimal` with
`iterations=0` reports it for any target that has one (GMM-40, GMM-25, Manywell-d).
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import DRIFTS


class OptimalDrift(nn.Module):
    """The target's exact Föllmer drift as a module: x (B, d), t (B,) -> mu*(x, t) (B, d); no parameters."""
    needs_score = False

    def __init__(self, target, sigma: float) -> None:
        super().__init__()
        if not getattr(target, "has_optimal_drift", False):
            raise ValueError(f"target {getattr(target, 'name', target)!r} has no closed-form optimal drift "
                             "(drift=optimal works for gmm40, gmm25 and manywell<d>)")
        self.target, self.sigma = target, float(sigma)

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None,
                context=None) -> torch.Tensor:
        """x (B, d), t (B,) -> mu*(x, t) (B, d)."""
        return self.target.optimal_drift(x, t, self.sigma)


# the target's exact Föllmer drift (no parameters): the discretisation floor of a grid
DRIFTS.add("optimal", lambda o, target, sigma: OptimalDrift(target, sigma), needs_score=False)
