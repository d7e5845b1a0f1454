"""One array namespace `xp` for every log density: torch or jax.numpy, plus the few functions whose
names or signatures differ between them.

A log density is written once as `log_density(theta, xp, data)` with theta of shape (B, d) and
returns (B,). It uses only functions torch and jax.numpy share under the same name and positional
signature (exp, log, log1p, sqrt, sum(x, axis), concatenate(xs, axis), stack, matmul, where, ...)
and the shim functions below.
"""
from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


class Namespace:
    """Delegates every attribute to `module` (torch or jax.numpy) except the shim functions:

    logsumexp(x, axis), softplus(x) = log(1 + e^x), log_sigmoid(x) = -softplus(-x),
    cholesky(a) (lower factor of a batch (..., n, n); NaN where a is not positive definite, on
    both backends), solve_lower(L, b) (L^-1 b for lower-triangular L, batched (..., n, n) and
    (..., n, k)) and const(array, like) (a numpy constant as an array of like's dtype/device).
    """

    def __init__(self, module: ModuleType, name: str, **shim: Any) -> None:
        self._module, self.name, self._shim = module, name, shim

    def __getattr__(self, attr: str) -> Any:
        shim = self.__dict__.get("_shim", {})
        return shim[attr] if attr in shim else getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"Namespace({self.name})"


def _torch_namespace() -> Namespace:
    import torch
    import torch.nn.functional as F

    def cholesky(a):
        L, info = torch.linalg.cholesky_ex(a)
        return torch.where((info == 0)[..., None, None], L, torch.nan)

    return Namespace(
        torch, "torch",
        logsumexp=lambda x, axis: torch.logsumexp(x, dim=axis),
        softplus=F.softplus,
        log_sigmoid=F.logsigmoid,
        cholesky=cholesky,
        solve_lower=lambda L, b: torch.linalg.solve_triangular(L, b, upper=False),
        const=lambda a, like: torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device))


def _jax_namespace() -> Namespace:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular
    from jax.scipy.special import logsumexp

    return Namespace(
        jnp, "jax",
        logsumexp=lambda x, axis: logsumexp(x, axis=axis),
        softplus=jax.nn.softplus,
        log_sigmoid=jax.nn.log_sigmoid,
        cholesky=jnp.linalg.cholesky,
        solve_lower=lambda L, b: solve_triangular(L, b, lower=True),
        const=lambda a, like: jnp.asarray(np.asarray(a), dtype=like.dtype))


_CACHE: dict[str, Namespace] = {}


def namespace(name: str) -> Namespace:
    """The shimmed namespace for "torch" or "jax" (jax is imported, with float64 on, only here)."""
    if name not in _CACHE:
        _CACHE[name] = {"torch": _torch_namespace, "jax": _jax_namespace}[name]()
    return _CACHE[name]


def linear_recurrence(a, b, xp: Namespace):
    """s_t = a_t s_{t-1} + b_t along the last axis with s_{-1} = 0, for a, b of shape (B, T).

    A log-depth prefix scan over the affine maps s -> a_t s + b_t (Blelloch 1990, "Prefix sums and
    their applications"): ceil(log2 T) rounds of batched slicing, no loop over time steps. Each
    round composes every map with the one `off` steps before it: (a_t, b_t) <- (a_t a_{t-off},
    a_t b_{t-off} + b_t); after the last round b_t = s_t.
    """
    T, off = b.shape[-1], 1
    while off < T:
        b = xp.concatenate([b[:, :off], a[:, off:] * b[:, :-off] + b[:, off:]], 1)
        a = xp.concatenate([a[:, :off], a[:, off:] * a[:, :-off]], 1)
        off *= 2
    return b


def log_matmul(a, b, xp: Namespace):
    """log(exp(a) @ exp(b)) for batches of matrices (..., n, m), (..., m, k), without overflow:
    c_ik = logsumexp_j (a_ij + b_jk)."""
    return xp.logsumexp(a[..., :, :, None] + b[..., None, :, :], -2)


def log_matrix_chain(m, xp: Namespace):
    """log(exp(m_1) @ exp(m_2) @ ... @ exp(m_T)) for m of shape (B, T, n, n), in order.

    A pairwise tree reduction: each round multiplies neighbours (1, 2), (3, 4), ... (an odd
    length first folds its last matrix into the one before it), ceil(log2 T) rounds of batched
    log-matmuls and no loop over the T factors; the forward algorithm of a hidden Markov model is
    such a chain (Rabiner 1989)."""
    while m.shape[1] > 1:
        if m.shape[1] % 2:
            m = xp.concatenate([m[:, :-2], log_matmul(m[:, -2:-1], m[:, -1:], xp)], 1)
        if m.shape[1] > 1:
            m = log_matmul(m[:, 0::2], m[:, 1::2], xp)
    return m[:, 0]


def student_t_lpdf(x, nu: float, loc: float, scale: float, xp: Namespace):
    """log Student-t(x | nu, loc, scale): lgamma((nu+1)/2) - lgamma(nu/2) - log(nu pi)/2 - log scale
    - (nu+1)/2 log(1 + ((x - loc)/scale)^2 / nu)."""
    z = (x - loc) / scale
    const = math.lgamma(0.5 * (nu + 1)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi) - math.log(scale)
    return const - 0.5 * (nu + 1) * xp.log1p(z * z / nu)


def half_student_t_lpdf_log(u, nu: float, scale: float, xp: Namespace):
    """log density of u = log s where s ~ half-Student-t(nu, 0, scale) on (0, inf) (twice the
    Student-t density), Jacobian s included; log(1 + (s/scale)^2 / nu) = softplus(2v - log nu),
    v = u - log scale, so that nothing overflows in the tails."""
    const = (math.log(2.0) + math.lgamma(0.5 * (nu + 1)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
             - math.log(scale))
    return const - 0.5 * (nu + 1) * xp.softplus(2.0 * (u - math.log(scale)) - math.log(nu)) + u


def half_normal_lpdf_log(u, scale: float, xp: Namespace):
    """log density of u = log s where s ~ half-N(0, scale^2), Jacobian s included:
    log 2 - s^2 / (2 scale^2) - log scale - log(2 pi)/2 + u."""
    return math.log(2.0) + normal_lpdf(xp.exp(u) / scale, math.log(scale), xp) + u


def normal_lpdf(z, log_sd, xp: Namespace):
    """log N(z * sd | 0, sd^2) given the standardised residual z and log sd (broadcast):
    -z^2/2 - log sd - log(2 pi)/2."""
    return -0.5 * z * z - log_sd - 0.5 * LOG_2PI


def half_cauchy_lpdf_log(u, scale: float, xp: Namespace):
    """log density of u = log s where s ~ half-Cauchy(0, scale), Jacobian ds/du = s included:
    log(2 / (pi scale)) - log(1 + (s / scale)^2) + u, with log(1 + e^{2v}) = softplus(2v),
    v = u - log scale, so that no exp overflows in the tails."""
    return math.log(2.0 / (math.pi * scale)) - xp.softplus(2.0 * (u - math.log(scale))) + u
