import math

import pytest
import torch

import diffsampler as ds


@pytest.fixture
def float64():
    """Run a test module in float64 (exactness checks), restoring the default dtype after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def shifted_gaussian(mean: float, dim: int, sigma: float, name: str = "gauss"):
    """N(mean * 1, sigma^2 I) as a user target with E = ||x - m||^2 / (2 sigma^2) (so
    log Z = d/2 log(2 pi sigma^2)). Its exact sampler under the pinned-Brownian reference with
    the same sigma is the constant drift mu = m (Brownian motion with drift)."""
    m = torch.full((dim,), float(mean), dtype=torch.float64)

    def energy(x):
        return 0.5 * ((x - m.to(x)) ** 2).sum(-1) / sigma ** 2

    logz = 0.5 * dim * math.log(2 * math.pi * sigma ** 2)
    return ds.targets.from_energy(energy, dim=dim, log_Z=logz, name=name, sigma=sigma,
                                  samples=(m + sigma * torch.randn(20000, dim, dtype=torch.float64)).numpy())
