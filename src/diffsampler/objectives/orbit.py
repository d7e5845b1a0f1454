"""Orbit Rao-Blackwell maximum likelihood for symmetric particle targets (Orbit Diffusion: Tong,
Trung-Dung, Liu, Van den Broeck & Niepert, arXiv 2502.09890), adapted to the pinned-Brownian SDE.

What is regressed. Backward-trajectory maximum likelihood (SGDS's warm-up on searcher / buffer
samples y = x_1) maximises sum_n log pi_fwd(x_{n+1} | x_n) along Brownian bridges to y. Given
(x_n, y) the bridge step has mean  x_n + dt_n (y - x_n) / (1 - t_n),  so integrating x_{n+1} out
exactly (first Rao-Blackwellisation) gives, up to a theta-independent constant,
    E[-log pi_fwd(x_{n+1} | x_n) | x_n, y] = dt_n / (2 sigma^2) || mu(x_n, t_n) - u_n(y) ||^2,
    u_n(y) = (y - x_n) / (1 - t_n)                                (the bridge drift, linear in y).
The loss below is this sum over steps; the bridge marginals x_n ~ N(t_n y, sigma^2 t_n (1 - t_n))
are drawn independently per step (same expectation of the sum). With y itself it has exactly
the expected gradient of `MaximumLikelihood` on backward trajectories.

Second Rao-Blackwellisation (over the symmetry orbit). Because the target is G-invariant
(G = SO(D) x permutations of identical particles, translations removed by centring), y can be
replaced by the self-normalised importance estimate of E[y | x_n, orbit of y]:
    y_hat = sum_k w_k g_k y,  w = softmax_k( -||x_n - t_n g_k y||^2 / (2 sigma^2 t_n (1 - t_n)) ),
with g_1 = identity and g_2..g_K ~ Haar (uniform proposal, so no -log nu term). This is unbiased
for E[y | x_n] (g_1 is a draw from the posterior over the orbit, which makes the SNIS estimate
with the true element included unbiased, as in conditional / iterated SIR), and u_n is linear in
y, so the gradient stays unbiased while its variance drops (Tong et al., Thm. 1). At t_n = 0
(x_0 = 0) all weights are equal and y_hat is the orbit average (E[y] = 0 for CoM-free invariant
targets); as t_n -> 1 the weights collapse onto the identity (ESS -> 1). `t_threshold` spends
group samples only at high noise (t_n < t_threshold; K = 1 elsewhere), which keeps unbiasedness.

Plain data augmentation (the baseline): y <- g y for one random g, K = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components import option
from ..errors import ConfigError, ShapeError
from .adjoint import mixed_target
from .base import OBJECTIVES, Objective


# -- the symmetry group -------------------------------------------------------------------------
def sample_rotations(n: int, dim: int, *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """n Haar-distributed rotations in SO(dim), shape (n, dim, dim).

    QR of a Gaussian matrix with the signs of diag(R) moved into Q gives Haar O(dim) (Mezzadri,
    2007); flipping the first column where det = -1 maps the det = -1 coset onto SO(dim) and keeps
    the Haar measure."""
    a = torch.randn(n, dim, dim, dtype=dtype or torch.get_default_dtype(), device=device)
    q, r = torch.linalg.qr(a)
    s = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    q = q * torch.where(s == 0, torch.ones_like(s), s)[:, None, :]
    det = torch.linalg.det(q)
    flip = torch.ones(n, dim, dtype=q.dtype, device=q.device)
    flip[:, 0] = torch.sign(det)
    return q * flip[:, None, :]


def sample_permutations(n: int, symmetry, *, device: torch.device | str | None = None) -> torch.Tensor:
    """n uniform permutations of the particles within each group of identical particles,
    shape (n, n_particles), as gather indices: (perm . x)_i = x_{perm[i]}."""
    p = torch.arange(symmetry.n_particles, device=device).repeat(n, 1)
    for group in symmetry.identical:
        if len(group) > 1:
            idx = torch.as_tensor(group, device=device)
            p[:, idx] = idx[torch.rand(n, len(group), device=device).argsort(-1)]
    return p


def apply_group(y: torch.Tensor, rot: torch.Tensor, perm: torch.Tensor, symmetry) -> torch.Tensor:
    """(g y)_i = R y_{perm[i]} for flattened configurations y (..., n*D); rot (..., D, D) and
    perm (..., n) broadcast against y's leading dims."""
    n, D = symmetry.n_particles, symmetry.spatial_dim
    if y.shape[-1] != n * D:
        raise ShapeError(f"apply_group: expected last dim {n * D} ({n} particles in {D}-D), got {tuple(y.shape)}")
    lead = torch.broadcast_shapes(y.shape[:-1], rot.shape[:-2], perm.shape[:-1])
    v = y.reshape(*y.shape[:-1], n, D).expand(*lead, n, D)
    v = torch.gather(v, -2, perm.expand(*lead, n)[..., None].expand(*lead, n, D))
    return (v @ rot.expand(*lead, D, D).transpose(-1, -2)).reshape(*lead, n * D)


def random_group_elements(batch: int, K: int, symmetry, *, dtype=None, device=None,
                          identity_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotations (batch, K, D, D) and permutations (batch, K, n); element 0 is the identity when
    identity_first, the rest are Haar x uniform."""
    D, n = symmetry.spatial_dim, symmetry.n_particles
    rot = sample_rotations(batch * K, D, dtype=dtype, device=device).view(batch, K, D, D)
    perm = sample_permutations(batch * K, symmetry, device=device).view(batch, K, n)
    if identity_first:
        rot[:, 0] = torch.eye(D, dtype=rot.dtype, device=rot.device)
        perm[:, 0] = torch.arange(n, device=perm.device)
    return rot, perm


def augment(y: torch.Tensor, symmetry) -> torch.Tensor:
    """Plain data augmentation: g y with one random g = (rotation, permutation) per row."""
    return augment_together(symmetry, y)[0]


def augment_together(symmetry, y: torch.Tensor, *others: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """(g y, g o for o in others): one random g per row, applied alike to y and to equivariant
    companions of the same shape (e.g. the scores grad log p(y)); None passes through."""
    rot, perm = random_group_elements(y.shape[0], 1, symmetry, dtype=y.dtype, device=y.device,
                                      identity_first=False)
    return tuple(None if v is None else apply_group(v, rot[:, 0], perm[:, 0], symmetry) for v in (y, *others))


# -- the orbit target ----------------------------------------------------------------------------
@dataclass
class OrbitTarget:
    """y_hat (B, [N,] d): estimate of E[y | x_t]; weights (B, [N,] K): SNIS weights (sum to 1);
    score_hat: the same average of the rotated/permuted scores g grad log p(y) (when given)."""

    y_hat: torch.Tensor
    weights: torch.Tensor
    score_hat: torch.Tensor | None = None

    @property
    def ess(self) -> torch.Tensor:
        """Effective number of group samples 1 / sum_k w_k^2, in [1, K]."""
        return 1.0 / (self.weights ** 2).sum(-1)


def orbit_target(x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor, K: int, *, symmetry, sigma: float,
                 t_threshold: float | None = None, score: torch.Tensor | None = None) -> OrbitTarget:
    """Orbit Rao-Blackwell estimate of E[y | x_t] under the pinned-Brownian noising kernel
    q_t(x_t | y) = N(t y, sigma^2 t (1 - t)) on the CoM-free subspace (module docstring).

    x_t: (B, d) or (B, N, d) noisy states (several times per data point share the K group
    samples); y: (B, d) CoM-free data; t: (B,) or (B, N) in [0, 1). K = 1 returns y itself.
    t_threshold: use the group samples only where t < t_threshold. score: (B, d) grad log p(y), averaged
    with the same weights (for G-invariant p, grad log p(g y) = g grad log p(y))."""
    if K < 1:
        raise ValueError(f"orbit_target: K must be >= 1, got {K}")
    single = x_t.dim() == 2
    if single:
        x_t, t = x_t[:, None], t[:, None]
    if t.shape != x_t.shape[:2] or y.shape != (x_t.shape[0], x_t.shape[-1]):
        raise ShapeError(f"orbit_target: x_t {tuple(x_t.shape)}, y {tuple(y.shape)}, t {tuple(t.shape)} do not match")
    if (t < 0).any() or (t >= 1).any():
        raise ValueError("orbit_target: t must lie in [0, 1) (at t = 1 the posterior is a point mass)")
    rot, perm = random_group_elements(y.shape[0], K, symmetry, dtype=y.dtype, device=y.device)
    gy = apply_group(y[:, None], rot, perm, symmetry)                      # (B, K, d)
    # -||x - t g y||^2 / (2 sigma^2 t (1-t)) = t <x, g y> / (sigma^2 t (1-t)) + (terms free of k),
    # since ||g y|| = ||y||: the logit is <x, g y> / (sigma^2 (1 - t)) (0 at t = 0, where x_0 = 0).
    logits = torch.einsum("bnd,bkd->bnk", x_t, gy) / (sigma ** 2 * (1 - t))[..., None]
    if t_threshold is not None:
        off = (t >= t_threshold)[..., None] & (torch.arange(K, device=t.device) > 0)
        logits = logits.masked_fill(off, float("-inf"))
    w = torch.softmax(logits, -1)
    y_hat = torch.einsum("bnk,bkd->bnd", w, gy)
    s_hat = None
    if score is not None:
        if score.shape != y.shape:
            raise ShapeError(f"orbit_target: score {tuple(score.shape)} must have y's shape {tuple(y.shape)}")
        s_hat = torch.einsum("bnk,bkd->bnd", w, apply_group(score[:, None], rot, perm, symmetry))
    if single:
        y_hat, w = y_hat[:, 0], w[:, 0]
        s_hat = None if s_hat is None else s_hat[:, 0]
    return OrbitTarget(y_hat, w, s_hat)


# -- the loss ------------------------------------------------------------------------------------
def bridge_marginal_sample(y: torch.Tensor, t: torch.Tensor, reference) -> torch.Tensor:
    """x_t ~ N(t y, sigma^2 t (1 - t)) on the reference's state space; y (B, d), t (B, N) -> (B, N, d)."""
    std = reference.sigma * (t * (1 - t)).clamp_min(0).sqrt()
    noise = reference.noise_like(y[:, None].expand(*t.shape, y.shape[-1]).contiguous())
    return t[..., None] * y[:, None] + std[..., None] * noise


def drift_on_states(sampler, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """mu(x, t) projected on the state space for x (M, d), t (M,); scores (counted energy calls)
    only if the drift needs them."""
    score = None
    if sampler.drift.needs_score:
        _, score = sampler.target.log_reward_and_score(x)
    return sampler.reference.project(sampler.drift(x, t, score))


def drift_matching_residual(sampler, x: torch.Tensor, t: torch.Tensor, y_hat: torch.Tensor,
                            score_hat: torch.Tensor | None = None, kappa: float = 0.0) -> torch.Tensor:
    """|| mu(x, t) - u ||^2 / (2 sigma^2), shape (M,), for x, y_hat (M, d), t (M,) < 1, with the bridge
    drift u = (y_hat - x) / (1 - t), or with kappa > 0 and score_hat the mix
    u = lambda (y_hat + sigma^2 score_hat) + (1 - lambda) (y_hat - x) / (1 - t), lambda = 1 / (1 + kappa (1 - t)),
    whose conditional mean is the same for data from the target (`objectives.adjoint.mixed_target`:
    score and Tweedie forms of the Föllmer drift); finite at t = 1."""
    mu = drift_on_states(sampler, x, t)
    if kappa > 0:
        if score_hat is None:
            raise ValueError("drift_matching_residual: kappa > 0 needs the scores of the data (score_hat)")
        ref = sampler.reference
        u = mixed_target(ref, ref.project(y_hat + ref.sigma ** 2 * score_hat), y_hat, x, t, kappa)
    else:
        u = (y_hat - x) / (1 - t)[:, None]
    return ((mu - u) ** 2).sum(-1) / (2 * sampler.reference.sigma ** 2)


def orbit_ml_loss(sampler, y: torch.Tensor, grid: torch.Tensor, *, K: int = 32, t_threshold: float | None = None,
                  augment_data: bool = True, symmetry=None, score: torch.Tensor | None = None,
                  kappa: float = 0.0) -> tuple[torch.Tensor, OrbitTarget]:
    """Rao-Blackwellised backward maximum-likelihood loss (module docstring) on data y (B, d) and
    grids (B, N+1): mean over b of sum_{n<N} dt_n ||mu(x_n, t_n) - (y_hat_n - x_n)/(1 - t_n)||^2 / (2 sigma^2).
    One drift pass on B*N states. K = 1 with augment_data = True is plain data augmentation.
    With kappa > 0 and the data's scores grad log p(y) (B, d) the target is the lower-variance mix of
    `drift_matching_residual` (same expected gradient for data from p; the score form is far less
    noisy near t = 1, where the bridge form's variance grows like 1 / (1 - t))."""
    symmetry = symmetry if symmetry is not None else sampler.target.symmetry
    if symmetry is None:
        raise ValueError(f"orbit_ml_loss: target {sampler.target.name!r} has no symmetry")
    if kappa < 0 or (kappa > 0 and score is None):
        raise ValueError(f"orbit_ml_loss: kappa = {kappa} must be >= 0, and > 0 needs the data's scores")
    ref = sampler.reference
    y = ref.project(y.to(grid))
    score = None if score is None else ref.project(score.to(grid))
    if augment_data:
        y, score = augment_together(symmetry, y, score)
    t, dt = grid[:, :-1], grid[:, 1:] - grid[:, :-1]
    x = bridge_marginal_sample(y, t, ref)
    target = orbit_target(x, y, t, K, symmetry=symmetry, sigma=ref.sigma, t_threshold=t_threshold,
                          score=score if kappa > 0 else None)
    B, N, d = x.shape
    s_hat = None if target.score_hat is None else target.score_hat.reshape(B * N, d)
    res = drift_matching_residual(sampler, x.reshape(B * N, d), t.reshape(-1), target.y_hat.reshape(B * N, d),
                                  s_hat, kappa)
    return (res.view(B, N) * dt).sum(1).mean(), target


@dataclass
class OrbitOptions:
    """Orbit maximum likelihood's options (flat keys orbit_K, orbit_t_threshold, orbit_kappa)."""
    K: int = option(0, "group elements per data point of the orbit Rao-Blackwell target (Tong et al. 2025); "
                    ">= 1 for objective=orbit_ml; with objective=ml, K >= 1 swaps in this estimator on buffer "
                    "batches and in the ML warm-up (0: plain ML on backward paths)", alias="orbit_K", low=0)
    t_threshold: float | None = option(None, "spend group samples only where t < this (high noise)",
                                       alias="orbit_t_threshold", low=0.0, high=1.0, low_open=True)
    kappa: float = option(0.0, "mix the score form of the drift target in (as adjoint_kappa); each buffer row's "
                          "score is computed once, when first drawn (train calls)", alias="orbit_kappa", low=0.0)

    def __post_init__(self) -> None:
        if self.kappa and self.K < 1:
            raise ConfigError(f"config key 'orbit_kappa' = {self.kappa!r}: needs orbit_K >= 1 (it mixes the orbit "
                              "ML target)")


@OBJECTIVES.register("orbit_ml", OrbitOptions)
class OrbitMaximumLikelihood(Objective):
    """`orbit_ml_loss` as an objective over *buffer states* (searcher samples of a symmetric target):
    it draws its own bridge states, so no rollout is needed (`batch = "buffer_states"`: the loop
    passes `loss(sampler, y, grid, score)`). Called on trajectories it uses their end points
    traj.x[:, -1] and grid traj.t: backward trajectories from data only (on forward ones it would fit
    the sampler's own samples)."""

    name = "orbit_ml"
    batch = "buffer_states"
    off_policy_only = True
    fits_log_Z = False

    def __init__(self, K: int | OrbitOptions = 32, t_threshold: float | None = None, augment_data: bool = True,
                 kappa: float = 0.0) -> None:
        if isinstance(K, OrbitOptions):
            K, t_threshold, kappa = K.K, K.t_threshold, K.kappa
        if int(K) < 1:
            raise ValueError(f"orbit ML: K (orbit_K) must be >= 1, got {K}")
        if not kappa >= 0:
            raise ValueError(f"orbit ML: kappa must be >= 0, got {kappa}")
        self.K, self.t_threshold, self.augment_data = int(K), t_threshold, bool(augment_data)
        self.kappa = float(kappa)
        self.last_ess: float | None = None

    @property
    def needs_scores(self) -> bool:
        """Whether `loss` needs the buffer states' scores (the score form is mixed in)."""
        return self.kappa > 0

    def loss(self, sampler, y: torch.Tensor, grid: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        """score: grad log R(y) (B, d), needed when kappa > 0."""
        loss, target = orbit_ml_loss(sampler, y, grid, K=self.K, t_threshold=self.t_threshold,
                                     augment_data=self.augment_data, score=score, kappa=self.kappa)
        self.last_ess = float(target.ess.mean())
        return loss

    def __call__(self, traj, sampler):
        y = traj.x[:, -1].detach()
        score = sampler.target.log_reward_and_score(y)[1] if self.kappa else None
        return self.loss(sampler, y, traj.t, score)
