"""Probability-flow (ODE) variants (Song et al. 2021, "Score-based generative modeling through SDEs";
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

import torch

from ...errors import ConfigError
from .base import INTEGRATORS, DriftField, Simulation, Tensor, check_grid


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
        check_grid(sampler, grid)
        _check_flat_reference(sampler)
        field, ref, sigma = DriftField(sampler, grid), sampler.reference, sampler.reference.sigma
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


@INTEGRATORS.register("probability_flow")
class ProbabilityFlowHeun(_ProbabilityFlow):
    """Probability-flow ODE with Heun's method (module doc); exact marginal log-weights."""

    name = "probability_flow"

    def _advance(self, field, z, t, h, u):
        h2 = h[:, None]
        r0 = self.rate(field, z, t)
        return z + 0.5 * h2 * (r0 + self.rate(field, z + h2 * r0, t + h))


@INTEGRATORS.register("randomized_midpoint_ode")
class RandomizedMidpointODE(_ProbabilityFlow):
    """Probability-flow ODE with the randomized midpoint z' = z + h r(z + U h r(z, t), t + U h)
    (module doc); exact marginal log-weights given the U's, hence unbiased."""

    name = "randomized_midpoint_ode"

    def _draw(self, t: Tensor) -> Tensor:
        return torch.rand_like(t)

    def _advance(self, field, z, t, h, u):
        r0 = self.rate(field, z, t)
        return z + h[:, None] * self.rate(field, z + (u * h)[:, None] * r0, t + u * h)
