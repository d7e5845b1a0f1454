"""RandomizedMidpoint  (Shen & Lee 2019; Gupta, Cai & Chen 2024) 2 drift calls per step. Draw
                  U ~ U[0, 1]; midpoint time tau - t = U h / (1 - (1-U) h kappa(t)) (uniform, U h,
                  when kappa = 0; otherwise tau has density ∝ (T - u)^-2 on [t, t'], the weight of
                  the exponential integral: the importance-sampled midpoint of the notes). With
                  v_m = sigma^2 (tau-t) rho(t,tau) the variance of the path's noise nu at tau,
                      x_mid = x + (tau - t) mu_n + nu_p,   nu_p = nu + e,  e ~ N(0, theta v_m) indep.,
                      x'    = x + h kappa(t) (x_mid - x) + h rho(t,tau) mu(x_mid, tau) + [noise of the step],
                  where the step's noise rho(tau,t') nu + zeta (zeta ~ N(0, sigma^2 (t'-tau) rho(tau,t')))
                  is the same Brownian path that the midpoint saw through nu_p: given nu_p it is
                  N(c nu_p, v_a), c = rho(tau,t')/(1+theta), v_a = sigma^2 (t'-tau) rho(tau,t')
                  + rho(tau,t')^2 v_m theta/(1+theta). For kappa = 0: x' = x + h mu(x_mid, tau) + nu
                  + zeta and E_U[h mu(X_tau, tau)] = int_t^t' mu(X_u, u) du. theta = 0 is Shen-Lee's exact
                  coupling; theta > 0 keeps v_a >= sigma^2 h theta/(1+theta) > 0 (see the weights) and
                  changes the step's variance only at O(h^3) (weak order 2 is kept; tests).
                  Weights on the augmented space, auxiliaries a = (U, nu_p):
                  q(U) = 1, q(nu_p | U) = N(0, (1+theta) v_m), q(x' | x, U, nu_p) = N(mean', v_a);
                  backward: L(U) = 1 and L(nu_p | x, x', U) = the Gaussian conditional of nu_p given
                  that the step's total noise equals r = x' - x - h mu_n (the exact posterior if mu
                  were constant over the step). The Gaussian normalisers cancel and the increment is
                      log pi_bwd - log N(x'; x + h mu_n, sigma^2 h rho(t,t'))
                      + log N(x'; x + h mu_n + c nu_p, v_a) - log N(x'; mean', v_a):
                  the ExponentialEuler weight of the same step minus a penalty of mean
                  |mean' - x - h mu_n - c nu_p|^2 / (2 v_a) for the drift change over the step (the
                  KL between the forward posterior of the auxiliaries and L). It is O(h^2 |grad mu|^2 d)
                  per step, the order of Euler's own ELBO gap, so at equal NFE the ELBO is not better
                  than Euler's even though the samples are second order. With theta = 0, v_a -> 0 as
                  U -> 1 and E[log w] diverges (logarithmically) although E[w] = Z still holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...components import option
from ...errors import ConfigError
from .base import INTEGRATORS, Simulation, Tensor, finish, start
from .exponential import _Calibrated


@dataclass
class MidpointOptions:
    theta: float = option(0.5, "relative variance of the predictor's independent noise (0: Shen-Lee's exact "
                          "coupling)", alias="integrator_theta", low=0.0)


class RandomizedMidpoint(_Calibrated):
    """Randomized midpoint (module doc). midpoint="uniform": Shen & Lee's tau ~ U[t, t'];
    midpoint="importance": the exponential (bridge) split with tau drawn ∝ its weight (T - u)^-2."""

    nfe_per_step = 2

    def __init__(self, midpoint: str = "uniform", scale: float | None = None, theta: float | MidpointOptions = 0.5) -> None:
        theta = theta.theta if isinstance(theta, MidpointOptions) else theta
        if midpoint not in ("uniform", "importance"):
            raise ConfigError(f"randomized midpoint: midpoint must be 'uniform' or 'importance', got {midpoint!r}")
        _check_theta(theta)
        self.midpoint, self.scale, self.calibrate, self.theta = midpoint, scale, midpoint == "importance", float(theta)
        self.name = "randomized_midpoint" if midpoint == "uniform" else "randomized_midpoint_is"

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        field, ref, sigma, B, N, x = start(sampler, grid)
        clock = self._clock(sampler, grid)
        th = self.theta
        incs = []
        for n in range(N):
            t, t_next = grid[:, n], grid[:, n + 1]
            h = t_next - t
            mu0 = field(x, t, at_origin=n == 0)
            k_t = clock.kappa(t)
            u = torch.rand_like(h)
            d1 = u * h / (1 - (1 - u) * h * k_t)          # tau - t
            r_t_tau = 1 - d1 * k_t                        # rho(t, tau)
            tau = t + d1
            d2 = (1 - u) * h * r_t_tau                    # t' - tau
            r_tau_t = 1 - d2 * clock.kappa(tau)           # rho(tau, t')
            v_mid = sigma ** 2 * d1 * r_t_tau             # variance of the midpoint noise nu
            nu_pred = ((1 + th) * v_mid).sqrt()[:, None] * ref.noise_like(x)
            x_mid = x + d1[:, None] * mu0 + nu_pred
            mu_mid = field(x_mid, tau)
            c = (r_tau_t / (1 + th))[:, None]             # E[step noise | nu_pred] = c nu_pred
            mean = x + (h * k_t)[:, None] * (x_mid - x) + (h * r_t_tau)[:, None] * mu_mid + c * nu_pred
            v_aux = sigma ** 2 * d2 * r_tau_t + r_tau_t ** 2 * v_mid * th / (1 + th)
            x_next = mean + v_aux.sqrt()[:, None] * ref.noise_like(x)
            em = x + h[:, None] * mu0
            incs.append(ref.backward_log_prob(x, x_next, t, t_next)
                        - ref.step_log_prob(x_next, em, sigma ** 2 * h * (1 - h * k_t))
                        + ref.step_log_prob(x_next, em + c * nu_pred, v_aux)
                        - ref.step_log_prob(x_next, mean, v_aux))
            x = x_next
        return finish(sampler, x, incs, 2 * N, 2 * N)


def _check_theta(theta: float) -> None:
    if not (math.isfinite(theta) and theta >= 0):
        raise ConfigError(f"randomized midpoint: theta must be a finite number >= 0, got {theta}")


INTEGRATORS.add("randomized_midpoint", lambda o: RandomizedMidpoint("uniform", theta=o.theta), MidpointOptions)
INTEGRATORS.add("randomized_midpoint_is", lambda o: RandomizedMidpoint("importance", theta=o.theta), MidpointOptions)
