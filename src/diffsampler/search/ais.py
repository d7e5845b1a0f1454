"""Annealed importance sampling (Neal, 2001) along the geometric path from N(0, s0^2 I).

    pi_k(x) ∝ N(x; 0, s0^2 I)^(1 - b_k) exp(-E(x))^(b_k),   0 = b_0 < b_1 < ... < b_K = 1,
    unnormalised energies U_k(x) = (1 - b_k) ||x||^2 / (2 s0^2) + b_k E(x)  (`GeometricPath`).

x_0 ~ N(0, s0^2 I); for k = 1..K: log w += U_{k-1}(x_{k-1}) - U_k(x_{k-1})
    = -(b_k - b_{k-1}) (E(x_{k-1}) - ||x_{k-1}||^2 / (2 s0^2)),
then x_k ~ T_k(x_{k-1}, .), n_inner steps of a pi_k-invariant kernel (MALA; ULA makes the
weights approximate). With log w started at log Z_0 = (d/2) log(2 pi s0^2),
    E[exp(log w)] = Z,   so  Z-hat = mean exp(log w) is unbiased for Z,
and log Z-hat = logmeanexp(log w) (biased low for log Z, by Jensen). Samples x_K weighted by w
are self-normalised importance samples of the target.

Energy calls: B at x_0 plus B per kernel step, i.e. B (1 + K n_inner) in all: each point is
evaluated once, its E and grad E are re-used for the weight increment and the next level.
Step-size adaptation (`adapt=True`) makes each transition depend on the chain's own past;
Z-hat is then only consistent, not exactly unbiased, so it is off by default.
A chain reset because it became non-finite gets log w = -inf (counted in n_reset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..components import option
from ..errors import ConfigError
from ..targets.base import Target
from .energy import GeometricPath
from .mala import MALA
from .searcher import SEARCHERS, ChainOptions, SearchResult, start_std

Tensor = torch.Tensor


def logmeanexp(a: Tensor, dim: int = -1) -> Tensor:
    """log mean exp of `a` along `dim`."""
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def linear_schedule(n_levels: int) -> Tensor:
    """b_k = k / K, k = 0..K (float64)."""
    return torch.linspace(0.0, 1.0, n_levels + 1, dtype=torch.float64)


@dataclass
class AISResult:
    """AIS output: final samples x (B, d), log-weights log_w (B,) (log Z_0 included), their true energies
    (B,), energy calls, mean acceptance, chains reset."""
    x: Tensor               # (B, d) final samples x_K
    log_w: Tensor           # (B,) log importance weights, log Z_0 included
    energy: Tensor          # (B,) true energies E(x_K)
    energy_calls: int
    acceptance_rate: float  # mean over levels and chains
    n_reset: int

    @property
    def log_Z(self) -> float:
        """log Z-hat = logmeanexp(log w); exp of it is unbiased for Z."""
        return float(logmeanexp(self.log_w))

    @property
    def ess(self) -> float:
        """Kish effective sample size (sum w)^2 / sum w^2."""
        return float(torch.exp(2 * torch.logsumexp(self.log_w, 0) - torch.logsumexp(2 * self.log_w, 0)))

    def normalized_weights(self) -> Tensor:
        return torch.softmax(self.log_w, 0)


def run_ais(target: Target, n_chains: int, n_levels: int, *, s0: float = 1.0, kernel=None, n_inner: int = 1,
            novelty=None, alpha: float = 0.0,
            betas: Tensor | None = None, adapt: bool = False, dtype: torch.dtype | None = None,
            device: torch.device | str | None = None) -> AISResult:
    """AIS with `n_chains` independent chains and `n_levels` (K) annealing levels. `kernel`: any
    object with init/step/rebase (default MALA(step_size=0.01)); `betas`: (K+1,) increasing from
    0 to 1 (default linear). With `novelty` and alpha > 0 the path ends at the SGDS auxiliary
    energy E - alpha * novelty(x) (the weights then estimate that density's normaliser); the
    returned `energy` is always the TRUE E."""
    betas = linear_schedule(n_levels) if betas is None else torch.as_tensor(betas, dtype=torch.float64)
    _check_schedule(betas, n_levels, n_inner)
    kernel = MALA(0.01) if kernel is None else kernel
    dtype = dtype or torch.get_default_dtype()
    x = s0 * torch.randn(n_chains, target.dim, dtype=dtype, device=device)
    b = betas.tolist()
    state = kernel.init(GeometricPath(target, b[1], s0, novelty=novelty, alpha=alpha), x)
    calls = n_chains
    log_w = torch.full((n_chains,), 0.5 * target.dim * math.log(2 * math.pi * s0 ** 2), dtype=dtype, device=device)
    dead = torch.zeros(n_chains, dtype=torch.bool, device=device)
    acc = []
    for k in range(1, len(b)):
        path = GeometricPath(target, b[k], s0, novelty=novelty, alpha=alpha)
        p = state.point
        E_end = path.end_energy(p.x, p.E_true, p.grad_E)[0]
        log_w = log_w - (b[k] - b[k - 1]) * (E_end - path.prior_energy(p.x))
        state = kernel.rebase(path, state)
        for _ in range(n_inner):
            state, info = kernel.step(path, state, adapt=adapt)
            calls += info.energy_calls
            dead |= info.reset
            acc.append(info.acceptance_rate)
    log_w = torch.where(dead | ~torch.isfinite(log_w), torch.full_like(log_w, -math.inf), log_w)
    p = state.point
    return AISResult(p.x, log_w, p.E_true, calls, sum(acc) / len(acc), int(dead.sum()))


def _check_schedule(betas: Tensor, n_levels: int, n_inner: int) -> None:
    if n_levels < 1 or n_inner < 1:
        raise ConfigError(f"AIS: need n_levels >= 1 and n_inner >= 1, got {n_levels}, {n_inner}")
    if betas.dim() != 1 or betas.numel() != n_levels + 1:
        raise ConfigError(f"AIS: betas must have shape ({n_levels + 1},), got {tuple(betas.shape)}")
    if betas[0] != 0 or betas[-1] != 1 or (betas.diff() <= 0).any():
        raise ConfigError(f"AIS: betas must increase strictly from 0 to 1, got {betas.tolist()[:4]}...")


@dataclass
class AISOptions(ChainOptions):
    inner: int = option(20, "AIS: MALA steps per annealing level", alias="search_inner", low=1)


@SEARCHERS.register("ais", AISOptions, splittable=True)
class AISSearcher:
    """AIS from N(0, init_std^2 I) to the target over `steps` levels of `inner` MALA steps (SGDS's
    Manywell searcher). Step sizes adapt per chain along the path, so log Z-hat is consistent rather
    than exactly unbiased; it only initialises the learner's log Z (and is None on the auxiliary
    energy). Chains that left the finite region are dropped. AIS draws its own base sample."""

    def __init__(self, options: AISOptions) -> None:
        self.o = options

    def calls(self) -> int:
        return self.o.chains * (1 + self.o.steps * self.o.inner)

    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0) -> SearchResult:
        o, aux = self.o, novelty is not None and alpha > 0
        r = run_ais(target, o.chains, o.steps, s0=start_std(o, scale), kernel=MALA(o.step_size), n_inner=o.inner,
                    adapt=True, dtype=x0.dtype, device=x0.device, novelty=novelty if aux else None,
                    alpha=alpha if aux else 0.0)
        ok = torch.isfinite(r.log_w)
        return SearchResult(r.x[ok], r.energy[ok], None if aux else r.log_Z,
                            {"acceptance": r.acceptance_rate, "n_reset": r.n_reset, "ais_ess": r.ess})
