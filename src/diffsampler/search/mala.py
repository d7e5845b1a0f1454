"""Metropolis-adjusted Langevin (MALA) and unadjusted Langevin (ULA), batched over chains.

Proposal (Roberts & Tweedie, 1996), step size h per chain:
    x' = x - h grad U(x) + sqrt(2h) xi,   xi ~ N(0, I),
    log q(x' | x) = -||x' - x + h grad U(x)||^2 / (4h) + const,
accepted with probability min(1, exp(U(x) - U(x') + log q(x | x') - log q(x' | x))) for MALA;
ULA always accepts (it is biased by O(h); AIS may use it).

Step-size adaptation (only while `adapt=True` is passed to `step`; samples drawn while adapting
are burn-in): Robbins-Monro on log h towards the acceptance probability 0.574, optimal for MALA
in high dimension (Roberts & Rosenthal, 1998):
    log h <- log h + rate * (a - 0.574),
with a the chain's own acceptance probability (`adapt="chain"`, the default: chains in different
modes or at different temperatures get their own h) or the batch mean (`adapt="global"`).

Non-finite values: a proposal with NaN/inf energy or gradient is rejected (counted in
info.nonfinite); a chain whose current state is non-finite (a bad initial point, a divergent
ULA move, a rebase to a potential that is NaN there) is reset to its stored finite point (its
initial point, or a random finite initial point if its own was bad), counted in info.reset.
Returned samples are therefore always finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError
from .energy import ChainState, Potential, StepInfo, make_anchor, repair
from .searcher import SEARCHERS, ChainSearcher, ChainOptions, chain_result

Tensor = torch.Tensor
OPTIMAL_ACCEPTANCE = 0.574


@dataclass
class MALAState:
    """Chain positions with their potential/true energies, per-chain step sizes (B,) and the
    finite reset points (`anchor`)."""

    point: ChainState
    step_size: Tensor
    anchor: ChainState

    @property
    def x(self) -> Tensor:
        return self.point.x

    @property
    def U(self) -> Tensor:
        return self.point.U

    @property
    def grad(self) -> Tensor:
        return self.point.grad

    @property
    def E_true(self) -> Tensor:
        return self.point.E_true


MALAInfo = StepInfo


class MALA:
    """MALA kernel (`adjusted=False`: ULA). `init(potential, x0)`, `step(potential, state, adapt)`."""

    def __init__(self, step_size: float = 0.01, *, adjusted: bool = True,
                 target_accept: float = OPTIMAL_ACCEPTANCE, adapt_rate: float = 0.05, adapt: str = "chain",
                 step_range: tuple[float, float] = (1e-10, 1e4)) -> None:
        if not step_size > 0:
            raise ConfigError(f"MALA: step_size must be > 0, got {step_size}")
        if adapt not in ("chain", "global"):
            raise ConfigError(f"MALA: adapt must be 'chain' or 'global', got {adapt!r}")
        if not 0 < target_accept < 1:
            raise ConfigError(f"MALA: target_accept must lie in (0, 1), got {target_accept}")
        self.step_size, self.adjusted, self.target_accept = float(step_size), adjusted, float(target_accept)
        self.adapt_rate, self.adapt, self.step_range = float(adapt_rate), adapt, step_range

    def init(self, potential: Potential, x0: Tensor) -> MALAState:
        """Evaluate x0 (B energy calls). Non-finite rows are reset at the first step."""
        point = potential.evaluate(x0)
        h = torch.full((x0.shape[0],), self.step_size).to(x0)
        return MALAState(point, h, make_anchor(point))

    def rebase(self, potential: Potential, state: MALAState) -> MALAState:
        """The same chains under a new potential (no energy call)."""
        return replace(state, point=potential.rebase(state.point))

    def permute(self, potential: Potential, state: MALAState, perm: Tensor) -> MALAState:
        """Move positions between rows (replica swaps); step sizes stay with their rows."""
        return replace(state, point=potential.rebase(state.point.take(perm)))

    def step(self, potential: Potential, state: MALAState, adapt: bool = False) -> tuple[MALAState, StepInfo]:
        p, reset = repair(state.point, state.anchor, potential)
        h = state.step_size[:, None]
        mean_fwd = p.x - h * p.grad
        q = potential.evaluate(mean_fwd + (2 * h).sqrt() * torch.randn_like(p.x))
        ok = q.finite()
        if self.adjusted:
            acc = self._acceptance(p, q, h, ok)
            accepted = torch.rand_like(acc) < acc
        else:
            acc, accepted = torch.ones_like(p.U), torch.ones_like(ok)
        new, reset_end = repair(p.where(accepted, q), state.anchor, potential)
        step_size = self._adapted(state.step_size, acc) if (adapt and self.adjusted) else state.step_size
        info = StepInfo(acc, accepted & ok, state.step_size, p.x.shape[0], reset | reset_end, ~ok)
        return MALAState(new, step_size, state.anchor), info

    @staticmethod
    def _acceptance(p: ChainState, q: ChainState, h: Tensor, ok: Tensor) -> Tensor:
        """min(1, pi(x') q(x | x') / (pi(x) q(x' | x))), 0 where the proposal is non-finite."""
        log_q_fwd = -((q.x - p.x + h * p.grad) ** 2).sum(-1) / (4 * h[:, 0])
        log_q_bwd = -((p.x - q.x + h * q.grad) ** 2).sum(-1) / (4 * h[:, 0])
        log_ratio = p.U - q.U + log_q_bwd - log_q_fwd
        log_ratio = torch.where(ok & torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
        return log_ratio.clamp(max=0.0).exp()

    def _adapted(self, h: Tensor, acc: Tensor) -> Tensor:
        a = acc if self.adapt == "chain" else acc.mean().expand_as(acc)
        lo, hi = self.step_range
        return (h.log() + self.adapt_rate * (a - self.target_accept)).exp().clamp(lo, hi)


def ULA(step_size: float = 0.01) -> MALA:
    """Unadjusted Langevin kernel (no accept/reject, no adaptation)."""
    return MALA(step_size, adjusted=False)


@dataclass
class ChainSamples:
    """Recorded chain states: x (T, B, d) with their TRUE energies (T, B)."""

    x: Tensor
    energy: Tensor
    acceptance_rate: float      # mean acceptance probability over the recorded (non-adapting) steps
    energy_calls: int           # rows evaluated, initialisation included
    n_reset: int
    n_nonfinite: int
    state: object               # final kernel state (to continue the chains)

    def flat(self) -> tuple[Tensor, Tensor]:
        """(x (T*B, d), E (T*B,)), time-major; buffer.add(x, -E) stores them."""
        return self.x.reshape(-1, self.x.shape[-1]), self.energy.reshape(-1)


def run_kernel(kernel, potential: Potential, x0: Tensor, n_steps: int, *, n_adapt: int = 0,
               thin: int = 1, state=None) -> ChainSamples:
    """Run `n_adapt` adapting steps (discarded as burn-in), then `n_steps` steps, recording every
    `thin`-th state. Pass `state` to continue chains (then x0 is ignored and no init call is made)."""
    if n_steps < 0 or n_adapt < 0 or thin < 1:
        raise ConfigError(f"run: need n_steps >= 0, n_adapt >= 0, thin >= 1; got {n_steps}, {n_adapt}, {thin}")
    calls = 0
    if state is None:
        state = kernel.init(potential, x0)
        calls += x0.shape[0]
    xs, es, acc, n_reset, n_bad = [], [], [], 0, 0
    for i in range(n_adapt + n_steps):
        state, info = kernel.step(potential, state, adapt=i < n_adapt)
        calls += info.energy_calls
        n_reset += info.n_reset
        n_bad += info.n_nonfinite
        if i >= n_adapt:
            acc.append(info.acceptance_rate)
            if (i - n_adapt + 1) % thin == 0:
                xs.append(state.point.x)
                es.append(state.point.E_true)
    d = state.point.x.shape[-1]
    x = torch.stack(xs) if xs else state.point.x.new_empty(0, state.point.x.shape[0], d)
    e = torch.stack(es) if es else state.point.E_true.new_empty(0, state.point.x.shape[0])
    rate = sum(acc) / len(acc) if acc else float("nan")
    return ChainSamples(x, e, rate, calls, n_reset, n_bad, state)


def run_mala(potential: Potential, x0: Tensor, n_steps: int, *, step_size: float = 0.01, n_adapt: int = 0,
             thin: int = 1, **kernel_kwargs) -> ChainSamples:
    """Run MALA chains from x0 (B, d); see `run_kernel`. Returned energies are the TRUE E(x),
    whatever the potential (e.g. an auxiliary one) the chains targeted."""
    return run_kernel(MALA(step_size, **kernel_kwargs), potential, x0, n_steps, n_adapt=n_adapt, thin=thin)


def chain_potential(target, novelty=None, alpha: float = 0.0) -> Potential:
    """What a chain searcher targets: E, or the SGDS auxiliary energy E - alpha * novelty(x)."""
    from .energy import auxiliary_potential, target_potential
    if novelty is not None and alpha > 0:
        return auxiliary_potential(target, novelty, alpha)
    return target_potential(target)


@SEARCHERS.register("mala", ChainOptions, splittable=True)
class MALASearcher(ChainSearcher):
    """MALA chains (SGDS's searcher for GMM-40 and LJ): burn-in with per-chain step-size adaptation,
    then every `thin`-th state of `steps` steps."""


    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0):
        o = self.o
        r = run_mala(chain_potential(target, novelty, alpha), x0, o.steps, step_size=o.step_size, n_adapt=o.burnin,
                     thin=o.thin, adapt_rate=o.adapt_rate)
        return chain_result(r, {"acceptance": r.acceptance_rate, "n_reset": r.n_reset})
