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
