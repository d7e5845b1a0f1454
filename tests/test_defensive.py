"""Defensive importance sampling (evaluation/defensive.py): exact mixture weights against a closed
form, bounded weights where the sampler's are heavy-tailed, log Z unbiased, clear refusals."""
import math

import numpy as np
import pytest
import torch

import diffsampler as ds
from diffsampler.errors import ConfigError
from diffsampler.evaluation.defensive import DefensiveMixture, StudentT, mixture_log_weights
from diffsampler.evaluation.psis import psis

D, S = 2, 0.35          # target N(0, I_2); the zero-drift sampler's terminal law is N(0, S^2 I)


def gaussian_target():
    return ds.targets.from_energy(lambda x: 0.5 * x.pow(2).sum(-1), dim=D, log_Z=0.5 * D * math.log(2 * math.pi),
                                  name="std_normal")


def zero_drift_sampler():
    """A sampler whose drift is identically 0: its paths are the reference's, x_1 ~ N(0, S^2 I),
    so its path log-weight is exactly log p~(x) - log N(x; 0, S^2 I)."""
    s = ds.DiffusionSampler(gaussian_target(), drift="mlp", width=8, depth=1, time_features=4, sigma=S).double()
    for p in s.drift.parameters():
        p.data.zero_()
    return s


def test_student_t_log_prob_matches_torch_in_one_dimension():
    t = StudentT(torch.tensor([0.3], dtype=torch.float64), torch.tensor([[1.7]], dtype=torch.float64), 3.0)
    z = torch.linspace(-20, 20, 41, dtype=torch.float64)[:, None]
    want = torch.distributions.StudentT(3.0, 0.3, 1.7).log_prob(z[:, 0])
    assert torch.allclose(t.log_prob(z), want, atol=1e-12)


def test_student_t_fit_and_sample_moments():
    torch.manual_seed(0)
    z = torch.randn(50_000, 2, dtype=torch.float64) @ torch.tensor([[2.0, 0.0], [1.0, 0.5]]).double().T + 3.0
    t = StudentT.fit(z, inflation=1.0, dof=5.0)
    draws = t.sample(200_000)
    assert torch.allclose(draws.mean(0), torch.tensor([3.0, 3.0]).double(), atol=0.05)
    # a t with dof 5 and scatter C has covariance C * 5 / 3
    assert torch.allclose(torch.cov(draws.T), torch.cov(z.T) * 5 / 3, rtol=0.06)


def test_mixture_weights_equal_the_closed_form_for_both_components():
    torch.manual_seed(1)
    s = zero_drift_sampler()
    mix = DefensiveMixture(fraction=0.2, inflation=2.0, dof=3.0, fit_draws=500)
    out = mix.sample(s, 4000, steps=20)
    x = out.x.double()
    log_p = -0.5 * x.pow(2).sum(1)
    log_q = -0.5 * x.pow(2).sum(1) / S ** 2 - D * math.log(S) - 0.5 * D * math.log(2 * math.pi)
    want = log_p - torch.logaddexp(math.log(0.8) + log_q, math.log(0.2) + out.fit.log_prob(x))
    assert int((~out.from_sampler).sum()) == 800
    assert torch.allclose(out.log_w, want, atol=1e-8)


def test_defensive_weights_are_bounded_where_the_samplers_are_heavy_tailed():
    """q = N(0, S^2 I_2) for p = N(0, I_2): w = p / q = C exp((1 - S^2) |x|^2 / (2 S^2)) with
    |x|^2 / S^2 ~ chi2_2, so P(w > t) ~ t^(-1 / (1 - S^2)): a Pareto tail of index k = 1 - S^2 = 0.88
    (infinite variance); the mixture's weights are bounded."""
    torch.manual_seed(2)
    s = zero_drift_sampler()
    n = 20_000
    _, log_w_plain = s.sample(n, steps=20)
    out = DefensiveMixture(fraction=0.1).sample(s, n, steps=20)
    k_plain, k_mix = psis(log_w_plain.numpy()).k_hat, psis(out.log_w.numpy()).k_hat
    assert k_plain > 0.7 and k_mix < 0.5
    lw = out.log_w.double()
    log_z = float(torch.logsumexp(lw, 0) - math.log(n))
    w = torch.exp(lw - lw.max())
    se = float(torch.sqrt(((w / w.mean() - 1) ** 2).mean() / n))
    assert abs(log_z - 0.5 * D * math.log(2 * math.pi)) < 4 * se and se < 0.03
    W = torch.softmax(lw, 0)
    sd = torch.sqrt((W[:, None] * out.x.double() ** 2).sum(0))
    assert torch.allclose(sd, torch.ones(D, dtype=torch.float64), atol=0.05)


def test_zero_density_gets_zero_weight_and_nan_paths_use_the_defensive_term():
    lw = mixture_log_weights(torch.tensor([0.0, float("nan"), 1.0]), torch.tensor([0.0, 0.0, -math.inf]),
                             torch.tensor([0.0, 0.0, 0.0]), 0.5)
    assert lw[0].item() == pytest.approx(-math.log(1.0))           # 1 / (0.5 / 1 + 0.5 / 1)
    assert lw[1].item() == pytest.approx(math.log(2.0))            # only eps r / p~ = 0.5
    assert lw[2].item() == -math.inf


@pytest.mark.parametrize("kw", [dict(fraction=0.0), dict(fraction=1.0), dict(dof=0.0), dict(inflation=-1.0),
                                dict(fit_draws=1)])
def test_bad_options_are_refused(kw):
    with pytest.raises(ConfigError):
        DefensiveMixture(**kw)


def test_particle_targets_are_refused():
    s = ds.DiffusionSampler(ds.targets.get("dw4"), drift="mlp", width=8, depth=1, time_features=4)
    with pytest.raises(ConfigError, match="subspace"):
        DefensiveMixture().sample(s, 10, steps=2)


def test_energy_calls_are_counted_in_eval():
    s = zero_drift_sampler()
    before = s.target.counter.as_dict()["eval"]
    DefensiveMixture(fraction=0.25, fit_draws=40).sample(s, 100, steps=5)
    # mlp drift: no score along the path, one terminal energy per rollout (40 + 75 forward, 25 backward)
    assert s.target.counter.as_dict()["eval"] - before == 140


def test_cli_eval_and_sample_with_defensive_draws(tmp_path):
    """An untrained sampler on a 2-D target: `eval --defensive` adds the mixture's figures to the
    report and its summary; `sample --defensive --resample` writes equally weighted draws."""
    from diffsampler.training import summary_table
    from diffsampler.cli import main
    run = ds.train("gmm25", dict(recipe="tb", drift="mlp", iterations=0, eval_samples=500, eval_steps=20,
                                      width=16), out=str(tmp_path / "r"), progress=False)
    rep = run.evaluate(n=2000, steps=20, save=False, defensive=0.2)
    assert rep["defensive_fraction"] == 0.2 and 0 < rep["defensive_ess"] <= 1
    assert rep["defensive_delta_log_Z_is"] == pytest.approx(abs(rep["defensive_log_Z_is"] - rep["log_Z_true"]))
    assert "defensive (share 0.2)" in summary_table(rep)
    out = tmp_path / "d.npz"
    assert main(["sample", run.dir, "-n", "600", "--steps", "20", "--defensive", "0.25", "--resample", "-o", str(out)]) == 0
    f = np.load(out)
    assert f["x"].shape == (600, 2) and np.all(f["log_w"] == 0)
    with pytest.raises(SystemExit):
        main(["sample", run.dir, "-n", "10", "--defensive", "1.5", "-o", str(out)])
