"""ExponentialEuler  "bridge" split. Choose a scale s > 0 and a = sigma^2 - s^2; write the drift as
                  mu = -kappa(t) x + (kappa(t) x + mu), kappa(t) = a / (sigma^2 - a t) = 1/(T - t)
                  with T = sigma^2 / a, and integrate the linear part exactly with the rest frozen
                  (exponential Euler, the DDIM / DPM-Solver++(1) analogue: D = x + mu / kappa is the
                  predicted endpoint at time T). The kernel is
                      N(x + h mu_n, sigma^2 h rho(t, t')),   rho(t, t') = 1 - h kappa(t) = (T-t')/(T-t),
                  EM's mean with the Brownian-bridge variance. With the exact drift of the target
                  N(m, s^2 I) it is the exact transition on any grid (that process is the bridge to
                  m T at time T). s = sigma gives kappa = 0, i.e. Euler-Maruyama. s = None: the
                  Fisher scale s^2 = d / E|grad log R|^2 on a pilot EM sample (`fisher_scale`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...components import option
from ...errors import ConfigError
from ..grids import make_grid
from .base import INTEGRATORS, Simulation, Tensor, finish, start
from .euler import EulerMaruyama


@torch.no_grad()
def fisher_scale(sampler, n: int = 256, steps: int = 100, dtype=None, device=None) -> float:
    """s = sqrt(d / E|grad log R(x)|^2) over n Euler-Maruyama samples of the sampler (n (steps + 2)
    energy calls at most): the std of the isotropic Gaussian with the same Fisher information."""
    g = make_grid("uniform", n, steps, device=device, dtype=dtype)
    x = EulerMaruyama().simulate(sampler, g).x
    x = x[torch.isfinite(x).all(1)]
    if x.shape[0] == 0:
        raise ValueError("fisher_scale: every pilot sample is non-finite")
    s2 = sampler.target.score(x).pow(2).sum(1).mean()
    return float(math.sqrt(x.shape[1] / max(float(s2), 1e-30)))


class BridgeClock:
    """kappa(t) = a / (sigma^2 - a t), a = sigma^2 - s^2 (kappa = 0 when s is None or s = sigma):
    the rate of the linear part integrated exactly; rho(t, t') = 1 - (t' - t) kappa(t)."""

    def __init__(self, sigma: float, scale: float | None) -> None:
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"integrator scale must be a finite number > 0, got {scale}")
        self.sigma2 = sigma ** 2
        self.a = 0.0 if scale is None else self.sigma2 - float(scale) ** 2

    def kappa(self, t: Tensor) -> Tensor:
        return self.a / (self.sigma2 - self.a * t)


class _Calibrated:
    """Holds the bridge scale; None is resolved once by `fisher_scale` on the first sampler seen."""

    scale: float | None
    calibrate: bool

    def _clock(self, sampler, grid: Tensor) -> BridgeClock:
        if self.calibrate and self.scale is None:
            self.scale = fisher_scale(sampler, steps=grid.shape[1] - 1, dtype=grid.dtype, device=grid.device)
        return BridgeClock(sampler.reference.sigma, self.scale if self.calibrate else None)


@dataclass
class BridgeScaleOptions:
    scale: float | None = option(None, "scale s of the bridge split (None: the Fisher scale of a pilot sample)",
                                 alias="integrator_scale", low=0.0, low_open=True)


@INTEGRATORS.register("exponential", BridgeScaleOptions)
class ExponentialEuler(_Calibrated):
    """Exponential Euler for the bridge split (module doc): kernel
    N(x + h mu(x, t), sigma^2 h rho(t, t')), exact for the target N(m, scale^2 I)."""

    name = "exponential"
    nfe_per_step = 1

    def __init__(self, scale: float | BridgeScaleOptions | None = None) -> None:
        scale = scale.scale if isinstance(scale, BridgeScaleOptions) else scale
        self.scale, self.calibrate = scale, True

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        field, ref, sigma, B, N, x = start(sampler, grid)
        clock = self._clock(sampler, grid)
        incs = []
        for n in range(N):
            t, t_next = grid[:, n], grid[:, n + 1]
            h = t_next - t
            mu = field(x, t, at_origin=n == 0)
            var = sigma ** 2 * h * (1 - h * clock.kappa(t))
            mean = x + mu * h[:, None]
            x_next = mean + var.sqrt()[:, None] * ref.noise_like(x)
            incs.append(ref.backward_log_prob(x, x_next, t, t_next) - ref.step_log_prob(x_next, mean, var))
            x = x_next
        return finish(sampler, x, incs, N, N)
