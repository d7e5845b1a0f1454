"""Particle systems: symmetric energies, the mean-free reference, EGNN equivariance, orbit targets,
particle metrics."""
import math

import numpy as np
import pytest
import torch

import diffsampler as ds
from diffsampler.evaluation import (equivariant_w2, interatomic_distances, particle_metrics,
                                    plot_particle_histograms, wasserstein_1d)
from diffsampler.nets import EGNNDrift, EGNNFeatures
from diffsampler.objectives import (OrbitMaximumLikelihood, apply_group, augment, orbit_ml_loss, orbit_target,
                                    sample_permutations, sample_rotations)
from diffsampler.objectives.orbit import random_group_elements
from diffsampler.sde import MeanFreePinnedBrownian, make_grid
from diffsampler.targets import LennardJones, MeanFreeGaussian, ParticleSymmetry
from diffsampler.targets.particles import LJ_SOFT_CORE


pytestmark = pytest.mark.usefixtures("float64")


def needs_data(name):
    t = ds.targets.get(name)
    if not t.has_samples:
        pytest.skip(f"reference samples for {name} ({t.data_filename}) not found in $DIFFSAMPLER_DATA, "
                    f"<repo>/../shared/data or ~/.cache/diffsampler/data")
    return t


def random_g(x, sym, reflect=False):
    """One random element of O(D) x S_n (reflection optional) applied per row."""
    R, P = random_group_elements(x.shape[0], 1, sym, dtype=x.dtype, identity_first=False)
    R = R[:, 0]
    if reflect:
        R = R * torch.tensor([-1.0] + [1.0] * (sym.spatial_dim - 1))[None, None, :]
    return R, P[:, 0]


def lj_reference_formula(x, n, pairs_counted):
    """LJ energy written out independently (no guard): pair sum + harmonic centring term."""
    v = x.view(x.shape[0], n, 3)
    r = torch.cdist(v, v)
    iu = torch.triu_indices(n, n, 1)
    r = r[:, iu[0], iu[1]]
    lj = (r ** -12 - 2 * r ** -6).sum(-1) * pairs_counted
    return lj + 0.5 * ((v - v.mean(1, keepdim=True)) ** 2).sum((1, 2))


# -- energies -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dw4", "lj13", "lj13_bgflow", "lj55"])
def test_energy_invariant_under_rotations_translations_permutations(name):
    torch.manual_seed(1)
    t = ds.targets.get(name)
    n, D = t.n_particles, t.spatial_dim
    # well-separated random configurations (a jittered cubic / square lattice)
    side = math.ceil(n ** (1 / D))
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * D, indexing="ij"), -1).reshape(-1, D)[:n]
    spacing = 4.0 if name == "dw4" else 1.1
    x = (spacing * grid[None] + 0.15 * spacing * torch.randn(64, n, D)).reshape(64, n * D)
    e = t.energy(x)
    for reflect in (False, True):
        R, P = random_g(x, t.symmetry, reflect)
        gx = apply_group(x, R, P, t.symmetry) + torch.randn(64, 1, D).expand(64, n, D).reshape(64, -1) * 3
        torch.testing.assert_close(t.energy(gx), e, rtol=1e-5, atol=0)


def test_dw4_energy_on_hand_computed_configuration():
    # particles on a line at 0, 1, 2, 3: distances 1,1,1,2,2,3, u = d - 4 = -3,-3,-3,-2,-2,-1;
    # 0.9 u^4 - 4 u^2 = 36.9 (u=-3), -1.6 (u=-2), -3.1 (u=-1)  => E = 3*36.9 - 2*1.6 - 3.1 = 104.4
    t = ds.targets.get("dw4")
    x = torch.tensor([[0.0, 0, 1, 0, 2, 0, 3, 0]])
    torch.testing.assert_close(t.energy(x), torch.tensor([104.4]), rtol=1e-12, atol=1e-12)
    # square of side 4: sides at d0 contribute 0; diagonals u = 4 sqrt2 - 4
    u = 4 * math.sqrt(2) - 4
    sq = torch.tensor([[0.0, 0, 4, 0, 0, 4, 4, 4]])
    torch.testing.assert_close(t.energy(sq), torch.tensor([2 * (0.9 * u ** 4 - 4 * u ** 2)]))


def test_virial_identity_on_lj13_reference_samples():
    # E_p[x . grad E] = (n-1) D = 36 for the energy the samples were drawn from (pairs counted twice)
    t = needs_data("lj13")
    bg = ds.targets.get("lj13_bgflow")
    x = t.reference_samples().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t.energy(x).sum(), x)
    (g_bg,) = torch.autograd.grad(bg.energy(x).sum(), x)
    v, v_bg = (x * g).sum(1).detach(), (x * g_bg).sum(1).detach()
    se, se_bg = v.std() / len(v) ** 0.5, v_bg.std() / len(v) ** 0.5
    assert abs(v.mean() - 36.0) < 3 * se and se < 1.0, (v.mean(), se)
    # pairs counted once: x.grad E_once = (x.grad E_twice + ||x||^2) / 2 exactly; mean ~ 27, far from 36
    torch.testing.assert_close(v_bg, 0.5 * (v + (x.detach() ** 2).sum(1)))
    assert abs(v_bg.mean() - 27.0) < 3 * se_bg, (v_bg.mean(), se_bg)
    assert v_bg.mean() < 36.0 - 10 * se_bg


def test_soft_core_guard():
    t = ds.targets.get("lj13")
    # coincident particles (all at the origin, and a pair on top of each other): finite E and grad
    x = torch.zeros(2, 39)
    x[1] = LennardJones(13).reference_samples()[0] if t.has_samples else torch.randn(39)
    x[1, 3:6] = x[1, 0:3]
    x.requires_grad_(True)
    e = t.energy(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(e).all() and torch.isfinite(g).all()
    assert e[0] < 1e6  # 156 ordered pairs * ~820 (module docstring)
    # the continuation is C^1 at r_c: value and slope of the guarded pair energy match v
    r = torch.tensor([LJ_SOFT_CORE - 1e-7, LJ_SOFT_CORE + 1e-7], requires_grad=True)
    vg = t.guarded_pair_energy(r)
    (dg,) = torch.autograd.grad(vg.sum(), r)
    torch.testing.assert_close(vg[0], vg[1], atol=1e-3, rtol=0)
    torch.testing.assert_close(dg[0], dg[1], rtol=1e-5, atol=0)
    # below r_c it is linear and far above anything physical: v(0.7) = 55.25
    assert float(t.guarded_pair_energy(torch.tensor(LJ_SOFT_CORE))) == pytest.approx(55.25, abs=0.01)
    # DW-4 at coincidence
    d = ds.targets.get("dw4")
    z = torch.zeros(1, 8, requires_grad=True)
    (gz,) = torch.autograd.grad(d.energy(z).sum(), z)
    assert torch.isfinite(gz).all()


def test_soft_core_leaves_reference_energies_unchanged():
    t = needs_data("lj13")
    x = t.reference_samples()
    assert float(t.interatomic_distances(x).min()) > LJ_SOFT_CORE
    for pc, name in ((2, "lj13"), (1, "lj13_bgflow")):
        e = ds.targets.get(name).energy(x)
        torch.testing.assert_close(e, lj_reference_formula(x, 13, pc), rtol=1e-12, atol=1e-10)


def test_data_location_and_missing_data(tmp_path, monkeypatch):
    lj55 = ds.targets.get("lj55")
    if not lj55.has_samples:
        with pytest.raises(NotImplementedError):
            lj55.sample(3)
    # $DIFFSAMPLER_DATA wins; DW-4 files are not centred, the target centres them on load
    raw = np.random.default_rng(0).normal(5.0, 2.0, size=(50, 8))
    np.save(tmp_path / "dw4_dem_val.npy", raw)
    monkeypatch.setenv("DIFFSAMPLER_DATA", str(tmp_path))
    t = ds.targets.get("dw4")
    assert t.data_path == tmp_path / "dw4_dem_val.npy"
    x = t.reference_samples()
    assert x.shape == (50, 8)
    torch.testing.assert_close(x.view(50, 4, 2).mean(1), torch.zeros(50, 2), atol=1e-12, rtol=0)
    torch.testing.assert_close(t.interatomic_distances(x),
                               interatomic_distances(torch.as_tensor(raw), 4, 2))


def test_reference_samples_given_in_memory_are_centred_checked_and_named():
    t = ds.targets.get("lj55")
    raw = torch.as_tensor(np.random.default_rng(1).normal(3.0, 1.0, size=(20, 165)))
    t.use_reference_samples(raw, source="our_mcmc.npy")
    assert t.has_samples and t.info()["reference_samples"] == "our_mcmc.npy"
    x = t.sample(20)
    torch.testing.assert_close(x.view(20, 55, 3).mean(1), torch.zeros(20, 3), atol=1e-12, rtol=0)
    # the same configurations, centred: pair distances unchanged (as a set: sample() permutes rows)
    d, d_raw = t.interatomic_distances(x), t.interatomic_distances(raw)
    torch.testing.assert_close(d.sum(1).sort().values, d_raw.sum(1).sort().values)
    with pytest.raises(ds.errors.ShapeError, match=r"\(N, 165\)"):
        t.use_reference_samples(raw[:, :39], source="wrong")
    bad = raw.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ds.errors.NonFiniteError, match="bad.npy"):
        t.use_reference_samples(bad, source="bad.npy")


# -- mean-free reference --------------------------------------------------------------------------
def test_mean_free_reference_detailed_balance_and_noise():
    torch.manual_seed(0)
    n, D, sigma = 5, 3, 0.7
    ref = MeanFreePinnedBrownian(n, D, sigma)
    B = 400
    t = torch.rand(B) * 0.9 + 0.01
    tn = t + torch.rand(B) * (1 - t)
    x = ref.project(torch.randn(B, n * D) * 2)
    y = ref.project(torch.randn(B, n * D) * 2)
    lhs = ref.marginal_log_prob(x, t) + ref.step_log_prob(y, x, sigma ** 2 * (tn - t))
    rhs = ref.marginal_log_prob(y, tn) + ref.backward_log_prob(x, y, t, tn)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)
    # noise is CoM-free with E||P eps||^2 = (n-1) D
    eps = ref.noise_like(torch.zeros(20000, n * D))
    assert eps.view(-1, n, D).sum(1).abs().max() < 1e-12
    m2 = (eps ** 2).sum(1)
    assert abs(m2.mean() - (n - 1) * D) < 4 * m2.std() / len(m2) ** 0.5
    # the density is a density on the (n-1)D subspace: N_V(x; 0, v) for x in V
    v = torch.tensor(0.3)
    expected = -0.5 * (x ** 2).sum(1) / v - 0.5 * (n - 1) * D * torch.log(2 * math.pi * v)
    torch.testing.assert_close(ref.step_log_prob(x, torch.zeros_like(x), v), expected)


@pytest.mark.parametrize("drift", ["egnn", "mlp"])
@pytest.mark.parametrize("grid_kind", ["uniform", "random"])
def test_zero_drift_is_exact_for_mean_free_gaussian(drift, grid_kind):
    torch.manual_seed(0)
    target = MeanFreeGaussian(4, 3, scale=1.3)
    s = ds.DiffusionSampler(target, drift=drift, width=16, depth=1).double()
    x, lw = s.sample(128, steps=7, grid=grid_kind)
    assert x.view(-1, 4, 3).sum(1).abs().max() < 1e-12
    torch.testing.assert_close(lw, torch.full_like(lw, target.log_Z), rtol=0, atol=1e-9)
    lwb = s.log_w_backward(target.sample(128), steps=7, grid=grid_kind)
    torch.testing.assert_close(lwb, torch.full_like(lwb, target.log_Z), rtol=0, atol=1e-9)


# -- EGNN -----------------------------------------------------------------------------------------
def _randomize(net):
    torch.manual_seed(3)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net


@pytest.mark.parametrize("n,D", [(4, 2), (6, 3)])
def test_egnn_equivariance(n, D):
    torch.manual_seed(0)
    sym = ParticleSymmetry.all_identical(n, D)
    net = _randomize(EGNNDrift(n, D, width=16, depth=2, time_features=8, score_clip=1.0, langevin=True))
    feat = _randomize(EGNNFeatures(n, D, out_features=3, width=16, depth=2))
    B = 8
    x, t = torch.randn(B, n * D), torch.rand(B)
    score = torch.randn(B, n * D) * 3
    mu = net(x, t, score)
    assert mu.view(B, n, D).sum(1).abs().max() < 1e-12          # CoM-free
    assert mu.abs().mean() > 1e-3                                # not trivially zero
    for reflect in (False, True):
        R, P = random_g(x, sym, reflect)
        shift = torch.randn(B, 1, D).expand(B, n, D).reshape(B, -1)
        gx, gs = apply_group(x, R, P, sym) + shift, apply_group(score, R, P, sym)
        torch.testing.assert_close(net(gx, t, gs), apply_group(mu, R, P, sym), rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(feat(gx), feat(x), rtol=1e-9, atol=1e-10)


def test_egnn_edge_input_equals_linear_on_concatenation():
    """The node-wise split of the first edge layer is the same function as the nn.Linear applied
    to [h_i, h_j, d2_ij, a_ij] (the EGNN paper's definition)."""
    from diffsampler.nets.egnn import EGNNLayer
    torch.manual_seed(0)
    layer = _randomize(EGNNLayer(16))
    B, n = 5, 7
    h, d2, a = torch.randn(B, n, 16), torch.rand(B, n, n, 1), torch.rand(B, n, n, 1)
    hi, hj = h[:, :, None].expand(B, n, n, 16), h[:, None].expand(B, n, n, 16)
    explicit = layer.edge[0](torch.cat([hi, hj, d2, a], -1))
    torch.testing.assert_close(layer.edge_input(h, d2, a), explicit, rtol=1e-12, atol=1e-12)


def test_egnn_drift_registry_and_error():
    s = ds.DiffusionSampler(ds.targets.get("dw4"), drift="egnn_langevin", width=8, depth=1)
    assert s.drift.needs_score
    with pytest.raises(ValueError, match="particle target"):
        ds.DiffusionSampler(ds.targets.get("gmm25"), drift="egnn")


# -- orbit Rao-Blackwell --------------------------------------------------------------------------
@pytest.mark.parametrize("D", [2, 3])
def test_sampled_rotations_are_proper_and_haar(D):
    torch.manual_seed(0)
    R = sample_rotations(20000, D)
    eye = torch.eye(D).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(20000), atol=1e-12, rtol=0)
    # Haar moments: E[R] = 0, E[R_ij^2] = 1/D (standard errors ~ 0.007)
    assert R.mean(0).abs().max() < 0.03
    assert ((R ** 2).mean(0) - 1 / D).abs().max() < 0.03


def test_sampled_permutations_respect_identical_groups():
    sym = ParticleSymmetry(5, 2, ((0, 2, 4), (1, 3)))
    p = sample_permutations(1000, sym)
    assert torch.equal(p.sort(-1).values, torch.arange(5).expand(1000, 5))
    assert set(p[:, [0, 2, 4]].flatten().tolist()) == {0, 2, 4} and set(p[:, [1, 3]].flatten().tolist()) == {1, 3}
    assert (p[:, 0] != 0).any()


def test_orbit_target_with_K1_is_the_plain_target():
    torch.manual_seed(0)
    sym = ParticleSymmetry.all_identical(13, 3)
    ref = MeanFreePinnedBrownian(13, 3, 0.2)
    y = ref.project(torch.randn(16, 39))
    t = torch.rand(16) * 0.99
    x = t[:, None] * y + 0.2 * (t * (1 - t)).sqrt()[:, None] * ref.noise_like(y)
    out = orbit_target(x, y, t, 1, symmetry=sym, sigma=0.2)
    assert torch.equal(out.y_hat, y)
    torch.testing.assert_close(out.ess, torch.ones(16))
    # threshold: K > 1 only where t < t_threshold
    out = orbit_target(x, y, t, 8, symmetry=sym, sigma=0.2, t_threshold=0.5)
    assert torch.equal(out.y_hat[t >= 0.5], y[t >= 0.5])
    # at t = 0 (x_0 = 0) all K group elements get equal weight
    out = orbit_target(torch.zeros_like(y), y, torch.zeros(16), 8, symmetry=sym, sigma=0.2)
    torch.testing.assert_close(out.ess, torch.full((16,), 8.0))


def test_orbit_target_is_unbiased():
    # E[y_hat . x_t] = E[E[y | x_t] . x_t] = E[y . x_t] = t E||y||^2 (y from a G-invariant law)
    torch.manual_seed(0)
    sym = ParticleSymmetry.all_identical(4, 2)
    ref = MeanFreePinnedBrownian(4, 2, 2.0)
    base = torch.tensor([0.0, 0, 4, 0, 0, 4, 4, 4]) + 0.3 * torch.randn(40000, 8)
    y = augment(ref.project(base), sym)
    for tv in (0.02, 0.1):
        t = torch.full((40000,), tv)
        x = tv * y + 2.0 * math.sqrt(tv * (1 - tv)) * ref.noise_like(y)
        out = orbit_target(x, y, t, 16, symmetry=sym, sigma=2.0)
        assert 1.5 < out.ess.mean() < 15  # the averaging is active
        diff = (out.y_hat * x).sum(1) - tv * (y ** 2).sum(1)
        assert abs(diff.mean()) < 4 * diff.std() / len(diff) ** 0.5
        # and the estimate has lower variance than the plain target y
        assert (out.y_hat * x).sum(1).var() < (y * x).sum(1).var()


def test_orbit_ml_loss_runs_and_reduces_to_plain_ml_target():
    torch.manual_seed(0)
    target = ds.targets.get("dw4")
    s = ds.DiffusionSampler(target, drift="egnn", width=16, depth=1).double()
    y = s.reference.project(torch.randn(32, 8) * 2)
    grid = make_grid("random", 32, 6)
    obj = OrbitMaximumLikelihood(K=8, t_threshold=0.3)
    loss = obj.loss(s, y, grid)
    loss.backward()
    assert torch.isfinite(loss) and obj.last_ess >= 1.0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.drift.parameters())
    # zero drift, K = 1, no augmentation: the loss is sum_n dt_n ||(y - x_n)/(1 - t_n)||^2 / (2 sigma^2)
    s0 = ds.DiffusionSampler(target, drift="egnn", width=8, depth=1).double()
    torch.manual_seed(5)
    l0, _ = orbit_ml_loss(s0, y, grid, K=1, augment_data=False)
    torch.manual_seed(5)
    t = grid[:, :-1]
    x = t[..., None] * y[:, None] + s0.reference.sigma * (t * (1 - t)).sqrt()[..., None] * \
        s0.reference.noise_like(y[:, None].expand(32, 6, 8).contiguous())
    u = (y[:, None] - x) / (1 - t)[..., None]
    ref_loss = ((u ** 2).sum(-1) * (grid[:, 1:] - grid[:, :-1])).sum(1).mean() / (2 * s0.reference.sigma ** 2)
    torch.testing.assert_close(l0, ref_loss)


@pytest.mark.parametrize("tv", [0.3, 0.95])
def test_orbit_ml_mixed_target_keeps_the_conditional_mean_and_lowers_variance_near_t1(tv):
    """orbit_ml_loss(kappa > 0, score=grad log p(y)): the orbit-averaged target
    lambda (y_hat + sigma^2 s_hat) + (1 - lambda)(y_hat - x)/(1 - t) has the same conditional mean as the
    bridge form. For the G-invariant Gaussian p ∝ exp(-|y|^2 / (2 v)) on the centre-of-mass-free space
    (4 particles in 2-D) mu*(x, t) = (v - sigma^2) x / (t v + sigma^2 (1 - t)) is linear, so the
    least-squares slope of the target on x (200,000 pairs, K = 8) equals that coefficient for kappa = 0
    and kappa = 40 (5 standard errors); at t = 0.95 the mix's residual variance is lower. With K = 1 the
    augmented scores are the augmented data's (the same group element is applied to both)."""
    from diffsampler.objectives.adjoint import mixed_target
    torch.manual_seed(0)
    sym = ParticleSymmetry.all_identical(4, 2)
    sigma, v, N = 1.0, 0.05, 200_000
    ref = MeanFreePinnedBrownian(4, 2, sigma)
    y = ref.project(torch.randn(N, 8, dtype=torch.float64) * v ** 0.5)
    score = -y / v
    t = torch.full((N,), tv, dtype=torch.float64)
    x = tv * y + sigma * math.sqrt(tv * (1 - tv)) * ref.noise_like(y)
    orb = orbit_target(x, y, t, 8, symmetry=sym, sigma=sigma, score=score)
    coef = (v - sigma ** 2) / (tv * v + sigma ** 2 * (1 - tv))
    resid_var = {}
    for kappa in (0.0, 40.0):
        u = mixed_target(ref, ref.project(orb.y_hat + sigma ** 2 * orb.score_hat), orb.y_hat, x, t, kappa) \
            if kappa else (orb.y_hat - x) / (1 - tv)
        slope = float((u * x).sum() / (x * x).sum())
        resid = u - slope * x
        se = float((resid.pow(2).sum(1).mean() / (x * x).sum()).sqrt())
        assert abs(slope - coef) < 5 * se, (kappa, slope, coef, se)
        resid_var[kappa] = float(resid.pow(2).sum(1).mean())
    if tv > 0.9:
        assert resid_var[40.0] < resid_var[0.0] / 2
    # the loss: augmentation applies one group element to y and its score alike
    s = ds.DiffusionSampler(ds.targets.get("dw4"), drift="egnn", width=8, depth=1).double()
    yb, grid = y[:16], make_grid("random", 16, 4).double()
    loss, tgt = orbit_ml_loss(s, yb, grid, K=1, score=score[:16], kappa=40.0)
    assert torch.isfinite(loss)
    torch.testing.assert_close(tgt.score_hat, -tgt.y_hat / v)
    assert not torch.allclose(tgt.y_hat[:, 0], yb)   # augmented
    with pytest.raises(ValueError, match="kappa"):
        orbit_ml_loss(s, yb, grid, K=1, kappa=40.0)


# -- evaluation -----------------------------------------------------------------------------------
def test_wasserstein_1d_matches_scipy_and_ot():
    import ot
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.4, 1.5, size=170)
    assert wasserstein_1d(a, b, 1) == pytest.approx(wasserstein_distance(a, b), rel=1e-10)
    w2 = np.sqrt(ot.emd2(np.full(300, 1 / 300), np.full(170, 1 / 170), (a[:, None] - b[None]) ** 2))
    assert wasserstein_1d(a, b, 2) == pytest.approx(w2, rel=1e-8)


def test_equivariant_w2_is_zero_between_symmetric_copies_and_metrics(tmp_path):
    torch.manual_seed(0)
    t = ds.targets.get("dw4")
    sym = t.symmetry
    x = t.project(torch.tensor([0.0, 0, 4, 0, 0, 4, 4, 4]) + 0.5 * torch.randn(30, 8))
    R, P = random_g(x, sym)
    gx = apply_group(x, R, P, sym)[torch.randperm(30)]
    assert equivariant_w2(x, gx, 4, 2) < 1e-6
    assert ds.evaluation.wasserstein2(x, gx) > 1.0
    m = particle_metrics(x, gx, t, n_equivariant=30)
    for k in ("distance_w1", "distance_w2", "energy_w1", "energy_w2", "equivariant_w2"):
        assert m[k] < 1e-6, (k, m[k])
    m2 = particle_metrics(x * 1.2, gx, t, n_equivariant=10)
    assert m2["distance_w1"] > 0.1 and m2["energy_w1"] > 0.1
    path = tmp_path / "hist.png"
    plot_particle_histograms(x * 1.1, gx, t, str(path))
    assert path.stat().st_size > 5000


def test_orbit_ml_warmup_runs_in_the_trainer(tmp_path):
    """SGDS-style ML warm-up with the orbit Rao-Blackwell target on a symmetric target; the
    orbit steps cost no energy calls, and a target without symmetry is refused by name."""
    import diffsampler as ds
    from diffsampler.errors import ConfigError

    t = ds.targets.get("dw4")
    run = ds.train(t, progress=False, recipe="tb", behaviour="mixed", offpolicy_data="replay", drift="egnn",
                   width=16, depth=1, time_features=8, batch_size=16, train_steps=4, iterations=6, ml_warmup=3,
                   orbit_K=4, eval_steps=4, eval_samples=32, threads=1)
    assert run.report["iterations"] == 6
    with pytest.raises(ConfigError, match="orbit_K"):
        ds.train("gmm25", progress=False, recipe="tb", orbit_K=4, iterations=2, threads=1)


def test_orbit_kappa_scores_each_buffer_row_once_and_keeps_them_in_checkpoints(tmp_path):
    """orbit_kappa > 0: an orbit ML step needs the scores of its buffer rows. Each row's score is
    computed (one counted train call) the first time it is drawn and stored in the buffer, so the
    train calls equal the number of distinct rows drawn so far, the stored scores are the target's,
    and they survive the buffer's state_dict round trip. orbit_kappa without orbit_K is an error."""
    import diffsampler as ds
    from diffsampler.errors import ConfigError
    from diffsampler.search import ReplayBuffer
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer

    torch.manual_seed(0)
    t = ds.targets.get("dw4")
    cfg = TrainConfig.from_dict(dict(recipe="tb", behaviour="backward", offpolicy_data="replay", drift="egnn",
                                     width=16, depth=1, time_features=8, batch_size=16, train_steps=4,
                                     iterations=4, ml_warmup=4, orbit_K=4, orbit_kappa=7.5, threads=1))
    tr = Trainer(t, cfg, progress=False)
    pts = t.project(torch.tensor([0.0, 0, 4, 0, 0, 4, 4, 4]) + 0.3 * torch.randn(40, 8))   # no data files needed
    tr.buffer.add(pts, -t.energy(pts))
    drawn = set()
    sample_index = tr.buffer.sample_index

    def recording(batch):
        idx = sample_index(batch)
        drawn.update(idx.tolist())
        return idx
    tr.buffer.sample_index = recording
    before = t.counter.counts.get("train", 0)
    for it in range(4):   # the loop's orbit iteration: buffer states, then the learner's step on them
        batch = tr.behaviour.buffer_states(tr.sampler, tr.learner.orbit.needs_scores)
        assert math.isfinite(tr.learner.orbit_step(batch, it, 1.0, True))
    assert t.counter.counts["train"] - before == len(drawn) < 64
    known = ~torch.isnan(tr.buffer.score).any(1)
    assert int(known.sum()) == len(drawn)
    exact = t.score(tr.buffer.x[known].double())   # float32 storage of scores of size ~10: 1e-4 absolute
    torch.testing.assert_close(tr.buffer.score[known].double(), exact, rtol=0, atol=1e-4)
    copy = ReplayBuffer(8)
    copy.load_state_dict(tr.buffer.state_dict())
    torch.testing.assert_close(copy.score, tr.buffer.score, equal_nan=True)
    old = {"x": tr.buffer.x, "log_r": tr.buffer.log_r}          # a checkpoint from before scores were kept
    copy.load_state_dict(old)
    assert torch.isnan(copy.score).all() and copy.score.shape == copy.x.shape
    with pytest.raises(ConfigError, match="orbit_kappa"):
        TrainConfig.from_dict({"orbit_kappa": 5.0})


def test_orbit_serves_only_the_buffer_batches_of_a_mixed_ml_recipe():
    """recipe=sgds_jeffreys with orbit_K: the orbit Rao-Blackwell ML replaces the maximum-likelihood
    (buffer) iterations only; the on-policy iterations keep the pathwise KL and cost B energy calls
    each. (Until 2026-12-03 every iteration went to the orbit step: no on-policy KL at all.)"""
    import diffsampler as ds
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer

    t = ds.targets.get("dw4")
    B = 16
    cfg = TrainConfig.from_dict(dict(recipe="sgds_jeffreys", drift="egnn", width=16, depth=1, time_features=8,
                                     batch_size=B, train_steps=4, iterations=6, rounds=1, orbit_K=4,
                                     search_chains=32, search_burnin=2, search_steps=4, search_thin=1,
                                     log_Z_init=0.0, eval_steps=4, eval_samples=32, threads=1))
    tr = Trainer(t, cfg, progress=False)
    kinds = []
    orbit_step = tr.learner.orbit_step

    def counting_orbit_step(batch, it, lr_factor, warm):
        kinds.append(it)
        return orbit_step(batch, it, lr_factor, warm)
    tr.learner.orbit_step = counting_orbit_step
    tr.fit()
    assert kinds == [1, 3, 5]   # offpolicy_every = 2: the odd iterations are buffer batches
    assert t.counter.counts["train"] == 3 * B   # three on-policy KL rollouts, one terminal call per sample


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_particle_rnd_novelty_is_invariant_and_bounded(name):
    """make_rnd gives particle targets invariant, bounded novelty networks: novelty(g x) = novelty(x)
    for rotations, reflections, permutations and translations (float64, 1e-6), and novelty <= 4 out_dim
    even for a configuration blown up 100x (an MLP's grows like |x|^2 there, so E - alpha novelty
    had no lower bound along expansions); flat targets keep the MLP networks."""
    from diffsampler.search import BoundedInvariantFeatures, make_rnd
    torch.manual_seed(2)
    t = ds.targets.get(name)
    n, D = t.n_particles, t.spatial_dim
    rnd = make_rnd(t, width=16, out_dim=8).double()
    assert isinstance(rnd.predictor, BoundedInvariantFeatures)
    x = torch.randn(32, n * D, dtype=torch.float64)
    nov = rnd(x)
    for reflect in (False, True):
        R, P = random_g(x, t.symmetry, reflect)
        gx = apply_group(x, R, P, t.symmetry) + torch.randn(32, 1, D, dtype=x.dtype).expand(32, n, D).reshape(32, -1)
        torch.testing.assert_close(rnd(gx), nov, rtol=1e-6, atol=1e-10)
    far = rnd(100 * x)
    assert torch.isfinite(far).all() and (far <= 4 * 8).all()
    rnd.fit(x, steps=20)
    assert rnd(x).mean() < nov.mean()   # it is trainable: familiar points become less novel
    flat = make_rnd(ds.targets.get("gmm40"), width=16)
    assert not isinstance(flat.predictor, BoundedInvariantFeatures)
