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

Schedules (`smc_schedule`): "linear" takes b_k = k / levels. "adaptive" chooses each next b by
bisection so that the conditional ESS of the increment (Zhou, Johansen & Aston, "Toward automatic
model comparison: an adaptive sequential Monte Carlo approach", JCGS 2016),

    CESS(b') = (sum_i W_i u_i)^2 / sum_i W_i u_i^2,   u_i = exp(-(b' - b) (E(x_i) - |x_i|^2 / (2 s0^2))),

equals `smc_cess` (a fraction of 1), with at least (1 - b) / (levels left) per level so that b reaches 1
within `levels`; the levels left over when it reaches 1 early are spent at b = 1, where the particles
(resampled once) keep moving and every `thin`-th state is kept as a further equally weighted draw. So
a target that a broad start N(0, s0^2 I) reaches in a few levels (a 2-D banana: ~10) gets many
draws, and one whose weights degenerate fast (a funnel) gets as many levels as the budget allows,
with the same N (1 + levels x inner) calls either way. Choosing b from the particles makes Z-hat
consistent rather than exactly unbiased.
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
    schedule: str = option("linear", "SMC: annealing schedule, 'linear' (b_k = k / levels) or 'adaptive' (each b "
                           "set by the conditional ESS; levels left at b = 1 add draws)", alias="smc_schedule",
                           choices=("linear", "adaptive"))
    cess: float = option(0.9, "SMC, adaptive schedule: the conditional ESS each level's increment keeps",
                         alias="smc_cess", low=0.0, high=1.0, low_open=True, high_open=True)


def resample(state, log_w: Tensor) -> tuple[object, Tensor]:
    """Systematic resampling of the particles (positions, their energies and reset points) by their
    weights; every log-weight becomes the log-mean of the old ones."""
    idx = systematic_indices(log_w, log_w.numel()).to(log_w.device)
    level = torch.logsumexp(log_w, 0) - math.log(log_w.numel())
    state = replace(state, point=state.point.take(idx), anchor=state.anchor.take(idx),
                    step_size=state.step_size[idx.to(state.step_size.device)])
    return state, torch.full_like(log_w, float(level))


@dataclass
class SMCRun:
    x: Tensor
    energy: Tensor
    log_w: Tensor
    energy_calls: int
    resamplings: int
    acceptance: float
    levels: int = 0                                   # annealing levels run (b reached 1 at the last)
    extra: tuple[Tensor, Tensor] | None = None        # adaptive schedule: (x, E) kept at b = 1 after it


def conditional_ess(log_w: Tensor, dE: Tensor, delta: float) -> float:
    """CESS of the increment exp(-delta dE) under the normalised weights of log_w (module docstring)."""
    log_W = torch.log_softmax(log_w, 0)
    lu = -delta * dE
    lu = torch.where(torch.isfinite(lu), lu, torch.full_like(lu, -math.inf))
    a = torch.logsumexp(log_W + lu, 0)
    b = torch.logsumexp(log_W + 2 * lu, 0)
    return float(torch.exp(2 * a - b)) if torch.isfinite(b) else 0.0


def next_beta(log_w: Tensor, dE: Tensor, beta: float, levels_left: int, cess: float) -> float:
    """The adaptive schedule's next b (module docstring): b' in (b, 1] with CESS(b' - b) = cess by
    bisection, at least b + (1 - b) / levels_left; 1 when the whole rest keeps CESS >= cess."""
    rest = 1.0 - beta
    floor = rest / max(levels_left, 1)
    if levels_left <= 1 or conditional_ess(log_w, dE, rest) >= cess:   # exactly 1: the budget's last level
        return 1.0
    lo, hi = 0.0, rest
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if conditional_ess(log_w, dE, mid) >= cess else (lo, mid)
    return min(1.0, beta + max(lo, floor))


def run_smc(target, n: int, levels: int, *, s0: float, inner: int, step_size: float, resample_ess: float,
            adapt: bool, novelty=None, alpha: float = 0.0, dtype=None, device=None, schedule: str = "linear",
            cess: float = 0.9, thin: int = 1) -> SMCRun:
    """N = n particles through at most `levels` annealing levels of `inner` MALA steps (module
    docstring); final weights unresampled. With the adaptive schedule, the levels left once b = 1
    move the particles (resampled once) on at b = 1 and keep every `thin`-th state in `extra`."""
    kernel = MALA(step_size, adapt="global", adapt_rate=0.3)
    path = GeometricPath(target, 0.0, s0, novelty=novelty, alpha=alpha)
    state = kernel.init(path, s0 * torch.randn(n, target.dim, dtype=dtype, device=device))
    log_w = torch.full((n,), 0.5 * target.dim * math.log(2 * math.pi * s0 ** 2), dtype=torch.float64, device=device)
    run = SMCRun(state.point.x, state.point.E_true, log_w, n, 0, 0.0)
    acc, beta, k = [], 0.0, 0
    while beta < 1.0:
        k += 1
        p = state.point
        dE = (path.end_energy(p.x, p.E_true, p.grad_E)[0] - path.prior_energy(p.x)).double()
        new = k / levels if schedule == "linear" else next_beta(log_w, dE, beta, levels - k + 1, cess)
        log_w = log_w - (new - beta) * dE
        log_w = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
        beta, path = new, GeometricPath(target, new, s0, novelty=novelty, alpha=alpha)
        if ess_fraction(log_w) < resample_ess:
            state, log_w = resample(state, log_w)
            run.resamplings += 1
        state = _move(kernel, kernel.rebase(path, state), path, inner, adapt, run, acc, log_w)
    run.levels = k
    if k < levels:   # adaptive schedule: b = 1 reached early; the rest of the budget adds draws
        state, log_w = resample(state, log_w)
        run.resamplings += 1
        kept: list = []
        state = _move(kernel, state, path, (levels - k) * inner, adapt, run, acc, log_w, kept, thin)
        run.extra = (torch.cat([x for x, _ in kept]), torch.cat([e for _, e in kept])) if kept else None
    run.x, run.energy, run.log_w, run.acceptance = state.point.x, state.point.E_true, log_w, sum(acc) / len(acc)
    return run


def _move(kernel, state, path, steps: int, adapt: bool, run: SMCRun, acc: list, log_w: Tensor,
          kept: list | None = None, thin: int = 1):
    """`steps` MALA steps on `path` (calls added to run.energy_calls, acceptances to acc); a reset
    chain's log-weight becomes -inf (in place); with `kept`, every `thin`-th state is appended as (x, E)."""
    for i in range(1, steps + 1):
        state, info = kernel.step(path, state, adapt=adapt)
        run.energy_calls += info.energy_calls
        acc.append(info.acceptance_rate)
        log_w.masked_fill_(info.reset.to(log_w.device), -math.inf)
        if kept is not None and i % thin == 0:
            kept.append((state.point.x, state.point.E_true))
    return state


@SEARCHERS.register("smc", SMCOptions)
class SMCSearcher:
    """SMC searcher (module docstring): its particles after the last level, resampled by weight (with the
    adaptive schedule, the states kept at b = 1 when it got there early), and an estimate of log Z
    (None on the SGDS auxiliary energy, whose normaliser is not the target's)."""

    def __init__(self, options: SMCOptions) -> None:
        self.o = options

    def calls(self) -> int:
        return self.o.chains * (1 + self.o.steps * self.o.inner)

    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0) -> SearchResult:
        o, aux = self.o, novelty is not None and alpha > 0
        r = run_smc(target, o.chains, o.steps, s0=start_std(o, scale), inner=o.inner, step_size=o.step_size,
                    resample_ess=o.resample_ess, adapt=o.adapt, novelty=novelty if aux else None,
                    alpha=alpha if aux else 0.0, dtype=x0.dtype, device=x0.device, schedule=o.schedule,
                    cess=o.cess, thin=o.thin)
        log_Z = float(torch.logsumexp(r.log_w, 0) - math.log(r.log_w.numel()))
        if r.extra is not None:
            x, e = r.extra
        else:
            idx = systematic_indices(r.log_w, r.log_w.numel()).to(r.x.device)
            x, e = r.x[idx], r.energy[idx]
        return SearchResult(x, e, None if aux else log_Z,
                            {"acceptance": r.acceptance, "resamplings": r.resamplings, "levels": r.levels,
                             "ess": ess_fraction(r.log_w), "log_Z_hat": log_Z})


__all__ = ["SMCOptions", "SMCSearcher", "run_smc", "resample", "next_beta", "conditional_ess"]
