"""The held-out suite's targets (experiments/heldout): log Z, exact samplers, the score check and
torch/jax agreement; the posteriordb posteriors' score checks when a clone is found ($POSTERIORDB)."""
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.heldout import confirmation, synthetic
from experiments.heldout.arrays import (half_normal_lpdf_log, half_student_t_lpdf_log, linear_recurrence,
                                       log_matrix_chain, namespace, student_t_lpdf)
from experiments.heldout.metrics import log_Z_is, moment_errors, psis_khat
from experiments.heldout.models import DATABASE, backend_check, check_target, load_target, posteriordb_root

HAS_JAX = importlib.util.find_spec("jax") is not None
PDB = posteriordb_root(None)
_trapz = getattr(np, "trapezoid", None) or np.trapz      # numpy < 2 has only trapz


def quadrature_log_Z(target, lo, hi, n=1201, funnel=False) -> float:
    """log of the integral of exp(log_density) over the 2-D box [lo, hi]^2 (trapezoid, float64).
    funnel: integrate over (v, z) with x = e^{v/2} z, Jacobian e^{v/2}, so the neck is resolved."""
    g = [np.linspace(lo[i], hi[i], n) for i in range(2)]
    xx = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)
    log_jac = 0.5 * xx[:, 0] if funnel else 0.0
    if funnel:
        xx = np.stack([xx[:, 0], np.exp(0.5 * xx[:, 0]) * xx[:, 1]], 1)
    lp = (log_jac - target.energy(torch.as_tensor(xx, dtype=torch.float64)).numpy()).reshape(n, n)
    m = lp.max()
    return float(m + np.log(_trapz(_trapz(np.exp(lp - m), g[1], axis=1), g[0])))


@pytest.mark.parametrize("make,lo,hi", [
    (lambda: synthetic.banana(), (-60, -400), (60, 30)),
    (lambda: synthetic.funnel(dim=2), (-25, -10), (25, 10)),
    (lambda: synthetic.ill_conditioned_gaussian(dim=2), (-45, -45), (45, 45)),
    (lambda: synthetic.mixture(dim=2), (-12, -12), (12, 12)),
    (lambda: confirmation.student_t(dim=2), (-60, -60), (60, 60)),
])
def test_synthetic_log_Z_by_quadrature(make, lo, hi):
    t = make()
    n = 2401 if t.name == "student_t5" else 1201      # the t peak (sd ~1) on a wide box
    assert quadrature_log_Z(t, lo, hi, n=n, funnel=t.name == "funnel10") == pytest.approx(t.log_Z, abs=2e-3)


def test_gaussian_log_Z_matches_precision_determinant():
    t = synthetic.ill_conditioned_gaussian()
    P = t.data["precision"]
    ev = np.linalg.eigvalsh(P)
    assert ev.max() / ev.min() == pytest.approx(1e4, rel=1e-6)
    assert t.log_Z == pytest.approx(0.5 * t.dim * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(P)[1], abs=1e-9)


def test_exact_samplers_moments():
    b = synthetic.banana().reference                 # Var y1 = s1^2, E y2 = 0, Var y2 = 1 + 2 b^2 s1^4
    assert b[:, 0].var() == pytest.approx(100, rel=0.05) and abs(b[:, 1].mean()) < 0.5
    assert b[:, 1].var() == pytest.approx(201, rel=0.15)
    f = synthetic.funnel().reference                 # v ~ N(0, 9), x_i e^{-v/2} ~ N(0, 1)
    z = f[:, 1:] * np.exp(-0.5 * f[:, :1])
    assert f[:, 0].var() == pytest.approx(9, rel=0.05) and np.abs(z.var(0) - 1).max() < 0.06
    g = synthetic.ill_conditioned_gaussian()
    c = np.cov(g.reference.T)
    white = np.linalg.cholesky(g.data["precision"]).T   # L^T Sigma L = I for P = L L^T
    assert np.abs(white @ c @ white.T - np.eye(g.dim)).max() < 0.06
    m = synthetic.mixture()
    frac = np.bincount(m.mode_labels(m.reference), minlength=2) / len(m.reference)
    assert frac == pytest.approx([0.8, 0.2], abs=0.015)


EXACT = [*synthetic.SYNTHETIC, *confirmation.CONFIRMATION_SYNTHETIC]


@pytest.mark.parametrize("name", EXACT)
def test_exact_moments_match_the_exact_draws(name):
    t = load_target(name)
    mean, sd = t.moments()
    z = (t.reference[:, 0] - mean[0]) / sd[0]         # the first coordinate is light-tailed for all
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    e = moment_errors(t.reference, (mean, sd))
    assert e["mean_err_max"] < 0.1


@pytest.mark.parametrize("name", EXACT)
def test_synthetic_score_check(name):
    c = check_target(load_target(name))
    assert c["finite"] and c["score_z_max"] < 5.0, c["score_z"]


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed (pip install -e .[experiments])")
@pytest.mark.parametrize("name", EXACT)
def test_torch_and_jax_agree(name):
    b = backend_check(load_target(name), n=500)
    assert b["jax_rel_err"] < 1e-6 and b["jax_grad_rel_err"] < 1e-6, b


@pytest.mark.skipif(PDB is None, reason="no posteriordb clone: set POSTERIORDB to a clone of "
                    "github.com/stan-dev/posteriordb")
@pytest.mark.parametrize("name", list(DATABASE))
def test_posteriordb_score_check(name):
    t = load_target(name)
    c = check_target(t)
    assert c["ok"], {k: c[k] for k in ("score_z_max", "score_z", "backend")}


def test_linear_recurrence_matches_loop():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 37, generator=g, dtype=torch.float64), torch.randn(3, 37, generator=g, dtype=torch.float64)
    s, want = torch.zeros(3, dtype=torch.float64), []
    for t in range(37):
        s = a[:, t] * s + b[:, t]
        want.append(s)
    assert torch.allclose(linear_recurrence(a, b, namespace("torch")), torch.stack(want, 1), atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 7, 64, 100])
def test_log_matrix_chain_is_the_forward_algorithm_s_product(T):
    g = torch.Generator().manual_seed(T)
    m = torch.randn(3, T, 2, 2, generator=g, dtype=torch.float64) * 3.0
    want = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    for t in range(T):                      # ordered product of the exponentiated matrices
        want = want @ m[:, t].exp()
    got = log_matrix_chain(m, namespace("torch"))
    assert torch.allclose(got, want.log(), atol=1e-10)


def test_student_t_and_half_densities_integrate_to_one():
    xp = namespace("torch")
    x = torch.linspace(-4000.0, 4000.0, 800_001, dtype=torch.float64)
    assert torch.trapezoid(student_t_lpdf(x, 3.0, 8.0, 10.0, xp).exp(), x).item() == pytest.approx(1.0, abs=1e-4)
    u = torch.linspace(-30.0, 12.0, 400_001, dtype=torch.float64)     # densities of u = log s
    assert torch.trapezoid(half_student_t_lpdf_log(u, 3.0, 10.0, xp).exp(), u).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.trapezoid(half_normal_lpdf_log(u, 2.0, xp).exp(), u).item() == pytest.approx(1.0, abs=1e-6)
    # t_3 at its location: Gamma(2) / (Gamma(3/2) sqrt(3 pi) scale)
    want = math.log(1.0 / (0.5 * math.sqrt(math.pi) * math.sqrt(3 * math.pi) * 10.0))
    assert student_t_lpdf(torch.tensor(8.0, dtype=torch.float64), 3.0, 8.0, 10.0, xp).item() == pytest.approx(want)


def test_importance_figures_on_a_known_case():
    rng = np.random.default_rng(0)
    x = 2.0 * rng.standard_normal((200_000, 1))          # q = N(0, 4), p~ = exp(-x^2 / 2): Z = sqrt(2 pi)
    log_w = -0.5 * x[:, 0] ** 2 - (-0.5 * (x[:, 0] / 2) ** 2 - math.log(2 * math.sqrt(2 * math.pi)))
    lz, se = log_Z_is(log_w)
    assert abs(lz - 0.5 * math.log(2 * math.pi)) < 4 * se and 0 < se < 0.01
    e = moment_errors(x, rng.standard_normal((200_000, 1)), log_w)
    assert e["mean_err_max"] < 0.02 and e["sd_err_max"] < 0.02
    assert moment_errors(x, rng.standard_normal((200_000, 1)))["sd_err_max"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("k", [0.3, 0.9])
def test_suite_khat_is_the_right_tail_of_the_weights(k):
    """w = U^-k has a Pareto right tail of index k (P(w > s) = s^(-1/k)); 1 / w is bounded. The
    suite's k-hat must see the right tail (the one that breaks importance sampling)."""
    draws = [-k * np.log(np.random.default_rng(s).uniform(size=20_000)) for s in range(5)]
    # one estimate on a tail of 3 sqrt(S) = 424 draws has an sd of about (1 + k) / sqrt(424) ~ 0.07
    assert np.mean([psis_khat(lw) for lw in draws]) == pytest.approx(k, abs=0.1)
    assert max(psis_khat(-lw) for lw in draws) < 0.0        # 1 / w: bounded, a negative shape


def test_exact_draw_floor_is_the_sampling_error_of_exact_draws():
    """On a Gaussian the floor's mean error is that of n exact draws: each coordinate's error is
    |N(0, 1/n)| in sd units, so the max over d coordinates has median ~ sqrt(2 log d / n)-ish; on the
    funnel the sd of x_i has relative sampling sd sqrt(3 e^9 / n) ~ 1.1 (heavy tail), so exact draws
    miss the 10% sd goal; the (b)ootstrap floor is used without an exact sampler."""
    from experiments.heldout.metrics import exact_draw_floor
    n = 20_000
    g = synthetic.ill_conditioned_gaussian()
    f = exact_draw_floor(g, n, reps=40)
    z = np.abs(np.random.default_rng(1).standard_normal((100_000, g.dim))).max(1)
    expect = np.median(z) / math.sqrt(n)
    assert f["method"] == "exact" and 0.7 * expect < f["mean_err_median"] < 1.3 * expect
    funnel = exact_draw_floor(synthetic.funnel(), n, reps=40)
    assert funnel["sd_err_median"] > 0.1 and funnel["mean_err_max"] < 0.05
    g.exact_sampler = None
    b = exact_draw_floor(g, n, reps=40)
    assert b["method"] == "bootstrap" and 0.5 * expect < b["mean_err_median"] < 1.5 * expect


def test_goal_column_reads_the_weighted_errors_and_khat():
    from experiments.heldout.report import goal_met
    row = {"status": "ok", "errors_weighted": {"mean_err_max": 0.05, "sd_err_max": 0.09}, "psis_k": 0.5}
    assert goal_met(row) == "yes"
    assert goal_met({**row, "psis_k": 0.75}) == "no"
    assert goal_met({**row, "errors_weighted": {"mean_err_max": 0.11, "sd_err_max": 0.0}}) == "no"
    assert goal_met({"status": "failed"}) == ""


def test_seed_table_gives_each_target_s_median_range_and_goal_count(tmp_path):
    import json

    from experiments.heldout.seeds import aggregate, load_seed_suites, seed_dir, seeds_table

    def row(mean, sd, k):
        return {"sampler": {"status": "ok", "errors_weighted": {"mean_err_max": mean, "sd_err_max": sd},
                            "psis_k": k, "eubo_minus_elbo": 10 * mean}}
    figures = {0: row(0.05, 0.04, 0.3), 1: row(0.30, 0.20, 0.9), 2: row(0.08, 0.06, 0.5)}
    for s, r in figures.items():
        seed_dir(tmp_path, s).mkdir()
        rows = {"a": r, "b": {"sampler": {"status": "failed", "error": "x"}} if s == 1 else row(0.0, 0.0, 0.1)}
        (seed_dir(tmp_path, s) / "suite.json").write_text(json.dumps({"rows": rows}))
    agg = aggregate(load_seed_suites(tmp_path, [0, 1, 2, 3]))     # seed 3 was never run
    a = agg["a"]
    assert a["seeds"] == [0, 1, 2] and a["goal_met"] == [0, 2] and a["failed"] == []
    assert a["weighted mean err"] == {"median": 0.08, "min": 0.05, "max": 0.30, "n": 3}
    assert a["k̂"]["median"] == 0.5
    assert agg["b"]["failed"] == [1] and agg["b"]["k̂"]["n"] == 2
    table = seeds_table(agg)
    assert "| a | 0, 1, 2 | 2 of 3 | 0.08 (0.05–0.30) |" in table
    assert "2 of 3 (1 failed)" in table


def test_draw_sets_score_fresh_draws_of_a_sampler_and_read_the_goal():
    """--draw-sets: an exact sampler (equal weights) meets the goal on every set and draws fresh
    ones each time; a sampler whose draws are 1.5x too wide, with equal weights, misses on the sds."""
    from types import SimpleNamespace

    from experiments.heldout.run_suite import draw_set_figures
    t = synthetic.SYNTHETIC["gauss_illcond"]()
    seen = []

    def sampler(widen):
        def sample(n, steps):
            x = torch.as_tensor(t.exact_sampler(np.random.default_rng(int(torch.randint(1 << 30, ())) ), n))
            mu = torch.as_tensor(t.moments()[0])
            seen.append(x[0])
            return mu + widen * (x - mu), torch.zeros(n, dtype=torch.float64)
        return SimpleNamespace(sampler=SimpleNamespace(sample=sample))
    exact = draw_set_figures(t, sampler(1.0), 3, 5000, 10)
    assert [d["goal_met"] for d in exact] == ["yes"] * 3 and len({float(s[0]) for s in seen}) == 3
    wide = draw_set_figures(t, sampler(1.5), 2, 5000, 10)
    assert [d["goal_met"] for d in wide] == ["no"] * 2
    assert all(d["errors_weighted"]["sd_err_max"] == pytest.approx(0.5, abs=0.05) for d in wide)


def test_hmm_drive_density_sums_over_every_hidden_path():
    """The final set's HMM: the forward algorithm equals the sum over all 2^T state paths of
    prod_t Exp(u_t | phi_z_t) Exp(v_t | lambda_z_t) prod_{t>1} Theta[z_{t-1}, z_t] (no initial term),
    plus the Beta rows, the four normal priors and the log-Jacobians written out by hand."""
    import itertools

    from experiments.heldout.final_set import hmm_drive_log_density
    rng = np.random.default_rng(0)
    T = 6
    data = {"u": rng.exponential(0.5, T), "v": rng.exponential(0.3, T), "alpha": np.array([[4.0, 2.0], [1.5, 3.0]])}
    theta = torch.as_tensor(rng.normal(0.0, 0.7, (3, 6)), dtype=torch.float64)
    got = hmm_drive_log_density(theta, namespace("torch"), data).numpy()
    for b, th in enumerate(theta.numpy()):
        t1, t2 = 1 / (1 + np.exp(-th[0])), 1 / (1 + np.exp(-th[1]))
        P = np.array([[t1, 1 - t1], [t2, 1 - t2]])
        phi = np.array([np.exp(th[2]), np.exp(th[2]) + np.exp(th[3])])
        lam = np.array([np.exp(th[4]), np.exp(th[4]) + np.exp(th[5])])
        emit = phi * np.exp(-np.outer(data["u"], phi)) * lam * np.exp(-np.outer(data["v"], lam))   # (T, 2)
        lik = sum(np.prod(emit[np.arange(T), z]) * np.prod(P[z[:-1], z[1:]])
                  for z in map(np.array, itertools.product([0, 1], repeat=T)))
        beta = sum(math.lgamma(a.sum()) - math.lgamma(a[0]) - math.lgamma(a[1]) + (a[0] - 1) * math.log(p)
                   + (a[1] - 1) * math.log(1 - p) for a, p in zip(data["alpha"], (t1, t2)))
        normals = -0.5 * (phi[0] ** 2 + (phi[1] - 3) ** 2 + lam[0] ** 2 + (lam[1] - 3) ** 2) - 2 * math.log(2 * math.pi)
        jac = math.log(t1 * (1 - t1) * t2 * (1 - t2)) + th[2:].sum()
        assert got[b] == pytest.approx(math.log(lik) + beta + normals + jac, abs=1e-9)
