"""Trusting a sampler's output: PSIS k̂, warnings, importance resampling."""
import numpy as np
import pytest
import torch

import diffsampler as ds
from diffsampler.cli import main
from diffsampler.evaluation.psis import fit_generalized_pareto, gpd_quantile, psis
from diffsampler.evaluation.resampling import importance_resample, weighted_moments
from diffsampler.training import summary_table


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8, 1.2])
def test_psis_recovers_the_tail_shape_of_pareto_ratios(k):
    """Ratios w = U^(-k) have a Pareto tail of shape k: the mean k̂ over 8 replicates of 20,000
    ratios is within 0.08 of k (the estimator's sd at this size is ~0.08 per replicate)."""
    rng = np.random.default_rng(1)
    est = [psis(-k * np.log(rng.random(20_000))).k_hat for _ in range(8)]
    assert abs(np.mean(est) - k) < 0.08


def test_gpd_fit_recovers_shape_and_scale_of_exact_gpd_draws():
    rng = np.random.default_rng(2)
    y = gpd_quantile(rng.random(50_000), 0.4, 2.0)
    k, s = fit_generalized_pareto(y)
    assert abs(k - 0.4) < 0.03 and abs(s - 2.0) < 0.06


def test_smoothing_keeps_the_body_bounds_the_tail_and_handles_degenerate_weights():
    rng = np.random.default_rng(3)
    lw = -0.9 * np.log(rng.random(4000))
    res = psis(lw)
    order = np.argsort(lw)
    body = order[: -res.tail]
    assert np.array_equal(res.log_w[body], lw[body])
    assert res.log_w.max() <= lw.max() + 1e-12 and res.tail == int(np.ceil(min(800, 3 * np.sqrt(4000))))
    assert np.all(np.diff(res.log_w[order[-res.tail:]]) >= 0)     # smoothed tail stays sorted
    assert psis(np.zeros(1000)).k_hat == 0.0                      # equal weights: nothing to fear
    assert psis(np.array([0.0, 1.0, -np.inf])).k_hat == np.inf     # too few to fit
    lw_inf = lw.copy()
    lw_inf[:10] = -np.inf                                          # zero-weight samples stay zero
    assert np.all(np.isneginf(psis(lw_inf).log_w[:10]))


def test_resampled_draws_have_the_weighted_moments():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    log_w = 0.8 * x[:, 0] - 0.3 * x[:, 1] ** 2                      # exponential tilt: light tail
    mean_w, sd_w = weighted_moments(x, log_w)
    y = importance_resample(x, log_w, smooth=False, generator=g)
    assert y.shape == x.shape
    # resampling noise: within ~2 standard errors of a mean over 20,000 draws (sd ~ 1)
    assert torch.allclose(y.mean(0), mean_w, atol=0.015) and torch.allclose(y.std(0), sd_w, atol=0.015)
    assert abs(float(mean_w[0]) - 0.8) < 0.03                      # E[x0] under the tilted law N(0.8, 1)


def _sampler_run(tmp_path, drift, iterations, target="manywell32"):
    return ds.train(target, dict(recipe="tb", drift=drift, iterations=iterations, eval_samples=1000,
                                 eval_steps=60, time_warp=2.0, width=16), out=str(tmp_path / drift), progress=False)


def test_the_warning_fires_on_an_undertrained_sampler_and_not_on_an_exact_one(tmp_path):
    bad = _sampler_run(tmp_path, "mlp", 0)        # the reference process, untrained
    assert bad.report["psis_k"] > 0.7 and bad.report["ess"] < 0.01
    assert any("k-hat" in w for w in bad.report["warnings"]) and any("ESS" in w for w in bad.report["warnings"])
    assert "WARNING: PSIS k-hat" in summary_table(bad.report)
    good = _sampler_run(tmp_path, "optimal", 0, target="gmm25")   # the exact Föllmer drift
    assert good.report["psis_k"] < 0.5 and good.report["ess"] > 0.5
    assert good.report["warnings"] == [] and "WARNING" not in summary_table(good.report)


def test_the_gap_warning_sits_where_log_normal_weights_have_a_one_percent_ess():
    """For q = N(0, 1) and p = N(mu, 1), EUBO - ELBO = KL(p||q) + KL(q||p) = mu^2 = Var_q(log w), and
    the limiting ESS fraction (E_q w)^2 / E_q w^2 is exp(-mu^2): at the warning's gap (4.6 nats) it is
    1%, where the ESS warning sits. Integrals by quadrature on a fine grid (no sampling noise: the
    Kish ESS of log-normal weights converges far too slowly to check this by simulation)."""
    from diffsampler.evaluation.trust import ESS_WARNING, GAP_WARNING, trust_warnings
    mu = GAP_WARNING ** 0.5
    z = torch.linspace(-40.0, 40.0, 400_001, dtype=torch.float64)
    q = torch.exp(-0.5 * z ** 2) / (2 * torch.pi) ** 0.5
    p = torch.exp(-0.5 * (z - mu) ** 2) / (2 * torch.pi) ** 0.5
    log_w = -0.5 * (z - mu) ** 2 + 0.5 * z ** 2                    # log p(z) - log q(z)
    eubo, elbo = torch.trapezoid(p * log_w, z), torch.trapezoid(q * log_w, z)
    var = torch.trapezoid(q * log_w ** 2, z) - elbo ** 2
    ess = torch.trapezoid(q * log_w.exp(), z) ** 2 / torch.trapezoid(q * (2 * log_w).exp(), z)
    assert abs(float(eubo - elbo) - mu ** 2) < 1e-9 and abs(float(var) - mu ** 2) < 1e-9
    assert abs(float(ess) - ESS_WARNING) < 1e-9
    assert any("EUBO - ELBO" in w for w in trust_warnings({"eubo_minus_elbo": 1.01 * GAP_WARNING}))
    assert trust_warnings({"eubo_minus_elbo": 0.99 * GAP_WARNING, "ess": 0.5, "psis_k": 0.3}) == []


def test_sample_resample_writes_equally_weighted_draws_with_the_weighted_moments(tmp_path):
    run = _sampler_run(tmp_path, "optimal", 0, target="gmm25")
    raw, res = tmp_path / "raw.npz", tmp_path / "res.npz"
    torch.manual_seed(5)
    assert main(["sample", run.dir, "-n", "4000", "--steps", "60", "-o", str(raw)]) == 0
    torch.manual_seed(5)                        # the same simulated samples, then resampled
    assert main(["sample", run.dir, "-n", "4000", "--steps", "60", "--resample", "-o", str(res)]) == 0
    a, b = np.load(raw), np.load(res)
    assert b["x"].shape == (4000, 2) and np.all(b["log_w"] == 0) and bool(b["resampled"])
    mean_w, sd_w = weighted_moments(torch.as_tensor(a["x"]), torch.as_tensor(a["log_w"]))
    se = sd_w.numpy() / np.sqrt(4000)           # resampling noise of a mean, per coordinate
    assert np.all(np.abs(b["x"].mean(0) - mean_w.numpy()) < 3 * se)
    assert np.allclose(b["x"].std(0), sd_w.numpy(), rtol=0.03)


@pytest.mark.parametrize("spread", [300.0, 700.0, 3000.0])
def test_psis_on_astronomically_spread_weights_is_quiet_and_says_unreliable(spread):
    """Log-weights spread over thousands of nats (an untrained sampler on a molecule): the tail's
    quartile underflows and parts of the GPD grid fail; k-hat still comes out (inf where no grid point
    gives a finite likelihood), above the threshold, with no floating-point warning."""
    import warnings

    lw = np.random.default_rng(0).normal(0.0, spread, 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = psis(lw)
    assert r.k_hat > 0.7 and not r.reliable


def test_a_few_weights_astronomically_above_the_rest_read_as_no_finite_tail():
    """Two log-weights near 0 and 9,998 near -1000 (an ESS of 2 draws): exp of the tail's threshold
    underflows next to the largest weight. A fit to such a tail would read light (its entries are
    zeros); k-hat must say unreliable."""
    rng = np.random.default_rng(4)
    lw = np.concatenate([rng.normal(0.0, 1.0, 2), rng.normal(-1000.0, 5.0, 9998)])
    r = psis(lw)
    assert r.k_hat == np.inf and not r.reliable
