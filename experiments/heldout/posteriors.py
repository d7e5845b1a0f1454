"""posteriordb posteriors written as unconstrained log densities (log-Jacobians included).

Nothing of posteriordb is stored here: data and reference draws are read at run time from a local
clone of github.com/stan-dev/posteriordb (path from `--posteriordb` or the env var POSTERIORDB;
either the repository root or its `posterior_database/` folder). The Stan programs there are the
specification; each log density below is an independent rewrite, with all normalising constants
of proper priors and likelihoods kept (so log Z is the log evidence where the priors are proper).
Reference draws (10 chains x 1,000, constrained space) are mapped to the unconstrained space.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import LOG_2PI, half_cauchy_lpdf_log, linear_recurrence, normal_lpdf
from .target import HeldoutTarget

Draws = dict[str, np.ndarray]   # name -> (chains, draws), constrained space


def posteriordb_root(path: str | os.PathLike | None = None) -> Path | None:
    """The `posterior_database/` folder of a posteriordb clone: `path`, else $POSTERIORDB; None if
    neither names an existing clone."""
    for cand in (path, os.environ.get("POSTERIORDB")):
        if not cand:
            continue
        p = Path(cand).expanduser()
        for root in (p / "posterior_database", p):
            if (root / "posteriors").is_dir() and (root / "reference_posteriors").is_dir():
                return root
    return None


def _read_json_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def load_posterior(root: Path, posterior: str) -> tuple[dict[str, Any], Draws, dict[str, Any]]:
    """(data, reference draws {name: (chains, draws)}, posterior info) of a posteriordb posterior."""
    info = json.loads((root / "posteriors" / f"{posterior}.json").read_text())
    data = _read_json_zip(root / "data" / "data" / f"{info['data_name']}.json.zip")
    ref = info.get("reference_posterior_name")
    if not ref:
        raise FileNotFoundError(f"{posterior}: posteriordb has no reference draws for it")
    chains = _read_json_zip(root / "reference_posteriors" / "draws" / "draws" / f"{ref}.json.zip")
    draws = {k: np.asarray([c[k] for c in chains], dtype=np.float64) for k in chains[0]}
    return data, draws, info


def _cols(draws: Draws, names: list[str]) -> np.ndarray:
    """Stack draws[name] for `names` as columns, chain-major rows: (chains * draws, len(names))."""
    return np.stack([draws[n].reshape(-1) for n in names], 1)


def _vec(name: str, n: int) -> list[str]:
    return [f"{name}[{i + 1}]" for i in range(n)]


# --------------------------------------------------------------------------------------------
# eight schools (Rubin 1981): y_j ~ N(theta_j, sigma_j), theta_j ~ N(mu, tau), mu ~ N(0, 5),
# tau ~ half-Cauchy(0, 5); unconstrained (., mu, log tau)
# --------------------------------------------------------------------------------------------
def eight_schools_noncentered_log_density(theta, xp, data):
    """theta = (eta_1..eta_J, mu, log tau), theta_j = mu + tau eta_j, eta_j ~ N(0, 1)."""
    y, sigma = xp.const(data["y"], theta), xp.const(data["sigma"], theta)
    J = data["y"].shape[0]
    eta, mu, u = theta[:, :J], theta[:, J], theta[:, J + 1]
    th = mu[:, None] + xp.exp(u)[:, None] * eta
    lik = xp.sum(normal_lpdf((y - th) / sigma, xp.log(sigma), xp), 1)
    return (xp.sum(normal_lpdf(eta, 0.0, xp), 1) + lik + normal_lpdf(mu / 5.0, math.log(5.0), xp)
            + half_cauchy_lpdf_log(u, 5.0, xp))


def eight_schools_centered_log_density(theta, xp, data):
    """theta = (theta_1..theta_J, mu, log tau): the funnel between tau and the theta_j."""
    y, sigma = xp.const(data["y"], theta), xp.const(data["sigma"], theta)
    J = data["y"].shape[0]
    th, mu, u = theta[:, :J], theta[:, J], theta[:, J + 1]
    prior = xp.sum(normal_lpdf((th - mu[:, None]) * xp.exp(-u)[:, None], u[:, None], xp), 1)
    lik = xp.sum(normal_lpdf((y - th) / sigma, xp.log(sigma), xp), 1)
    return prior + lik + normal_lpdf(mu / 5.0, math.log(5.0), xp) + half_cauchy_lpdf_log(u, 5.0, xp)


def _eight_schools(data: dict, draws: Draws, centered: bool) -> dict:
    J = int(data["J"])
    th, mu, tau = _cols(draws, _vec("theta", J)), _cols(draws, ["mu"]), _cols(draws, ["tau"])
    first = th if centered else (th - mu) / tau
    return dict(data={"y": np.asarray(data["y"], float), "sigma": np.asarray(data["sigma"], float)},
                reference=np.concatenate([first, mu, np.log(tau)], 1),
                param_names=(_vec("theta", J) if centered else _vec("eta", J)) + ["mu", "log_tau"],
                log_density=(eight_schools_centered_log_density if centered
                             else eight_schools_noncentered_log_density))


# --------------------------------------------------------------------------------------------
# linear regressions: y ~ N(X beta, sigma), flat beta; unconstrained (beta, log sigma)
# --------------------------------------------------------------------------------------------
def regression_log_density(theta, xp, data):
    """y_n ~ N(x_n . beta, sigma), beta flat; sigma ~ half-Cauchy(0, s) if data["sigma_scale"] > 0,
    else flat on (0, inf); theta = (beta, log sigma), Jacobian + log sigma."""
    X, y = xp.const(data["X"], theta), xp.const(data["y"], theta)
    beta, u = theta[:, :-1], theta[:, -1]
    z = (y[None, :] - xp.matmul(beta, X.T)) * xp.exp(-u)[:, None]
    lik = xp.sum(normal_lpdf(z, u[:, None], xp), 1)
    s = float(data["sigma_scale"])
    return lik + (half_cauchy_lpdf_log(u, s, xp) if s > 0 else u)


def _kidiq_interaction(data: dict, draws: Draws) -> dict:
    """kid_score ~ N(b1 + b2 mom_hs + b3 mom_iq + b4 mom_hs mom_iq, sigma), sigma ~ half-Cauchy(0, 2.5)."""
    hs, iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    X = np.stack([np.ones_like(hs), hs, iq, hs * iq], 1)
    return dict(data={"X": X, "y": np.asarray(data["kid_score"], float), "sigma_scale": np.asarray(2.5)},
                reference=np.concatenate([_cols(draws, _vec("beta", 4)), np.log(_cols(draws, ["sigma"]))], 1),
                param_names=_vec("beta", 4) + ["log_sigma"], log_density=regression_log_density)


def _mesquite_logvas(data: dict, draws: Draws) -> dict:
    """log weight ~ N(b1 + b2 log cv + b3 log ca + b4 log cs + b5 log th + b6 log dens + b7 group, sigma),
    cv = d1 d2 h, ca = d1 d2, cs = d1 / d2; sigma flat."""
    g = {k: np.asarray(v, float) for k, v in data.items() if isinstance(v, list)}
    d1, d2 = g["diam1"], g["diam2"]
    X = np.stack([np.ones_like(d1), np.log(d1 * d2 * g["canopy_height"]), np.log(d1 * d2), np.log(d1 / d2),
                  np.log(g["total_height"]), np.log(g["density"]), g["group"]], 1)
    return dict(data={"X": X, "y": np.log(g["weight"]), "sigma_scale": np.asarray(0.0)},
                reference=np.concatenate([_cols(draws, _vec("beta", 7)), np.log(_cols(draws, ["sigma"]))], 1),
                param_names=_vec("beta", 7) + ["log_sigma"], log_density=regression_log_density)


# --------------------------------------------------------------------------------------------
# time series
# --------------------------------------------------------------------------------------------
def ark_log_density(theta, xp, data):
    """AR(K): y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma), t > K; alpha, beta_k ~ N(0, 10),
    sigma ~ half-Cauchy(0, 2.5); theta = (alpha, beta_1..beta_K, log sigma)."""
    lags, y = xp.const(data["lags"], theta), xp.const(data["y"], theta)
    alpha, beta, u = theta[:, 0], theta[:, 1:-1], theta[:, -1]
    z = (y[None, :] - alpha[:, None] - xp.matmul(beta, lags.T)) * xp.exp(-u)[:, None]
    prior = xp.sum(normal_lpdf(theta[:, :-1] / 10.0, math.log(10.0), xp), 1)
    return xp.sum(normal_lpdf(z, u[:, None], xp), 1) + prior + half_cauchy_lpdf_log(u, 2.5, xp)


def _ark(data: dict, draws: Draws) -> dict:
    K, y = int(data["K"]), np.asarray(data["y"], float)
    T = y.shape[0]
    lags = np.stack([y[K - k:T - k] for k in range(1, K + 1)], 1)     # (T - K, K): y_{t-k}
    ref = np.concatenate([_cols(draws, ["alpha"] + _vec("beta", K)), np.log(_cols(draws, ["sigma"]))], 1)
    return dict(data={"lags": lags, "y": y[K:]}, reference=ref,
                param_names=["alpha"] + _vec("beta", K) + ["log_sigma"], log_density=ark_log_density)


def garch11_log_density(theta, xp, data):
    """GARCH(1,1) (Bollerslev 1986): y_t ~ N(mu, sigma_t), sigma_1 = data, sigma_t^2 = alpha0 +
    alpha1 (y_{t-1} - mu)^2 + beta1 sigma_{t-1}^2; flat priors on mu, alpha0 > 0, alpha1 in (0, 1),
    beta1 in (0, 1 - alpha1). theta = (mu, log alpha0, logit alpha1, logit(beta1 / (1 - alpha1)));
    log-Jacobian (Stan's bounds): log alpha0 + log s(a) + log s(-a) + log(1 - alpha1) + log s(b) + log s(-b),
    s the logistic function. The variance recursion is a linear recurrence (a prefix scan)."""
    y = xp.const(data["y"], theta)
    mu, u0, a, b = theta[:, 0], theta[:, 1], theta[:, 2], theta[:, 3]
    alpha0, alpha1 = xp.exp(u0), xp.exp(xp.log_sigmoid(a))
    log1m_alpha1 = xp.log_sigmoid(-a)
    beta1 = xp.exp(log1m_alpha1 + xp.log_sigmoid(b))
    r = y[None, :] - mu[:, None]                                      # (B, T)
    s1sq = float(data["sigma1"]) ** 2
    drive = alpha0[:, None] + alpha1[:, None] * r[:, :-1] * r[:, :-1]  # (B, T-1), t = 2..T
    drive = xp.concatenate([drive[:, :1] + (beta1 * s1sq)[:, None], drive[:, 1:]], 1)
    var = linear_recurrence(beta1[:, None] * xp.ones_like(drive), drive, xp)
    lik = xp.sum(-0.5 * r[:, 1:] * r[:, 1:] / var - 0.5 * xp.log(var), 1) - 0.5 * r[:, 0] ** 2 / s1sq
    const = -0.5 * y.shape[0] * LOG_2PI - 0.5 * math.log(s1sq)
    jac = (u0 + xp.log_sigmoid(a) + log1m_alpha1 + log1m_alpha1 + xp.log_sigmoid(b) + xp.log_sigmoid(-b))
    return lik + const + jac


def _garch11(data: dict, draws: Draws) -> dict:
    mu, a0, a1, b1 = (_cols(draws, [k]) for k in ("mu", "alpha0", "alpha1", "beta1"))
    ref = np.concatenate([mu, np.log(a0), np.log(a1 / (1 - a1)), np.log(b1 / (1 - a1 - b1))], 1)
    return dict(data={"y": np.asarray(data["y"], float), "sigma1": np.asarray(data["sigma1"], float)},
                reference=ref, param_names=["mu", "log_alpha0", "logit_alpha1", "logit_beta1_rel"],
                log_density=garch11_log_density)


def arma11_log_density(theta, xp, data):
    """ARMA(1,1): err_t = y_t - mu - phi y_{t-1} - theta err_{t-1} (y_0 = mu, err_0 = 0),
    err_t ~ N(0, sigma); mu ~ N(0, 10), phi, theta ~ N(0, 2), sigma ~ half-Cauchy(0, 2.5).
    theta = (mu, phi, theta, log sigma). err is a linear recurrence with factor -theta, so the
    energy grows like theta^(2T) for |theta| > 1 (overflows)."""
    y = xp.const(data["y"], theta)
    mu, phi, th, u = theta[:, 0], theta[:, 1], theta[:, 2], theta[:, 3]
    B, T = theta.shape[0], y.shape[0]
    y_prev = xp.concatenate([mu[:, None], xp.broadcast_to(y[None, :-1], (B, T - 1))], 1)
    drive = y[None, :] - mu[:, None] - phi[:, None] * y_prev
    err = linear_recurrence(-th[:, None] * xp.ones_like(drive), drive, xp)
    lik = xp.sum(normal_lpdf(err * xp.exp(-u)[:, None], u[:, None], xp), 1)
    prior = (normal_lpdf(mu / 10.0, math.log(10.0), xp) + normal_lpdf(phi / 2.0, math.log(2.0), xp)
             + normal_lpdf(th / 2.0, math.log(2.0), xp) + half_cauchy_lpdf_log(u, 2.5, xp))
    return lik + prior


def _arma11(data: dict, draws: Draws) -> dict:
    ref = np.concatenate([_cols(draws, ["mu", "phi", "theta"]), np.log(_cols(draws, ["sigma"]))], 1)
    return dict(data={"y": np.asarray(data["y"], float)}, reference=ref,
                param_names=["mu", "phi", "theta", "log_sigma"], log_density=arma11_log_density)


# --------------------------------------------------------------------------------------------
# Poisson GLM with a log link and a GP latent (the energy grows like exp(f) in the tails)
# --------------------------------------------------------------------------------------------
def _gp_cholesky(log_rho, log_alpha, d2, eye, xp):
    """L L^T = alpha^2 exp(-d2 / (2 rho^2)) + 1e-10 I, batched: (B,) -> (B, N, N)."""
    scale = xp.exp(-2.0 * log_rho)[:, None, None]
    cov = xp.exp(2.0 * log_alpha)[:, None, None] * xp.exp(-0.5 * d2[None] * scale) + 1e-10 * eye[None]
    return xp.cholesky(cov)


def gp_pois_regr_log_density(theta, xp, data):
    """k_n ~ Poisson(exp(f_n)), f = L f_tilde, L L^T the squared-exponential kernel matrix
    (alpha, rho) + 1e-10 I; rho ~ Gamma(25, rate 4), alpha ~ half-N(0, 2), f_tilde ~ N(0, I).
    theta = (log rho, log alpha, f_tilde_1..f_tilde_N), Jacobian + log rho + log alpha.
    log Poisson(k | e^f) = k f - e^f - log k!: the energy grows like exp(alpha |f_tilde|)."""
    k, d2, eye = (xp.const(data[n], theta) for n in ("k", "d2", "eye"))
    lr, la, ft = theta[:, 0], theta[:, 1], theta[:, 2:]
    f = xp.matmul(_gp_cholesky(lr, la, d2, eye, xp), ft[:, :, None])[:, :, 0]
    lik = xp.sum(k[None, :] * f - xp.exp(f), 1) - float(data["log_k_factorial"])
    a, b = 25.0, 4.0
    prior_rho = a * math.log(b) - math.lgamma(a) + a * lr - b * xp.exp(lr)       # incl. Jacobian rho
    prior_alpha = math.log(2.0) + normal_lpdf(xp.exp(la) / 2.0, math.log(2.0), xp) + la
    return lik + prior_rho + prior_alpha + xp.sum(normal_lpdf(ft, 0.0, xp), 1)


def _gp_pois_regr(data: dict, draws: Draws) -> dict:
    x, k = np.asarray(data["x"], float), np.asarray(data["k"], float)
    n = x.shape[0]
    d2 = (x[:, None] - x[None, :]) ** 2
    rho, alpha, f = _cols(draws, ["rho"]), _cols(draws, ["alpha"]), _cols(draws, _vec("f", n))
    cov = alpha[:, :, None] ** 2 * np.exp(-0.5 * d2[None] / rho[:, :, None] ** 2) + 1e-10 * np.eye(n)
    f_tilde = np.linalg.solve(np.linalg.cholesky(cov), f[:, :, None])[:, :, 0]
    log_kf = float(sum(math.lgamma(v + 1.0) for v in k))
    return dict(data={"k": k, "d2": d2, "eye": np.eye(n), "log_k_factorial": np.asarray(log_kf)},
                reference=np.concatenate([np.log(rho), np.log(alpha), f_tilde], 1),
                param_names=["log_rho", "log_alpha"] + _vec("f_tilde", n), log_density=gp_pois_regr_log_density)


# name -> (posteriordb posterior, kind, builder, notes)
POSTERIORS: dict[str, tuple[str, str, Callable[..., dict], str]] = {
    "eight_schools_noncentered": ("eight_schools-eight_schools_noncentered", "hierarchical",
                                  lambda d, r: _eight_schools(d, r, centered=False), "tau log"),
    "eight_schools_centered": ("eight_schools-eight_schools_centered", "hierarchical, funnel-shaped",
                               lambda d, r: _eight_schools(d, r, centered=True),
                               "reference: the non-centred draws (same posterior) mapped back"),
    "kidiq_interaction": ("kidiq-kidscore_interaction", "regression (correlated)", _kidiq_interaction,
                          "uncentred predictors: strongly correlated beta"),
    "mesquite_logvas": ("mesquite-logmesquite_logvas", "regression", _mesquite_logvas, ""),
    "arK": ("arK-arK", "time series (AR(5))", _ark, ""),
    "garch11": ("garch-garch11", "time series (GARCH(1,1))", _garch11, ""),
    "arma11": ("arma-arma11", "time series (ARMA(1,1))", _arma11, "energy ~ theta^(2T) for |theta| > 1"),
    "gp_pois_regr": ("gp_pois_regr-gp_pois_regr", "Poisson log-link GLM (GP latent)", _gp_pois_regr,
                     "energy ~ exp(exp(.)) in the tails"),
}


def posteriordb_target(name: str, root: Path, entry: tuple | None = None) -> HeldoutTarget:
    """Build the target `name` from the clone at `root`; `entry` = (posterior, kind, builder, notes),
    by default POSTERIORS[name]."""
    posterior, kind, build, notes = entry or POSTERIORS[name]
    data, draws, _ = load_posterior(root, posterior)
    spec = build(data, draws)
    n_chains = next(iter(draws.values())).shape[0]
    return HeldoutTarget(name=name, dim=spec["reference"].shape[1], kind=kind,
                         source=f"posteriordb {posterior}", n_chains=n_chains, notes=notes, **spec)
