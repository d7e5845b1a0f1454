"""Synthetic targets with exact samplers and exact log Z (no posteriordb needed).

Each energy is the natural unnormalised one (no Gaussian constants), so log Z is not 0.
"""
from __future__ import annotations

import math

import numpy as np

from .arrays import LOG_2PI
from .target import HeldoutTarget

N_REFERENCE = 10_000


def banana_log_density(theta, xp, data):
    """Twisted Gaussian (Haario, Saksman & Tamminen 2001, "An adaptive Metropolis algorithm"):
    y = theta, x = phi_b(y) = (y_1, y_2 + b (y_1^2 - s1^2), y_3, ...) ~ N(0, diag(s1^2, 1, ...)),
    |d phi_b / dy| = 1, so log p(y) = -y_1^2 / (2 s1^2) - x_2^2 / 2 - sum_{i>2} y_i^2 / 2."""
    b, s1 = float(data["b"]), float(data["s1"])
    y1, y2 = theta[:, 0], theta[:, 1]
    x2 = y2 + b * (y1 * y1 - s1 * s1)
    rest = xp.sum(theta[:, 2:] * theta[:, 2:], 1)
    return -0.5 * (y1 / s1) ** 2 - 0.5 * x2 * x2 - 0.5 * rest


def banana(dim: int = 2, b: float = 0.1, s1: float = 10.0, seed: int = 0) -> HeldoutTarget:
    """Haario's strongly twisted banana: d = 2, b = 0.1, s1 = 10; log Z = d/2 log 2pi + log s1."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim))
        x[:, 0] *= s1
        x[:, 1] -= b * (x[:, 0] ** 2 - s1 ** 2)
        return x

    x = draw(np.random.default_rng(seed), N_REFERENCE)
    return HeldoutTarget(
        name="banana", dim=dim, kind="synthetic: curved", source=f"Haario et al. 2001, b={b}, s1={s1}",
        param_names=[f"y{i + 1}" for i in range(dim)], log_density=banana_log_density,
        data={"b": np.asarray(b), "s1": np.asarray(s1)}, reference=x,
        log_Z=0.5 * dim * LOG_2PI + math.log(s1),
        exact_moments=(np.zeros(dim), np.sqrt(np.r_[s1 ** 2, 1 + 2 * b ** 2 * s1 ** 4, np.ones(dim - 2)])),
        exact_sampler=draw)


def funnel_log_density(theta, xp, data):
    """Neal's funnel (Neal 2003, "Slice sampling", Ann. Stat. 31): v ~ N(0, s^2),
    x_i | v ~ N(0, e^v), i = 1..d-1; log p = -v^2/(2 s^2) - sum_i x_i^2 e^{-v} / 2 - (d-1) v / 2."""
    s = float(data["scale"])
    v, x = theta[:, 0], theta[:, 1:]
    k = x.shape[1]
    return -0.5 * (v / s) ** 2 - 0.5 * xp.sum(x * x, 1) * xp.exp(-v) - 0.5 * k * v


def funnel(dim: int = 10, scale: float = 3.0, seed: int = 1) -> HeldoutTarget:
    """The 10-D funnel, v ~ N(0, 3^2); log Z = d/2 log 2pi + log 3."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        v = scale * rng.standard_normal((n, 1))
        return np.concatenate([v, rng.standard_normal((n, dim - 1)) * np.exp(0.5 * v)], 1)

    return HeldoutTarget(
        name="funnel10", dim=dim, kind="synthetic: funnel", source=f"Neal 2003, v ~ N(0, {scale:g}^2)",
        param_names=["v"] + [f"x{i + 1}" for i in range(dim - 1)], log_density=funnel_log_density,
        data={"scale": np.asarray(scale)}, reference=draw(np.random.default_rng(seed), N_REFERENCE),
        log_Z=0.5 * dim * LOG_2PI + math.log(scale),
        exact_moments=(np.zeros(dim), np.r_[scale, np.full(dim - 1, math.exp(scale ** 2 / 4))]),
        exact_sampler=draw)


def gaussian_log_density(theta, xp, data):
    """N(mu, Sigma) unnormalised: log p = -(theta - mu)^T P (theta - mu) / 2, P = Sigma^{-1}."""
    r = theta - xp.const(data["mean"], theta)
    return -0.5 * xp.sum(xp.matmul(r, xp.const(data["precision"], theta)) * r, 1)


def ill_conditioned_gaussian(dim: int = 10, condition: float = 1e4, seed: int = 2) -> HeldoutTarget:
    """Sigma = Q diag(lam) Q^T, lam log-spaced on [cond^{-1/2}, cond^{1/2}] (sd 0.1 .. 10 for
    cond 1e4), Q a Haar-random rotation (QR of a Gaussian matrix, signs fixed), mean ~ N(0, I),
    all from `seed`. log Z = d/2 log 2pi + sum(log lam)/2 (= d/2 log 2pi here)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    lam = np.logspace(-0.5 * math.log10(condition), 0.5 * math.log10(condition), dim)
    mean = rng.standard_normal(dim)
    cov = (q * lam) @ q.T
    precision = (q / lam) @ q.T

    def draw(rng_: np.random.Generator, n: int) -> np.ndarray:
        return mean + (rng_.standard_normal((n, dim)) * np.sqrt(lam)) @ q.T

    ref = draw(rng, N_REFERENCE)
    return HeldoutTarget(
        name="gauss_illcond", dim=dim, kind="synthetic: ill-conditioned",
        source=f"rotated Gaussian, cond {condition:g}, seed {seed}",
        param_names=[f"x{i + 1}" for i in range(dim)], log_density=gaussian_log_density,
        data={"mean": mean, "precision": 0.5 * (precision + precision.T)}, reference=ref,
        log_Z=0.5 * dim * LOG_2PI + 0.5 * float(np.log(lam).sum()), extra={"cov": cov},
        exact_moments=(mean, np.sqrt(np.diag(cov))), exact_sampler=draw)


def mixture_log_density(theta, xp, data):
    """sum_k w_k N(theta; mu_k, I) unnormalised by (2 pi)^{d/2}:
    log p = logsumexp_k [log w_k - |theta - mu_k|^2 / 2]."""
    means = xp.const(data["means"], theta)                       # (K, d)
    r = theta[:, None, :] - means[None, :, :]                     # (B, K, d)
    return xp.logsumexp(xp.const(data["log_w"], theta) - 0.5 * xp.sum(r * r, 2), 1)


def mixture(dim: int = 4, weights: tuple[float, ...] = (0.8, 0.2), offset: float = 2.5,
            seed: int = 3) -> HeldoutTarget:
    """Two unit Gaussians at -offset*1 and +offset*1 (distance 2 offset sqrt(d) = 10 sd for d = 4),
    weights 0.8 / 0.2: a barrier of ~12.5 nats that NUTS does not cross. log Z = d/2 log 2pi."""
    rng = np.random.default_rng(seed)
    w = np.asarray(weights) / np.sum(weights)
    means = np.stack([-offset * np.ones(dim), offset * np.ones(dim)])

    def draw(rng_: np.random.Generator, n: int) -> np.ndarray:
        return means[rng_.choice(len(w), size=n, p=w)] + rng_.standard_normal((n, dim))

    ref = draw(rng, N_REFERENCE)
    return HeldoutTarget(
        name="mixture_unequal", dim=dim, kind="synthetic: multimodal",
        source=f"2 unit Gaussians at +-{offset:g}*1, weights {w[0]:g}/{w[1]:g}",
        param_names=[f"x{i + 1}" for i in range(dim)], log_density=mixture_log_density,
        data={"means": means, "log_w": np.log(w)}, reference=ref,
        log_Z=0.5 * dim * LOG_2PI, modes=means, extra={"weights": w},
        exact_moments=(w @ means, np.sqrt(1.0 + w @ means ** 2 - (w @ means) ** 2)), exact_sampler=draw)


SYNTHETIC = {"banana": banana, "funnel10": funnel, "gauss_illcond": ill_conditioned_gaussian,
             "mixture_unequal": mixture}
