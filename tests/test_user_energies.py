"""User energies of unknown scale, with a domain and wild tails: the pilot and standardised
coordinates, the non-finite energy policy, bounded rewards."""
import math
import os

import pytest
import torch

import diffsampler as ds
from diffsampler.errors import NonFiniteError
from diffsampler.objectives.bounded import NONFINITE_PENALTY, REWARD_SPAN, bounded_log_reward
from diffsampler.search.pilot import run_pilot
from diffsampler.targets.standardized import StandardizedTarget
from diffsampler.training import load_run

D = 6


def rotated_gaussian(cond: float = 1e4, shift: float = 5.0):
    """N(shift 1, C) with C = Q diag(s^2) Q^T, s from 1 to cond^-1/2 (condition number cond)."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    sd = torch.logspace(0, -0.5 * math.log10(cond), D, dtype=torch.float64)
    C = Q @ torch.diag(sd ** 2) @ Q.T
    P, L, mu = torch.linalg.inv(C), torch.linalg.cholesky(C), torch.full((D,), shift, dtype=torch.float64)

    def energy(x):
        z = x - mu.to(x)
        return 0.5 * ((z @ P.to(x)) * z).sum(-1)
    log_z = 0.5 * D * math.log(2 * math.pi) + float(torch.log(torch.diagonal(L)).sum())
    ref = (mu + torch.randn(20000, D, dtype=torch.float64, generator=g) @ L.T).numpy()
    return ds.targets.from_energy(energy, dim=D, log_Z=log_z, samples=ref, name="rotated"), mu, C


def test_bounded_rewards_keep_the_batch_and_bound_the_tails():
    lr = torch.tensor([-1.0, -3.0, -2.0], requires_grad=True)
    out = bounded_log_reward(lr)
    assert torch.equal(out, lr.detach())                       # within the span: bit for bit
    out.sum().backward()
    assert torch.equal(lr.grad, torch.ones(3))
    far = torch.tensor([-1.0, -1e26, -torch.inf, torch.nan], dtype=torch.float64, requires_grad=True)
    b = bounded_log_reward(far)
    floor = -1.0 - REWARD_SPAN
    assert b[0] == -1.0 and float(b[1]) == pytest.approx(floor - math.log1p(1e26 - 1 - REWARD_SPAN))
    assert b[2] == b[3] == floor - NONFINITE_PENALTY
    (b ** 2).sum().backward()                                  # the squared TB-like loss stays finite
    assert torch.isfinite(far.grad).all() and far.grad[2] == far.grad[3] == 0


def test_reject_policy_turns_bad_rows_into_zero_density_without_poisoning_the_others():
    t = ds.targets.from_energy(lambda x: 0.5 * (x ** 2).sum(-1) - torch.log(x[:, 0]), dim=2, sigma=1.0)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.5, -1.0]], requires_grad=True)
    e = t.energy(x, check_finite=None)
    assert torch.isinf(e[1]) and torch.isfinite(e[[0, 2]]).all()
    e[[0, 2]].sum().backward()                                 # the good rows' gradients are clean
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[1], torch.zeros(2))
    log_r, score = t.log_reward_and_score(x.detach())
    assert log_r[1] == -math.inf and torch.equal(score[1], torch.zeros(2))
    assert torch.allclose(score[0], torch.tensor([-1.0 + 1.0, -2.0]))      # -(x - 1/x0, x1)
    assert t.counter.nonfinite["train"] >= 2 and t.counter.counts["train"] >= 6
    t.nonfinite = "error"
    with pytest.raises(NonFiniteError):
        t.log_reward_and_score(x.detach())


def test_standardized_view_keeps_log_z_and_maps_energy_gradient_and_samples():
    t, mu, C = rotated_gaussian()
    L = torch.linalg.cholesky(C)
    v = StandardizedTarget(t, mu, L)
    z = torch.randn(64, D, dtype=torch.float64)
    e = v.energy(z)
    assert torch.allclose(e, 0.5 * (z ** 2).sum(-1) - float(torch.log(torch.diagonal(L)).sum()), atol=1e-9)
    _, score = v.log_reward_and_score(z)
    assert torch.allclose(score, -z, atol=1e-8)
    assert torch.allclose(v.from_user(v.to_user(z)), z, atol=1e-10)
    assert v.counter is t.counter and v.log_Z == t.log_Z and v.sample(5).shape == (5, D)
    # E_z = E(m + L z) - log|det L| makes Z_z = Z: a standard Gaussian in z has log Z = d/2 log 2 pi
    assert v.log_Z - float(torch.log(torch.diagonal(L)).sum()) == pytest.approx(0.5 * D * math.log(2 * math.pi))


def test_pilot_finds_location_and_scales_of_a_shifted_ill_conditioned_gaussian():
    t, mu, C = rotated_gaussian()
    torch.manual_seed(0)
    res = run_pilot(t, chains=64, steps=400, stages=4, temperature=2.0)
    assert res.energy_calls == t.counter.counts["search"] and res.dense
    S = res.chol @ res.chol.T
    white = torch.linalg.solve_triangular(res.chol, torch.linalg.cholesky(C), upper=False)
    eig = torch.linalg.eigvalsh(white @ white.T)   # C in the pilot's coordinates: I / 2 (it samples exp(-E/2))
    assert (res.loc - mu).norm() < 0.1 and eig.min() > 0.25 and eig.max() < 1.0, (eig, S)
    assert abs(float(eig.mean()) - 0.5) < 0.15
    cold = run_pilot(t, chains=64, steps=400, stages=4, temperature=1.0)
    white = torch.linalg.solve_triangular(cold.chol, torch.linalg.cholesky(C), upper=False)
    eig = torch.linalg.eigvalsh(white @ white.T)   # at the target's own temperature: ~ I
    assert eig.min() > 0.5 and eig.max() < 2.0, eig


def test_the_default_pilot_finds_the_target_s_covariance_whatever_its_seed():
    """The default pilot (128 chains x 4,000 MALA steps in 8 stages, at the target's temperature,
    margin m) ends with coordinates whose covariance is m^2 C for every seed: C whitened by them has
    eigenvalues 1 / m^2 within 20%, and the location is within 0.05 of the largest sd (condition
    number 1e4, rotated)."""
    t, mu, C = rotated_gaussian()
    m = 1.5
    for seed in range(2):
        torch.manual_seed(seed)
        before = t.counter.counts["search"]
        res = run_pilot(t, margin=m)
        white = torch.linalg.solve_triangular(res.chol, torch.linalg.cholesky(C), upper=False)
        eig = torch.linalg.eigvalsh(white @ white.T) * m ** 2
        assert eig.min() > 0.8 and eig.max() < 1.25, (seed, eig)
        assert (res.loc - mu).norm() < 0.05 * C.diagonal().max().sqrt(), seed
        assert res.energy_calls == t.counter.counts["search"] - before and res.energy_calls > 128 * 4000


def test_the_pilot_takes_at_most_a_tenth_of_an_energy_budget():
    from diffsampler.training import TrainConfig
    from diffsampler.training.budget import fixed_calls, pilot_steps
    cfg = TrainConfig.from_dict({})
    assert pilot_steps(cfg) == cfg.pilot_steps == 4000
    small = TrainConfig.from_dict({"max_energy_calls": 2_000_000, "iterations": None, "searcher": "none"})
    assert pilot_steps(small) == 2_000_000 // 10 // small.pilot_chains
    assert fixed_calls(small, pilot=True) == small.pilot_chains * pilot_steps(small) <= 200_000
    tiny = TrainConfig.from_dict({"max_energy_calls": 400_000, "iterations": None, "searcher": "none"})
    assert pilot_steps(tiny) == 400      # never below the pilot's old length


def test_the_pilot_counts_against_max_seconds_and_stops_its_stages_early_under_it():
    """An energy that sleeps 10 ms a call: a pilot stage of 100 MALA steps takes >= 1 s, so under a 3 s
    budget (a third of it, 1 s, for the pilot) the pilot runs its minimum of three stages and stops,
    and the run's train_seconds, which max_seconds bounds, include the pilot's."""
    import time

    from diffsampler.search.pilot import MIN_TIMED_STAGES

    def energy(x):
        time.sleep(0.01)
        return 0.5 * (x * x).sum(-1)
    t = ds.targets.from_energy(energy, dim=2, name="slow")
    res = run_pilot(t, chains=8, steps=800, stages=8, max_seconds=1.0).summary()
    stop = res["stages"][-1]
    assert stop == {"stage": "stopped", "reason": "max_seconds", "stages_run": MIN_TIMED_STAGES}
    assert res["seconds"] >= MIN_TIMED_STAGES * 1.0
    full = run_pilot(t, chains=8, steps=160, stages=8).summary()        # no budget: every stage runs
    assert [s["stage"] for s in full["stages"][1:]] == list(range(1, 9))
    run = ds.train(t, dict(recipe="tb", iterations=10_000, pilot="on", pilot_chains=8, pilot_steps=800,
                           searcher="none", batch_size=8, eval_samples=50, eval_steps=5, threads=1),
                   max_seconds=3.0, progress=False)
    rep = run.report
    assert rep["pilot"]["stages"][-1]["stages_run"] == MIN_TIMED_STAGES
    assert rep["stop_reason"] == "max_seconds" and rep["train_seconds"] >= rep["pilot"]["seconds"] >= 3.0
    assert rep["iterations"] < 10_000


def banana(b: float = 0.1, s1: float = 10.0):
    """Haario et al.'s twisted Gaussian: y1 ~ N(0, s1^2), y2 + b (y1^2 - s1^2) ~ N(0, 1) (log Z exact)."""
    def energy(x):
        y1, y2 = x[..., 0], x[..., 1]
        return 0.5 * (y1 / s1) ** 2 + 0.5 * (y2 + b * (y1 ** 2 - s1 ** 2)) ** 2
    return ds.targets.from_energy(energy, dim=2, log_Z=math.log(2 * math.pi * s1), name="banana")


def test_a_pilot_whose_scales_still_grow_is_reported_and_a_settled_one_is_not():
    """On the banana the pilot's MALA chains crawl along the curved arms: over its last two stages the
    scales still grow (y1's sd is 10, y2's 14: the pilot ends far below, at T = 2 below sqrt(2) times
    those), and the report says so; on a Gaussian they settle and nothing is said."""
    from diffsampler.search.pilot import SCALE_GROWTH_WARNING, pilot_warning, scale_growth

    torch.manual_seed(0)
    curved = run_pilot(banana(), chains=64, steps=400, stages=4, temperature=2.0).summary()
    assert curved["scale_max"] < 10 * math.sqrt(2) / 1.5 and scale_growth(curved["stages"]) > SCALE_GROWTH_WARNING
    assert "still growing" in pilot_warning(curved)
    t, _, _ = rotated_gaussian()
    settled = run_pilot(t, chains=64, steps=400, stages=4, temperature=2.0).summary()
    assert abs(scale_growth(settled["stages"]) - 1) < 0.1 and pilot_warning(settled) is None
    assert pilot_warning(None) is None and pilot_warning({"stages": settled["stages"][:3]}) is None


def test_pilot_chains_stuck_in_a_wild_tail_are_left_out_and_restarted():
    """E = |x|^2 / 2 + exp(8 (x_1 - 3)): at x_1 = 8 the energy is ~1e17 and its gradient so steep
    that every MALA proposal is rejected. Six of 128 chains started there stay stuck, and with their
    states in the covariance the coordinates' largest scale would be ~2 instead of 1; the stage
    counts them, leaves them out and restarts them from the others, so the pilot's scales are the
    target's (1, within sampling error) and no chain ends in the tail."""
    from diffsampler.search.pilot import mala_stages

    t = ds.targets.from_energy(lambda x: 0.5 * (x ** 2).sum(-1) + torch.exp(8.0 * (x[:, 0] - 3.0)), dim=2,
                               name="wild_tail")
    torch.manual_seed(0)
    x = torch.randn(128, 2, dtype=torch.float64)
    x[:6] = torch.tensor([8.0, 0.0], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    loc, chol, _, _, _, history, x_end = mala_stages(t, x, torch.zeros(2, dtype=torch.float64), eye, 800, 4)
    assert history[0]["stuck"] == 6 and all("stuck" not in h for h in history[1:])
    scales = torch.linalg.eigvalsh(chol @ chol.T).sqrt()
    assert 0.8 < scales.min() and scales.max() < 1.2 and loc.abs().max() < 0.2
    assert x_end[:, 0].max() < 5.0


def uncentred_regression():
    """y_n ~ N(a + b x_n, sigma) on the years x = 1952..2013, flat priors, theta = (a, b, log sigma):
    the intercept-slope correlation is -0.99999 and the covariance's condition number ~1e12 (the
    Kilpisjarvi posterior of posteriordb has this shape). Returns the target and its exact Hessian at
    the least-squares fit."""
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1952.0, 2014.0, dtype=torch.float64)
    y = 9.0 + 0.02 * (x - 1980.0) + 1.1 * torch.randn(x.shape[0], generator=g, dtype=torch.float64)

    def energy(t):
        r = y - t[:, :1] - t[:, 1:2] * x
        return x.shape[0] * t[:, 2] + 0.5 * (r * r).sum(1) * torch.exp(-2.0 * t[:, 2])
    X = torch.stack([torch.ones_like(x), x], 1)
    beta = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    u = 0.5 * torch.log(((y - X @ beta) ** 2).mean())
    mode = torch.cat([beta, u[None]])
    H = torch.autograd.functional.hessian(lambda t: energy(t[None])[0], mode)
    return ds.targets.from_energy(energy, dim=3, name="uncentred_regression"), mode, H


def test_careful_differences_find_the_hessian_of_a_badly_conditioned_posterior():
    """Forward differences at the mode miss the smallest eigenvalue of H (~4e-3, against ~2e8) by
    about half (on posteriordb's Kilpisjarvi posterior, at its mean, they make it negative); central
    ones give every eigenvalue within 1%."""
    from diffsampler.search.pilot import energy_and_grad, hessian

    t, mode, H = uncentred_regression()
    exact = torch.linalg.eigvalsh(H)
    _, g = energy_and_grad(t, mode[None])
    forward = torch.linalg.eigvalsh(hessian(t, mode[None], g, True)[0])
    central = torch.linalg.eigvalsh(hessian(t, mode[None], g, True, central=True)[0])
    assert exact[-1] / exact[0] > 1e10 and abs(forward[0] / exact[0] - 1) > 0.2
    assert torch.allclose(central, exact, rtol=1e-2)


def test_the_pilot_keeps_a_direction_narrower_than_its_covariance_floor():
    """On the uncentred regression the thinnest direction has sd ~4e-5, below the floor that Stan's
    regularisation adds at 32,000 draws (sd 4e-4): the pilot's covariance, shrunk towards its own
    diagonal there, matches the posterior's (eigenvalues of Sigma in the pilot's coordinates within
    25% of 1)."""
    t, mode, H = uncentred_regression()
    torch.manual_seed(0)
    res = run_pilot(t, chains=128, steps=800, stages=4)
    assert res.stages[0]["found"] > 0
    Linv = torch.linalg.inv(res.chol)
    ev = torch.linalg.eigvalsh(Linv @ torch.linalg.inv(H) @ Linv.T)
    assert 0.75 < ev.min() and ev.max() < 1.25, ev


def test_a_widened_pilot_scales_its_coordinates_by_the_growth_it_measured():
    """pilot_widen: the same chains (same seed), the factor L multiplied by the scale growth of the
    last two stages where that exceeds 1 (the banana's short pilot), untouched where the scales
    settled (a Gaussian: growth ~1 either side, so at most a rounding-sized widening)."""
    from diffsampler.search.pilot import scale_growth

    kw = dict(chains=64, steps=400, stages=4, temperature=2.0)
    torch.manual_seed(0)
    plain = run_pilot(banana(), **kw)
    torch.manual_seed(0)
    wide = run_pilot(banana(), widen=True, **kw)
    growth = scale_growth(plain.stages)
    assert growth > 1.25 and wide.stages[-1] == {"stage": "widen", "factor": growth}
    assert torch.allclose(wide.chol, growth * plain.chol) and torch.equal(wide.loc, plain.loc)
    assert scale_growth(wide.stages) == growth          # the warning still reads the chains' own growth
    t, _, _ = rotated_gaussian()
    torch.manual_seed(0)
    settled = run_pilot(t, widen=True, **kw)
    g = scale_growth(settled.stages)
    assert g < 1.1 and (settled.stages[-1].get("stage") == "widen") == (g > 1.0)


def test_a_user_energy_without_scale_trains_in_pilot_coordinates_and_samples_in_its_own(tmp_path):
    t, mu, C = rotated_gaussian()
    run = ds.train(t, dict(recipe="sgds_jeffreys", iterations=60, batch_size=64, width=32, searcher="mala",
                           search_chains=128, search_steps=50, eval_samples=1000, eval_steps=30, time_warp=2.0,
                           threads=1), out=str(tmp_path / "r"), progress=False)
    rep = run.report
    assert rep["pilot"]["energy_calls"] > 0 and rep["pilot"]["scale_min"] < 0.03 < 0.5 < rep["pilot"]["scale_max"]
    assert rep["eubo_minus_elbo"] < 1.0 and rep["ess"] > 0.3     # an ill-conditioned target made easy
    x, _ = run.sampler.sample(4000, steps=30)
    assert torch.allclose(x.mean(0).double(), mu, atol=0.1)      # samples come back in x, not z
    again = load_run(str(tmp_path / "r"), target=t)
    assert isinstance(again.sampler.target, StandardizedTarget)
    assert torch.allclose(again.sampler.target.loc, run.sampler.target.loc)
    off = ds.train(t, dict(recipe="tb", iterations=2, pilot="off", eval_samples=50, eval_steps=5), progress=False)
    assert off.report["pilot"] is None and not isinstance(off.sampler.target, StandardizedTarget)


def test_training_survives_nan_regions_and_astronomical_tails():
    """A density on x0 > 0 only (NaN outside) and a Poisson log-link likelihood whose energy reaches
    ~1e26 and overflows float32 in the tails: the default policy trains through both, counts the
    non-finite energies and bounds the loss; nonfinite_energy=error stops at the first one."""
    g = torch.Generator().manual_seed(1)
    X, beta = torch.randn(40, 4, generator=g), torch.tensor([0.3, -0.2, 0.5, 0.1])
    y = torch.poisson(torch.exp(0.5 + X @ beta), generator=g)

    def poisson_glm(th):
        eta = th[:, :1] + th[:, 1:] @ X.to(th).T
        return -((y.to(th) * eta - torch.exp(eta)).sum(-1) - 0.125 * (th ** 2).sum(-1))

    def half_space(x):
        return 0.5 * (x ** 2).sum(-1) - 2.0 * torch.log(x[:, 0])

    keys = dict(iterations=80, batch_size=64, width=32, eval_samples=500, eval_steps=20, threads=1,
                search_chains=128, search_steps=30, recipe="sgds_jeffreys", searcher="mala")
    for fn, dim in [(poisson_glm, 5), (half_space, 3)]:
        t = ds.targets.from_energy(fn, dim=dim, sigma=3.0, name=fn.__name__)   # a broad start: tails reached
        run = ds.train(t, dict(keys, pilot="off"), progress=False)
        rep = run.report
        assert rep["iterations"] == 80 and rep["elbo"] is not None and math.isfinite(rep["elbo"])
        assert sum(rep["nonfinite_energy"].values()) > 0
    t = ds.targets.from_energy(half_space, dim=3, sigma=3.0)
    with pytest.raises(ds.errors.DiffSamplerError):
        ds.train(t, dict(keys, pilot="off", nonfinite_energy="error"), progress=False)


def test_stiffness_is_the_largest_hessian_eigenvalue_and_costs_its_stated_calls():
    """On E = sum_i x_i^2 / (2 s_i^2) the Hessian is diag(1 / s^2): power iteration from finite
    differences of the gradient gives max 1 / s_i^2 = 100 at every point, with (iterations + 1) P calls."""
    from diffsampler.search.pilot import stiffness

    s = torch.tensor([1.0, 1.0, 0.5, 0.1, 1.0, 0.7], dtype=torch.float64)
    t = ds.targets.from_energy(lambda x: 0.5 * ((x / s.to(x)) ** 2).sum(-1), dim=D)
    torch.manual_seed(0)
    z = 3 * torch.randn(16, D, dtype=torch.float64)
    assert stiffness(t, z, iterations=12) == pytest.approx(100.0, rel=1e-4)
    assert t.counter.total == 13 * 16
    assert math.isnan(stiffness(t, z[:0]))


def test_the_pilot_sizes_the_training_grid_to_the_stiffness_it_measured():
    """N = ceil((c sigma sqrt(kappa))^(2 / w)) between train_steps and PILOT_GRID_MAX_STEPS; a budget
    keeps its promise with the dearer grid (the iterations shrink to fit)."""
    from diffsampler.training.budget import calls_per_iteration, fixed_calls
    from diffsampler.training.pilot_phase import PILOT_GRID_MAX_STEPS, pilot_train_steps, refine_grid

    cfg = ds.TrainConfig.from_dict({"recipe": "sgds", "time_warp": 2.0, "pilot_grid": 3.0})
    assert pilot_train_steps(cfg, {"curvature": 49.0}) == 21             # 3 * 7
    assert pilot_train_steps(cfg, {"curvature": 4.0}) == cfg.train_steps == 10   # 6 < 10: kept
    assert pilot_train_steps(cfg, {"curvature": 1e4}) == PILOT_GRID_MAX_STEPS
    assert pilot_train_steps(cfg, {"curvature": float("nan")}) == pilot_train_steps(cfg, None) == 10
    assert pilot_train_steps(cfg.replace(time_warp=1.0), {"curvature": 2.0}) == 18   # (3 sqrt 2)^2
    assert pilot_train_steps(cfg.replace(pilot_grid=0.0), {"curvature": 49.0}) == 10
    budget = cfg.replace(max_energy_calls=20_000_000, iterations=None, pilot="on")
    fine = refine_grid(budget, {"curvature": 49.0})
    assert fine.train_steps == 21 and fine.iterations < budget.iterations
    assert fixed_calls(fine, pilot=True) + fine.iterations * calls_per_iteration(fine) <= 20_000_000
    assert refine_grid(budget, {"curvature": 4.0}) is budget


def test_the_grid_coarsens_until_the_budget_affords_enough_iterations():
    """A finer grid costs an energy call per row and step: on an expensive energy (the pilot measured
    0.33 ms a call, as on a 416-step HMM forward algorithm) a 300 s budget affords ~40 iterations of the
    26-step grid that the stiffness asks for, so the grid falls back to train_steps; at 7 us a call (a
    banana) the same budget affords thousands and the fine grid stays. A call budget binds the same way."""
    from diffsampler.training.budget import calls_per_iteration, fixed_calls, search_calls_per_round
    from diffsampler.training.pilot_phase import MIN_AFFORDED_ITERATIONS, afforded_iterations, pilot_train_steps

    cfg = ds.TrainConfig.from_dict({"recipe": "sgds", "time_warp": 2.0, "pilot_grid": 3.0, "max_seconds": 300,
                                    "pilot": "on"})
    dear = {"curvature": 72.0, "seconds": 87.5, "energy_calls": 264_000}
    cheap = {**dear, "seconds": 1.9}
    assert pilot_train_steps(cfg.replace(max_seconds=None), dear) == 26               # ceil((3 sqrt 72)^1)
    left = (300 - 87.5) / (87.5 / 264_000) - search_calls_per_round(cfg)
    assert afforded_iterations(cfg, 26, dear) == pytest.approx(left / calls_per_iteration(cfg.replace(train_steps=26)))
    assert afforded_iterations(cfg, 26, dear) < MIN_AFFORDED_ITERATIONS
    assert pilot_train_steps(cfg, dear) == cfg.train_steps == 10
    assert afforded_iterations(cfg, 26, cheap) > MIN_AFFORDED_ITERATIONS
    assert pilot_train_steps(cfg, cheap) == 26
    # a call budget: the finest grid whose iterations after the pilot and the searches reach the floor
    calls = cfg.replace(max_seconds=None, max_energy_calls=fixed_calls(cfg, pilot=True) + 6_000_000, iterations=None)
    steps = pilot_train_steps(calls, cheap)
    assert 10 < steps < 26
    assert afforded_iterations(calls, steps, cheap) >= MIN_AFFORDED_ITERATIONS > afforded_iterations(calls, steps + 1, cheap)


def test_a_stiff_user_energy_trains_on_a_finer_grid_and_says_so(tmp_path):
    """A narrow banana (ridge sd 0.05 against an arm of sd 3): the pilot measures a stiffness far
    above a standard Gaussian's, and the run trains (and records in config.json and the report) a
    grid of more than the default 10 steps."""
    def energy(x):
        return 0.5 * (x[..., 0] / 3) ** 2 + 0.5 * ((x[..., 1] - 0.3 * x[..., 0] ** 2) / 0.05) ** 2
    t = ds.targets.from_energy(energy, dim=2, log_Z=math.log(2 * math.pi * 3 * 0.05), name="ridge")
    run = ds.train(t, dict(recipe="sgds", iterations=4, batch_size=16, width=16, search_chains=32, search_steps=20,
                           search_burnin=10, eval_samples=200, eval_steps=20, threads=1),
                   out=str(tmp_path / "r"), progress=False)
    assert run.report["pilot"]["curvature"] > 20 and run.config.train_steps > 10
    assert run.report["train_steps"] == run.config.train_steps
    import json
    assert json.load(open(tmp_path / "r" / "config.json"))["train_steps"] == run.config.train_steps


def test_the_search_drops_states_of_chains_stuck_far_in_a_tail_and_keeps_the_target_s_own():
    """Energies of exact draws of a d-dim standard normal (E = |x|^2 / 2 ~ Gamma(d / 2)) plus 5% of
    states at E = 1e4 (chains stuck in a funnel's tail): the robust cut (median + 30 x 1.4826 MAD)
    drops exactly the stuck ones, keeps every exact draw, and counts them; 0 keeps all."""
    from diffsampler.search import SearchResult
    from diffsampler.training.search_phase import drop_far_samples, energy_cutoff

    torch.manual_seed(0)
    for d in (2, 10, 100):
        x = torch.randn(20000, d, dtype=torch.float64)
        e = torch.cat([0.5 * (x ** 2).sum(1), torch.full((1000,), 1e4, dtype=torch.float64)])
        xs = torch.cat([x, torch.full((1000, d), 50.0, dtype=torch.float64)])
        res = drop_far_samples(SearchResult(xs, e, None, {}), 30.0)
        assert res.info["dropped_far"] == 1000 and res.x.shape[0] == 20000 and float(res.energy.max()) < 1e4
        assert energy_cutoff(e, 30.0) > float(0.5 * (x ** 2).sum(1).max())
        kept = drop_far_samples(SearchResult(xs, e, None, {}), 0.0)
        assert kept.info["dropped_far"] == 0 and kept.x.shape[0] == 21000
    assert energy_cutoff(torch.ones(10), 30.0) == math.inf   # no spread: nothing to judge by


def test_the_default_buffer_keeps_both_rounds_searches_and_a_full_rank_buffer_evicts_the_tail(tmp_path):
    """A user energy's default buffer holds every state of both rounds' searches; a rank buffer that
    is too small for them evicts its highest energies (the tail of the target) and the run's search
    row says how many."""
    from diffsampler.search import ReplayBuffer
    from diffsampler.training import TrainConfig
    from diffsampler.training.defaults import default_keys

    target, _, _ = rotated_gaussian(cond=10.0)
    cfg = TrainConfig.from_dict(default_keys(target))
    assert cfg.rounds == 2
    assert cfg.buffer_size >= cfg.rounds * cfg.search_chains * (cfg.search_steps // cfg.search_thin)

    torch.manual_seed(0)
    x = torch.randn(2000, 3, dtype=torch.float64)
    e = 0.5 * (x ** 2).sum(1)
    buf = ReplayBuffer(3, capacity=1500, priority="rank")
    buf.add(x[:1000], -e[:1000])
    assert buf.last_evicted == 0
    buf.add(x[1000:], -e[1000:])
    assert buf.last_evicted == 500 and len(buf) == 1500
    assert float(-buf.log_r.min()) <= float(torch.quantile(e, 0.75)) + 1e-12   # the top quarter of E is gone

    run = ds.train(target, dict(recipe="sgds", search_chains=20, search_burnin=5, search_steps=20, search_thin=2,
                                buffer_size=300, iterations=4, batch_size=16, width=16, eval_samples=50,
                                eval_steps=5, pilot="off", sigma=1.0), out=str(tmp_path / "run"), progress=False)
    import json
    lines = [json.loads(s) for s in open(os.path.join(run.dir, "metrics.jsonl"))]
    assert [r["search"]["evicted"] for r in lines if "search" in r] == [0, 100]
