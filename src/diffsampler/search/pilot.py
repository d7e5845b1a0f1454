"""A pilot run that finds a user energy's location and scale.

The sampler's reference process starts at 0 with one isotropic scale; a user's energy may sit far
from 0, have coordinates whose scales differ by orders of magnitude and correlate strongly (a
regression posterior), or be multimodal. The pilot has two parts.

1. Normal approximations along optimisation paths (after Pathfinder: Zhang, Carpenter, Gelman &
   Vehtari, "Pathfinder: parallel quasi-Newton variational inference", JMLR 23, 2022). From a few
   starts x ~ N(0, init_std^2 I), damped Newton steps descend E with Hessians from finite differences
   of the gradient (dense for d <= DENSE_HESSIAN_DIM, else diagonal; eigenvalues taken in absolute
   value and damped, so a step never climbs: "saddle-free" Newton, with the damping raised when E
   does not decrease). Every iterate x_k with a positive-definite Hessian H_k proposes
   q_k = N(x_k, H_k^-1), scored by a Monte Carlo ELBO, E_q[-E] + H(q); each path keeps its best.
   Selecting by ELBO rather than taking the mode matters for funnels, whose mode (deep in the neck)
   is far from their mass. The paths' best approximations are combined by moment matching (the
   mean and covariance of their equal-weight mixture), so modes found by different paths are all
   covered. Where no path meets a positive-definite Hessian, the paths are run again from the same
   starts with central differences and CAREFUL_NEWTON_STEPS steps: on a regression with an uncentred
   covariate (condition number ~1e11) forward differences turn the smallest eigenvalue negative at
   every point, and the MALA part alone, started in the identity metric, never leaves the start.
2. MALA in standardised coordinates, in stages (as Stan's windowed adaptation, Carpenter et al.
   2017): chains start from draws of the paths' approximations; after each stage the draws of its
   second half give a mean m and covariance S (regularised towards a small multiple of the identity
   with the weight of 5 draws; dense with at least 20 d draws, else diagonal), and the next stage
   runs in z = L^-1 (x - m), L L^T = S, where MALA mixes as on a standard Gaussian. The chains
   sample exp(-E / T) (`temperature`, default 1) and the coordinates' scale is margin * L (default 1).
   Long and many (128 chains x 4,000 steps in 8 stages: 5e5 calls, seconds on a cheap energy): on
   funnel-shaped and GLM posteriors a short pilot's S depends on its seed by orders of magnitude.
   At the target's own temperature: a funnel tempered to T = 2 has a mouth whose variance long
   chains find to be thousands of times the target's. Measured on the held-out suite
   (docs/notebook/2026-12-07-long-pilot-seed-table.md). Chains stuck far in a tail at the end of
   a stage (energy above median + 30 robust sds, `search.stuck`) are left out of its mean and
   covariance and restarted from other chains' states: on ARMA(1,1) 3 of 128 chains sat at E ~ 1e12-1e19
   beyond the invertibility boundary and made the coordinates 9 times too wide in one direction.

The result (m, margin L) sets the coordinates the sampler trains in. Energy calls count in the 'search'
phase. Computation is in float64 (finite-difference Hessians need it).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..errors import NonFiniteError
from ..targets.base import Target
from ..targets.standardized import StandardizedTarget
from .energy import target_potential
from .mala import run_mala
from .stuck import stuck_chains

REGULARISATION_DRAWS = 5.0
REGULARISATION_VARIANCE = 1e-3
DENSE_DRAWS_PER_DIM = 20
DENSE_HESSIAN_DIM = 100
STIFFNESS_POINTS = 64        # pilot states at which the stiffest curvature is measured
POWER_ITERATIONS = 12
CAREFUL_NEWTON_STEPS = 40     # paths rerun with central differences when none met a positive-definite Hessian
MIN_TIMED_STAGES = 3            # a time-limited pilot runs at least this many MALA stages
SCALE_GROWTH_WARNING = 1.25   # a pilot whose extreme scales grew by more over its last two stages had not settled


@dataclass
class PilotResult:
    """loc (d,), chol (d, d) (float64), the pilot's energy calls, the last stage's mean acceptance,
    and figures per part (the paths' best ELBO, the stages' scale ranges)."""

    loc: torch.Tensor
    chol: torch.Tensor
    energy_calls: int
    acceptance: float
    dense: bool
    stages: list[dict] = field(default_factory=list)
    curvature: float = float("nan")
    seconds: float = 0.0

    def summary(self) -> dict:
        """JSON-able figures for the report."""
        scales = torch.linalg.eigvalsh(self.chol @ self.chol.T).clamp_min(0).sqrt()
        return {"energy_calls": self.energy_calls, "acceptance": round(self.acceptance, 3), "dense": self.dense,
                "scale_min": float(scales.min()), "scale_max": float(scales.max()),
                "loc_norm": float(self.loc.norm()),
                "curvature": self.curvature if math.isfinite(self.curvature) else None,
                "seconds": round(self.seconds, 2), "stages": self.stages}


def regularised_cholesky(x: torch.Tensor, dense: bool) -> torch.Tensor:
    """Cholesky factor of the regularised covariance of draws x (n, d) (float64): w S + (1 - w) r I,
    w = n / (n + REGULARISATION_DRAWS), r = REGULARISATION_VARIANCE (Stan's windowed adaptation).
    That floor is in the target's units: where it would be more than a tenth of the smallest
    eigenvalue of S (a direction with sd below ~1e-3 at 32,000 draws: a regression on an uncentred
    covariate has one of sd 4e-5), S is shrunk towards r diag(S) instead, a floor proportional to
    each coordinate's own variance, which keeps that direction's width."""
    n, d = x.shape
    xc = x - x.mean(0)
    cov = xc.T @ xc / max(n - 1, 1)
    if not dense:
        cov = torch.diag(torch.diagonal(cov))
    w = n / (n + REGULARISATION_DRAWS)
    floor = (1 - w) * REGULARISATION_VARIANCE
    eye = torch.eye(d, dtype=x.dtype)
    if torch.linalg.eigvalsh(cov).min() < 10 * floor:
        var = torch.diagonal(cov)
        eye = torch.diag(torch.where(var > 0, var, torch.ones_like(var)))
    return torch.linalg.cholesky(w * cov + floor * eye)


def scale_growth(stages: list[dict]) -> float | None:
    """How much the pilot's extreme scales still grew at its end: max over the smallest and the
    largest scale of (scale at the last stage) / (scale two stages before); None with < 3 stages.

    On targets where the MALA stages have mixed the ratio stays near 1 (on the held-out
    suite's ten settled targets, 0.97-1.06); where they have not (a banana's arms, a funnel's neck) the
    scales keep growing stage after stage (1.46 and 5.1 there), and the standardised coordinates are too narrow."""
    st = [s for s in stages if isinstance(s.get("stage"), int)]
    if len(st) < 3:
        return None
    return max(st[-1][k] / st[-3][k] for k in ("scale_min", "scale_max") if st[-3][k] > 0)


def pilot_warning(summary: dict | None) -> str | None:
    """A warning line when a run's pilot (its report's 'pilot' entry) ended with scales still growing."""
    growth = scale_growth((summary or {}).get("stages") or [])
    if growth is None or growth <= SCALE_GROWTH_WARNING:
        return None
    return (f"the pilot's scale estimate was still growing at its end (x{growth:.2f} over its last two stages): "
            "its MALA chains had not explored the target, whose mass may reach well beyond what the sampler "
            "was set up for (a curved or funnel-shaped target); check the weighted estimates, or give a longer "
            "pilot (pilot_steps=) or the target's scale (sigma=)")


# -- part 1: normal approximations along damped Newton paths -------------------------------------------
def energy_and_grad(target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E (P,), grad E (P, d) through the counted path; non-finite rows come back as E = +inf."""
    log_r, score = target.log_reward_and_score(x, check_finite=False)
    bad = ~torch.isfinite(log_r) | ~torch.isfinite(score).all(-1)
    e = torch.where(bad, torch.full_like(log_r, math.inf), -log_r)
    return e, torch.where(bad[:, None], torch.zeros_like(score), -score)


def hessian(target: Target, x: torch.Tensor, g: torch.Tensor, dense: bool, central: bool = False) -> torch.Tensor:
    """Finite-difference Hessians (P, d, d) of E at rows x (P, d) with gradients g: column i from
    (grad E(x + eps_i e_i) - grad E(x)) / eps_i, symmetrised; diagonal only when not dense (the same
    d gradient calls per row). central: (grad E(x + eps_i e_i) - grad E(x - eps_i e_i)) / (2 eps_i),
    2d calls per row, error O(eps^2) instead of O(eps): where the condition number is ~1e11 (a
    regression on an uncentred covariate) the forward error, eps times third derivatives of the
    stiff directions, exceeds the smallest eigenvalue and turns it negative."""
    P, d = x.shape
    eps = 1e-5 * (1 + x.abs())                                    # (P, d)
    shifted = x[:, None, :] + torch.diag_embed(eps)               # (P, d, d): row i is x + eps_i e_i
    _, gs = energy_and_grad(target, shifted.reshape(P * d, d))
    if central:
        _, g_minus = energy_and_grad(target, (x[:, None, :] - torch.diag_embed(eps)).reshape(P * d, d))
        H = (gs.view(P, d, d) - g_minus.view(P, d, d)) / (2 * eps[..., None])
    else:
        H = (gs.view(P, d, d) - g[:, None, :]) / eps[..., None]   # H[p, i, :] = d grad / d x_i
    H = 0.5 * (H + H.transpose(1, 2))
    return H if dense else torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2))


def gaussian_elbo(target: Target, mean: torch.Tensor, chol: torch.Tensor, draws: int) -> torch.Tensor:
    """Monte Carlo ELBO (P,) of q = N(mean, chol chol^T) per row: E_q[-E] + entropy."""
    P, d = mean.shape
    eps = torch.randn(P, draws, d, dtype=mean.dtype)
    z = mean[:, None] + eps @ chol.transpose(1, 2)
    e, _ = energy_and_grad(target, z.reshape(P * draws, d))
    entropy = 0.5 * d * math.log(2 * math.pi * math.e) + torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    return -e.view(P, draws).mean(1) + entropy


def newton_paths(target: Target, x: torch.Tensor, steps: int, draws: int, central: bool = False,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each path's best normal approximation: (means (P, d), chols (P, d, d), ELBOs (P,)); -inf where a
    path never met a positive-definite Hessian. central: central-difference Hessians (`hessian`)."""
    P, d = x.shape
    dense = d <= DENSE_HESSIAN_DIM
    best_m, best_L = x.clone(), torch.eye(d, dtype=x.dtype).repeat(P, 1, 1)
    best = torch.full((P,), -math.inf, dtype=x.dtype)
    damping = torch.ones(P, dtype=x.dtype)
    e, g = energy_and_grad(target, x)
    for _ in range(steps):
        H = hessian(target, x, g, dense, central)
        lam, Q = torch.linalg.eigh(H)
        ok = torch.isfinite(lam).all(1) & (lam > 0).all(1) & torch.isfinite(e)
        if ok.any():
            L = torch.linalg.cholesky(Q[ok] @ torch.diag_embed(1 / lam[ok]) @ Q[ok].transpose(1, 2))
            elbo = gaussian_elbo(target, x[ok], L, draws)
            better = torch.zeros_like(ok)
            better[ok] = torch.isfinite(elbo) & (elbo > best[ok])
            idx = better.nonzero().flatten()
            sel = better[ok]
            best_m[idx], best_L[idx], best[idx] = x[idx], L[sel], elbo[sel]
        step = -(Q @ ((Q.transpose(1, 2) @ g[..., None]).squeeze(-1) / (lam.abs() + damping[:, None]))[..., None])
        trial = x + step.squeeze(-1)
        e_new, g_new = energy_and_grad(target, trial)
        accept = torch.isfinite(e_new) & (e_new < e)
        x, e, g = torch.where(accept[:, None], trial, x), torch.where(accept, e_new, e), torch.where(accept[:, None], g_new, g)
        damping = torch.where(accept, damping / 3, damping * 10).clamp(1e-8, 1e12)
    return best_m, best_L, best


def mixture_moments(means: torch.Tensor, chols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of the equal-weight mixture of N(means_p, chols_p chols_p^T)."""
    m = means.mean(0)
    within = (chols @ chols.transpose(1, 2)).mean(0)
    dm = means - m
    return m, within + dm.T @ dm / means.shape[0]


def stiffness(target: Target, z: torch.Tensor, iterations: int = POWER_ITERATIONS) -> float:
    """The median over rows z (P, d) of the largest |eigenvalue| of the Hessian of E at z: power
    iteration on Hessian-vector products from finite differences of the gradient,
    H v ~ (grad E(z + eps v) - grad E(z)) / eps, with the Rayleigh quotient v^T H v as the estimate;
    (iterations + 1) P gradient calls, for any d. In standardised coordinates 1 / sqrt of it is the
    smallest local length scale of the target (a banana's ridge, a funnel's neck), against the unit
    scale of the whole. NaN without rows or where no row gives a finite estimate."""
    if z.shape[0] == 0:
        return float("nan")
    z = z.double()
    _, g = energy_and_grad(target, z)
    v = torch.nn.functional.normalize(torch.randn_like(z), dim=1)
    eps = 1e-4 * (1 + z.norm(dim=1, keepdim=True))
    lam = torch.full((z.shape[0],), float("nan"), dtype=z.dtype)
    for _ in range(iterations):
        _, g_eps = energy_and_grad(target, z + eps * v)
        hv = (g_eps - g) / eps
        lam = (v * hv).sum(1)
        v = torch.nn.functional.normalize(hv, dim=1)
    lam = lam.abs()
    lam = lam[torch.isfinite(lam)]
    return float(lam.median()) if lam.numel() else float("nan")


# -- part 2: MALA in standardised coordinates ----------------------------------------------------------
def reseat(x: torch.Tensor, stuck: torch.Tensor) -> torch.Tensor:
    """x (C, d) with each stuck chain's row replaced by the row of a chain drawn at random from the
    others (all rows kept where every chain or none is stuck)."""
    if not stuck.any() or stuck.all():
        return x
    free = (~stuck).nonzero().flatten()
    pick = free[torch.randint(free.numel(), (int(stuck.sum()),))]
    x = x.clone()
    x[stuck.nonzero().flatten()] = x[pick]
    return x


def mala_stages(target: Target, x: torch.Tensor, loc: torch.Tensor, chol: torch.Tensor, steps: int,
                stages: int, temperature: float = 1.0, deadline: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, int, float, bool, list[dict], torch.Tensor]:
    """`stages` MALA stages from chains x (C, d) on the target at `temperature`; returns (loc, chol,
    calls, acceptance, dense, history, the chains' final states (C, d)). deadline (a
    `time.perf_counter()` value): after MIN_TIMED_STAGES stages, no stage starts that the last
    one's duration says would end after it (the history records the stop)."""
    d = x.shape[1]
    per_stage = max(2, steps // stages)
    calls, acceptance, dense, history, last = 0, float("nan"), False, [], 0.0
    for s in range(stages):
        started = time.perf_counter()
        if deadline is not None and s >= MIN_TIMED_STAGES and started + last > deadline:
            history.append({"stage": "stopped", "reason": "max_seconds", "stages_run": s})
            break
        view = StandardizedTarget(target, loc, chol)
        r = run_mala(target_potential(view, 1.0 / temperature), view.from_user(x), per_stage - per_stage // 2, step_size=0.5 * d ** (-1 / 3),
                     n_adapt=per_stage // 2, thin=1, adapt_rate=0.3)
        calls += r.energy_calls
        acceptance = r.acceptance_rate
        stuck = stuck_chains(r.state.point.E_true)
        draws = view.to_user(r.x[:, ~stuck].reshape(-1, d)).double().cpu()
        draws = draws[torch.isfinite(draws).all(1)]
        if draws.shape[0] < 2:
            raise NonFiniteError(f"pilot on {target.name!r}: no chain found a finite energy; give the target a scale "
                                 "or start (sigma=...)")
        dense = draws.shape[0] >= DENSE_DRAWS_PER_DIM * d
        loc, chol = draws.mean(0), regularised_cholesky(draws, dense)
        x = reseat(view.to_user(r.state.point.x), stuck)
        scales = torch.linalg.eigvalsh(chol @ chol.T).clamp_min(0).sqrt()
        history.append({"stage": s + 1, "acceptance": round(acceptance, 3), "scale_min": float(scales.min()),
                        "scale_max": float(scales.max()), "step_size": float(r.state.step_size.median()),
                        **({"stuck": int(stuck.sum())} if stuck.any() else {})})
        last = time.perf_counter() - started
    return loc, chol, calls, acceptance, dense, history, x


def run_pilot(target: Target, *, chains: int = 128, steps: int = 4000, stages: int = 8, init_std: float = 1.0,
              paths: int = 16, newton_steps: int = 12, elbo_draws: int = 32, temperature: float = 1.0,
              margin: float = 1.0, widen: bool = False, max_seconds: float | None = None) -> PilotResult:
    """Run the pilot (module docstring): `paths` damped-Newton paths of `newton_steps` steps from
    N(0, init_std^2 I), then `chains` MALA chains for `steps` steps in `stages` stages; the
    coordinates' scale is the chains' covariance times margin^2. widen: the margin is further
    multiplied by the pilot's own `scale_growth` where it exceeds 1 (scales still growing at the end
    have not reached the target's; this extrapolates one more pair of stages). max_seconds: the
    MALA stages stop early (after at least MIN_TIMED_STAGES) rather than run past this wall time."""
    d = target.dim
    before, started = target.counter.total, time.perf_counter()
    deadline = None if max_seconds is None else started + max_seconds
    x0 = init_std * torch.randn(paths, d, dtype=torch.float64)
    with target.counter.use("search"):
        means, chols, elbos = newton_paths(target, x0, newton_steps, elbo_draws)
        found = torch.isfinite(elbos)
        if not found.any():      # no positive-definite Hessian met: careful differences, longer paths
            means, chols, elbos = newton_paths(target, x0, CAREFUL_NEWTON_STEPS, elbo_draws, central=True)
    careful = not found.any()
    found = torch.isfinite(elbos)
    if found.any():
        loc, cov = mixture_moments(means[found], chols[found])
        chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(d, dtype=cov.dtype) * cov.diagonal().max())
        pick = found.nonzero().flatten()[torch.arange(chains) % int(found.sum())]
        x = means[pick] + (torch.randn(chains, d, dtype=torch.float64)[:, None] @ chols[pick].transpose(1, 2)).squeeze(1)
    else:   # no positive-definite Hessian on any path: MALA from the broad start alone
        loc, chol = torch.zeros(d, dtype=torch.float64), init_std * torch.eye(d, dtype=torch.float64)
        x = init_std * torch.randn(chains, d, dtype=torch.float64)
    newton = {"stage": "paths", "paths": paths, "found": int(found.sum()),
              "best_elbo": float(elbos[found].max()) if found.any() else None,
              **({"careful": True} if careful else {})}
    loc, chol, _, acceptance, dense, history, x = mala_stages(target, x, loc, chol, steps, stages, temperature,
                                                                         deadline)
    growth = scale_growth(history) if widen else None
    if growth is not None and growth > 1.0:
        margin = margin * growth
        history.append({"stage": "widen", "factor": growth})
    chol = margin * chol
    view = StandardizedTarget(target, loc, chol)
    with target.counter.use("search"):
        curvature = stiffness(view, view.from_user(x[torch.isfinite(x).all(1)][:STIFFNESS_POINTS]))
    calls = target.counter.total - before
    return PilotResult(loc, chol, calls, acceptance, dense, [newton, *history], curvature,
                       time.perf_counter() - started)


__all__ = ["PilotResult", "run_pilot", "stiffness", "regularised_cholesky", "newton_paths", "mixture_moments", "scale_growth",
           "pilot_warning", "SCALE_GROWTH_WARNING"]
