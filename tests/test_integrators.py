"""Integrators of the learned SDE (sde/integrators.py) and the randomized-midpoint Langevin searcher.

Stand-in samplers carry an analytic drift, the reference and a Gaussian target, so every expected
value below is in closed form."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import diffsampler as ds
from diffsampler.errors import ConfigError
from diffsampler.sde.integrators.probe import ProbeNoise
from diffsampler.sde import PinnedBrownian, forward_rollout, make_grid
from diffsampler.sde.integrators import (BridgeClock, DriftField, EulerMaruyama, ExponentialEuler, PicardMidpoint,
                                         ProbabilityFlowHeun, RandomizedMidpoint, RandomizedMidpointODE,
                                         make_integrator)


pytestmark = pytest.mark.usefixtures("float64")


class Analytic(nn.Module):
    """mu(x, t) = f(t) - lam(t) x, the same in every coordinate."""

    needs_score = False

    def __init__(self, f, lam) -> None:
        super().__init__()
        self.f, self.lam = f, lam

    def forward(self, x, t, score=None):
        return self.f(t)[:, None] - self.lam(t)[:, None] * x


def follmer(sigma: float, m: float, s: float) -> Analytic:
    """Exact drift of N(m, s^2 I) under the pinned Brownian reference (sigma): the process is the
    Brownian bridge to m T at T = sigma^2 / a, a = sigma^2 - s^2: mu = (sigma^2 m - a x) / (sigma^2 - a t)."""
    a = sigma ** 2 - s ** 2
    return Analytic(lambda t: sigma ** 2 * m / (sigma ** 2 - a * t), lambda t: a / (sigma ** 2 - a * t))


class StandIn:
    def __init__(self, target, drift, reference) -> None:
        self.target, self.drift, self.reference = target, drift, reference


def gaussian(m: float, s: float, d: int, sigma: float):
    """N(m 1, s^2 I) with its log Z = d/2 log(2 pi s^2) (E = |x - m|^2 / (2 s^2))."""
    return ds.targets.from_energy(lambda x: 0.5 * ((x - m) ** 2).sum(-1) / s ** 2, dim=d,
                                  log_Z=0.5 * d * math.log(2 * math.pi * s ** 2), sigma=sigma)


def exact_moments(integ, drift, steps: int, sigma: float, B: int = 6000):
    ref = ProbeNoise(sigma)
    st = StandIn(gaussian(0.0, 1.0, 2 + 2 * steps, sigma), drift, ref)
    x = integ.simulate(st, make_grid("uniform", B, steps)).x[:, :ref.calls + 1]
    mean_a, var_a = x[:, 0], ((x[:, 1:] - x[:, :1]) ** 2).sum(1)
    return float(mean_a.mean()), float(var_a.mean() + mean_a.var())


ALL = {
    "em": lambda: EulerMaruyama(),
    "exp": lambda: ExponentialEuler(scale=0.8),
    "rmp": lambda: RandomizedMidpoint(),
    "rmp_is": lambda: RandomizedMidpoint("importance", scale=0.8),
    "picard": lambda: PicardMidpoint(window=2, rounds=2),
}


# -- Euler-Maruyama is the library's forward rollout ---------------------------------------------
def test_euler_maruyama_reproduces_forward_rollout():
    target = ds.targets.get("gmm25")
    s = ds.DiffusionSampler(target, width=32, time_features=16).double()
    for p in s.parameters():
        p.data.normal_(0, 0.2)
    grid = make_grid("random", 64, 9)
    torch.manual_seed(3)
    c0 = target.counter.total
    tr = forward_rollout(s, grid)
    c1 = target.counter.total
    torch.manual_seed(3)
    sim = EulerMaruyama().simulate(s, grid)
    assert torch.equal(sim.x, tr.terminal) and torch.equal(sim.log_w, tr.log_w)
    assert target.counter.total - c1 == c1 - c0 and sim.nfe == 9


def test_sampler_sample_with_integrators():
    target = gaussian(0.5, 1.0, 2, 1.0)
    s = ds.DiffusionSampler(target, width=16, time_features=8).double()
    torch.manual_seed(1)
    x0, lw0 = s.sample(50, steps=6)
    torch.manual_seed(1)
    tr = s.rollout(50, 6)
    assert torch.equal(x0, tr.terminal) and torch.equal(lw0, tr.log_w) and s.nfe_per_step == 1
    x, lw = s.sample(50, steps=6, integrator="randomized_midpoint")
    assert x.shape == (50, 2) and torch.isfinite(lw).all() and s.nfe_per_step == 2
    from diffsampler.evaluation import evaluate
    ev = evaluate(s, n=40, steps=5)
    assert ev.metrics["nfe"] == 5  # evaluate() samples with Euler-Maruyama again
    with pytest.raises(ConfigError, match="unknown integrator"):
        s.sample(5, integrator="rk4")


# -- weak order on an OU process with closed-form marginals -----------------------------------
@pytest.mark.parametrize("name,order", [("em", 1), ("exp", 1), ("rmp", 2), ("rmp_is", 2), ("picard", 2)])
def test_weak_order_on_ou(name, order):
    # dX = (c - lam X) dt + sigma dW, X_0 = 0: E X_1 = c/lam (1 - e^-lam), Var X_1 = sigma^2 (1 - e^-2lam)/(2 lam).
    # Log-log slope of |error| vs steps N in {8, 16, 32, 64} must be within 0.3 of -order (at least
    # -order + 0.3 for the second-order schemes, whose fits run steeper before the asymptote).
    sigma, lam, c = 1.0, 2.0, 3.0
    m_ex = c / lam * (1 - math.exp(-lam))
    v_ex = sigma ** 2 * (1 - math.exp(-2 * lam)) / (2 * lam)
    drift = Analytic(lambda t: torch.full_like(t, c), lambda t: torch.full_like(t, lam))
    Ns = [8, 16, 32, 64]
    torch.manual_seed(0)
    moms = [exact_moments(ALL[name](), drift, N, sigma) for N in Ns]
    for k, exact in ((0, m_ex), (1, v_ex)):
        err = [abs(mo[k] - exact) for mo in moms]
        slope = np.polyfit(np.log(Ns), np.log(err), 1)[0]
        if order == 1:
            assert abs(slope + 1) <= 0.3, (name, k, err, slope)
        else:
            assert -order - 1.5 <= slope <= -order + 0.3, (name, k, err, slope)


def test_picard_rounds_converge():
    # More Picard rounds per window: the error of the mean shrinks (window of 4 steps, N = 8).
    drift = Analytic(lambda t: torch.full_like(t, 3.0), lambda t: torch.full_like(t, 2.0))
    m_ex = 1.5 * (1 - math.exp(-2.0))
    errs = [abs(exact_moments(PicardMidpoint(4, r), drift, 8, 1.0)[0] - m_ex) for r in (1, 2, 3)]
    assert errs[0] > 2 * errs[1] > 4 * errs[2], errs


def test_picard_with_one_point_is_randomized_midpoint():
    st = StandIn(gaussian(0.3, 0.7, 3, 1.2), follmer(1.2, 0.0, 1.0), PinnedBrownian(1.2))
    g = make_grid("random", 200, 7)
    torch.manual_seed(5)
    a = RandomizedMidpoint(theta=0.5).simulate(st, g)
    torch.manual_seed(5)
    b = PicardMidpoint(1, 1, theta=0.5).simulate(st, g)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.log_w, b.log_w, rtol=0, atol=1e-9)


# -- the midpoint estimator of the drift integral is unbiased over the uniform draw ---------------
def test_midpoint_integral_is_unbiased():
    # Noise-free coordinate of x_1 for a state-independent drift c(t) = 1 + cos(5t):
    # E[x_1] = int_0^1 c = 1 + sin(5)/5 for the randomized midpoint on a coarse grid (Euler is off).
    drift = Analytic(lambda t: 1 + torch.cos(5 * t), lambda t: torch.zeros_like(t))
    torch.manual_seed(0)
    B, exact = 200_000, 1 + math.sin(5) / 5
    for integ in (RandomizedMidpoint(theta=0.5), PicardMidpoint(2, 1)):
        ref = ProbeNoise(1.0)
        x = integ.simulate(StandIn(gaussian(0, 1, 8, 1.0), drift, ref), make_grid("uniform", B, 2)).x[:, 0]
        assert abs(float(x.mean()) - exact) < 4 * float(x.std()) / math.sqrt(B)
    em = EulerMaruyama().simulate(StandIn(gaussian(0, 1, 8, 1.0), drift, ProbeNoise(1.0)),
                                  make_grid("uniform", 4, 2)).x[0, 0]
    assert abs(float(em) - exact) > 0.25


def test_importance_sampled_midpoint_is_unbiased_for_the_exponential_integral():
    # Linear drift mu = kappa(t) (D(t) - x) with the integrator's own kappa: the exact mean of X_1
    # is int_0^1 (T - 1)/(T - u)^2 D(u) du, and the importance-sampled midpoint estimates it without bias.
    sigma, s = 1.0, 0.5
    clock = BridgeClock(sigma, s)
    T = sigma ** 2 / clock.a
    D = lambda t: 2 + torch.sin(4 * t)  # noqa: E731
    drift = Analytic(lambda t: clock.kappa(t) * D(t), clock.kappa)
    u = torch.linspace(0, 1, 200_001)
    exact = float(torch.trapezoid((T - 1) / (T - u) ** 2 * D(u), u))
    B = 200_000
    torch.manual_seed(0)
    x = RandomizedMidpoint("importance", scale=s, theta=0.5).simulate(
        StandIn(gaussian(0, 1, 8, sigma), drift, ProbeNoise(sigma)), make_grid("uniform", B, 2)).x[:, 0]
    assert abs(float(x.mean()) - exact) < 4 * float(x.std()) / math.sqrt(B)


# -- importance weights --------------------------------------------------------------------------
EXACT_CASES = [  # (integrator, target std s): the integrator's kernels are the exact transitions
    (EulerMaruyama(), 1.3), (ExponentialEuler(scale=1.3), 1.3), (RandomizedMidpoint(), 1.3),
    (PicardMidpoint(3, 2), 1.3), (ExponentialEuler(scale=0.4), 0.4), (ExponentialEuler(scale=2.5), 2.5),
    (RandomizedMidpoint("importance", scale=0.4), 0.4), (RandomizedMidpoint("importance", scale=2.5), 2.5)]


@pytest.mark.parametrize("integ,s", EXACT_CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_log_weights_exact_for_exact_drift(integ, s):
    # Target N(0.7, s^2 I), sigma = 1.3, exact drift (for s = sigma: mu = m): every log w = log Z.
    sigma, d = 1.3, 3
    target = gaussian(0.7, s, d, sigma)
    st = StandIn(target, follmer(sigma, 0.7, s), PinnedBrownian(sigma))
    sim = integ.simulate(st, make_grid("random", 500, 7))
    torch.testing.assert_close(sim.log_w, torch.full_like(sim.log_w, target.log_Z), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["em", "exp", "exp_fisher", "rmp", "rmp_is", "picard"])
def test_log_weights_unbiased_for_wrong_drift(name):
    # Drift of N(0.5, 1.0^2) used for the target N(0.7, 0.8^2): E[w] = Z (mean of w/Z is 1 within
    # 4 standard errors) and E[log w] < log Z.
    sigma, d, B = 1.0, 2, 40_000
    target = gaussian(0.7, 0.8, d, sigma)
    integ = ExponentialEuler() if name == "exp_fisher" else ALL[name]()
    st = StandIn(target, follmer(sigma, 0.5, 1.0), PinnedBrownian(sigma))
    torch.manual_seed(0)
    lw = integ.simulate(st, make_grid("uniform", B, 10)).log_w - target.log_Z
    w = lw.exp()
    assert abs(float(w.mean()) - 1) < 4 * float(w.std()) / math.sqrt(B), (float(w.mean()), float(w.std()))
    assert float(lw.mean()) < 0
    if name == "exp_fisher":
        # Fisher scale d / E|grad log R|^2 at the sampler's own samples N(0.5, 1): 0.8^2 / sqrt(1.04)
        assert integ.scale == pytest.approx(0.64 / math.sqrt(1.04), rel=0.1)


def test_bad_input_is_rejected():
    st = StandIn(gaussian(0, 1, 2, 1.0), follmer(1.0, 0.0, 1.0), PinnedBrownian(1.0))
    with pytest.raises(ValueError, match="start at 0"):
        EulerMaruyama().simulate(st, torch.tensor([[0.0, 0.5, 0.4, 1.0]]))
    with pytest.raises(ConfigError):
        RandomizedMidpoint(theta=-1)
    with pytest.raises(ConfigError):
        ExponentialEuler(scale=0.0).simulate(st, make_grid("uniform", 2, 3))
    with pytest.raises(ConfigError):
        make_integrator("heun")


# -- randomized-midpoint underdamped Langevin ----------------------------------------------------
def test_ou_noise_covariance_matches_van_loan():
    from scipy.linalg import expm

    from diffsampler.search.rmp_langevin import ou_noise_cov
    for gamma, s in [(2.0, 0.3), (0.5, 1.7), (10.0, 0.01)]:
        A = np.array([[0.0, 1.0], [0.0, -gamma]])
        Q = np.diag([0.0, 2 * gamma])
        M = expm(np.block([[-A, Q], [np.zeros((2, 2)), A.T]]) * s)
        S = M[2:, 2:].T @ M[:2, 2:]
        sxx, sxv, svv = (float(v) for v in ou_noise_cov(torch.tensor(s), gamma))
        np.testing.assert_allclose([sxx, sxv, svv], [S[0, 0], S[0, 1], S[1, 1]], rtol=1e-7, atol=1e-14)


def _potential(energy, d):
    from diffsampler.search.energy import TemperedPotential
    return TemperedPotential(ds.targets.from_energy(energy, dim=d))


def test_rmp_langevin_free_particle_law_and_constant_force_mean():
    from diffsampler.search.rmp_langevin import RandomizedMidpointLangevin, ou_noise_cov
    gamma, h, B = 1.5, 0.7, 200_000
    k = RandomizedMidpointLangevin(h, friction=gamma)
    x0, v0 = torch.full((B, 1), 0.3), torch.full((B, 1), -0.4)
    # U = 0: the step is the exact OU transition (mean x + phi v, e^-gh v; covariance S(h)).
    pot = _potential(lambda x: 0 * x.sum(-1), 1)
    st, info = k.step(pot, k.init(pot, x0, v0))
    phi = (1 - math.exp(-gamma * h)) / gamma
    zx, zv = st.x[:, 0] - 0.3 - phi * (-0.4), st.v[:, 0] + 0.4 * math.exp(-gamma * h)
    S = torch.cov(torch.stack([zx, zv]))
    sxx, sxv, svv = (float(v) for v in ou_noise_cov(torch.tensor(h), gamma))
    np.testing.assert_allclose(S.numpy(), [[sxx, sxv], [sxv, svv]], rtol=0.02)
    assert abs(float(zx.mean())) < 4 * math.sqrt(sxx / B) and info.energy_calls == 2 * B
    # U = c x: the force integrals are unbiased over alpha, so the mean is the exact one.
    c = 2.0
    pot = _potential(lambda x: c * x.sum(-1), 1)
    st, _ = k.step(pot, k.init(pot, x0, v0))
    psi = (h - phi) / gamma
    assert abs(float(st.x.mean()) - (0.3 + phi * (-0.4) - psi * c)) < 4 * math.sqrt(sxx / B)
    assert abs(float(st.v.mean()) - (-0.4 * math.exp(-gamma * h) - phi * c)) < 4 * math.sqrt(svv / B)


def test_rmp_langevin_samples_a_gaussian():
    # U = |x|^2 / (2 s^2): after burn-in the chains' x has mean 0 and variance s^2 within 3%
    # (the step-size bias at h = 0.3 s is below 1%).
    from diffsampler.search.rmp_langevin import RandomizedMidpointLangevin
    s, d, B = 1.5, 4, 4000
    pot = _potential(lambda x: 0.5 * (x ** 2).sum(-1) / s ** 2, d)
    k = RandomizedMidpointLangevin(0.3 * s, friction=1.0)
    st = k.init(pot, torch.zeros(B, d))
    xs = []
    for i in range(150):
        st, _ = k.step(pot, st)
        if i >= 100:
            xs.append(st.x)
    x = torch.stack(xs)
    assert abs(float(x.mean())) < 0.05 * s
    assert abs(float(x.var()) / s ** 2 - 1) < 0.03


# -- probability-flow (ODE) integrators ----------------------------------------------------------
PF = {"pf": ProbabilityFlowHeun, "rmp_ode": RandomizedMidpointODE}


@pytest.mark.parametrize("name", ["pf", "rmp_ode"])
def test_probability_flow_weights_exact(name):
    # Target N(0.7, 0.8^2 I_3), sigma = 1.3. With the exact drift the flow transports the marginals,
    # so on a fine grid log w is nearly constant at log Z (the only error: the ODE steps). On coarse random grids the weights of the deterministic maps stay exact:
    # E[w] = Z within 4 standard errors and E[log w] < log Z, for the exact and a wrong drift, in
    # both stepping variables.
    sigma, m, s, d = 1.3, 0.7, 0.8, 3
    target = gaussian(m, s, d, sigma)
    st = StandIn(target, follmer(sigma, m, s), PinnedBrownian(sigma))
    torch.manual_seed(0)
    sim = PF[name]().simulate(st, make_grid("uniform", 200, 300))
    lw = sim.log_w - target.log_Z
    assert float(lw.std()) < 0.01 and abs(float(lw.mean())) < 0.003, (float(lw.mean()), float(lw.std()))
    assert sim.nfe == 2 * 300 and sim.x.requires_grad is False and sim.log_w.requires_grad is False
    B = 20_000
    for drift in (follmer(sigma, m, s), follmer(sigma, 0.4, 1.1)):
        for scaled in (True, False):
            st = StandIn(target, drift, PinnedBrownian(sigma))
            lw = PF[name](scaled=scaled).simulate(st, make_grid("random", B, 4)).log_w - target.log_Z
            w = lw.exp()
            assert abs(float(w.mean()) - 1) < 4 * float(w.std()) / math.sqrt(B), (scaled, float(w.mean()))
            assert float(lw.mean()) < 0 and float(lw.std()) > 0.05


@pytest.mark.parametrize("name", ["pf", "rmp_ode"])
@pytest.mark.parametrize("scaled", [True, False])
def test_probability_flow_step_logdet_matches_finite_differences(name, scaled):
    # Langevin drift on a non-Gaussian energy: the step's Jacobian includes the Hessian of E. The
    # batched one-hot VJP log|det| equals that of the central-difference Jacobian of each row's map,
    # and each step costs exactly 2 counted energy calls per row.
    d, B = 3, 4
    target = ds.targets.from_energy(lambda x: 0.25 * (x ** 4).sum(-1) + x[:, 0] * x[:, 1] * x[:, 2]
                                    + 0.5 * (x ** 2).sum(-1), dim=d)
    s = ds.DiffusionSampler(target, width=16, time_features=8).double()
    torch.manual_seed(2)
    for p in s.parameters():
        p.data.normal_(0, 0.3)
    integ, field = PF[name](scaled=scaled), DriftField(s)
    x = torch.randn(B, d)
    t, t_next, u = torch.full((B,), 0.2), torch.full((B,), 0.45), torch.rand(B)
    c0 = target.counter.total
    with torch.no_grad():
        y, logdet = integ.step(field, x, t, t_next, u)
    assert target.counter.total - c0 == 2 * B
    eps = 1e-5
    for b in range(B):
        f = lambda z: integ.map(field, z[None], t[:1], t_next[:1], u[b:b + 1])[0].detach()  # noqa: E731
        torch.testing.assert_close(f(x[b]), y[b], rtol=0, atol=1e-12)
        J = torch.stack([(f(x[b] + eps * e) - f(x[b] - eps * e)) / (2 * eps) for e in torch.eye(d)], 1)
        assert abs(float(torch.linalg.slogdet(J)[1]) - float(logdet[b])) < 1e-7
    # the full simulation (default scaled variables): 2 calls per row and step, 1 per row for log R(x_N)
    c0 = target.counter.total
    s.sample(B, steps=5, integrator=integ.name)
    assert target.counter.total - c0 == 2 * B * 5 + B and s.nfe_per_step == 2


def test_probability_flow_rejects_mean_free_references():
    s = ds.DiffusionSampler(ds.targets.get("dw4"), drift="egnn", width=8, depth=1)
    for name in ("probability_flow", "randomized_midpoint_ode"):
        with pytest.raises(ConfigError, match="mean-free particle references"):
            s.sample(4, steps=3, integrator=name)


@pytest.mark.parametrize("name,order", [("pf", 2), ("rmp_ode", 2)])
def test_probability_flow_order_on_a_gaussian(name, order):
    # Target N(1, 0.5^2), sigma = 1, exact (Follmer) drift: the flow maps y_0 ~ N(0, sigma^2) to the
    # target exactly, so the terminal variance error is the scheme's. With probe noise the variance
    # given the U's is exact. Heun is second order; the randomized midpoint's fit runs between -2
    # and -1.5 on N in {8..64}. The literal x-variable scheme (scaled=False) converges at order < 1
    # (its Gaussian first step and the stiff x/(2t) term): at N = 64 it is > 10x worse.
    sigma, m, s = 1.0, 1.0, 0.5
    Ns = [8, 16, 32, 64]
    err = {True: [], False: []}
    for scaled in (True, False):
        for N in Ns:
            torch.manual_seed(0)
            st = StandIn(gaussian(m, s, 2, sigma), follmer(sigma, m, s), ProbeNoise(sigma))
            x = PF[name](scaled=scaled).simulate(st, make_grid("uniform", 2000, N)).x
            mean_a, sd_a = x[:, 0], x[:, 1] - x[:, 0]
            err[scaled].append(abs(float((sd_a ** 2).mean() + mean_a.var()) - s ** 2))
    slope = np.polyfit(np.log(Ns), np.log(err[True]), 1)[0]
    assert -order - 0.3 <= slope <= -order + 0.5, (err[True], slope)
    slope_x = np.polyfit(np.log(Ns), np.log(err[False]), 1)[0]
    assert slope_x > -1 and err[True][-1] < err[False][-1] / 10, (err[False], slope_x)


def test_mala_corrector_moves_samples_to_the_target_and_keeps_the_weights():
    """`sample(..., corrector_steps=K)`: the untrained sampler's samples (the reference, N(0, 1)) are
    moved by K MALA steps toward the target N(1, 0.7^2 I); the log-weights are those of the
    uncorrected run (same noise), and the corrector costs n (K + 1) more 'eval' energy calls. Since the
    kernel leaves p invariant the weighted estimate E_w[f(x')] stays consistent for p."""
    from conftest import shifted_gaussian
    target = shifted_gaussian(1.0, 3, 0.7)
    s = ds.DiffusionSampler(target, drift="mlp", width=16, time_features=8, sigma=1.0).double()
    n, K = 4000, 60
    torch.manual_seed(0)
    x0, lw0 = s.sample(n, steps=20)
    calls = target.counter.counts["eval"]
    torch.manual_seed(0)
    x1, lw1 = s.sample(n, steps=20, corrector_steps=K)
    assert target.counter.counts["eval"] - calls == n + n * (K + 1)   # terminal rewards + corrector
    torch.testing.assert_close(lw1, lw0)
    assert abs(x0.mean().item() - 0.0) < 0.05                     # uncorrected: the reference
    assert (x1.mean(0) - 1.0).abs().max().item() < 0.05            # corrected: the target's moments
    assert (x1.std(0) - 0.7).abs().max().item() < 0.04
    w = torch.softmax(lw1, 0)
    ess = 1 / (w ** 2).sum().item()
    assert ess > 100
    assert ((w[:, None] * x1).sum(0) - 1.0).abs().max().item() < 4 * 0.7 / ess ** 0.5
    with pytest.raises(ValueError, match="corrector_steps"):
        s.sample(10, steps=5, corrector_steps=-1)


# -- a time shared by every row is encoded once ------------------------------------------------------
@pytest.mark.parametrize("target_name,drift", [("gmm25", "mlp"), ("manywell32", "langevin")])
def test_a_shared_grid_encodes_each_time_once_with_the_same_values(target_name, drift, monkeypatch):
    """On a uniform grid every row is at the same time: the rollout, the replayed log-densities (with
    their gradient) and the integrators compute the drift's time context once per time and broadcast
    it; the values must be those of the row-by-row computation (float64: to 1e-12)."""
    from diffsampler.sde import policy_log_pf
    from diffsampler.sde import trajectories as tr_mod
    target = ds.targets.get(target_name)
    s = ds.DiffusionSampler(target, drift=drift, width=32, time_features=16).double()
    for p in s.parameters():
        p.data.normal_(0, 0.2)
    grid = make_grid("uniform", 48, 7, dtype=torch.float64)
    assert tr_mod.shared_grid(grid) and not tr_mod.shared_grid(make_grid("random", 48, 7))

    from diffsampler.sde.integrators import base as integrator_base

    def run(share: bool):
        with monkeypatch.context() as m:
            if not share:   # the row-by-row computation
                for module in (tr_mod, integrator_base):
                    m.setattr(module, "shared_grid", lambda g: False)
            torch.manual_seed(5)
            roll = forward_rollout(s, grid)
            s.zero_grad()
            lp = policy_log_pf(s, roll.x, roll.t, roll.score)
            lp.sum().backward()
            grads = [p.grad.clone() for p in s.parameters() if p.grad is not None]
            with torch.no_grad():
                lp_nograd = policy_log_pf(s, roll.x, roll.t, roll.score)
            torch.manual_seed(6)
            sim = EulerMaruyama().simulate(s, grid)
            return [roll.log_w, lp.detach(), lp_nograd, sim.log_w, *grads]
    shared, rowwise = run(True), run(False)
    for a, b in zip(shared, rowwise):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
