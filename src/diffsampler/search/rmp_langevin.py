"""Randomized-midpoint underdamped Langevin (Shen & Lee, NeurIPS 2019) as a searcher kernel.

Dynamics (unit mass, friction gamma, temperature kT), stationary density ∝ exp(-U(x)/kT - |v|^2/2):
    dx = v dt,   dv = -g(x) dt - gamma v dt + sqrt(2 gamma) dB,   g = grad U / kT.
With the force frozen as a function of time, the step of length h from (x, v) is exact:
    x(s) = x + phi(s) v - int_0^s phi(s-r) g(r) dr + Z_x(s),
    v(s) = e^{-gamma s} v - int_0^s e^{-gamma (s-r)} g(r) dr + Z_v(s),
    phi(s) = (1 - e^{-gamma s}) / gamma,
and (Z_x, Z_v) are Gaussian with covariance at time s (per coordinate)
    S_vv = 1 - e^{-2 gamma s},  S_xv = gamma phi(s)^2,  S_xx = (2/gamma) (s - 2 phi(s) + phi_2(s)),
    phi_2(s) = (1 - e^{-2 gamma s}) / (2 gamma).
Randomized midpoint: alpha ~ U[0, 1], a = alpha h,
    x_mid = x + phi(a) v - psi(a) g(x) + Z_x(a),          psi(s) = (s - phi(s)) / gamma,
    x'    = x + phi(h) v - h phi(h - a) g(x_mid) + Z_x(h),
    v'    = e^{-gamma h} v - h e^{-gamma (h - a)} g(x_mid) + Z_v(h),
so the force integrals are estimated without bias over alpha, and Z(h) continues the same Brownian
path as Z(a): Z(h) = flow(h - a) Z(a) + an independent increment with covariance S(h - a).
Two energy calls per step (x_mid and x'); unadjusted, so biased by the step size.
Interface as the other searcher kernels: `init(potential, x0)`, `step(potential, state)`.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..errors import ConfigError
from .energy import Potential, StepInfo, make_anchor, repair

from .underdamped import UnderdampedState
from .searcher import SEARCHERS, ChainSearcher, chain_result
from .underdamped import UnderdampedOptions

Tensor = torch.Tensor


def ou_noise_cov(s: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """(S_xx, S_xv, S_vv) of (Z_x(s), Z_v(s)) per coordinate (module doc); s any shape, float64."""
    s = s.double()
    phi = -torch.expm1(-gamma * s) / gamma
    phi2 = -torch.expm1(-2 * gamma * s) / (2 * gamma)
    return (2 / gamma) * (s - 2 * phi + phi2), gamma * phi ** 2, 2 * gamma * phi2


# Same state record as the underdamped (BAOAB/OBABO) kernel: position point, velocities, reset anchor.
RMPLangevinState = UnderdampedState


class RandomizedMidpointLangevin:
    """Shen-Lee randomized-midpoint kernel; see the module doc."""

    def __init__(self, step_size: float, *, friction: float = 2.0, kT: float = 1.0) -> None:
        if not (step_size > 0 and friction > 0 and kT > 0):
            raise ConfigError(f"randomized-midpoint Langevin: need step_size, friction, kT > 0; got "
                              f"{step_size}, {friction}, {kT}")
        self.h, self.gamma, self.kT = float(step_size), float(friction), float(kT)

    def _ou_pair(self, s: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """A draw of (Z_x(s), Z_v(s)) shaped like `like` (B, d); s (B,)."""
        sxx, sxv, svv = ou_noise_cov(s, self.gamma)
        sxx = sxx.clamp_min(1e-300)
        cx, cv = sxv / sxx, (svv - sxv ** 2 / sxx).clamp_min(0).sqrt()
        zx = sxx.sqrt().to(like)[:, None] * torch.randn_like(like)
        zv = cx.to(like)[:, None] * zx + cv.to(like)[:, None] * torch.randn_like(like)
        return zx, zv

    def init(self, potential: Potential, x0: Tensor, v0: Tensor | None = None) -> RMPLangevinState:
        point = potential.evaluate(x0)
        return RMPLangevinState(point, torch.randn_like(x0) if v0 is None else v0.to(x0), make_anchor(point))

    def rebase(self, potential: Potential, state: RMPLangevinState) -> RMPLangevinState:
        return replace(state, point=potential.rebase(state.point))

    def permute(self, potential: Potential, state: RMPLangevinState, perm: Tensor) -> RMPLangevinState:
        return replace(state, point=potential.rebase(state.point.take(perm)))

    def step(self, potential: Potential, state: RMPLangevinState,
             adapt: bool = False) -> tuple[RMPLangevinState, StepInfo]:
        """One step (two energy calls per row). `adapt` is accepted for interface parity."""
        p, reset = repair(state.point, state.anchor, potential)
        x, v = p.x, torch.where(reset[:, None], torch.randn_like(p.x), state.v)
        B, g, h = x.shape[0], self.gamma, self.h
        a = torch.rand(B, dtype=torch.float64, device=x.device) * h
        zx_a, zv_a = self._ou_pair(a, x)
        dzx, dzv = self._ou_pair(h - a, x)

        def col(f: Tensor) -> Tensor:
            return f.to(x)[:, None]

        phi_a, phi_rest = -torch.expm1(-g * a) / g, -torch.expm1(-g * (h - a)) / g
        zx_h = zx_a + col(phi_rest) * zv_a + dzx
        zv_h = col(torch.exp(-g * (h - a))) * zv_a + dzv
        x_mid = x + col(phi_a) * v - col((a - phi_a) / g) * p.grad / self.kT + zx_a
        q = potential.evaluate(x_mid)
        f_mid = q.grad / self.kT
        x_new = x + (-math.expm1(-g * h) / g) * v - h * col(phi_rest) * f_mid + zx_h
        v_new = math.exp(-g * h) * v - h * col(torch.exp(-g * (h - a))) * f_mid + zv_h
        new = potential.evaluate(x_new)
        bad = ~q.finite() | ~new.finite() | ~torch.isfinite(v_new).all(1)
        new, reset_end = repair(new, state.anchor, potential)
        v_new = torch.where(reset_end[:, None] | bad[:, None], torch.randn_like(v_new), v_new)
        ones = torch.ones(B, dtype=x.dtype, device=x.device)
        info = StepInfo(ones, torch.ones_like(reset), ones * h, 2 * B, reset | reset_end, bad)
        return RMPLangevinState(new, v_new, state.anchor), info


def run_rmp_langevin(potential: Potential, x0: Tensor, n_steps: int, *, step_size: float, friction: float = 2.0,
                     kT: float = 1.0, n_burn: int = 0, thin: int = 1):
    """Run randomized-midpoint Langevin chains from x0 (B, d): `n_burn` discarded steps, then
    `n_steps` steps recording every `thin`-th state (see `search.mala.run_kernel`)."""
    from .mala import run_kernel
    return run_kernel(RandomizedMidpointLangevin(step_size, friction=friction, kT=kT), potential, x0, n_steps,
                      n_adapt=n_burn, thin=thin)


@SEARCHERS.register("rmp_langevin", UnderdampedOptions, splittable=True)
class RMPLangevinSearcher(ChainSearcher):
    """Shen-Lee randomized-midpoint underdamped Langevin chains (unadjusted): 2 energy calls a step."""

    calls_per_step = 2

    def run(self, target, x0: Tensor, scale: float, novelty=None, alpha: float = 0.0, round: int = 0):
        from .mala import chain_potential
        o = self.o
        r = run_rmp_langevin(chain_potential(target, novelty, alpha), x0, o.steps, step_size=o.step_size,
                             friction=o.friction, n_burn=o.burnin, thin=o.thin)
        return chain_result(r, {"n_reset": r.n_reset})
