"""Sequential Monte Carlo searcher: annealed importance sampling with adaptive resampling.

The particles follow AIS's geometric path from N(0, s0^2 I) to the target (`search.ais`,
`GeometricPath`): at level k each particle's log-weight gains -(b_k - b_{k-1}) (E(x) - |x|^2 / (2 s0^2)),
then `inner` MALA steps leave pi_k invariant. Whenever the effective sample size of the weights falls
below `resample_ess` x N, the particles are resampled (systematic resampling, `evaluation.resampling`)
and every log-weight is set to their log-mean, so the estimate

    Z-hat = mean_i exp(log w_i)  (with log w started at log Z_0 = (d/2) log(2 pi s0^2))

stays unbiased for Z (Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS B 2006;
unbiasedness holds for any resampling scheme that keeps each particle's expected number of copies at
N W_i, as systematic resampling does). With `adapt=True` the MALA step size follows the population's
mean acceptance from level to level (adaptive SMC): Z-hat is then consistent rather than exactly
unbiased; `adapt=False` keeps it exact. The returned samples are the final particles resampled once
more by their weights (equally weighted draws for the replay buffer), with their TRUE energies.
Energy calls: N at the start plus N per MALA step, N (1 + levels x inner) in all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..components import option
from ..evaluation.metrics import ess_fraction
from ..evaluation.resampling import systematic_indices
from .energy import GeometricPath
from .mala import MALA
from .searcher import SEARCHERS, ChainOptions, SearchResult, start_std

Tensor = torch.Tensor


@dataclass
class SMCOptions(ChainOptions):
    """The SMC searcher's options: ChainOptions, inner MALA steps per level, the resampling ESS fraction
    (smc_resample_ess), step-size adaptation (smc_adapt)."""
    inner: int = option(20, "AIS: MALA steps per annealing level", alias="search_inner", low=1)
    resample_ess: float = option(0.5, "SMC: resample when the ESS falls below this fraction of the particles",
                                 alias="smc_resample_ess", low=0.0, high=1.0)
    adapt: bool = option(True, "SMC: adapt the MALA step size to the population's acceptance between levels "
                         "(false keeps log Z-hat exactly unbiased)", alias="smc_adapt")


def resample(state, log_w: Tensor) -> tuple[object, Tensor]:
    """Systematic resampling of the particles (positions, their energies and reset points) by their
    weights; every log-weight becomes the log-mean of the old ones."""
    idx = systematic_indices(log_w, log_w.numel()).to(log_w.device)
    level = torch.logsumexp(log_w, 0) - math.log(log_w.numel())
    state = replace(state, point=state.point.take(idx), anchor=state.anchor.take(idx))
    return state, torch.full_like(log_w, float(level))


@dataclass
class SMCRun:
    x: Tensor
    energy: Tensor
    log_w: Tensor
    energy_calls: int
    resamplings: int
    acceptance: float


def run_smc(target, n: int, levels: int, *, s0: float, inner: int, step_size: float, resample_ess: float,
            adapt: bool, novelty=None, alpha: float = 0.0, dtype=None, device=None) -> SMCRun:
    """N = n particles through `levels` annealing levels (module docstring); final weights unresampled."""
    kernel = MALA(step_size, adapt="global", adapt_rate=0.3)
    b = torch.linspace(0.0, 1.0, levels + 1, dtype=torch.float64).tolist()
    state = kernel.init(GeometricPath(target, b[1], s0, novelty=novelty, alpha=alpha),
                        s0 * torch.randn(n, target.dim, dtype=dtype, device=device))
    log_w = torch.full((n,), 0.5 * target.dim * math.log(2 * math.pi * s0 ** 2), dtype=torch.float64, device=device)
    calls, resamplings, acc = n, 0, []
    for k in range(1, len(b)):
        path = GeometricPath(target, b[k], s0, novelty=novelty, alpha=alpha)
        p = state.point
        E_end = path.end_energy(p.x, p.E_true, p.grad_E)[0]
        log_w = log_w - (b[k] - b[k - 1]) * (E_end - path.prior_energy(p.x)).double()
        log_w = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
        if ess_fraction(log_w) < resample_ess:
            state, log_w = resample(state, log_w)
            resamplings += 1
        state = kernel.rebase(path, state)
        for _ in range(inner):
            state, info = kernel.step(path, state, adapt=adapt)
            calls += info.energy_calls
            acc.append(info.acceptance_rate)
            log_w = torch.where(info.reset.to(log_w.device), torch.full_like(log_w, -math.inf), log_w)
    p = state.point
    return SMCRun(p.x, p.E_true, log_w, calls, resamplings, sum(acc) / len(acc))


@SEARCHERS.register("smc", SMCOptions)
class SMCSearcher:
    """SMC searcher (module docstring): its particles after the last level, resampled by weight, and an
    estimate of log Z (None on the SGDS auxiliary energy, whose normaliser is not the target's)."""

    def __init__(self, options: SMCOptions) -> None:
        self.o = options

    def calls(self) -> int:
        return self.o.chains * (1 + self.o.steps * self.o.inner)

    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0) -> SearchResult:
        o, aux = self.o, novelty is not None and alpha > 0
        r = run_smc(target, o.chains, o.steps, s0=start_std(o, scale), inner=o.inner, step_size=o.step_size,
                    resample_ess=o.resample_ess, adapt=o.adapt, novelty=novelty if aux else None,
                    alpha=alpha if aux else 0.0, dtype=x0.dtype, device=x0.device)
        log_Z = float(torch.logsumexp(r.log_w, 0) - math.log(r.log_w.numel()))
        idx = systematic_indices(r.log_w, r.log_w.numel()).to(r.x.device)
        return SearchResult(r.x[idx], r.energy[idx], None if aux else log_Z,
                            {"acceptance": r.acceptance, "resamplings": r.resamplings,
                             "ess": ess_fraction(r.log_w), "log_Z_hat": log_Z})


__all__ = ["SMCOptions", "SMCSearcher", "run_smc", "resample"]
