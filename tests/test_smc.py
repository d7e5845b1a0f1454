"""The SMC searcher (search/smc.py): exact energy-call count, an unbiased estimate of Z, its place in
the searcher registry and the training config."""
import math

import pytest
import torch

import diffsampler as ds
from diffsampler.search import SEARCHERS
from diffsampler.search.smc import run_smc
from diffsampler.training import TrainConfig


def gaussian(dim=5, mean=1.0, std=0.5):
    m = torch.full((dim,), mean, dtype=torch.float64)
    log_z = 0.5 * dim * math.log(2 * math.pi * std ** 2)
    return ds.targets.from_energy(lambda x: 0.5 * ((x - m.to(x)) ** 2).sum(-1) / std ** 2, dim=dim, log_Z=log_z,
                                  sigma=1.0, name="gauss5")


def z_hats(target, runs, **kw):
    out = []
    for _ in range(runs):
        r = run_smc(target, **kw, adapt=False, dtype=torch.float64)
        out.append(float(torch.logsumexp(r.log_w, 0) - math.log(r.log_w.numel())))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", ["gauss5", "gmm40"])
def test_smc_estimate_of_z_is_unbiased(name):
    """E[Z-hat] = Z: the mean of exp(log Z-hat) over independent runs is within 3 standard errors of
    the true Z (GMM-40: Z = 1, 40 well-separated modes; a 5-D Gaussian), with resampling happening."""
    torch.manual_seed(1)
    if name == "gauss5":
        target, kw = gaussian(), dict(n=64, levels=10, s0=1.0, inner=2, step_size=0.05, resample_ess=0.5)
    else:
        target, kw = ds.targets.get("gmm40"), dict(n=128, levels=20, s0=25.0, inner=2, step_size=0.5,
                                                   resample_ess=0.5)
    r = run_smc(target, **kw, adapt=False, dtype=torch.float64)
    assert r.resamplings > 0
    log_z = z_hats(target, 100, **kw)
    ratio = torch.exp(log_z - target.log_Z)          # Z-hat / Z
    se = float(ratio.std() / math.sqrt(ratio.numel()))
    assert abs(float(ratio.mean()) - 1.0) < 3 * se, (float(ratio.mean()), se)
    assert se < 0.1                                  # the test has power: the estimates are informative


def test_smc_counts_its_energy_calls_exactly_and_trains_as_a_searcher():
    t = gaussian()
    before = t.counter.total
    r = run_smc(t, 32, 6, s0=1.0, inner=3, step_size=0.05, resample_ess=0.5, adapt=True)
    assert r.energy_calls == t.counter.total - before == 32 * (1 + 6 * 3)
    cfg = TrainConfig.from_dict(dict(recipe="sgds", searcher="smc", search_chains=64, search_steps=5,
                                     search_inner=2, smc_resample_ess=0.3))
    searcher = SEARCHERS.build("smc", cfg.to_dict())
    assert searcher.calls() == 64 * (1 + 5 * 2) and searcher.o.resample_ess == 0.3
    run = ds.train(t, dict(recipe="sgds", searcher="smc", search_chains=64, search_steps=5, search_inner=2,
                           iterations=4, batch_size=16, width=16, eval_samples=50, eval_steps=5, rounds=1),
                   progress=False)
    # the run counts its own calls only (not the run_smc calls above on the same target object)
    assert run.report["energy_calls"]["search"] == 64 * (1 + 5 * 2)


def test_adaptive_schedule_keeps_the_conditional_ess_it_is_asked_for():
    """next_beta's step gives CESS = the target (bisection), is at least (1 - b) / levels_left, and is 1
    when the whole rest keeps the CESS; conditional_ess is the closed form on uniform weights."""
    from diffsampler.search.smc import conditional_ess, next_beta
    torch.manual_seed(0)
    dE = 3.0 * torch.randn(500, dtype=torch.float64)
    log_w = torch.zeros(500, dtype=torch.float64)
    u = torch.exp(-0.2 * dE)
    assert conditional_ess(log_w, dE, 0.2) == pytest.approx(float(u.mean() ** 2 / (u ** 2).mean()), rel=1e-10)
    b = next_beta(log_w, dE, 0.0, levels_left=1000, cess=0.9)
    assert 0.0 < b < 1.0 and conditional_ess(log_w, dE, b) == pytest.approx(0.9, abs=1e-6)
    assert next_beta(log_w, dE, 0.0, levels_left=2, cess=0.9) == pytest.approx(0.5)          # the floor
    assert next_beta(log_w, 1e-6 * dE, 0.3, levels_left=1000, cess=0.9) == 1.0               # flat increment
    assert next_beta(log_w, dE, 0.3, levels_left=1, cess=0.9) == 1.0                         # the last level


def test_adaptive_smc_spends_its_budget_and_samples_a_curved_target():
    """On a 2-D banana (Haario et al. 2001, b = 0.03, s1 = 3; exact sds (3, sqrt(1 + 2 b^2 s1^4))) from a
    broad start, the adaptive schedule reaches b = 1 in fewer levels than allowed, spends the rest at
    b = 1 with the calls still N (1 + levels x inner), returns the kept states, and those states have
    the banana's sds within 10% and log Z-hat within 0.15 of log(2 pi s1)."""
    b, s1 = 0.03, 3.0

    def energy(x):
        x2 = x[:, 1] + b * (x[:, 0] ** 2 - s1 ** 2)
        return 0.5 * (x[:, 0] / s1) ** 2 + 0.5 * x2 ** 2
    t = ds.targets.from_energy(energy, dim=2, log_Z=math.log(2 * math.pi * s1), sigma=1.0, name="banana")
    torch.manual_seed(0)
    before = t.counter.total
    r = run_smc(t, 500, 40, s0=6.0, inner=5, step_size=0.1, resample_ess=0.5, adapt=True,
                dtype=torch.float64, schedule="adaptive", cess=0.9, thin=5)
    assert r.energy_calls == t.counter.total - before == 500 * (1 + 40 * 5)
    assert r.levels < 40 and r.extra is not None
    x, e = r.extra
    assert x.shape == ((40 - r.levels) * 500, 2) and torch.allclose(e, energy(x))
    sd = torch.tensor([s1, math.sqrt(1 + 2 * b ** 2 * s1 ** 4)], dtype=torch.float64)
    assert ((x.std(0) / sd - 1).abs() < 0.1).all(), x.std(0)
    log_z = float(torch.logsumexp(r.log_w, 0) - math.log(500))
    assert abs(log_z - t.log_Z) < 0.15, log_z
    with pytest.raises(ds.errors.ConfigError, match="smc_schedule"):
        TrainConfig.from_dict(dict(recipe="sgds", searcher="smc", smc_schedule="geometric"))
