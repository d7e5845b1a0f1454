"""Integrators of the learned SDE with importance weights that are exact for their own kernels.

The SDE is  dX = mu(X, t) dt + sigma dW,  t in [0, 1],  X_0 = 0  (pinned-Brownian reference,
see `sde.reference`), mu = sampler.drift(x, t, score), score = grad log R(x) when the drift needs
it (one counted energy call per row). Every integrator simulates B trajectories on a grid (B, N+1)
and returns terminal samples with log-weights

    log w = log R(x_N) + sum_n [log pi_bwd(x_n | x_{n+1}) + log L(a_n | x_n, x_{n+1})]
                       - sum_n [log q(a_n | x_n) + log q(x_{n+1} | x_n, a_n)],

pi_bwd the exact Brownian bridge of the reference and a_n the step's auxiliary randomness (none for
Gaussian kernels). With L a normalised conditional density, Z^-1 R(x_N) prod pi_bwd L is a
probability density on the augmented path space, so E[w] = Z (unbiased) and E[log w] <= log Z.

Kernels (h = t' - t, mu_n = mu(x_n, t)):
  EulerMaruyama   N(x + h mu_n, sigma^2 h). Same kernel, weights and random draws as
                  `forward_rollout`.
  ExponentialEuler  "bridge" split. Choose a scale s > 0 and a = sigma^2 - s^2; write the drift as
                  mu = -kappa(t) x + (kappa(t) x + mu), kappa(t) = a / (sigma^2 - a t) = 1/(T - t)
                  with T = sigma^2 / a, and integrate the linear part exactly with the rest frozen
                  (exponential Euler, the DDIM / DPM-Solver++(1) analogue: D = x + mu / kappa is the
                  predicted endpoint at time T). The kernel is
                      N(x + h mu_n, sigma^2 h rho(t, t')),   rho(t, t') = 1 - h kappa(t) = (T-t')/(T-t),
                  EM's mean with the Brownian-bridge variance. With the exact drift of the target
                  N(m, s^2 I) it is the exact transition on any grid (that process is the bridge to
                  m T at time T). s = sigma gives kappa = 0, i.e. Euler-Maruyama. s = None: the
                  Fisher scale s^2 = d / E|grad log R|^2 on a pilot EM sample (`fisher_scale`).
  RandomizedMidpoint  (Shen & Lee 2019; Gupta, Cai & Chen 2024) 2 drift calls per step. Draw
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
  PicardMidpoint  the parallel-in-time variant (Gupta, Cai & Chen 2024): windows of `window` grid
                  steps [u_{i-1}, u_i]; one random point s_i = u_{i-1} + alpha_i delta_i per sub-step;
                  predictor path P (the Brownian path seen with independent noise of relative
                  variance theta, as above); Picard rounds
                      y_i <- x + sum_{j<i} delta_j mu(y_j, s_j) + alpha_i delta_i mu(y_i, s_i) + P(s_i),
                  all R drift calls of a round in one batched call, started from
                  y_i = x + (s_i - t) mu_n + P(s_i); the window ends at
                  x' = x + sum_j delta_j mu(y_j, s_j) + sigma (W(t') - W(t)), whose noise given the
                  auxiliaries P(s_1..s_R) is N(P(s_R)/(1+theta), sigma^2 (t' - s_R) + theta sigma^2
                  (s_R - t)/(1+theta)). Weights as for RandomizedMidpoint (the window is one transition;
                  L = multi-point bridge); window = rounds = 1 is RandomizedMidpoint with kappa = 0.

Probability-flow (ODE) variants are not provided: the pinned reference starts from the point mass
x_0 = 0, where the marginal score is singular, so the ODE would carry every sample along one path
(or would need a Gaussian start at t > 0 plus a stochastic divergence estimate for its density).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ShapeError
from .grids import make_grid
from .trajectories import _reward_and_score_at_origin

Tensor = torch.Tensor


@dataclass
class Simulation:
    """Terminal samples x (B, d), log-weights log_w (B,), drift evaluations per trajectory (nfe)
    and sequential rounds of drift evaluations (equal to nfe except for the parallel variant)."""

    x: Tensor
    log_w: Tensor
    nfe: int
    rounds: int


class DriftField:
    """x (B, d), t (B,) -> mu (B, d) of a sampler, with the target score when the drift needs it."""

    def __init__(self, sampler) -> None:
        self.target, self.drift, self.ref = sampler.target, sampler.drift, sampler.reference

    def __call__(self, x: Tensor, t: Tensor, at_origin: bool = False) -> Tensor:
        score = None
        if self.drift.needs_score:
            if at_origin:  # x == 0 on every row: one energy call, as in forward_rollout
                score = _reward_and_score_at_origin(self.target, x.shape[0], x.dtype, x.device, True)[1]
            else:
                score = self.target.log_reward_and_score(x)[1]
        return self.ref.project(self.drift(x, t, score))


def _check_grid(sampler, grid: Tensor) -> None:
    if grid.dim() != 2 or grid.shape[1] < 2:
        raise ShapeError(f"integrator: grid must have shape (B, N+1) with N >= 1, got {tuple(grid.shape)}")
    if not bool((grid[:, 1:] > grid[:, :-1]).all()) or not bool((grid[:, 0] == 0).all()):
        raise ValueError("integrator: grid rows must start at 0 and increase strictly")


def _finish(sampler, x: Tensor, incs: list[Tensor], nfe: int, rounds: int) -> Simulation:
    log_r = sampler.target.log_prob(x).detach()
    return Simulation(x, log_r + torch.stack(incs, 1).sum(1), nfe, rounds)


class EulerMaruyama:
    """Euler-Maruyama: kernel N(x + h mu(x, t), sigma^2 h); reproduces `forward_rollout`."""

    name = "euler_maruyama"
    nfe_per_step = 1

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        _check_grid(sampler, grid)
        field, ref, sigma = DriftField(sampler), sampler.reference, sampler.reference.sigma
        B, N = grid.shape[0], grid.shape[1] - 1
        x = grid.new_zeros(B, sampler.target.dim)
        lpf, lpb = [], []
        for n in range(N):
            t, t_next = grid[:, n], grid[:, n + 1]
            dt = t_next - t
            mu = field(x, t, at_origin=n == 0)
            var = sigma ** 2 * dt
            x_next = x + mu * dt[:, None] + var.sqrt()[:, None] * ref.noise_like(x)
            lpf.append(ref.step_log_prob(x_next, x + mu * dt[:, None], var))
            lpb.append(ref.backward_log_prob(x, x_next, t, t_next))
            x = x_next
        log_r = sampler.target.log_prob(x).detach()
        return Simulation(x, log_r + torch.stack(lpb, 1).sum(1) - torch.stack(lpf, 1).sum(1), N, N)


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


class ExponentialEuler(_Calibrated):
    """Exponential Euler for the bridge split (module doc): kernel
    N(x + h mu(x, t), sigma^2 h rho(t, t')), exact for the target N(m, scale^2 I)."""

    name = "exponential"
    nfe_per_step = 1

    def __init__(self, scale: float | None = None) -> None:
        self.scale, self.calibrate = scale, True

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        _check_grid(sampler, grid)
        clock = self._clock(sampler, grid)
        field, ref, sigma = DriftField(sampler), sampler.reference, sampler.reference.sigma
        B, N = grid.shape[0], grid.shape[1] - 1
        x = grid.new_zeros(B, sampler.target.dim)
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
        return _finish(sampler, x, incs, N, N)


class RandomizedMidpoint(_Calibrated):
    """Randomized midpoint (module doc). midpoint="uniform": Shen & Lee's tau ~ U[t, t'];
    midpoint="importance": the exponential (bridge) split with tau drawn ∝ its weight (T - u)^-2."""

    nfe_per_step = 2

    def __init__(self, midpoint: str = "uniform", scale: float | None = None, theta: float = 0.5) -> None:
        if midpoint not in ("uniform", "importance"):
            raise ConfigError(f"randomized midpoint: midpoint must be 'uniform' or 'importance', got {midpoint!r}")
        _check_theta(theta)
        self.midpoint, self.scale, self.calibrate, self.theta = midpoint, scale, midpoint == "importance", float(theta)
        self.name = "randomized_midpoint" if midpoint == "uniform" else "randomized_midpoint_is"

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        _check_grid(sampler, grid)
        clock = self._clock(sampler, grid)
        field, ref, sigma, th = DriftField(sampler), sampler.reference, sampler.reference.sigma, self.theta
        B, N = grid.shape[0], grid.shape[1] - 1
        x = grid.new_zeros(B, sampler.target.dim)
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
        return _finish(sampler, x, incs, 2 * N, 2 * N)


def _check_theta(theta: float) -> None:
    if not (math.isfinite(theta) and theta >= 0):
        raise ConfigError(f"randomized midpoint: theta must be a finite number >= 0, got {theta}")


class PicardMidpoint:
    """Parallel-in-time randomized midpoint (module doc): `rounds` batched drift calls of `window`
    points per window of `window` grid steps, plus one call at the window start."""

    name = "picard_midpoint"

    def __init__(self, window: int = 4, rounds: int = 2, theta: float = 0.5) -> None:
        if int(window) < 1 or int(rounds) < 1:
            raise ConfigError(f"Picard midpoint: need window >= 1 and rounds >= 1, got {window}, {rounds}")
        _check_theta(theta)
        self.window, self.rounds, self.theta = int(window), int(rounds), float(theta)

    @property
    def nfe_per_step(self) -> float:
        return self.rounds + 1 / self.window

    @torch.no_grad()
    def simulate(self, sampler, grid: Tensor) -> Simulation:
        _check_grid(sampler, grid)
        field, ref, sigma, th = DriftField(sampler), sampler.reference, sampler.reference.sigma, self.theta
        B, N, d = grid.shape[0], grid.shape[1] - 1, sampler.target.dim
        x = grid.new_zeros(B, d)
        incs, nfe, rounds, n = [], 0, 0, 0
        while n < N:
            R = min(self.window, N - n)
            u = grid[:, n:n + R + 1]
            t0, t1 = u[:, 0], u[:, -1]
            H, delta = t1 - t0, u[:, 1:] - u[:, :-1]                       # (B,), (B, R)
            mu0 = field(x, t0, at_origin=n == 0)
            alpha = torch.rand_like(delta)
            s = u[:, :-1] + alpha * delta                                   # random points (B, R)
            seg = torch.diff(s, dim=1, prepend=t0[:, None])                 # Brownian segments
            noise = ref.noise_like(x.new_empty(B, R, d))
            W = torch.cumsum(sigma * ((1 + th) * seg).sqrt()[..., None] * noise, 1)  # predictor path
            y = x[:, None] + (s - t0[:, None])[..., None] * mu0[:, None] + W
            for _ in range(self.rounds):
                M = field(y.reshape(B * R, d), s.reshape(-1)).view(B, R, d)
                dM = delta[..., None] * M
                y = x[:, None] + torch.cumsum(dM, 1) - dM + alpha[..., None] * dM + W
            drift_part = x + dM.sum(1)
            w_last = W[:, -1] / (1 + th)                                    # E[sigma (W(t1)-W(t0)) | W_pred]
            s_last = s[:, -1] - t0
            v_aux = sigma ** 2 * ((H - s_last) + th * s_last / (1 + th))
            x_next = drift_part + w_last + v_aux.sqrt()[:, None] * ref.noise_like(x)
            em = x + H[:, None] * mu0
            incs.append(ref.backward_log_prob(x, x_next, t0, t1) - ref.step_log_prob(x_next, em, sigma ** 2 * H)
                        + ref.step_log_prob(x_next, em + w_last, v_aux)
                        - ref.step_log_prob(x_next, drift_part + w_last, v_aux))
            x, n = x_next, n + R
            nfe, rounds = nfe + 1 + self.rounds * R, rounds + 1 + self.rounds
        return _finish(sampler, x, incs, nfe, rounds)


INTEGRATORS = {
    "euler_maruyama": EulerMaruyama,
    "exponential": ExponentialEuler,
    "randomized_midpoint": RandomizedMidpoint,
    "randomized_midpoint_is": lambda: RandomizedMidpoint("importance"),
    "picard_midpoint": PicardMidpoint,
}


def make_integrator(spec):
    """An integrator from its name (see INTEGRATORS) or an integrator object (returned as is)."""
    if hasattr(spec, "simulate"):
        return spec
    if spec not in INTEGRATORS:
        raise ConfigError(f"unknown integrator {spec!r}; expected one of {sorted(INTEGRATORS)}")
    return INTEGRATORS[spec]()
