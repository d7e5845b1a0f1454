"""Sample-quality figures against reference draws, and importance-sampling estimates from log-weights.

All moments are in the target's unconstrained parameterisation (the space the samplers work in).
"""
from __future__ import annotations

import numpy as np


def normalised_weights(log_w: np.ndarray | None, n: int) -> np.ndarray:
    """Self-normalised weights w_i = exp(log w_i - max) / sum (uniform when log_w is None); (n,)."""
    if log_w is None:
        return np.full(n, 1.0 / n)
    lw = np.asarray(log_w, np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    w = np.exp(lw - lw.max())
    return w / w.sum()


def moment_errors(x: np.ndarray, reference: np.ndarray | tuple[np.ndarray, np.ndarray],
                  log_w: np.ndarray | None = None) -> dict:
    """Per coordinate i, with reference mean m_i and sd s_i (of the draws `reference` (N, d), or
    given exactly as a (mean, sd) pair):
    mean error |E_q[x_i] - m_i| / s_i and sd error |sd_q(x_i) / s_i - 1|, where E_q is the plain
    average (log_w None) or the self-normalised importance average with w ~ exp(log_w).
    Returns the max and the mean over coordinates and the per-coordinate lists. x (n, d)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x).all(1)
    w = normalised_weights(None if log_w is None else np.asarray(log_w)[ok], int(ok.sum()))
    xs = x[ok]
    m_ref, s_ref = (reference if isinstance(reference, tuple)
                    else (reference.mean(0), reference.std(0, ddof=1)))
    m = w @ xs
    sd = np.sqrt(np.maximum(w @ (xs - m) ** 2, 0.0))
    me, se = np.abs(m - m_ref) / s_ref, np.abs(sd / s_ref - 1.0)
    return {"mean_err_max": float(me.max()), "mean_err_mean": float(me.mean()),
            "sd_err_max": float(se.max()), "sd_err_mean": float(se.mean()),
            "mean_err": me.tolist(), "sd_err": se.tolist(), "n_finite": int(ok.sum())}


def ess_fraction(log_w: np.ndarray) -> float:
    """Kish's ESS / n = (sum w)^2 / (n sum w^2)."""
    w = normalised_weights(log_w, len(log_w))
    return float(1.0 / (len(w) * (w * w).sum()))


def log_Z_is(log_w: np.ndarray) -> tuple[float, float]:
    """log Z_hat = log mean_i w_i and its delta-method standard error:
    Var(Z_hat) / Z^2 ~ (mean w^2 / (mean w)^2 - 1) / n, so se(log Z_hat) ~ sqrt((n / ESS - 1) / n)
    with ESS = (sum w)^2 / sum w^2 (Kish). w = exp(log_w), log_w = log p~(x) - log q(x)."""
    lw = np.asarray(log_w, np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    n, mx = len(lw), lw.max()
    log_z = float(mx + np.log(np.mean(np.exp(lw - mx))))
    ratio = 1.0 / ess_fraction(lw)              # = mean w^2 / (mean w)^2
    return log_z, float(np.sqrt(max(ratio - 1.0, 0.0) / n))


def psis_khat(log_w: np.ndarray) -> float:
    """Pareto k-hat of the right tail of the importance weights (Vehtari et al. 2024, "Pareto
    smoothed importance sampling", JMLR), by the library's own PSIS (`diffsampler.evaluation.psis`,
    the one every report uses). Not arviz-stats' `psislw`: that function takes log-*likelihoods*
    (LOO's weights are 1 / likelihood) and fits the tail of exp(-input), so log-weights passed to
    it give the k-hat of 1 / w, the left tail."""
    from diffsampler.evaluation.psis import psis
    return float(psis(np.asarray(log_w, np.float64)).k_hat)


def exact_draw_floor(target, n: int = 20_000, reps: int = 50, quantile: float = 0.9, seed: int = 0) -> dict:
    """The errors that draws which follow the target exactly would show: `reps` sets of n draws, each
    scored by `moment_errors` against `target.moments()`; returns the `quantile` over the sets of the
    max-over-coordinates mean and sd errors (and their medians). A sampler's errors below this floor
    cannot be told from those of exact draws.

    Draws come from `target.exact_sampler` where the target has one ("exact"); otherwise n draws with
    replacement from the reference ("bootstrap"), scored against the reference's own moments: that
    floor leaves out the reference's own Monte Carlo error, so it is a lower bound.
    Heavy tails make it large: on the 10-D funnel (x_i | v ~ N(0, e^v), v ~ N(0, 9)) the sample
    variance of x_i has relative sd sqrt(3 e^9 / n) ~ 1.1 at n = 20,000, so exact draws miss its sd by
    ~20-50%."""
    rng = np.random.default_rng(seed)
    ref = target.reference
    method = "exact" if target.exact_sampler is not None else "bootstrap"
    errs = []
    for _ in range(reps):
        x = (target.exact_sampler(rng, n) if method == "exact"
             else ref[rng.integers(0, ref.shape[0], n)])
        e = moment_errors(x, target.moments())
        errs.append((e["mean_err_max"], e["sd_err_max"]))
    errs = np.asarray(errs)
    hi, med = np.quantile(errs, quantile, 0), np.median(errs, 0)
    return {"method": method, "n": n, "reps": reps, "quantile": quantile,
            "mean_err_max": float(hi[0]), "sd_err_max": float(hi[1]),
            "mean_err_median": float(med[0]), "sd_err_median": float(med[1])}
