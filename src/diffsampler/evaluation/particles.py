"""Metrics and plots for particle systems (DW-4, LJ-n) against reference samples.

- Interatomic-distance and energy distributions: W1 and W2 between the 1-D empirical measures
  (exact, via quantile functions), and histograms (PNG).
- Equivariant W2 of positions: optimal transport between the two sample sets with the cost
  c(x, y) = min_{R in SO(D), pi in S_n} ||x - R pi y||^2 between centred configurations, i.e. the
  squared distance in the quotient by E(D) x S_n. The inner minimisation is not solved exactly:
  we start from the permutation that matches each particle's sorted distances to the others (an
  invariant descriptor; Hungarian algorithm, scipy.optimize.linear_sum_assignment), then
  alternate Kabsch (optimal rotation for the matching) and Hungarian (optimal matching for the
  rotation) `iters` times. Each step cannot increase the cost, so c is an upper bound on the
  quotient distance (exact when the descent reaches the global optimum). The Hungarian step runs
  once per pair and round (O(n_a n_b) calls), so it is computed on a subsample (default 200 each).
"""
from __future__ import annotations

import numpy as np
import torch

from .plots import _plt


def interatomic_distances(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """(B, n*dim) -> (B, n(n-1)/2) distances r_ij, i < j."""
    v = x.reshape(x.shape[0], n, dim)
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    return (v[:, i] - v[:, j]).norm(dim=-1)


def wasserstein_1d(a, b, p: int = 2) -> float:
    """W_p between the empirical measures of 1-D samples a and b (uniform weights), exactly:
    W_p^p = int_0^1 |F_a^{-1}(u) - F_b^{-1}(u)|^p du with piecewise-constant quantile functions."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein_1d: empty sample")
    n, m = a.size, b.size
    u = np.unique(np.concatenate([np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))
    du = np.diff(np.concatenate([[0.0], u]))
    mid = u - du / 2
    ia = np.minimum((mid * n).astype(np.int64), n - 1)
    ib = np.minimum((mid * m).astype(np.int64), m - 1)
    return float((du * np.abs(a[ia] - b[ib]) ** p).sum() ** (1.0 / p))


def kabsch(x: torch.Tensor, y: torch.Tensor, reflections: bool = False) -> torch.Tensor:
    """Rotation R (..., D, D) minimising sum_i ||x_i - R y_i||^2 for centred x, y (..., n, D)
    (Kabsch 1976): H = y^T x = U S V^T, R = V diag(1, .., 1, s) U^T, s = sign det(V U^T)
    (s = 1 if reflections are allowed, i.e. R in O(D))."""
    h = y.transpose(-1, -2) @ x
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(-1, -2)
    if not reflections:
        s = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
        v = torch.cat([v[..., :-1], v[..., -1:] * s[..., None, None]], -1)
    return v @ u.transpose(-1, -2)


def _hungarian(cost: np.ndarray) -> np.ndarray:
    """Row-wise optimal assignment for a stack of (n, n) costs -> (P, n) column index per row."""
    from scipy.optimize import linear_sum_assignment

    return np.stack([linear_sum_assignment(c)[1] for c in cost])


def _align_pairs(X: torch.Tensor, Y: torch.Tensor, iters: int, reflections: bool) -> torch.Tensor:
    """min over the descent of ||X - R pi Y||^2 for paired centred configurations (P, n, D) -> (P,)."""
    dim = X.shape[-1]

    def descriptor(v):  # sorted distances of each particle to the others: invariant under E(D) x S_n
        return torch.cdist(v, v).sort(-1).values

    def gather(v, perm):
        return torch.gather(v, 1, torch.as_tensor(perm)[..., None].expand(-1, -1, dim))

    perm = _hungarian(torch.cdist(descriptor(X), descriptor(Y)).pow(2).numpy())
    best = None
    for _ in range(iters + 1):
        R = kabsch(X, gather(Y, perm), reflections)
        Yr = Y @ R.transpose(-1, -2)
        cost = ((X - gather(Yr, perm)) ** 2).sum((1, 2))
        best = cost if best is None else torch.minimum(best, cost)
        perm = _hungarian(torch.cdist(X, Yr).pow(2).numpy())
    return best


def aligned_sq_distances(x: torch.Tensor, y: torch.Tensor, n: int, dim: int, iters: int = 3,
                         reflections: bool = False, chunk_elems: int = 2_000_000) -> torch.Tensor:
    """Cost matrix C[a, b] ~ min_{R, pi} ||x_a - R pi y_b||^2 (module docstring), (n_a, n_b);
    pairs are processed in chunks of about chunk_elems / n^2 pairs."""
    xa = x.detach().double().cpu().reshape(-1, n, dim)
    yb = y.detach().double().cpu().reshape(-1, n, dim)
    xa, yb = xa - xa.mean(1, keepdim=True), yb - yb.mean(1, keepdim=True)
    A, B = xa.shape[0], yb.shape[0]
    ia, ib = torch.meshgrid(torch.arange(A), torch.arange(B), indexing="ij")
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    step = max(1, chunk_elems // (n * n))
    out = torch.cat([_align_pairs(xa[ia[s:s + step]], yb[ib[s:s + step]], iters, reflections)
                     for s in range(0, A * B, step)])
    return out.view(A, B)


def equivariant_w2(x: torch.Tensor, y: torch.Tensor, n: int, dim: int, iters: int = 3,
                   reflections: bool = False) -> float:
    """W2 between sample sets x (n_a, n*dim) and y (n_b, n*dim) with the aligned cost (exact OT
    on that cost matrix via POT's network simplex)."""
    import ot

    C = aligned_sq_distances(x, y, n, dim, iters, reflections).numpy()
    wa, wb = np.full(C.shape[0], 1 / C.shape[0]), np.full(C.shape[1], 1 / C.shape[1])
    return float(np.sqrt(max(ot.emd2(wa, wb, C, numItermax=10_000_000), 0.0)))


def _energies(target, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), target.counter.use("eval"):
        return target.energy(x, check_finite=False)


def particle_metrics(x: torch.Tensor, x_ref: torch.Tensor, target, n_equivariant: int = 200,
                     iters: int = 3) -> dict:
    """W1/W2 of interatomic distances and of energies, and the equivariant W2 of positions on
    n_equivariant samples of each set (0 to skip). Energy calls (for x and x_ref) count as 'eval'.
    Non-finite samples are dropped and counted in 'n_nonfinite'."""
    n, D = target.n_particles, target.spatial_dim
    ok = torch.isfinite(x).all(1)
    x = x[ok]
    dist, dist_ref = interatomic_distances(x, n, D), interatomic_distances(x_ref, n, D)
    e, e_ref = _energies(target, x), _energies(target, x_ref)
    fin = torch.isfinite(e)
    m = {"n_nonfinite": int((~ok).sum()) + int((~fin).sum()),
         "distance_w1": wasserstein_1d(dist.cpu(), dist_ref.cpu(), 1),
         "distance_w2": wasserstein_1d(dist.cpu(), dist_ref.cpu(), 2),
         "energy_w1": wasserstein_1d(e[fin].cpu(), e_ref.cpu(), 1),
         "energy_w2": wasserstein_1d(e[fin].cpu(), e_ref.cpu(), 2),
         "energy_mean": float(e[fin].mean()), "energy_mean_ref": float(e_ref.mean()),
         "equivariant_w2": None}
    if n_equivariant:
        k = min(n_equivariant, x.shape[0], x_ref.shape[0])
        m["equivariant_w2"] = equivariant_w2(x[:k], x_ref[:k], n, D, iters)
    return m


def plot_particle_histograms(x: torch.Tensor, x_ref: torch.Tensor | None, target, path: str,
                             title: str = "") -> None:
    """Two panels: interatomic-distance histogram and energy histogram, sampler vs reference."""
    plt = _plt()
    n, D = target.n_particles, target.spatial_dim
    x = x[torch.isfinite(x).all(1)]
    d = interatomic_distances(x, n, D).flatten().cpu().numpy()
    e = _energies(target, x).cpu().numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if x_ref is not None:
        d_ref = interatomic_distances(x_ref, n, D).flatten().cpu().numpy()
        e_ref = _energies(target, x_ref).cpu().numpy()
        d_rng = (0.0, float(np.percentile(d_ref, 99.9)) * 1.2)
        lo, hi = np.percentile(e_ref, [0.1, 99.9])
        e_rng = (float(lo) - 0.2 * float(hi - lo), float(hi) + 0.5 * float(hi - lo))
        axes[0].hist(d_ref, bins=100, range=d_rng, density=True, histtype="step", lw=2, label="reference")
        axes[1].hist(e_ref, bins=100, range=e_rng, density=True, histtype="step", lw=2, label="reference")
    else:
        d_rng = (0.0, float(np.percentile(d, 99.9)))
        e_rng = tuple(float(v) for v in np.percentile(e[np.isfinite(e)], [0.5, 99.5]))
    axes[0].hist(d, bins=100, range=d_rng, density=True, histtype="step", lw=2, label="sampler")
    axes[1].hist(np.clip(e[np.isfinite(e)], *e_rng), bins=100, range=e_rng, density=True, histtype="step",
                 lw=2, label="sampler (clipped to range)")
    axes[0].set_xlabel("interatomic distance")
    axes[1].set_xlabel("energy")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title or target.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
