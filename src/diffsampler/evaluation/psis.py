"""Pareto-smoothed importance sampling (PSIS): the diagnostic k̂ and smoothed weights.

Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance sampling", JMLR 25 (2024).
Given S log importance ratios log w_s (here the sampler's trajectory log-weights), the M largest
ratios, M = ceil(min(0.2 S, 3 sqrt(S))), are modelled as a generalized Pareto distribution (GPD)
above the threshold u (the (M+1)-th largest ratio):

    P(w - u <= y | w > u) = 1 - (1 + k y / s)^(-1/k).

Its shape k̂ says how many finite moments the ratios have (1/k̂): with k̂ <= min(1 - 1/log10 S, 0.7)
the importance-sampling estimates (log Z (IS), weighted means) are reliable; above 0.7 their error
decays too slowly for any practical S to fix, so the sampler's weights cannot be trusted (Yao,
Vehtari, Simpson & Gelman, "Yes, but did it work?", ICML 2018, use the same k̂ for variational
approximations). The GPD is fitted by the empirical-Bayes estimator of Zhang & Stephens,
Technometrics 51 (2009), with the weakly informative prior that shrinks k̂ toward 0.5 with the
weight of 10 observations (Vehtari et al. 2024, appendix). Smoothing replaces the M largest
ratios by the GPD quantiles at (z - 1/2) / M, z = 1..M, truncated at the largest raw ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIOR_WEIGHT = 10.0   # the weakly informative prior's pseudo-observations (shrinkage toward k = 0.5)
MIN_TAIL = 5          # fewer tail ratios than this: no fit (k̂ = inf)


@dataclass
class PSISResult:
    """log_w: (S,) Pareto-smoothed log-weights (unnormalised, same offset as the input);
    k_hat: the fitted GPD shape (inf when the tail cannot be fitted); tail: M;
    threshold: min(1 - 1/log10 S, 0.7), the largest k̂ at which the estimates are reliable."""

    log_w: np.ndarray
    k_hat: float
    tail: int
    threshold: float

    @property
    def reliable(self) -> bool:
        return self.k_hat <= self.threshold


def k_threshold(n: int) -> float:
    """min(1 - 1/log10 S, 0.7): above it the importance-sampling error decays too slowly."""
    return min(1.0 - 1.0 / math.log10(n), 0.7) if n > 10 else 0.0


def fit_generalized_pareto(y: np.ndarray) -> tuple[float, float]:
    """(k, s) of a GPD fitted to exceedances y > 0 (Zhang & Stephens 2009, profile-likelihood
    weighted average over a grid of theta = -k / s), k shrunk by the weakly informative prior."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    n = y.size
    m = 30 + int(math.sqrt(n))
    quartile = y[max(0, int(n / 4 + 0.5) - 1)]
    if quartile <= 0:   # ties at the threshold: the smallest positive exceedance sets the grid's scale
        quartile = y[y > 0][0]
    j = np.arange(1, m + 1)
    with np.errstate(all="ignore"):   # extreme weights (a quartile near underflow): some grid points fail
        theta = 1.0 / y[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
        k_j = np.log1p(-theta[:, None] * y[None]).mean(1)        # (m,)
        profile = n * (np.log(-theta / k_j) - k_j - 1.0)
    ok = np.isfinite(profile)
    if not ok.any():   # no grid point gives a finite likelihood: a tail as heavy as it gets
        return math.inf, float(y[-1])
    theta, profile = theta[ok], profile[ok]
    w = np.exp(profile - profile.max())
    theta_hat = float((theta * w).sum() / w.sum())
    k = float(np.log1p(-theta_hat * y).mean())
    s = -k / theta_hat
    k = (n * k + PRIOR_WEIGHT * 0.5) / (n + PRIOR_WEIGHT)
    return k, s


def gpd_quantile(p: np.ndarray, k: float, s: float) -> np.ndarray:
    """Quantile function of the GPD with shape k and scale s at probabilities p."""
    if abs(k) < 1e-12:
        return -s * np.log1p(-p)
    return s * np.expm1(-k * np.log1p(-p)) / k


def psis(log_w) -> PSISResult:
    """Pareto-smooth log importance weights (S,) and return k̂ (see module). Non-finite log-weights
    (-inf: zero weight) are kept as they are and do not enter the fit. Fewer than 25 finite weights:
    k̂ = inf (no fit); a flat tail (ratios equal to 1e-12): k̂ = 0 (bounded ratios, nothing to smooth);
    a tail whose threshold underflows next to the largest weight (a spread beyond ~745 nats): k̂ = inf."""
    lw = np.asarray(log_w, dtype=np.float64).copy()
    finite = np.isfinite(lw)
    n = int(finite.sum())
    thr = k_threshold(max(n, 1))
    tail = int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))) if n else 0
    if n <= tail or tail < MIN_TAIL:
        return PSISResult(lw, math.inf, tail, thr)
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(lw[idx])]
    shift = lw[order[-1]]
    w = np.exp(lw[order] - shift)                      # ascending, largest = 1
    u = w[-tail - 1]
    y = w[-tail:] - u
    if not np.all(np.isfinite(y)) or u == 0.0:
        # u == 0: the tail's threshold lies more than ~745 nats below the largest weight, so the tail
        # holds underflowed zeros and a fit to it would read light; such a spread is no finite tail
        return PSISResult(lw, math.inf, tail, thr)
    if y.max() <= 1e-12:   # a flat tail (e.g. an exact sampler's equal weights): bounded ratios
        return PSISResult(lw, 0.0, tail, thr)
    k, s = fit_generalized_pareto(y)
    if not math.isfinite(k):
        return PSISResult(lw, math.inf, tail, thr)
    smoothed = u + gpd_quantile((np.arange(1, tail + 1) - 0.5) / tail, k, s)
    smoothed = np.minimum(smoothed, w[-1])
    with np.errstate(divide="ignore"):
        lw[order[-tail:]] = np.log(smoothed) + shift
    return PSISResult(lw, k, tail, thr)


__all__ = ["PSISResult", "psis", "fit_generalized_pareto", "gpd_quantile", "k_threshold"]
