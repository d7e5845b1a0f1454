"""Underdamped (kinetic) Langevin dynamics: the searcher SGDS uses for molecules (MD).

    dx = v dt,   m dv = -grad U(x) dt - gamma m v dt + sqrt(2 gamma m kT) dW,
stationary density ∝ exp(-U(x)/kT - v^T M v / (2 kT)). Energies here are dimensionless (the
target's E = -log density, e.g. beta_ref * V for a force field), so kT = 1 samples the target and
kT = T/T_ref heats it (SGDS's 600 K searcher on a 300 K target: kT = 2). Masses must be in units
where m |dx/dt|^2 has the units of E (for a force field: m / (k_B T_ref)).

Splittings (Leimkuhler & Matthews, 2013), one energy call per step:
    "baoab": B(dt/2) A(dt/2) O(dt) A(dt/2) B(dt/2); configurational bias O(dt^2), and exact for
             the configurational marginal of harmonic potentials at any stable dt.
    "obabo": O(dt/2) B(dt/2) A(dt) B(dt/2) O(dt/2). With `metropolize=True` the deterministic
             B A B (velocity Verlet) part is accepted with min(1, exp(-(H' - H)/kT)),
             H = U(x) + v^T M v / 2, and on rejection the momentum is flipped (generalised HMC,
             Horowitz 1991): the chain is then exactly invariant for the joint density.
where B: v -= (h/m) grad U, A: x += h v, O: v = c v + sqrt((1 - c^2) kT/m) xi, c = exp(-gamma h).
Unadjusted moves are biased by the step size; a diverging chain is reset to its stored finite
point with fresh velocities and counted in info.reset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..components import option
from ..errors import ConfigError
from .energy import ChainState, Potential, StepInfo, make_anchor, repair
from .mala import ChainSamples, run_kernel
from .searcher import SEARCHERS, ChainSearcher, ChainOptions, chain_result

Tensor = torch.Tensor


@dataclass
class UnderdampedState:
    """Chains of underdamped Langevin: positions with their energies (ChainState), velocities v (B, d),
    reset points."""
    point: ChainState
    v: Tensor          # (B, d) velocities
    anchor: ChainState

    @property
    def x(self) -> Tensor:
        return self.point.x

    @property
    def E_true(self) -> Tensor:
        return self.point.E_true


class UnderdampedLangevin:
    """`init(potential, x0, v0=None)`, `step(potential, state)`; see the module doc."""

    def __init__(self, step_size: float, *, friction: float = 1.0, kT: float = 1.0,
                 mass: float | Tensor = 1.0, scheme: str = "baoab", metropolize: bool = False) -> None:
        if not step_size > 0 or not friction >= 0 or not kT > 0:
            raise ConfigError(f"underdamped Langevin: need step_size > 0, friction >= 0, kT > 0; got "
                              f"{step_size}, {friction}, {kT}")
        if scheme not in ("baoab", "obabo"):
            raise ConfigError(f"underdamped Langevin: scheme must be 'baoab' or 'obabo', got {scheme!r}")
        if metropolize and scheme != "obabo":
            raise ConfigError("underdamped Langevin: metropolize=True needs scheme='obabo' (GHMC)")
        if not (torch.as_tensor(mass) > 0).all():
            raise ConfigError("underdamped Langevin: masses must be > 0")
        self.dt, self.gamma, self.kT, self.mass = float(step_size), float(friction), float(kT), mass
        self.scheme, self.metropolize = scheme, metropolize

    # -- pieces ---------------------------------------------------------------------------------
    def _m(self, x: Tensor) -> Tensor:
        return torch.as_tensor(self.mass).to(x)

    def maxwell(self, x: Tensor) -> Tensor:
        """Velocities ~ N(0, kT M^-1)."""
        return torch.randn_like(x) * (self.kT / self._m(x)).sqrt()

    def _O(self, v: Tensor, h: float) -> Tensor:
        c = math.exp(-self.gamma * h)
        return c * v + math.sqrt(1 - c * c) * self.maxwell(v)

    def init(self, potential: Potential, x0: Tensor, v0: Tensor | None = None) -> UnderdampedState:
        point = potential.evaluate(x0)
        return UnderdampedState(point, self.maxwell(x0) if v0 is None else v0.to(x0), make_anchor(point))

    def rebase(self, potential: Potential, state: UnderdampedState) -> UnderdampedState:
        return replace(state, point=potential.rebase(state.point))

    def permute(self, potential: Potential, state: UnderdampedState, perm: Tensor) -> UnderdampedState:
        """Swap positions between rows; velocities have the same law at every row, so they stay."""
        return replace(state, point=potential.rebase(state.point.take(perm)))

    def step(self, potential: Potential, state: UnderdampedState, adapt: bool = False) -> tuple[UnderdampedState, StepInfo]:
        """One step (one energy call per row). `adapt` is accepted for interface parity and ignored."""
        p, reset = repair(state.point, state.anchor, potential)
        v = torch.where(reset[:, None], self.maxwell(p.x), state.v)
        m, h = self._m(p.x), self.dt
        if self.scheme == "baoab":
            v = v - 0.5 * h * p.grad / m
            x = p.x + 0.5 * h * v
            v = self._O(v, h)
            q = potential.evaluate(x + 0.5 * h * v)
            v_new = v - 0.5 * h * q.grad / m
            acc, accepted = torch.ones_like(p.U), torch.ones_like(reset)
        else:
            v = self._O(v, 0.5 * h)
            v_half = v - 0.5 * h * p.grad / m
            q = potential.evaluate(p.x + h * v_half)
            v_new = v - 0.5 * h * (p.grad + q.grad) / m
            acc, accepted = self._ghmc_accept(p, q, v, v_new, m)
        ok = q.finite() & torch.isfinite(v_new).all(1)
        if self.metropolize:
            accepted = accepted & ok
            v_new = torch.where(accepted[:, None], v_new, -v)   # momentum flip on rejection
        new = p.where(accepted, q)
        if self.scheme == "obabo":
            v_new = self._O(v_new, 0.5 * h)
        new, reset_end = repair(new, state.anchor, potential)
        v_new = torch.where(reset_end[:, None], self.maxwell(new.x), v_new)
        info = StepInfo(acc, accepted & ok, torch.full_like(p.U, h), p.x.shape[0], reset | reset_end, ~ok)
        return UnderdampedState(new, v_new, state.anchor), info

    def _ghmc_accept(self, p: ChainState, q: ChainState, v: Tensor, v_new: Tensor, m: Tensor):
        if not self.metropolize:
            return torch.ones_like(p.U), torch.ones(p.U.shape, dtype=torch.bool, device=p.U.device)
        H0 = p.U + 0.5 * (m * v ** 2).sum(-1)
        H1 = q.U + 0.5 * (m * v_new ** 2).sum(-1)
        log_a = (H0 - H1) / self.kT
        log_a = torch.where(torch.isfinite(log_a), log_a, torch.full_like(log_a, -math.inf))
        acc = log_a.clamp(max=0).exp()
        return acc, torch.rand_like(acc) < acc


def run_underdamped(potential: Potential, x0: Tensor, n_steps: int, *, step_size: float, friction: float = 1.0,
                    kT: float = 1.0, mass: float | Tensor = 1.0, scheme: str = "baoab", metropolize: bool = False,
                    n_burn: int = 0, thin: int = 1) -> ChainSamples:
    """Run underdamped Langevin chains from x0 (B, d): `n_burn` discarded steps, then `n_steps`
    steps recording every `thin`-th state with its TRUE energy."""
    kernel = UnderdampedLangevin(step_size, friction=friction, kT=kT, mass=mass, scheme=scheme,
                                 metropolize=metropolize)
    return run_kernel(kernel, potential, x0, n_steps, n_adapt=n_burn, thin=thin)


@dataclass
class UnderdampedOptions(ChainOptions):
    friction: float = option(1.0, "underdamped / randomized-midpoint Langevin friction", alias="search_friction",
                             low=0.0, low_open=True)


@SEARCHERS.register("underdamped", UnderdampedOptions, splittable=True)
class UnderdampedSearcher(ChainSearcher):
    """Underdamped Langevin chains (BAOAB, unadjusted): the MD searcher of SGDS's peptide runs."""


    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0):
        from .mala import chain_potential
        o = self.o
        r = run_underdamped(chain_potential(target, novelty, alpha), x0, o.steps, step_size=o.step_size,
                            friction=o.friction, n_burn=o.burnin, thin=o.thin)
        return chain_result(r, {"n_reset": r.n_reset})
