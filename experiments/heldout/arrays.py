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
    both backends) and const(array, like) (a numpy constant as an array of like's dtype/device).
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
        const=lambda a, like: torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device))


def _jax_namespace() -> Namespace:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    return Namespace(
        jnp, "jax",
        logsumexp=lambda x, axis: logsumexp(x, axis=axis),
        softplus=jax.nn.softplus,
        log_sigmoid=jax.nn.log_sigmoid,
        cholesky=jnp.linalg.cholesky,
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


def normal_lpdf(z, log_sd, xp: Namespace):
    """log N(z * sd | 0, sd^2) given the standardised residual z and log sd (broadcast):
    -z^2/2 - log sd - log(2 pi)/2."""
    return -0.5 * z * z - log_sd - 0.5 * LOG_2PI


def half_cauchy_lpdf_log(u, scale: float, xp: Namespace):
    """log density of u = log s where s ~ half-Cauchy(0, scale), Jacobian ds/du = s included:
    log(2 / (pi scale)) - log(1 + (s / scale)^2) + u, with log(1 + e^{2v}) = softplus(2v),
    v = u - log scale, so that no exp overflows in the tails."""
    return math.log(2.0 / (math.pi * scale)) - xp.softplus(2.0 * (u - math.log(scale))) + u
