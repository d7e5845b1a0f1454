"""Objectives: zero gradient at the exact sampler; every objective lowers its loss."""
import pytest
import torch

import diffsampler as ds
from diffsampler.errors import ConfigError
from diffsampler.objectives import make_objective
from diffsampler.training.config import TrainConfig
from diffsampler.sde import backward_rollout, forward_rollout, make_grid
from conftest import shifted_gaussian



pytestmark = pytest.mark.usefixtures("float64")


def exact_sampler(target, mean, dim, offset=0.0):
    """MLP drift whose output is the constant `mean + offset` (the exact drift when offset = 0)."""
    s = ds.DiffusionSampler(target, drift="mlp", width=16, time_features=8).double()
    with torch.no_grad():
        s.drift.joint[-1].bias.fill_((mean + offset) / s.drift.scale)  # mu = sigma * NN(x / sigma, t)
        s.log_Z.fill_(target.log_Z)
    return s


@pytest.mark.parametrize("name", ["tb", "vargrad", "adjoint", "adjoint_rb"])
@pytest.mark.parametrize("grid", ["uniform", "random"])
def test_gradient_vanishes_at_exact_sampler(name, grid):
    d, m, sigma = 3, 1.5, 1.2
    target = shifted_gaussian(m, d, sigma)
    obj = (make_objective("adjoint", adjoint_batch_average=True, adjoint_weights="importance")
           if name == "adjoint_rb" else make_objective(name))
    for offset, should_vanish in [(0.0, True), (0.3, False)]:
        s = exact_sampler(target, m, d, offset)
        tr = forward_rollout(s, make_grid(grid, 512, 8))
        loss = obj(tr, s)
        s.zero_grad()
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in s.parameters() if p.grad is not None])
        if should_vanish:
            assert loss.item() < 1e-18
            assert g.abs().max().item() < 1e-8
        else:
            assert g.abs().max().item() > 1e-3


def test_exact_sampler_metrics():
    d, m, sigma = 2, -0.7, 1.0
    target = shifted_gaussian(m, d, sigma)
    s = exact_sampler(target, m, d)
    from diffsampler.evaluation import evaluate
    ev = evaluate(s, n=1000, steps=20).metrics
    assert abs(ev["elbo"] - target.log_Z) < 1e-9
    assert abs(ev["eubo"] - target.log_Z) < 1e-9
    assert abs(ev["ess"] - 1.0) < 1e-9
    # W2 of an exact sampler is the finite-sample W2 between two independent true sample sets.
    from diffsampler.evaluation import wasserstein2
    base = [wasserstein2(target.sample(1000), target.sample(1000)) for _ in range(3)]
    assert ev["w2"] < 1.3 * max(base)


def _loss_on_fixed_batches(s, obj, target, x_true, behaviour):
    torch.manual_seed(1234)
    vals = []
    for _ in range(4):
        g = make_grid("random", 256, 8)
        if behaviour == "backward":
            tr = backward_rollout(s, x_true[torch.randint(0, len(x_true), (256,))], g,
                                  need_step_rewards=obj.needs_flow)
        else:
            tr = forward_rollout(s, g, pathwise=obj.pathwise, need_step_rewards=obj.needs_flow)
        vals.append(obj(tr, s).item())
    return sum(vals) / len(vals)


@pytest.mark.parametrize("name", ["tb", "vargrad", "subtb", "db", "kl", "ml", "adjoint"])
def test_every_objective_reduces_its_loss(name):
    torch.manual_seed(0)
    d = 2
    target = shifted_gaussian(2.0, d, 1.0, name="g2")
    behaviour = "backward" if name == "ml" else "forward"
    obj = make_objective(name)
    s = ds.DiffusionSampler(target, drift="mlp", width=32, time_features=8, flow=obj.needs_flow).double()
    opt = torch.optim.Adam([{"params": [p for n, p in s.named_parameters() if n != "log_Z"], "lr": 3e-3},
                            {"params": [s.log_Z], "lr": 1e-1}])
    x_true = target.sample(4000)
    before = _loss_on_fixed_batches(s, obj, target, x_true, behaviour)
    torch.manual_seed(0)
    for _ in range(150):
        g = make_grid("random", 128, 8)
        if behaviour == "backward":
            tr = backward_rollout(s, x_true[torch.randint(0, len(x_true), (128,))], g)
        else:
            tr = forward_rollout(s, g, pathwise=obj.pathwise, need_step_rewards=obj.needs_flow)
        loss = obj(tr, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _loss_on_fixed_batches(s, obj, target, x_true, behaviour)
    assert after < before - 0.2 * abs(before), (before, after)


def test_subtb_with_lambda_weights_matches_db_on_one_step_pairs():
    # With only one-step sub-trajectories weighted (lambda -> 0 limit), SubTB == DB / N.
    target = shifted_gaussian(0.5, 2, 1.0)
    s = ds.DiffusionSampler(target, drift="mlp", width=16, time_features=8, flow=True).double()
    tr = forward_rollout(s, make_grid("random", 64, 6), need_step_rewards=True)
    sub = make_objective("subtb", subtb_lambda=1e-9)(tr, s)
    db = make_objective("db")(tr, s)
    torch.testing.assert_close(sub, db / 6, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("drift", ["mlp", "langevin", "langevin_per_dim"])
def test_precomputed_time_context_gives_the_same_drift(drift):
    """The rollout evaluates the x-independent part of the drift once for the whole grid; the
    result must equal the per-step evaluation."""
    from diffsampler.nets import make_drift
    torch.manual_seed(0)
    net = make_drift(drift, ds.targets.get("manywell4"), sigma=2.0, width=16, depth=2, time_features=8).double()
    for p in net.parameters():           # non-trivial weights (the output layers start at zero)
        torch.nn.init.normal_(p, std=0.3)
    x, t, s = torch.randn(5, 4).double(), torch.rand(5).double(), torch.randn(5, 4).double()
    torch.testing.assert_close(net(x, t, s, context=net.time_context(t)), net(x, t, s), rtol=1e-12, atol=1e-12)


def test_per_dimension_langevin_scales_each_coordinate():
    """langevin_per_dim: mu = NN_1(x, t) + NN_2(t) * clip(score) with NN_2(t) in R^d. At
    initialisation (NN_1 = 0, NN_2 = 0.01) it equals the scalar variant; with per-coordinate
    output biases c_k, coordinate k of the drift is c_k * clip(score_k)."""
    from diffsampler.nets import make_drift
    torch.manual_seed(0)
    target = ds.targets.get("manywell4")
    scalar = make_drift("langevin", target, width=16, depth=2, time_features=8, score_clip=5.0).double()
    vector = make_drift("langevin_per_dim", target, width=16, depth=2, time_features=8, score_clip=5.0).double()
    x, t, s = torch.randn(6, 4).double(), torch.rand(6).double(), 10 * torch.randn(6, 4).double()
    torch.testing.assert_close(vector(x, t, s), scalar(x, t, s))
    torch.testing.assert_close(vector(x, t, s), 0.01 * s.clamp(-5, 5))
    c = torch.tensor([0.5, -1.0, 2.0, 0.0]).double()
    with torch.no_grad():
        vector.scale[-1].bias.copy_(c)
    torch.testing.assert_close(vector(x, t, s), c * s.clamp(-5, 5))



def test_adjoint_target_has_the_follmer_drift_as_its_conditional_mean():
    """mu*(x, t) = E[Y + sigma^2 grad log R(Y) | X_t = x] (Y ~ p, X_t from the reference bridge): the
    regression residual against GMM-40's closed-form Föllmer drift is orthogonal to every function of
    (X_t, t); against a wrong drift it is not."""
    from diffsampler.objectives import adjoint_target, bridge_states
    target = ds.targets.get("gmm40")
    s = ds.DiffusionSampler(target, drift="mlp").double()
    ref, n = s.reference, 200_000
    y = target.sample(n).double()
    t = torch.empty(n, dtype=torch.float64).uniform_(0.02, 0.98)
    x_t = bridge_states(ref, y, t)
    goal = adjoint_target(ref, y, target.score(y), score_clip=None)
    mu = target.optimal_drift(x_t, t, ref.sigma)

    def z_scores(drift):
        res = drift - goal
        out = []
        for phi in (x_t, mu, t[:, None] * mu):   # test functions of (X_t, t)
            v = (res * phi).sum(-1)
            out.append((v.mean() / (v.std() / n ** 0.5)).item())
        return out
    assert max(abs(z) for z in z_scores(mu)) < 4.0
    assert max(abs(z) for z in z_scores(0.9 * mu)) > 20.0


def test_adjoint_matching_on_particles_counts_its_energy_calls_and_stays_centred():
    """One adjoint-matching loss on DW-4 with a Langevin EGNN costs B (gradient at Y, unless the rollout
    returned it) + B M (score at the bridge states) energy calls; targets live on the centre-of-mass-free
    space."""
    from diffsampler.objectives import adjoint_target
    target = ds.targets.get("dw4")
    s = ds.DiffusionSampler(target, drift="egnn_langevin", width=16, depth=1, sigma=1.0).double()
    B, M = 32, 3
    with torch.no_grad():
        tr = forward_rollout(s, make_grid("random", B, 6))
    obj = make_objective("adjoint", adjoint_times=M)
    before = target.counter.counts["train"]
    loss = obj(tr, s)
    assert target.counter.counts["train"] - before == B + B * M
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.drift.parameters())
    y = tr.terminal
    goal = adjoint_target(s.reference, y, target.score(y))
    assert goal.view(B, 4, 2).sum(1).abs().max().item() < 1e-10
    # a rollout that returns the terminal gradient with log R (as the trainer's does) saves the B calls at Y
    with torch.no_grad():
        tr = forward_rollout(s, make_grid("random", B, 6), need_terminal_score=True)
    assert torch.allclose(tr.terminal_score, target.score(tr.terminal))
    before = target.counter.counts["train"]
    obj(tr, s)
    assert target.counter.counts["train"] - before == B * M


def test_adjoint_matching_draws_its_bridge_times_from_the_configured_range():
    """adjoint_t_min / adjoint_t_max: every bridge time the drift is regressed at lies in the range
    (the default covers (0, 1)); an empty or out-of-[0, 1] range is an error naming the key."""
    target = ds.targets.get("dw4")
    s = ds.DiffusionSampler(target, drift="egnn", width=8, depth=1, sigma=1.0).double()
    with torch.no_grad():
        tr = forward_rollout(s, make_grid("random", 64, 4), need_terminal_score=True)
    seen = []
    hook = s.drift.register_forward_hook(lambda m, args, out: seen.append(args[1].detach()))
    make_objective("adjoint", adjoint_times=8, adjoint_t_min=0.7, adjoint_t_max=0.95)(tr, s)
    narrow = torch.cat(seen)
    seen.clear()
    make_objective("adjoint", adjoint_times=8)(tr, s)
    hook.remove()
    wide = torch.cat(seen)
    assert narrow.numel() == wide.numel() == 64 * 8
    assert narrow.min() >= 0.7 and narrow.max() <= 0.95 and narrow.max() - narrow.min() > 0.2
    assert wide.min() < 0.3 and wide.max() > 0.97
    with pytest.raises(ValueError, match="adjoint_t_max.*adjoint_t_min"):
        make_objective("adjoint", adjoint_t_min=0.9, adjoint_t_max=0.5)
    with pytest.raises(ConfigError, match="adjoint_t_max"):
        TrainConfig.from_dict({"adjoint_t_min": 0.5, "adjoint_t_max": 1.5})


@pytest.mark.parametrize("t", [0.3, 0.9])
def test_adjoint_bridge_form_mixing_keeps_the_regression_minimiser_and_lowers_its_variance(t):
    """adjoint_kappa: the target lambda (Y + sigma^2 grad log p(Y)) + (1 - lambda) (Y - X_t) / (1 - t),
    lambda = 1 / (1 + kappa (1 - t)), has the same conditional mean mu*(x, t) given X_t. For p = N(0, v I)
    mu* = (v - sigma^2) x / (t v + sigma^2 (1 - t)) is linear, so the least-squares slope of the target
    on X_t over 400,000 pairs (Y ~ p, X_t from the bridge) must equal that coefficient for kappa = 0
    and kappa = 40 (within 5 standard errors); for this stiff p (v = 0.05, sigma = 1) the mixed target's
    residual variance is several times lower. kappa < 0 and kappa with batch_average are errors."""
    from diffsampler.objectives import adjoint_target, bridge_states, mixed_target
    from diffsampler.sde.reference import PinnedBrownian
    torch.manual_seed(0)
    v, sigma, N, d = 0.05, 1.0, 400_000, 2
    ref = PinnedBrownian(sigma)
    y = torch.randn(N, d, dtype=torch.float64) * v ** 0.5
    tt = torch.full((N,), t, dtype=torch.float64)
    x = bridge_states(ref, y, tt)
    goal = adjoint_target(ref, y, -y / v, score_clip=None)
    coef = (v - sigma ** 2) / (t * v + sigma ** 2 * (1 - t))
    resid_var = {}
    for kappa in (0.0, 40.0):
        g = mixed_target(ref, goal, y, x, tt, kappa)
        slope = float((g * x).sum() / (x * x).sum())
        resid = g - slope * x
        se = float((resid.var() / (x * x).sum()).sqrt())
        assert abs(slope - coef) < 5 * se, (kappa, slope, coef, se)
        resid_var[kappa] = float(resid.var())
    assert resid_var[40.0] < resid_var[0.0] / 3
    with pytest.raises(ValueError, match="kappa"):
        make_objective("adjoint", adjoint_kappa=-1.0)
    with pytest.raises(ConfigError, match="adjoint_kappa"):
        TrainConfig.from_dict({"adjoint_kappa": 10.0, "adjoint_batch_average": True})


def test_adjoint_importance_weights_are_self_normalised_trajectory_weights():
    target = shifted_gaussian(1.0, 2, 1.0)
    s = exact_sampler(target, 1.0, 2, offset=0.5)
    with torch.no_grad():
        tr = forward_rollout(s, make_grid("uniform", 64, 4))
    w = make_objective("adjoint", adjoint_weights="importance").weights(tr)
    expect = torch.softmax(tr.log_w, 0) * 64
    assert torch.allclose(w, expect) and abs(w.mean().item() - 1) < 1e-12
    assert torch.equal(make_objective("adjoint").weights(tr), torch.ones(64, dtype=w.dtype))


def test_batch_averaged_adjoint_target_is_unbiased_with_lower_variance():
    """Rao-Blackwellising the adjoint target over the batch (posterior of the generating sample)
    keeps the Föllmer drift as its conditional mean (residuals orthogonal to functions of (X_t, t),
    per-batch means as independent units) and, on GMM-40 at t < 0.5, cuts the residual's mean square
    by more than half; with weights, w_hat is the posterior mean of the generating sample's weight."""
    from diffsampler.objectives import adjoint_target, batch_averaged_target, bridge_states
    target = ds.targets.get("gmm40")
    ref = ds.DiffusionSampler(target, drift="mlp").double().reference
    units, B, M = 300, 64, 4
    z_units, plain_ms, rb_ms = [], [], []
    for _ in range(units):
        y = target.sample(B).double()
        goal = adjoint_target(ref, y, target.score(y), score_clip=None)
        t = torch.rand(M * B, dtype=torch.float64)
        x_t = bridge_states(ref, y.repeat(M, 1), t)
        g_hat, w_hat = batch_averaged_target(ref, x_t, t, y, goal, torch.ones(B, dtype=torch.float64))
        assert torch.allclose(w_hat, torch.ones_like(w_hat))
        mu = target.optimal_drift(x_t, t, ref.sigma)
        z_units.append([((g_hat - mu) * phi).sum(-1).mean() for phi in (x_t, mu)])
        low = t < 0.5
        plain_ms.append(((goal.repeat(M, 1) - mu)[low] ** 2).sum(-1).mean())
        rb_ms.append(((g_hat - mu)[low] ** 2).sum(-1).mean())
    v = torch.tensor(z_units)
    z = v.mean(0) / (v.std(0) / units ** 0.5)
    assert z.abs().max().item() < 4.0
    assert sum(rb_ms) < 0.5 * sum(plain_ms)
    # weights: the generating index's posterior is prop. to N_j (uniform prior), so w_hat = sum_j N_j w_j / sum_j N_j
    y = target.sample(8).double()
    w = torch.rand(8, dtype=torch.float64) * 2
    t = torch.full((8,), 1 - 1e-7, dtype=torch.float64)
    x_t = bridge_states(ref, y, t)
    goal = adjoint_target(ref, y, target.score(y))
    g_hat, w_hat = batch_averaged_target(ref, x_t, t, y, goal, w)
    assert torch.allclose(w_hat, w, atol=1e-6) and torch.allclose(g_hat, goal, atol=1e-4)  # near t = 1: itself
