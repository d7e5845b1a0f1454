"""Evaluate a trained sampler against its target's own ground truth (no target special-cases)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .distances import mmd_rbf, wasserstein2
from .metrics import elbo, ess_fraction, log_z_is


@dataclass
class Evaluation:
    metrics: dict
    x: torch.Tensor            # model samples (n, d)
    log_w: torch.Tensor        # their log-weights (n,)
    x_true: torch.Tensor | None


def evaluate(sampler, n: int = 2000, steps: int = 100, grid: str = "uniform",
             n_distance: int = 2000) -> Evaluation:
    """ELBO, EUBO, log Z(IS), |Δlog Z|, ESS, W2, MMD, mode coverage on n samples, `steps` steps.

    Unknown quantities are None. Energy calls are counted in the 'eval' phase."""
    target = sampler.target
    was_training = sampler.training
    sampler.eval()
    x, log_w = sampler.sample(n, steps=steps, grid=grid)
    m: dict = {"elbo": elbo(log_w), "log_Z_is": log_z_is(log_w), "ess": ess_fraction(log_w),
               "n_eval_samples": n, "eval_steps": steps, "eval_grid": grid,
               "nfe": steps * sampler.nfe_per_step}
    lz = target.log_Z
    m["log_Z_true"] = lz
    m["delta_log_Z_is"] = None if lz is None else abs(m["log_Z_is"] - lz)
    m["delta_elbo"] = None if lz is None else lz - m["elbo"]
    x_true = None
    m["eubo"] = m["w2"] = m["mmd"] = None
    if target.has_samples:
        x_true = target.sample(n).to(x)
        lw_b = sampler.log_w_backward(x_true, steps=steps, grid=grid)
        m["eubo"] = float(lw_b.mean())
        k = min(n_distance, n)
        finite = torch.isfinite(x).all(1)
        if finite.all():
            m["w2"] = wasserstein2(x[:k], x_true[:k])
            m["mmd"] = mmd_rbf(x[:k], x_true[:k])
    m["eubo_minus_elbo"] = None if m["eubo"] is None else m["eubo"] - m["elbo"]
    with target.counter.use("eval"):
        m.update(target.extra_metrics(x, x_true))
    cov = target.mode_coverage(x) if torch.isfinite(x).all() else None
    m["mode_coverage"] = None if cov is None else cov["mode_coverage"]
    if cov:
        m.update({k: v for k, v in cov.items() if k != "mode_coverage"})
    for k, v in list(m.items()):
        if isinstance(v, float) and not math.isfinite(v):
            m[k] = None if math.isnan(v) else v
    sampler.train(was_training)
    return Evaluation(m, x, log_w, x_true)
