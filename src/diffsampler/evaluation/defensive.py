"""Defensive importance sampling in path space: the sampler's draws mixed with a heavy-tailed density.

A trained sampler's log-weights log w = log p~(x) + log P_B(tau | x) - log Q(tau, x) live on paths
(tau, x) (`sde.trajectories`). Where Q misses part of the target (a far tail, an arm of a banana)
the weights there are unbounded and self-normalised estimates, log Z (IS) included, are biased
toward what Q covers. The defensive proposal (Hesterberg 1995, "Weighted average importance
sampling and defensive mixture distributions", Technometrics 37) mixes Q with a density r(x) whose
tails are heavier than the target's, extended to paths by the target's own backward process:

    M(tau, x) = (1 - eps) Q(tau, x) + eps r(x) P_B(tau | x).

A draw of the second component is x ~ r, then tau ~ P_B(. | x) (the backward rollout the EUBO uses).
Every draw, from either component, gets the mixture weight (the balance heuristic, Veach & Guibas
1995; Owen & Zhou 2000):

    w_M = p~ P_B / M,      1 / w_M = (1 - eps) / w + eps r(x) / p~(x),

so w_M <= p~(x) / (eps r(x)): bounded wherever r is heavier-tailed than p, whatever Q does. The
price is an ESS at most about (1 - eps) of the sampler's where the sampler is already good.
E_M[w_M f] = Z E_p[f] exactly, so log mean w_M estimates log Z and the self-normalised weighted
means are consistent.

r here is a multivariate Student-t with `dof` degrees of freedom, located at the mean of a separate
batch of the sampler's own draws, its scatter their covariance times `inflation`^2 (a separate batch,
so that r does not depend on the draws it weights). Only for a state space R^d (a pinned Brownian
reference); particle systems, whose states lie on the centre-of-mass-free subspace, are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class StudentT:
    """Multivariate Student-t: x = mean + chol g / sqrt(u / dof), g ~ N(0, I), u ~ chi2(dof).
    mean (d,), chol (d, d) lower triangular (the scatter is chol chol^T), dof > 0."""
    mean: torch.Tensor
    chol: torch.Tensor
    dof: float

    @classmethod
    def fit(cls, z: torch.Tensor, inflation: float, dof: float) -> StudentT:
        """Located at the mean of rows z (n, d), scatter inflation^2 times their covariance (a
        jitter of 1e-9 times its mean diagonal keeps it positive definite)."""
        z = z.double()
        cov = torch.atleast_2d(torch.cov(z.T)) * inflation ** 2
        jitter = 1e-9 * float(cov.diagonal().mean().clamp_min(1e-300))
        chol, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(z.shape[1], dtype=z.dtype, device=z.device))
        if int(info) != 0 or not torch.isfinite(chol).all():
            raise ConfigError("defensive sampling: the sampler's draws have a singular covariance")
        return cls(z.mean(0), chol, float(dof))

    def sample(self, n: int) -> torch.Tensor:
        """n draws (n, d), float64."""
        d = self.mean.shape[0]
        g = torch.randn(n, d, dtype=self.mean.dtype, device=self.mean.device)
        u = torch.distributions.Chi2(torch.tensor(self.dof, dtype=self.mean.dtype)).sample((n,)).to(self.mean.device)
        return self.mean + (g @ self.chol.T) / torch.sqrt(u / self.dof)[:, None]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density (n,) at rows z (n, d):
        lgamma((v + d)/2) - lgamma(v/2) - d/2 log(v pi) - log|chol| - (v + d)/2 log(1 + m / v),
        m the squared Mahalanobis distance."""
        d, v = self.mean.shape[0], self.dof
        y = torch.linalg.solve_triangular(self.chol, (z.double() - self.mean).T, upper=False).T
        maha = y.pow(2).sum(1)
        const = (math.lgamma((v + d) / 2) - math.lgamma(v / 2) - 0.5 * d * math.log(v * math.pi)
                 - float(torch.log(self.chol.diagonal()).sum()))
        return const - 0.5 * (v + d) * torch.log1p(maha / v)


def mixture_log_weights(log_w: torch.Tensor, log_r_target: torch.Tensor, log_r_defensive: torch.Tensor,
                        fraction: float) -> torch.Tensor:
    """log w_M (n,) from the sampler's path log-weights log w, the target's log p~(x) and the
    defensive density's log r(x): -logaddexp(log(1 - eps) - log w, log eps + log r - log p~).
    Where p~(x) = 0 the weight is 0; where the sampler's path weight is not a number (a failed
    backward rollout) only the defensive term is used."""
    lw = log_w.double()
    a = math.log1p(-fraction) - lw
    a = torch.where(torch.isnan(a), torch.full_like(a, -math.inf), a)
    b = math.log(fraction) + log_r_defensive.double() - log_r_target.double()
    out = -torch.logaddexp(a, b)
    dead = ~(log_r_target.double() > -math.inf)          # p~ = 0 or NaN: zero weight
    return torch.where(dead | torch.isnan(out), torch.full_like(out, -math.inf), out)


@dataclass(frozen=True)
class DefensiveSample:
    """x (n, d) in the user's coordinates, log_w (n,) the mixture weights, from_sampler (n,) bool
    (False: the draw came from the Student-t), fit: the Student-t (in the sampler's coordinates)."""
    x: torch.Tensor
    log_w: torch.Tensor
    from_sampler: torch.Tensor
    fit: StudentT


@dataclass(frozen=True)
class DefensiveMixture:
    """fraction: eps, the share of draws from the Student-t; inflation: its scale over the
    sampler's spread; dof: its degrees of freedom (3: heavy tails, finite variance); fit_draws:
    the sampler draws that locate it (counted, not used in the estimate)."""
    fraction: float = 0.1
    inflation: float = 2.0
    dof: float = 3.0
    fit_draws: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"defensive sampling: fraction must be in (0, 1), got {self.fraction}")
        if not (self.inflation > 0 and self.dof > 0 and self.fit_draws >= 2):
            raise ConfigError(f"defensive sampling: need inflation > 0, dof > 0, fit_draws >= 2; got "
                              f"{self.inflation}, {self.dof}, {self.fit_draws}")

    def sample(self, sampler, n: int, steps: int | None = None, batch_size: int = 4096) -> DefensiveSample:
        """n draws: n - round(eps n) from the sampler, the rest from the Student-t, all with the
        mixture weights (energy calls count in 'eval')."""
        from ..sde.reference import PinnedBrownian
        target = sampler.target
        if type(sampler.reference) is not PinnedBrownian:
            raise ConfigError(f"defensive sampling needs a target on R^d; {target.name} has the reference "
                              f"{type(sampler.reference).__name__} (its states lie on a subspace)")
        if int(n) < 2:
            raise ConfigError(f"defensive sampling: need n >= 2 draws, got {n}")
        steps = steps or sampler.default_steps
        n0 = min(max(1, round(self.fraction * n)), n - 1)
        with torch.no_grad(), target.counter.use("eval"):
            z_fit = _forward(sampler, self.fit_draws, steps, batch_size)[0]
            z_fit = z_fit[torch.isfinite(z_fit).all(1)]
            if z_fit.shape[0] < 2:
                raise ConfigError("defensive sampling: the sampler gave fewer than 2 finite draws")
            t = StudentT.fit(z_fit, self.inflation, self.dof)
            z1, lw1, lr1 = _forward(sampler, n - n0, steps, batch_size)
            z0 = t.sample(n0).to(z1.dtype)
            lw0, lr0 = _backward(sampler, z0, steps, batch_size)
        z = torch.cat([z1, z0])
        log_w = mixture_log_weights(torch.cat([lw1, lw0]), torch.cat([lr1, lr0]), t.log_prob(z), self.fraction)
        from_sampler = torch.arange(n, device=z.device) < n - n0
        return DefensiveSample(target.to_user(z), log_w, from_sampler, t)


def _forward(sampler, n: int, steps: int, batch_size: int):
    """Terminal states, path log-weights and log p~ of n forward rollouts (sampler coordinates)."""
    out = [sampler.rollout(min(batch_size, n - i), steps) for i in range(0, n, batch_size)]
    return (torch.cat([t.terminal for t in out]), torch.cat([t.log_w for t in out]),
            torch.cat([t.log_r for t in out]))


def _backward(sampler, z: torch.Tensor, steps: int, batch_size: int):
    """Path log-weights and log p~ along backward rollouts ending at z (sampler coordinates)."""
    out = [sampler.backward(z[i:i + batch_size], steps) for i in range(0, z.shape[0], batch_size)]
    return torch.cat([t.log_w for t in out]), torch.cat([t.log_r for t in out])


__all__ = ["StudentT", "DefensiveMixture", "DefensiveSample", "mixture_log_weights"]
