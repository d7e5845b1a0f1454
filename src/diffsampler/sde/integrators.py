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

Probability-flow (ODE) variants (Song et al. 2021, "Score-based generative modeling through SDEs";
Nelson's relation). If the forward path measure equals the reference bridge run backward from the
target (the sampler's optimum), the forward drift mu and the backward drift of the pinned-Brownian
bridge, x/t (E[X_{t-dt} | X_t = x] = (1 - dt/t) x), satisfy Nelson's relation
mu(x, t) - x/t = sigma^2 grad log p_t(x), so the probability-flow ODE dx/dt = mu - (sigma^2/2) grad log p_t
has the velocity
    v(x, t) = (mu(x, t) + x/t) / 2            (mu = 0: v = x/(2t), x ∝ sqrt(t), N(0, sigma^2 t)),
which needs no extra network. v is singular at t = 0 (every sample starts at x_0 = 0, and the
x/(2t) part is stiff: h/t_1 = 1 on a uniform grid). The default steppers remove the singularity
by a change of variables, y = x / sqrt(t) and s = sqrt(t):
    dy/ds = mu(s y, s^2),     y(0) ~ N(0, sigma^2 I),     x_1 = y(1),
regular at s = 0 (X_t / sqrt(t) -> sigma W_t / sqrt(t) ~ N(0, sigma^2) as t -> 0 for a bounded
drift; for mu = 0, y is constant). They step y on the grid s_n = sqrt(t_n) from s_0 = 0, so no
stochastic first step is needed and the scheme keeps its order (tests: second order in the
terminal mean and variance on a Gaussian target with its exact drift). scaled=False keeps the
literal scheme in x (an Euler-Maruyama Gaussian first step 0 -> t_1, then steps of v in t), which
is only first order because that first step's variance is off by a factor 1 + O(t_1).
  ProbabilityFlowHeun  (`probability_flow`) Heun's method, with r = dy/ds and k = s' - s,
                  y' = y + k/2 [r(y, s) + r(y + k r(y, s), s')].
  RandomizedMidpointODE  (`randomized_midpoint_ode`; Shen & Lee 2019 applied to the ODE)
                  y' = y + k r(y + U k r(y, s), s + U k), U ~ U[0, 1] per trajectory and step,
                  independent of y: an unbiased estimate of the step's integral of r.
Both cost 2 drift calls per step (2 N per trajectory; scaled=False: 1 + 2 (N - 1)). Their log w is
the log-weight of the terminal sample itself, not of a path:
    log w = log R(x_N) - log q(x_N),
    log q(x_N) = log N(y_0; 0, sigma^2 I) - sum_n log |det dF_n/dy (y_n)|   (x_N = y_N),
    (scaled=False: log N(x_1; mu(0, 0) t_1, sigma^2 t_1 I) - sum_{n>=1} log |det dF_n/dx (x_n)|),
the density of x_N under the scheme (for the randomized midpoint: given its U's). The Jacobians
are exact, not estimated: d vector-Jacobian products per step with one-hot cotangents over the
batch (rows of the drift and of the energy are independent, so one batched backward pass gives one
row of every trajectory's Jacobian), then slogdet. With a Langevin drift the score is computed
differentiably (one counted energy call per row, as everywhere), so the Jacobian contains the
Hessian of E; those d Hessian-vector products per step re-use the graph of the counted call and are
not counted as further energy calls. Since each F_n is deterministic given the U's (which do not
depend on x), E[w] = Z is exact on any grid and for any drift as long as each F_n is injective (true
when h Lip(r) < 1; a non-injective map would over-count preimages and bias w upward), and
E[log w] <= log Z (an ELBO of the terminal marginal, without the path-space gap). Mean-free
particle references would need the determinant on the centre-of-mass-free subspace and are rejected.
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

    def __call__(self, x: Tensor, t: Tensor, at_origin: bool = False, create_graph: bool = False) -> Tensor:
        """create_graph: keep the score differentiable in x (second derivatives of E; the energy
        call is counted all the same)."""
        score = None
        if self.drift.needs_score:
            if at_origin:  # x == 0 on every row: one energy call, as in forward_rollout
                score = _reward_and_score_at_origin(self.target, x.shape[0], x.dtype, x.device, True)[1]
            else:
                score = self.target.log_reward_and_score(x, create_graph=create_graph)[1]
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


def _check_flat_reference(sampler) -> None:
    if hasattr(sampler.reference, "free_dim"):
        raise ConfigError("probability-flow integrators do not support mean-free particle references "
                          "(the Jacobian determinant would have to be taken on the centre-of-mass-free subspace)")


def _jacobian_logabsdet(y: Tensor, x: Tensor) -> Tensor:
    """log |det dy_b/dx_b| (B,) for a row-wise map x (B, d) -> y (B, d): d batched vector-Jacobian
    products with one-hot cotangents (row i of every trajectory's Jacobian per pass), then slogdet."""
    B, d = x.shape
    rows = []
    for i in range(d):
        cot = torch.zeros_like(y)
        cot[:, i] = 1
        (g,) = torch.autograd.grad(y, x, cot, retain_graph=i < d - 1)
        rows.append(g)
    return torch.linalg.slogdet(torch.stack(rows, 1))[1]


class _ProbabilityFlow:
    """Shared driver (module doc): deterministic steps `map` with exact Jacobian log-determinants;
    log w = log R(x_N) - log q(x_N). scaled=True (default) steps y = x / sqrt(t) in s = sqrt(t)
    from y_0 ~ N(0, sigma^2 I) at s = 0; False: an Euler-Maruyama Gaussian step to t_1, then steps
    of v in x and t."""

    name = "probability_flow"
    nfe_per_step = 2

    def __init__(self, scaled: bool = True) -> None:
        self.scaled = bool(scaled)

    def rate(self, field: DriftField, z: Tensor, t: Tensor) -> Tensor:
        """dz/dt, differentiable in z. scaled: z = y = x / sqrt(t) and the time is s = sqrt(t):
        dy/ds = mu(s y, s^2) (regular at s = 0); otherwise z = x at time t > 0: v = (mu + x/t) / 2."""
        if self.scaled:
            return field(t[:, None] * z, t ** 2, create_graph=True)
        return 0.5 * (field(z, t, create_graph=True) + z / t[:, None])

    def _advance(self, field: DriftField, z: Tensor, t: Tensor, h: Tensor, u: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _draw(self, t: Tensor) -> Tensor | None:
        return None

    def step(self, field: DriftField, x: Tensor, t: Tensor, t_next: Tensor,
             u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One ODE step t -> t_next (in s = sqrt(t) when scaled): (z_next (B, d), log |det dz_next/dz|
        (B,)), detached. u: the randomized midpoint's uniforms (B,), drawn here when None."""
        if u is None:
            u = self._draw(t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = self.map(field, xg, t, t_next, u)
            logdet = _jacobian_logabsdet(y, xg)
        return y.detach(), logdet.detach()

    def map(self, field: DriftField, z: Tensor, t: Tensor, t_next: Tensor, u: Tensor | None = None) -> Tensor:
        """The step map z -> z_next (B, d) from time t to t_next (s = sqrt(t) when scaled) for given
        uniforms u, differentiable in z (under grad mode)."""
        return self._advance(field, z, t, t_next - t, u)

    def simulate(self, sampler, grid: Tensor) -> Simulation:
        _check_grid(sampler, grid)
        _check_flat_reference(sampler)
        field, ref, sigma = DriftField(sampler), sampler.reference, sampler.reference.sigma
        B, N = grid.shape[0], grid.shape[1] - 1
        x0 = grid.new_zeros(B, sampler.target.dim)
        if self.scaled:   # y_0 ~ N(0, sigma^2 I) at s = 0, then N steps on s_n = sqrt(t_n); x_N = y_N
            s_grid = grid.sqrt()
            z = sigma * ref.noise_like(x0)
            log_q = ref.step_log_prob(z, x0, torch.full_like(grid[:, 0], sigma ** 2))
            first = 0
        else:             # the Euler-Maruyama Gaussian step 0 -> t_1, then N - 1 steps of v in t
            s_grid = grid
            with torch.no_grad():
                t1 = grid[:, 1]
                mean = field(x0, grid[:, 0], at_origin=True) * t1[:, None]
                var = sigma ** 2 * t1
                z = mean + var.sqrt()[:, None] * ref.noise_like(x0)
                log_q = ref.step_log_prob(z, mean, var)
            first = 1
        for n in range(first, N):
            z, logdet = self.step(field, z, s_grid[:, n], s_grid[:, n + 1])
            log_q = log_q - logdet
        with torch.no_grad():
            log_r = sampler.target.log_prob(z).detach()
        nfe = self.nfe_for_steps(N)
        return Simulation(z, log_r - log_q, nfe, nfe)

    def nfe_for_steps(self, steps: int) -> int:
        """Two drift passes per step (scaled=False: one for the Gaussian first step, two per later step)."""
        return self.nfe_per_step * steps if self.scaled else 1 + self.nfe_per_step * (steps - 1)


class ProbabilityFlowHeun(_ProbabilityFlow):
    """Probability-flow ODE with Heun's method (module doc); exact marginal log-weights."""

    name = "probability_flow"

    def _advance(self, field, z, t, h, u):
        h2 = h[:, None]
        r0 = self.rate(field, z, t)
        return z + 0.5 * h2 * (r0 + self.rate(field, z + h2 * r0, t + h))


class RandomizedMidpointODE(_ProbabilityFlow):
    """Probability-flow ODE with the randomized midpoint z' = z + h r(z + U h r(z, t), t + U h)
    (module doc); exact marginal log-weights given the U's, hence unbiased."""

    name = "randomized_midpoint_ode"

    def _draw(self, t: Tensor) -> Tensor:
        return torch.rand_like(t)

    def _advance(self, field, z, t, h, u):
        r0 = self.rate(field, z, t)
        return z + h[:, None] * self.rate(field, z + (u * h)[:, None] * r0, t + u * h)


INTEGRATORS = {
    "euler_maruyama": EulerMaruyama,
    "exponential": ExponentialEuler,
    "randomized_midpoint": RandomizedMidpoint,
    "randomized_midpoint_is": lambda: RandomizedMidpoint("importance"),
    "picard_midpoint": PicardMidpoint,
    "probability_flow": ProbabilityFlowHeun,
    "randomized_midpoint_ode": RandomizedMidpointODE,
}


def nfe_for(integrator, steps: int) -> int:
    """Drift evaluations per sample when `integrator` runs `steps` grid steps."""
    f = getattr(integrator, "nfe_for_steps", None)
    return int(f(steps)) if f is not None else int(round(steps * integrator.nfe_per_step))


def make_integrator(spec):
    """An integrator from its name (see INTEGRATORS) or an integrator object (returned as is)."""
    if hasattr(spec, "simulate"):
        return spec
    if spec not in INTEGRATORS:
        raise ConfigError(f"unknown integrator {spec!r}; expected one of {sorted(INTEGRATORS)}")
    return INTEGRATORS[spec]()
