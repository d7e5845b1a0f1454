"""The backward kernel is the exact time reversal of the pinned-Brownian reference."""
import math

import pytest
import torch

import diffsampler as ds
from diffsampler.sde import PinnedBrownian, backward_rollout, gaussian_log_prob, make_grid



pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("sigma", [0.5, 1.0, 10.0])
def test_detailed_balance_of_reference_kernels(sigma):
    # p_t(x) pi_fwd(y | x) == p_t'(y) pi_bwd(x | y) for the zero-drift reference, any t < t'.
    ref = PinnedBrownian(sigma)
    B, d = 500, 3
    t = torch.rand(B, dtype=torch.float64) * 0.9 + 0.01
    tn = t + torch.rand(B, dtype=torch.float64) * (1 - t)
    x = torch.randn(B, d, dtype=torch.float64) * 3
    y = torch.randn(B, d, dtype=torch.float64) * 3
    lhs = ref.marginal_log_prob(x, t) + gaussian_log_prob(y, x, sigma ** 2 * (tn - t))
    rhs = ref.marginal_log_prob(y, tn) + ref.backward_log_prob(x, y, t, tn)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)


def test_backward_samples_have_reference_marginals():
    # Starting from X_1 ~ N(0, sigma^2), bridging backwards must give X_t ~ N(0, sigma^2 t).
    sigma = 2.0
    target = ds.targets.from_energy(lambda x: 0.5 * (x ** 2).sum(-1) / sigma ** 2, dim=2, sigma=sigma)
    s = ds.DiffusionSampler(target, drift="mlp").double()
    grid = make_grid("random", 40000, 7)
    grid = grid[:1].expand(40000, -1).contiguous()
    tr = backward_rollout(s, sigma * torch.randn(40000, 2), grid)
    var = tr.x.var(0).mean(-1)  # (N+1,)
    expected = sigma ** 2 * grid[0]
    assert torch.all((var - expected).abs() <= 0.03 * expected + 1e-12)
    assert torch.all(tr.x[:, 0] == 0)


@pytest.mark.parametrize("grid_kind", ["uniform", "random", "equidistant"])
def test_zero_drift_is_exact_for_the_reference_marginal(grid_kind):
    # Target = reference marginal at t = 1, times a known Z: every trajectory has log w = log Z.
    sigma, d, logz = 1.7, 4, 3.25
    target = ds.targets.from_energy(
        lambda x: 0.5 * (x ** 2).sum(-1) / sigma ** 2 + 0.5 * d * math.log(2 * math.pi * sigma ** 2) - logz,
        dim=d, log_Z=logz, sigma=sigma)
    s = ds.DiffusionSampler(target, drift="mlp").double()
    x, lw = s.sample(256, steps=9, grid=grid_kind)
    torch.testing.assert_close(lw, torch.full_like(lw, logz), rtol=0, atol=1e-9)
    lwb = s.log_w_backward(sigma * torch.randn(256, d), steps=9, grid=grid_kind)
    torch.testing.assert_close(lwb, torch.full_like(lwb, logz), rtol=0, atol=1e-9)


def test_grids():
    for kind in ("uniform", "random", "equidistant"):
        g = make_grid(kind, 64, 10)
        assert g.shape == (64, 11)
        assert torch.all(g[:, 0] == 0) and torch.all(g[:, -1] == 1)
        assert torch.all(g[:, 1:] > g[:, :-1])
    r = make_grid("random", 2000, 10)
    dt = r[:, 1:] - r[:, :-1]
    assert dt.std(0).mean() > 0.01  # one grid per trajectory
    e = make_grid("equidistant", 100, 10)
    inner = e[:, 2:-1] - e[:, 1:-2]
    torch.testing.assert_close(inner, torch.full_like(inner, 0.1))


@pytest.mark.parametrize("kind", ["uniform", "random", "equidistant"])
def test_time_warp_maps_each_grid_point(kind):
    """warp rho: t = 1 - (1 - u)^rho of the unwarped grid u (same random draws), steps shrinking
    toward t = 1 on the uniform grid; rho = 1 is the identity; rho < 1 is refused."""
    g = torch.Generator().manual_seed(3)
    u = make_grid(kind, 7, 10, dtype=torch.float64, generator=g)
    g = torch.Generator().manual_seed(3)
    t = make_grid(kind, 7, 10, warp=2.0, dtype=torch.float64, generator=g)
    torch.testing.assert_close(t, 1 - (1 - u) ** 2, rtol=0, atol=1e-15)
    assert (t[:, 0] == 0).all() and (t[:, -1] == 1).all() and (t.diff(dim=1) > 0).all()
    if kind == "uniform":
        h = t[0].diff()
        assert (h.diff() < 0).all()
        torch.testing.assert_close(h[-1], torch.tensor(0.01, dtype=torch.float64))
    from diffsampler.errors import ConfigError
    with pytest.raises(ConfigError, match="time warp"):
        make_grid(kind, 2, 5, warp=0.5)


def test_warped_sampler_uses_its_grid_and_stays_unbiased():
    """A sampler's time warp applies to all its grids; log w stays exact for the warped kernels, so
    E[w] = Z holds on a Gaussian target whatever the (untrained) drift."""
    from conftest import shifted_gaussian
    torch.manual_seed(0)
    target = shifted_gaussian(1.0, 2, 0.7)
    s = ds.DiffusionSampler(target, drift="mlp", width=16, time_features=8, time_warp=3.0).double()
    g = s.make_grid("uniform", 1, 4)
    torch.testing.assert_close(g[0], 1 - (1 - torch.linspace(0, 1, 5, dtype=torch.float64)) ** 3)
    _, log_w = s.sample(200_000, steps=4)
    w = torch.exp(log_w - target.log_Z)
    assert abs(w.mean().item() - 1) < 4 * w.std().item() / 200_000 ** 0.5
