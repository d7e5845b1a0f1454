"""Targets: energies from the literature's definitions, exact log Z, exact samplers, counting."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import diffsampler as ds
from diffsampler.errors import NonFiniteError, ShapeError, UnknownTargetError
from diffsampler.targets.manywell import DOUBLE_WELL_INTEGRAL, LOG_Z_PAIR, WELL_SPLIT


def _e1(x):
    return x ** 4 - 6 * x ** 2 - 0.5 * x


def test_manywell_log_z_matches_quadrature():
    val, err = integrate.quad(lambda x: math.exp(-_e1(x)), -np.inf, np.inf, epsabs=1e-10, epsrel=1e-12)
    assert abs(val - DOUBLE_WELL_INTEGRAL) / val < 1e-8
    assert abs(LOG_Z_PAIR - (math.log(val) + 0.5 * math.log(2 * math.pi))) < 1e-8
    for d in (2, 32, 64, 128):
        t = ds.targets.get(f"manywell{d}")
        assert abs(t.log_Z - d / 2 * LOG_Z_PAIR) < 1e-9
    assert abs(ds.targets.get("manywell32").log_Z - 164.6957) < 1e-3


def test_manywell_energy_values():
    t = ds.targets.get("manywell32")
    x = torch.stack([torch.zeros(32), torch.ones(32)]).double()
    torch.testing.assert_close(t.energy(x), torch.tensor([0.0, 16 * (1 - 6 - 0.5 + 0.5)], dtype=torch.float64))
    # Mixed point: pair (x1, x2) = (2, 3) -> 16 - 24 - 1 + 4.5 = -4.5 per pair
    y = torch.tensor([[2.0, 3.0] * 16], dtype=torch.float64)
    assert abs(t.energy(y).item() - 16 * -4.5) < 1e-12


def test_manywell_closed_form_gradient_matches_autograd():
    t = ds.targets.get("manywell32")
    x = 2 * torch.randn(64, 32, dtype=torch.float64)
    lr, score = t.log_reward_and_score(x)            # closed form (no second derivatives needed)
    xg = x.clone().requires_grad_(True)
    e = t.energy(xg)
    (g,) = torch.autograd.grad(e.sum(), xg)
    torch.testing.assert_close(lr, -e.detach(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(score, -g, rtol=1e-12, atol=1e-10)
    assert t.counter.counts["train"] == 128          # one call per row on either path
    lr2, s2 = t.log_reward_and_score(xg, create_graph=True)   # the autograd path, kept for PIS
    torch.testing.assert_close(s2.detach(), score, rtol=1e-12, atol=1e-10)


def test_manywell_sampler_matches_quadrature_cdf():
    torch.manual_seed(1)
    t = ds.targets.ManyWell(2)
    z = DOUBLE_WELL_INTEGRAL

    def cdf(a):
        a = np.atleast_1d(a)
        return np.array([integrate.quad(lambda x: math.exp(-_e1(x)), -np.inf, v)[0] / z for v in a])

    x = t.sample_double_well(20000).numpy()
    ks = stats.kstest(x, cdf)
    assert ks.pvalue > 1e-3, ks
    p_right = integrate.quad(lambda v: math.exp(-_e1(v)), WELL_SPLIT, np.inf)[0] / z
    assert abs(t.p_right - p_right) < 1e-3
    freq = (x > WELL_SPLIT).mean()
    assert abs(freq - p_right) < 4 * math.sqrt(p_right * (1 - p_right) / len(x))
    full = t.sample(20000)
    assert abs(full[:, 1].std().item() - 1.0) < 0.03


def test_gmm40_definition():
    t = ds.targets.get("gmm40")
    assert t.dim == 2 and t.log_Z == 0.0 and t.means.shape == (40, 2)
    assert abs(t.std - 1.3133) < 1e-4
    # The published means are FAB's draw: (U[0,1)^2 - 0.5) * 80 after torch.manual_seed(0).
    torch.manual_seed(0)
    fab = (torch.rand((40, 2), dtype=torch.float32) - 0.5) * 80
    assert (fab.double() - t.means).abs().max() < 1e-4
    # normalised: the density integrates to 1 (grid quadrature)
    u = torch.linspace(-50, 50, 801, dtype=torch.float64)
    xx = torch.cartesian_prod(u, u)
    mass = torch.exp(-t.energy(xx)).sum() * (u[1] - u[0]) ** 2
    assert abs(mass.item() - 1) < 1e-4
    cov = t.mode_coverage(t.sample(4000))
    assert cov["modes_covered"] == 40


def test_gmm25_and_funnel_log_density_normalised():
    torch.manual_seed(0)
    g = ds.targets.get("gmm25")
    u = torch.linspace(-15, 15, 601, dtype=torch.float64)
    xx = torch.cartesian_prod(u, u)
    assert abs((torch.exp(-g.energy(xx)).sum() * (u[1] - u[0]) ** 2).item() - 1) < 1e-4
    f = ds.targets.get("funnel")
    x = f.sample(5)
    # closed form: log N(x0; 0, 9) + sum log N(xi; 0, e^{x0})
    lp = stats.norm(0, 3).logpdf(x[:, 0].numpy()) + stats.norm(0, np.exp(x[:, 0:1].numpy() / 2)).logpdf(
        x[:, 1:].numpy()).sum(1)
    np.testing.assert_allclose(f.log_prob(x.double()).numpy(), lp, rtol=1e-6)


def test_unknown_target_and_bad_input():
    with pytest.raises(UnknownTargetError, match="manywell32"):
        ds.targets.get("manywel32")
    with pytest.raises(UnknownTargetError, match="even dimension"):
        ds.targets.get("manywell33")
    t = ds.targets.get("manywell32")
    with pytest.raises(ShapeError, match=r"\(B, 32\)"):
        t.energy(torch.zeros(3, 31))
    bad = ds.targets.from_energy(lambda x: x.sum(-1, keepdim=True), dim=2, name="bad_shape")
    with pytest.raises(ShapeError, match="shape"):
        bad.energy(torch.zeros(4, 2))
    nan = ds.targets.from_energy(lambda x: x.sum(-1) * float("nan"), dim=2, name="nan_energy")
    with pytest.raises(NonFiniteError, match="non-finite"):
        nan.energy(torch.zeros(4, 2))
    with pytest.raises(ShapeError):
        ds.targets.from_energy(lambda x: x.sum(-1), dim=2, samples=np.zeros((5, 3)))


def test_energy_calls_counted_exactly():
    calls = {"rows": 0}

    def energy(x):
        calls["rows"] += x.shape[0]
        return 0.5 * (x ** 2).sum(-1)

    t = ds.targets.from_energy(energy, dim=3, log_Z=1.5 * math.log(2 * math.pi), name="counted",
                               samples=np.random.randn(500, 3))
    s = ds.DiffusionSampler(t, drift="langevin", width=16, time_features=8)
    with t.counter.use("train"):
        tr = s.rollout(50, 7, "random")
        tr2 = s.backward(torch.randn(20, 3), 5, "uniform")
    from diffsampler.evaluation import evaluate
    evaluate(s, n=40, steps=6)
    c = t.counter.as_dict()
    assert c["total"] == calls["rows"]
    # forward: 1 shared call at x_0 = 0, 6 x 50 inner-state scores, 50 terminal rewards
    # backward: 1 at x_0, 4 x 20 inner states, 20 terminal
    assert c["train"] == (1 + 6 * 50 + 50) + (1 + 4 * 20 + 20)
    assert c["eval"] == (1 + 5 * 40 + 40) + (1 + 5 * 40 + 40)
    assert tr.log_w.shape == (50,) and tr2.log_w.shape == (20,)
