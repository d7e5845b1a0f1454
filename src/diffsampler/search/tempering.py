"""Parallel tempering (replica exchange; Swendsen & Wang 1986, Geyer 1991).

M replicas of B chains at temperatures T_1 = 1 < T_2 < ... < T_M, replica m targeting
pi_m(x) ∝ exp(-E(x) / T_m). Rows are laid out temperature-major: row m*B + b is chain b at
temperature m, all moved at once by the inner kernel (MALA) on the per-row potential
U = beta_row E (beta = 1/T). Every `swap_every` steps, adjacent pairs (m, m+1) with m of
alternating parity (deterministic even/odd scheme) propose to exchange their positions; the
swap is accepted with the exact Metropolis probability
    min(1, exp((beta_m - beta_{m+1}) (E(x_m) - E(x_{m+1})))),
which leaves the product of the pi_m invariant (E is the tempered energy: the true E, or the SGDS
auxiliary energy when a novelty is given). Swaps re-use stored energies (no energy call).
Only the T = 1 replica's states are returned as samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components import option
from ..errors import ConfigError, ShapeError
from ..targets.base import Target
from .energy import TemperedPotential
from .mala import MALA
from .searcher import SEARCHERS, ChainOptions, chain_result

Tensor = torch.Tensor


def swap_log_ratio(beta_lo: Tensor, beta_hi: Tensor, E_lo: Tensor, E_hi: Tensor) -> Tensor:
    """log acceptance ratio of exchanging the states of two replicas:
    log [pi_lo(x_hi) pi_hi(x_lo) / (pi_lo(x_lo) pi_hi(x_hi))] = (beta_lo - beta_hi)(E_lo - E_hi)."""
    return (beta_lo - beta_hi) * (E_lo - E_hi)


@dataclass
class TemperingResult:
    """Parallel tempering output: the T = 1 states x (T, B, d) with true energies (T, B), swap and MALA
    acceptance, energy calls, resets, final state."""
    x: Tensor                 # (T, B, d) recorded T = 1 states
    energy: Tensor            # (T, B) their true energies
    swap_acceptance: Tensor   # (M-1,) mean swap acceptance probability of each adjacent pair
    swap_rate: Tensor         # (M-1,) fraction of proposed swaps accepted
    acceptance_rate: Tensor   # (M,) mean MALA acceptance probability per temperature
    energy_calls: int
    n_reset: int
    state: object

    def flat(self) -> tuple[Tensor, Tensor]:
        return self.x.reshape(-1, self.x.shape[-1]), self.energy.reshape(-1)


def geometric_temperatures(n: int, t_max: float) -> Tensor:
    """T_m = t_max^((m-1)/(n-1)), m = 1..n (float64)."""
    return torch.logspace(0.0, 1.0, n, base=float(t_max), dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)


def run_tempering(target: Target, x0: Tensor, temperatures, n_steps: int, *, kernel=None, n_adapt: int = 0,
                  thin: int = 1, swap_every: int = 1, novelty=None, alpha: float = 0.0) -> TemperingResult:
    """Parallel tempering from x0 (B, d) (copied to every temperature) or (M, B, d).
    `n_adapt` adapting steps (with swaps) are discarded; then `n_steps` steps are run and every
    `thin`-th T = 1 state recorded. With a novelty and alpha > 0 every replica tempers the SGDS
    auxiliary energy E~ = E - alpha * novelty(x) (pi_m ∝ exp(-E~ / T_m)) and swaps use E~; the
    recorded energies stay the true E."""
    temps = torch.as_tensor(temperatures, dtype=torch.float64)
    M = temps.numel()
    if temps.dim() != 1 or M < 1 or temps[0] != 1 or (temps.diff() <= 0).any():
        raise ConfigError(f"tempering: temperatures must increase strictly from 1, got {temps.tolist()}")
    if n_steps < 0 or n_adapt < 0 or thin < 1 or swap_every < 1:
        raise ConfigError("tempering: need n_steps, n_adapt >= 0 and thin, swap_every >= 1")
    x0 = x0.expand(M, *x0.shape) if x0.dim() == 2 else x0
    if x0.dim() != 3 or x0.shape[0] != M:
        raise ShapeError(f"tempering: x0 must be (B, d) or ({M}, B, d), got {tuple(x0.shape)}")
    B = x0.shape[1]
    kernel = MALA(0.01) if kernel is None else kernel
    beta = (1.0 / temps).to(x0).repeat_interleave(B)
    pot = TemperedPotential(target, beta, novelty=novelty, alpha=alpha)
    state = kernel.init(pot, x0.reshape(M * B, -1))
    calls, n_reset = M * B, 0
    swap_acc, swap_n = torch.zeros(max(M - 1, 0), dtype=torch.float64), torch.zeros(max(M - 1, 0), dtype=torch.float64)
    swap_ok = torch.zeros_like(swap_acc)
    acc = torch.zeros(M, dtype=torch.float64)
    xs, es, n_rec = [], [], 0
    for i in range(n_adapt + n_steps):
        state, info = kernel.step(pot, state, adapt=i < n_adapt)
        calls += info.energy_calls
        n_reset += info.n_reset
        if (i + 1) % swap_every == 0 and M > 1:
            state, a, ok, pairs = _swap(kernel, pot, state, beta, M, B, parity=((i + 1) // swap_every) % 2)
            swap_acc[pairs] += a.sum(1).double().cpu()
            swap_ok[pairs] += ok.sum(1).double().cpu()
            swap_n[pairs] += B
        if i >= n_adapt:
            acc += info.acceptance.reshape(M, B).mean(1).double().cpu()
            n_rec += 1
            if (i - n_adapt + 1) % thin == 0:
                xs.append(state.point.x[:B])
                es.append(state.point.E_true[:B])
    x = torch.stack(xs) if xs else x0.new_empty(0, B, x0.shape[-1])
    e = torch.stack(es) if es else x0.new_empty(0, B)
    return TemperingResult(x, e, swap_acc / swap_n.clamp(min=1), swap_ok / swap_n.clamp(min=1),
                           acc / max(n_rec, 1), calls, n_reset, state)


def _swap(kernel, pot, state, beta: Tensor, M: int, B: int, parity: int):
    """Propose swaps between temperatures (m, m+1) for m = parity, parity+2, ...; returns the new
    state, acceptance probabilities and decisions (n_pairs, B) and the pair indices."""
    pairs = torch.arange(parity, M - 1, 2)
    if pairs.numel() == 0:
        z = torch.zeros(0, B)
        return state, z, z.bool(), pairs
    lo = (pairs[:, None] * B + torch.arange(B)).to(beta.device)   # (P, B) rows at T_m
    hi = lo + B                                                 # rows at T_{m+1}
    E = state.point.U / beta.to(state.point.U)   # the tempered energy E_base (E, or E - alpha novelty)
    log_r = swap_log_ratio(beta[lo], beta[hi], E[lo], E[hi])
    a = log_r.clamp(max=0).exp()
    ok = torch.rand_like(a) < a
    perm = torch.arange(M * B, device=beta.device)
    perm[lo[ok]], perm[hi[ok]] = hi[ok], lo[ok]
    return kernel.permute(pot, state, perm), a, ok, pairs


@dataclass
class TemperingOptions(ChainOptions):
    temperatures: int = option(4, "parallel tempering: number of temperatures", alias="search_temperatures", low=1)
    t_max: float = option(10.0, "parallel tempering: highest temperature", alias="search_t_max", low=1.0)


@SEARCHERS.register("pt", TemperingOptions, splittable=True)
class TemperingSearcher:
    """Parallel tempering with MALA moves at geometric temperatures 1..t_max; samples at T = 1."""

    def __init__(self, options: TemperingOptions) -> None:
        self.o = options

    def calls(self) -> int:
        return self.o.temperatures * self.o.chains * (self.o.burnin + self.o.steps + 1)

    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0):
        o, aux = self.o, novelty is not None and alpha > 0
        temps = geometric_temperatures(o.temperatures, o.t_max)
        r = run_tempering(target, x0, temps, o.steps, kernel=MALA(o.step_size, adapt_rate=o.adapt_rate),
                          n_adapt=o.burnin, thin=o.thin, novelty=novelty if aux else None, alpha=alpha if aux else 0.0)
        return chain_result(r, {"swap_acceptance": [float(a) for a in r.swap_acceptance]})
