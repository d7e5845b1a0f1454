"""A short pilot run that finds a user energy's location and scale.

The sampler's reference process starts at 0 with one isotropic scale; a user's energy may sit far
from 0 or have coordinates whose scales differ by orders of magnitude (a posterior with a large
intercept, an ill-conditioned Gaussian). The pilot runs MALA chains (step sizes adapted per chain
towards acceptance 0.574) from a broad start, in stages: after each stage the chains' draws of its
second half give a mean m and covariance S, and the next stage runs in the standardised
coordinates z = L^-1 (x - m), L L^T = S (`targets.StandardizedTarget`), where MALA mixes as on a
standard Gaussian whatever the original conditioning (the windowed adaptation of Stan's NUTS warm-up
does the same for its mass matrix: Carpenter et al., "Stan: a probabilistic programming language",
2017). The covariance is regularised towards a small multiple of the identity with the weight of
5 draws, as Stan does, and is dense when there are at least 20 d draws, else diagonal.

The result (m, L) sets the coordinates the sampler trains in: its reference N(0, I) at t = 1 and
the searcher's start N(0, I) then cover the target's bulk. Energy calls count in the 'search' phase.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import NonFiniteError
from ..targets.base import Target
from ..targets.standardized import StandardizedTarget
from .energy import target_potential
from .mala import run_mala

REGULARISATION_DRAWS = 5.0
REGULARISATION_VARIANCE = 1e-3
DENSE_DRAWS_PER_DIM = 20


@dataclass
class PilotResult:
    """loc (d,), chol (d, d) (float64), the pilot's energy calls, the last stage's mean acceptance,
    and per stage the scale range (sqrt of the covariance's eigenvalues)."""

    loc: torch.Tensor
    chol: torch.Tensor
    energy_calls: int
    acceptance: float
    dense: bool
    stages: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-able figures for the report."""
        scales = torch.linalg.eigvalsh(self.chol @ self.chol.T).clamp_min(0).sqrt()
        return {"energy_calls": self.energy_calls, "acceptance": round(self.acceptance, 3), "dense": self.dense,
                "scale_min": float(scales.min()), "scale_max": float(scales.max()),
                "loc_norm": float(self.loc.norm()), "stages": self.stages}


def regularised_cholesky(x: torch.Tensor, dense: bool) -> torch.Tensor:
    """Cholesky factor of the regularised covariance of draws x (n, d) (float64)."""
    n, d = x.shape
    xc = x - x.mean(0)
    cov = xc.T @ xc / max(n - 1, 1)
    if not dense:
        cov = torch.diag(torch.diagonal(cov))
    w = n / (n + REGULARISATION_DRAWS)
    cov = w * cov + (1 - w) * REGULARISATION_VARIANCE * torch.eye(d, dtype=x.dtype)
    return torch.linalg.cholesky(cov)


def run_pilot(target: Target, *, chains: int = 64, steps: int = 400, stages: int = 4, init_std: float = 1.0,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> PilotResult:
    """Run the pilot (module docstring): `chains` MALA chains from N(0, init_std^2 I), `steps` steps
    in all, split evenly in `stages`, each adapting its step sizes in its first half."""
    d = target.dim
    loc, chol = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    x = init_std * torch.randn(chains, d, dtype=dtype, device=device)
    per_stage = max(2, steps // stages)
    calls, acceptance, dense, history = 0, float("nan"), False, []
    for s in range(stages):
        view = StandardizedTarget(target, loc, chol)
        r = run_mala(target_potential(view), view.from_user(x), per_stage - per_stage // 2, step_size=0.1,
                     n_adapt=per_stage // 2, thin=1, adapt_rate=0.3)
        calls += r.energy_calls
        acceptance = r.acceptance_rate
        draws = view.to_user(r.x.reshape(-1, d)).double().cpu()
        draws = draws[torch.isfinite(draws).all(1)]
        if draws.shape[0] < 2:
            raise NonFiniteError(f"pilot on {target.name!r}: no chain found a finite energy (start at "
                                 f"N(0, {init_std}^2 I)); give the target a scale or start (sigma=...)")
        dense = draws.shape[0] >= DENSE_DRAWS_PER_DIM * d
        loc, chol = draws.mean(0), regularised_cholesky(draws, dense)
        x = view.to_user(r.state.point.x)
        scales = torch.linalg.eigvalsh(chol @ chol.T).clamp_min(0).sqrt()
        history.append({"stage": s + 1, "acceptance": round(acceptance, 3), "scale_min": float(scales.min()),
                        "scale_max": float(scales.max())})
    return PilotResult(loc, chol, calls, acceptance, dense, history)


__all__ = ["PilotResult", "run_pilot", "regularised_cholesky"]
