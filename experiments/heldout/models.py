"""The held-out targets: registry and model checks.

Targets (see README.md): four synthetic ones with exact samples and log Z (`synthetic.py`) and
eight posteriordb posteriors (`posteriors.py`), the held-out suite; six more posteriordb posteriors
and a Student-t, written after the defaults were chosen (`confirmation.py`), the confirmation set;
six more written after the buffer default was fixed (`final_set.py`), the final set. Each is a
`HeldoutTarget` whose log density is written once for torch and jax (`arrays.py`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .arrays import namespace
from .confirmation import CONFIRMATION, CONFIRMATION_SYNTHETIC
from .final_set import FINAL
from .posteriors import POSTERIORS, posteriordb_root, posteriordb_target
from .synthetic import SYNTHETIC
from .target import HeldoutTarget

SUITES: dict[str, list[str]] = {"heldout": [*SYNTHETIC, *POSTERIORS],
                                 "confirmation": [*CONFIRMATION_SYNTHETIC, *CONFIRMATION],
                                 "final": [*FINAL]}
TARGET_NAMES: list[str] = [n for names in SUITES.values() for n in names]
DATABASE: dict = {**POSTERIORS, **CONFIRMATION, **FINAL}      # the targets that need a posteriordb clone


def load_target(name: str, posteriordb: str | os.PathLike | None = None) -> HeldoutTarget:
    """One target by name; a posteriordb one needs a clone (`posteriordb` or $POSTERIORDB)."""
    if name in SYNTHETIC or name in CONFIRMATION_SYNTHETIC:
        return {**SYNTHETIC, **CONFIRMATION_SYNTHETIC}[name]()
    if name not in DATABASE:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGET_NAMES)}")
    root = posteriordb_root(posteriordb)
    if root is None:
        raise FileNotFoundError(f"{name} needs a clone of github.com/stan-dev/posteriordb: pass "
                                "--posteriordb PATH or set POSTERIORDB")
    return posteriordb_target(name, root, DATABASE[name])


def load_targets(names: list[str] | None = None, posteriordb: str | os.PathLike | None = None,
                 suite: str = "heldout") -> tuple[list[HeldoutTarget], list[str]]:
    """(targets, names skipped for want of a posteriordb clone); default: every target of `suite`."""
    names = names or SUITES[suite]
    have_db = posteriordb_root(posteriordb) is not None
    skipped = [n for n in names if n in DATABASE and not have_db]
    return [load_target(n, posteriordb) for n in names if n not in skipped], skipped


def score_check(target: HeldoutTarget, max_draws: int = 20_000) -> dict:
    """Mean score over the reference draws: E_p[grad log p] = 0 (integration by parts), so a wrong
    model or log-Jacobian shows as a biased mean. z_i = mean_i / (sd_i / sqrt(N)) per coordinate
    (draws treated as independent: posteriordb's are thinned to ESS ~ N). Gradient by torch autograd
    in float64, one batch."""
    x = torch.as_tensor(target.reference[:max_draws], dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(-target.energy(x).sum(), x)
    g = g.numpy()
    finite = bool(np.isfinite(g).all())
    n = g.shape[0]
    z = g.mean(0) / (g.std(0, ddof=1) / np.sqrt(n) + 1e-300)
    return {"score_mean": g.mean(0).tolist(), "score_z": z.tolist(),
            "score_z_max": float(np.abs(z).max()), "finite": finite, "n": n}


def backend_check(target: HeldoutTarget, n: int = 2_000) -> dict | None:
    """torch vs jax at the first n reference draws, float64: max |lp_torch - lp_jax| / max(1, |lp|)
    and the same for the scores (jax.grad vs torch autograd). None if jax is not installed."""
    try:
        import jax
    except ImportError:
        return None
    xp = namespace("jax")                   # switches jax's float64 on before any array is made
    x = torch.as_tensor(target.reference[:n], dtype=torch.float64).requires_grad_(True)
    lp_t = -target.energy(x)
    (g_t,) = torch.autograd.grad(lp_t.sum(), x)
    lp_t, g_t = lp_t.detach().numpy(), g_t.numpy()
    xj = xp.asarray(target.reference[:n], dtype=xp.float64)
    lp_j = np.asarray(jax.jit(target.log_prob_jax)(xj))
    g_j = np.asarray(jax.jit(jax.vmap(jax.grad(lambda t: target.log_prob_jax(t[None])[0])))(xj))
    rel = np.abs(lp_t - lp_j) / np.maximum(1.0, np.abs(lp_t))
    grel = np.abs(g_t - g_j).max(1) / np.maximum(1.0, np.abs(g_t).max(1))
    return {"jax_rel_err": float(rel.max()), "jax_grad_rel_err": float(grel.max())}


def check_target(target: HeldoutTarget, z_tol: float = 5.0, rel_tol: float = 1e-6) -> dict:
    """Both checks; "ok" when every |z| < z_tol, the scores are finite and torch/jax agree to rel_tol."""
    out = {**score_check(target), "backend": backend_check(target)}
    ok = out["finite"] and out["score_z_max"] < z_tol
    if out["backend"] is not None:
        ok = ok and max(out["backend"].values()) < rel_tol
    out["ok"] = bool(ok)
    return out


def default_posteriordb() -> Path | None:
    """The clone named by $POSTERIORDB, if any."""
    return posteriordb_root(None)
