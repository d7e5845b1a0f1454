"""Sample-based distances between a model sample set and true samples."""
from __future__ import annotations

import numpy as np
import torch


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between the empirical measures of x (n, d) and y (m, d) (equal weights), via
    optimal transport (POT's network simplex) on the squared Euclidean cost."""
    import ot

    a = x.detach().double().cpu().numpy()
    b = y.detach().double().cpu().numpy()
    M = ot.dist(a, b)  # squared Euclidean
    wa, wb = np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b))
    return float(np.sqrt(max(ot.emd2(wa, wb, M, numItermax=10_000_000), 0.0)))


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with an RBF kernel exp(-||a-b||^2 / (2 h^2)); h = median pairwise distance
    of the pooled samples when not given."""
    x, y = x.detach().double(), y.detach().double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z) ** 2
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt()) if (d2 > 0).any() else 1.0
    k = torch.exp(-d2 / (2 * bandwidth ** 2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    mmd2 = ((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
            - 2 * kxy.mean())
    return float(mmd2)
