"""Searchers: exact invariance (MALA, GHMC), unbiased AIS Z-hat, exact PT swaps and mode weights,
buffer rank frequencies and true rewards, exact energy-call counts, non-finite handling, RND."""
import math

import pytest
import torch
from scipy import stats

import diffsampler as ds
from diffsampler.search import (MALA, RND, ULA, ReplayBuffer, auxiliary_potential,
                                run_ais, run_kernel, run_mala, run_tempering, run_underdamped, swap_log_ratio,
                                target_potential)
from diffsampler.search.energy import ChainState


pytestmark = pytest.mark.usefixtures("float64")


class RowCounter:
    """Wraps an energy function and counts the rows it is called on."""

    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, x):
        self.rows += x.shape[0]
        return self.fn(x)


def gaussian(m, s, const=0.0, counted=False):
    """N(m, diag(s^2)) with E = sum (x - m)^2 / (2 s^2) + const, so Z = (2 pi)^(d/2) prod(s) e^-const."""
    fn = RowCounter(lambda x: 0.5 * (((x - m.to(x)) / s.to(x)) ** 2).sum(-1) + const)
    logz = 0.5 * len(m) * math.log(2 * math.pi) + float(torch.log(s).sum()) - const
    t = ds.targets.from_energy(fn, dim=len(m), log_Z=logz, name="gauss")
    return (t, fn) if counted else t


def assert_moments(x, m, s, n_eff, k=4.0, var_bias=0.0):
    """Per-coordinate mean within k SE (s / sqrt(n)) and variance within k SE (s^2 sqrt(2/n)) + bias."""
    mean, var = x.mean(0), x.var(0)
    assert ((mean - m).abs() < k * s / math.sqrt(n_eff)).all(), (mean, m)
    assert ((var - s ** 2).abs() < k * s ** 2 * math.sqrt(2 / n_eff) + var_bias * s ** 2).all(), (var, s ** 2)


def box_target():
    """E = -sum log(1 - x^2): NaN outside (-1, 1)^2, so too-large steps produce non-finite values."""
    return ds.targets.from_energy(lambda x: -torch.log1p(-x ** 2).sum(-1), dim=2, name="box")


# ---- MALA -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 5])
def test_mala_leaves_gaussian_invariant_and_ula_does_not(d):
    m, s = torch.linspace(-1, 2, d), torch.linspace(0.5, 2.0, d)
    B, h, K = 20000, 0.3, 10            # h = 1.2 s_min^2: a large step, so the MH correction matters
    x0 = m + s * torch.randn(B, d)
    r = run_mala(target_potential(gaussian(m, s)), x0, K, step_size=h)
    assert 0.3 < r.acceptance_rate < 0.95
    assert_moments(r.x[-1], m, s, B)
    # The same check has power: ULA with this step inflates the smallest variance (to s^2/(1-h/2s^2)).
    u = run_kernel(ULA(h), target_potential(gaussian(m, s)), x0, K)
    with pytest.raises(AssertionError):
        assert_moments(u.x[-1], m, s, B)


def test_mala_adapts_step_size_towards_0574():
    m, s = torch.zeros(10), torch.ones(10)
    r = run_mala(target_potential(gaussian(m, s)), torch.randn(256, 10), 200, step_size=1e-3, n_adapt=600)
    assert abs(r.acceptance_rate - 0.574) < 0.05
    assert r.state.step_size.min() > 0.05        # grew from 1e-3


def test_search_phase_adapts_within_its_burn_in_and_starts_where_told():
    """The searcher's burn-in (search_burnin steps at search_adapt_rate) must take a step size
    that is 100x too small to the 0.574 regime; chains start at N(0, search_init_std^2)."""
    from diffsampler.training.config import TrainConfig
    from diffsampler.training.search_phase import run_search
    m, s = torch.zeros(4), 2 * torch.ones(4)
    t = gaussian(m, s)
    cfg = TrainConfig.from_dict({"searcher": "mala", "search_chains": 500, "search_steps": 50,
                                 "search_burnin": 100, "search_step_size": 0.01, "search_thin": 50})
    res = run_search(cfg, t)
    assert abs(res.info["acceptance"] - 0.574) < 0.06
    assert_moments(res.x, m, s, 500)                     # 500 chains, one sample each after burn-in
    far = TrainConfig.from_dict({**cfg.to_dict(), "search_init_std": 50.0, "search_burnin": 0,
                                 "search_steps": 1, "search_thin": 1, "search_step_size": 1e-6})
    assert run_search(far, t).x.std() > 30                # one tiny step from the N(0, 50^2) start


# ---- AIS ------------------------------------------------------------------------------------------
def test_ais_z_hat_unbiased_and_weighted_moments():
    m, s = torch.tensor([1.0, -0.5, 0.5]), torch.tensor([0.7, 1.0, 0.5])
    t, fn = gaussian(m, s, const=2.0, counted=True)
    R, B, K = 200, 50, 20
    res = run_ais(t, R * B, K, s0=1.5, kernel=MALA(0.2), n_inner=1)
    assert res.energy_calls == fn.rows == t.counter.counts["search"] == R * B * (1 + K)
    # Z-hat per repetition of B chains; their mean vs the true Z, in Z space.
    z_rep = torch.exp(torch.logsumexp(res.log_w.view(R, B), 1) - math.log(B))
    z_true, sem = math.exp(t.log_Z), float(z_rep.std() / math.sqrt(R))
    assert sem < 0.05 * z_true                    # the comparison has power
    assert abs(float(z_rep.mean()) - z_true) < 4 * sem, (float(z_rep.mean()), z_true, sem)
    assert abs(res.log_Z - float(torch.logsumexp(res.log_w, 0) - math.log(R * B))) < 1e-12
    # Self-normalised weighted moments with the Kish ESS as sample size.
    w = res.normalized_weights()[:, None]
    mean = (w * res.x).sum(0)
    var = (w * (res.x - mean) ** 2).sum(0)
    n = res.ess
    assert n > 1000
    assert ((mean - m).abs() < 5 * s / math.sqrt(n)).all()
    assert ((var - s ** 2).abs() < 5 * s ** 2 * math.sqrt(2 / n)).all()


# ---- parallel tempering ---------------------------------------------------------------------------
def test_swap_ratio_is_exact_metropolis_ratio():
    E = torch.randn(2, 100) * 3
    b_lo, b_hi = torch.tensor(1.0), torch.tensor(0.3)
    logpi = lambda b, e: -b * e                                  # noqa: E731
    exact = logpi(b_lo, E[1]) + logpi(b_hi, E[0]) - logpi(b_lo, E[0]) - logpi(b_hi, E[1])
    torch.testing.assert_close(swap_log_ratio(b_lo, b_hi, E[0], E[1]), exact)


def test_tempering_swap_acceptance_matches_exact_expectation():
    temps, B = torch.tensor([1.0, 4.0]), 4000
    t = gaussian(torch.zeros(1), torch.ones(1))
    x0 = torch.stack([torch.randn(B, 1), 2.0 * torch.randn(B, 1)])     # exact samples at T = 1, 4
    res = run_tempering(t, x0, temps, 40, kernel=MALA(0.5))
    # exact E[min(1, exp((b1 - b2)(E1 - E2)))] with x_m ~ N(0, T_m), by Monte Carlo on 2e6 pairs
    n = 2_000_000
    e1, e2 = 0.5 * torch.randn(n) ** 2, 0.5 * 4.0 * torch.randn(n) ** 2
    exact = float(swap_log_ratio(1.0, 0.25, e1, e2).clamp(max=0).exp().mean())
    se = 0.5 / math.sqrt(B)                     # per-chain averages: sd of a probability <= 0.5
    assert abs(float(res.swap_acceptance[0]) - exact) < 4 * se, (res.swap_acceptance, exact)
    assert 0 < float(res.swap_rate[0]) < 1


def test_tempering_recovers_mode_weights_of_two_mode_mixture():
    w, a, sd = torch.tensor([0.3, 0.7]), 4.0, 0.5

    def energy(x):
        comp = -0.5 * ((x - torch.tensor([-a, a]).to(x)) / sd) ** 2 + torch.log(w.to(x))
        return -torch.logsumexp(comp, -1)

    t = ds.targets.from_energy(energy, dim=1, name="two_modes")
    B = 128
    x0 = torch.full((B, 1), -a)                                  # every chain starts in the minor mode
    res = run_tempering(t, x0, torch.logspace(0, math.log10(40), 8), 1500, kernel=MALA(0.1), n_adapt=300, thin=5)
    frac = (res.x[..., 0] > 0).double().mean(0)                   # per-chain fraction in the right mode
    se = float(frac.std() / math.sqrt(B))
    assert abs(float(frac.mean()) - 0.7) < max(4 * se, 0.02), (float(frac.mean()), se)
    assert (res.swap_acceptance > 0.2).all()
    # Without swaps (a single temperature) the chains never leave the minor mode.
    alone = run_tempering(t, x0, [1.0], 300, kernel=MALA(0.1), n_adapt=100, thin=5)
    assert (alone.x > 0).double().mean() < 0.01


def test_tempering_targets_the_auxiliary_energy_and_records_the_true_one():
    """With a novelty, every replica tempers E~ = E - alpha * novelty. On N(0, I_2) with
    novelty(x) = -k ||x||^2 / (2 alpha), E~ = (1 + k) ||x||^2 / 2: the T = 1 replica must have
    variance 1 / (1 + k), while the recorded energies are the true E."""
    t = gaussian(torch.zeros(2), torch.ones(2))
    k, alpha, B = 3.0, 10.0, 2000

    def novelty(x):
        return -k * (x ** 2).sum(-1) / (2 * alpha)

    x0 = torch.randn(B, 2)
    res = run_tempering(t, x0, [1.0, 2.0, 4.0], 400, kernel=MALA(0.3), n_adapt=200, thin=10,
                        novelty=novelty, alpha=alpha)
    x, e = res.flat()
    var = float(x.var(0).mean())
    assert abs(var - 1 / (1 + k)) < 0.02, var          # plain PT would give 1.0
    torch.testing.assert_close(e, -t.log_prob(x), rtol=1e-5, atol=1e-5)
    assert (res.swap_acceptance > 0.2).all()


# ---- underdamped Langevin -------------------------------------------------------------------------
def test_underdamped_keeps_gaussian_invariant():
    m, s = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([0.5, 1.0, 1.5])
    B, h = 20000, 0.1
    x0 = m + s * torch.randn(B, 3)
    pot = target_potential(gaussian(m, s))
    # BAOAB: configurational marginal exact for harmonic U (Leimkuhler & Matthews 2013); we still
    # allow the generic O(h^2) variance bias bound (h omega_max)^2 / 4 = (0.1 / 0.5)^2 / 4 = 1%.
    r = run_underdamped(pot, x0, 50, step_size=h, friction=1.0)
    assert_moments(r.x[-1], m, s, B, var_bias=(h / 0.5) ** 2 / 4)
    # Unadjusted OBABO has the known harmonic bias Var = s^2 / (1 - (h omega)^2 / 4), omega = 1/s:
    # at h = 0.4 the check measures it (and so has the power to see an O(h^2) bias).
    o = run_underdamped(pot, x0, 50, step_size=0.4, friction=1.0, scheme="obabo")
    ratio = o.x[-1].var(0) / s ** 2
    predicted = 1 / (1 - (0.4 / s) ** 2 / 4)
    assert ((ratio - predicted).abs() < 4 * predicted * math.sqrt(2 / B)).all(), (ratio, predicted)
    # Metropolised OBABO (GHMC) is exact: no bias allowance, even at a large step.
    g = run_underdamped(pot, x0, 50, step_size=0.6, friction=1.0, scheme="obabo", metropolize=True)
    assert 0.3 < g.acceptance_rate < 1.0
    assert_moments(g.x[-1], m, s, B)


# ---- replay buffer ---------------------------------------------------------------------------------
def test_buffer_rank_sampling_frequencies_follow_weights():
    buf = ReplayBuffer(2, capacity=100, priority="rank", rank_k=0.01)
    buf.add(torch.randn(40, 2), torch.randn(40) * 5)
    p = buf.weights()
    n = 200_000
    x, _ = buf.sample(n)
    hit = (x[:, None, :] == buf.x[None]).all(-1).double()         # (n, N) one-hot (rows are distinct)
    counts = hit.sum(0)
    assert counts.sum() == n
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < stats.chi2.ppf(1 - 1e-4, len(buf) - 1), chi2   # false-alarm rate 1e-4


def test_buffer_stores_true_reward_after_auxiliary_search():
    t = ds.targets.get("gmm25")
    rnd = RND(2, out_dim=16, hidden=64, input_scale=10.0)
    rnd.fit(t.sample(500), steps=20, batch_size=128)
    pot = auxiliary_potential(t, rnd, alpha=100.0)
    r = run_mala(pot, t.sample(64), 30, step_size=0.3)
    buf = ReplayBuffer(2, capacity=10_000)
    x, e = r.flat()
    assert buf.add(x, -e) == x.shape[0]
    with t.counter.use("eval"):
        torch.testing.assert_close(buf.log_r, -t.energy(buf.x), rtol=0, atol=1e-10)
        U, _, E = pot(buf.x)
    assert (E - U).abs().max() > 1e-3                              # the bonus really shifted U


def test_buffer_dedup_drops_repeated_states():
    buf = ReplayBuffer(2, capacity=100, dedup=0.0)
    x = torch.randn(10, 2)
    assert buf.add(torch.cat([x, x[:3]]), torch.zeros(13)) == 10
    assert buf.add(x[5:], torch.zeros(5)) == 0 and len(buf) == 10


# ---- energy-call counting -------------------------------------------------------------------------
def test_energy_calls_equal_rows_evaluated():
    m, s = torch.zeros(3), torch.ones(3)
    t, fn = gaussian(m, s, counted=True)
    pot, B = target_potential(t), 17
    total = 0
    r = run_mala(pot, torch.randn(B, 3), 11, n_adapt=4, thin=3)
    total += r.energy_calls
    assert r.energy_calls == B * 16 == fn.rows
    u = run_underdamped(pot, torch.randn(B, 3), 9, step_size=0.1)
    total += u.energy_calls
    p = run_tempering(t, torch.randn(B, 3), [1.0, 2.0, 4.0], 7, n_adapt=2)
    total += p.energy_calls
    assert p.energy_calls == 3 * B * 10
    a = run_ais(t, B, 6, n_inner=2)
    total += a.energy_calls
    assert fn.rows == total == t.counter.counts["search"] and t.counter.counts["train"] == 0


# ---- non-finite handling --------------------------------------------------------------------------
def test_nonfinite_steps_are_reported_and_never_returned():
    t = box_target()
    x0 = 0.5 * torch.rand(64, 2) - 0.25
    ula = run_kernel(ULA(0.5), target_potential(t), x0, 20)
    assert ula.n_reset > 0
    assert torch.isfinite(ula.x).all() and torch.isfinite(ula.energy).all() and (ula.x.abs() < 1).all()
    ud = run_underdamped(target_potential(t), x0, 20, step_size=2.0)
    assert ud.n_reset > 0 and torch.isfinite(ud.x).all() and torch.isfinite(ud.energy).all()
    mala = run_mala(target_potential(t), x0, 20, step_size=5.0)
    assert mala.n_nonfinite > 0 and torch.isfinite(mala.x).all() and torch.isfinite(mala.energy).all()
    # a non-finite starting point is reset (to a finite initial point) and never returned
    bad = x0.clone()
    bad[0] = 3.0
    r = run_mala(target_potential(t), bad, 5, step_size=0.01)
    assert r.n_reset >= 1 and torch.isfinite(r.x).all()
    ais = run_ais(t, 64, 5, s0=0.3, kernel=ULA(0.5))
    assert ais.n_reset > 0 and torch.isfinite(ais.x).all()
    assert torch.isinf(ais.log_w).sum() >= 1 and not torch.isnan(ais.log_w).any()
    x, e = ula.flat()
    buf = ReplayBuffer(2)
    assert buf.add(torch.cat([x, torch.full((1, 2), 2.0)]), torch.cat([-e, torch.tensor([math.nan])])) == len(x)
    assert torch.isfinite(buf.log_r).all() and len(buf) == len(x)


def test_all_nonfinite_start_raises():
    from diffsampler.errors import NonFiniteError
    with pytest.raises(NonFiniteError, match="initial chain points"):
        MALA().init(target_potential(box_target()), torch.full((4, 2), 2.0))


# ---- RND novelty -----------------------------------------------------------------------------------
def test_rnd_novelty_drops_on_fitted_points_only():
    rnd = RND(2, out_dim=16, hidden=64)
    seen = 0.5 * torch.randn(512, 2)
    far = 0.5 * torch.randn(512, 2) + 8.0
    before_seen, before_far = rnd(seen).mean().item(), rnd(far).mean().item()
    rnd.fit(seen, steps=500, batch_size=128, lr=3e-3)
    after_seen, after_far = rnd(seen).mean().item(), rnd(far).mean().item()
    assert after_seen < 0.1 * before_seen
    assert after_far > 10 * after_seen and after_far > 0.1 * before_far   # unseen points keep most novelty
    x = far[:5].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(rnd(x).sum(), x)
    assert g.shape == (5, 2) and torch.isfinite(g).all() and g.abs().sum() > 0
    clone = RND(2, out_dim=16, hidden=64)
    clone.load_state_dict(rnd.state_dict())
    torch.testing.assert_close(clone(seen), rnd(seen))
    rnd.reset()
    assert rnd(seen).mean().item() > 10 * after_seen


def test_chainstate_where_and_take():
    s = ChainState(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2))
    o = ChainState(torch.ones(3, 2), torch.ones(3), torch.ones(3, 2), torch.ones(3), torch.ones(3, 2))
    w = s.where(torch.tensor([True, False, True]), o)
    assert w.x[:, 0].tolist() == [1, 0, 1] and w.U.tolist() == [1, 0, 1]
    assert w.take(torch.tensor([1, 0, 2])).U.tolist() == [0, 1, 1]


def test_rmp_langevin_is_a_training_searcher():
    """searcher=rmp_langevin runs the randomized-midpoint Langevin kernel in the search phase:
    2 counted energy calls per chain and step (+1 at the start), samples near the target's moments
    (unadjusted: a small step-size bias), and the trainer stores their TRUE rewards."""
    from diffsampler.training.config import TrainConfig
    from diffsampler.training.search_phase import run_search
    m, s = torch.zeros(3), torch.ones(3)
    t = gaussian(m, s)
    cfg = TrainConfig.from_dict({"searcher": "rmp_langevin", "search_chains": 400, "search_steps": 40,
                                 "search_burnin": 40, "search_step_size": 0.2, "search_thin": 40,
                                 "search_friction": 2.0, "search_init_std": 1.0})
    c0 = t.counter.counts["search"]
    res = run_search(cfg, t)
    assert res.info["energy_calls"] == t.counter.counts["search"] - c0 == 400 * (1 + 2 * 80)
    assert res.x.shape == (400, 3) and torch.isfinite(res.x).all()
    assert abs(float(res.x.mean())) < 0.1 and abs(float(res.x.var()) - 1) < 0.15
    with t.counter.use("eval"):
        torch.testing.assert_close(res.energy, t.energy(res.x), rtol=0, atol=1e-10)
