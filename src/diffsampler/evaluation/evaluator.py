"""Evaluate a trained sampler against its target's own ground truth (no target special-cases)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .distances import mmd_rbf, wasserstein2
from .metrics import elbo, ess_fraction, log_z_is
from .psis import psis
from .trust import trust_warnings


@dataclass
class Evaluation:
    """An evaluation: metrics (dict), the model samples x (n, d) with log-weights log_w (n,), and the
    target's samples x_true (n, d) or None."""
    metrics: dict
    x: torch.Tensor            # model samples (n, d)
    log_w: torch.Tensor        # their log-weights (n,)
    x_true: torch.Tensor | None


def weight_metrics(log_w: torch.Tensor) -> dict:
    """ELBO, log Z (IS), ESS, PSIS k̂ and the non-finite fraction of log-weights (n,). Samples with a
    non-finite energy (zero density under the target, or outside its domain) have log w = -inf;
    the ELBO is their mean over the finite ones (with any of them the true ELBO is -inf) and
    `nonfinite_fraction` says how many were left out."""
    lw = log_w.detach()
    lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
    finite = torch.isfinite(lw)
    if not finite.any():
        return {"elbo": None, "log_Z_is": None, "ess": 0.0, "psis_k": None, "psis_k_threshold": None,
                "nonfinite_fraction": 1.0}
    res = psis(lw.cpu().numpy())
    return {"elbo": elbo(lw[finite]), "log_Z_is": log_z_is(lw), "ess": ess_fraction(lw),
            "psis_k": res.k_hat, "psis_k_threshold": res.threshold,
            "nonfinite_fraction": float((~finite).double().mean())}


def defensive_metrics(sampler, n: int, steps: int, fraction: float) -> dict:
    """log Z (IS), |Δ log Z|, ESS and k̂ of n defensive-mixture draws (`evaluation.defensive`, a share
    `fraction` from a heavy-tailed Student-t): the weighted estimates with bounded weights."""
    from .defensive import DefensiveMixture
    out = DefensiveMixture(fraction=fraction).sample(sampler, n, steps=steps)
    w = weight_metrics(out.log_w)
    lz = sampler.target.log_Z
    return {"defensive_fraction": fraction, "defensive_log_Z_is": w["log_Z_is"], "defensive_ess": w["ess"],
            "defensive_psis_k": w["psis_k"],
            "defensive_delta_log_Z_is": None if lz is None or w["log_Z_is"] is None else abs(w["log_Z_is"] - lz)}


def evaluate(sampler, n: int = 2000, steps: int = 100, grid: str = "uniform",
             n_distance: int = 2000, integrator: str = "euler_maruyama", corrector_steps: int = 0,
             defensive: float = 0.0) -> Evaluation:
    """ELBO, EUBO, log Z(IS), |Δlog Z|, ESS, W2, MMD, mode coverage on n samples, `steps` steps.

    corrector_steps: MALA steps on the target applied to the samples (`DiffusionSampler.correct`).
    They move the samples (W2, MMD, coverage, histograms see the moved ones) and leave the
    log-weights, hence ELBO, log Z (IS), ESS and EUBO, as they are.

    `integrator` simulates the forward samples (its log w is exact for its own kernels). The EUBO
    needs the backward density of the same kernels, which we have for Euler-Maruyama only, so it is
    None for the other integrators. Unknown quantities are None. Energy calls count as 'eval'.

    defensive > 0: also the defensive-mixture figures (`defensive_metrics`) on n further draws."""
    from ..sde.integrators import make_integrator, nfe_for
    integ = make_integrator(integrator)
    target = sampler.target
    was_training = sampler.training
    sampler.eval()
    x, log_w = sampler.sample(n, steps=steps, grid=grid, integrator=integ, corrector_steps=corrector_steps)
    m = weight_metrics(log_w)
    m.update({"n_eval_samples": n, "eval_steps": steps, "eval_grid": grid, "integrator": integ.name,
              "nfe": nfe_for(integ, steps)})
    lz = target.log_Z
    m["log_Z_true"] = lz
    m["delta_log_Z_is"] = None if lz is None or m["log_Z_is"] is None else abs(m["log_Z_is"] - lz)
    m["delta_elbo"] = None if lz is None or m["elbo"] is None else lz - m["elbo"]
    x_true = None
    m["eubo"] = m["w2"] = m["mmd"] = None
    if target.has_samples:
        x_true = target.sample(n).to(x)
        if integ.name == "euler_maruyama":
            m["eubo"] = float(sampler.log_w_backward(x_true, steps=steps, grid=grid).mean())
        k = min(n_distance, n)
        finite = torch.isfinite(x).all(1)
        if finite.all():
            m["w2"] = wasserstein2(x[:k], x_true[:k])
            m["mmd"] = mmd_rbf(x[:k], x_true[:k])
    m["eubo_minus_elbo"] = None if m["eubo"] is None or m["elbo"] is None else m["eubo"] - m["elbo"]
    if defensive:
        m.update(defensive_metrics(sampler, n, steps, defensive))
    with target.counter.use("eval"):
        m.update(target.extra_metrics(x, x_true, log_w))
    cov = target.mode_coverage(x) if torch.isfinite(x).all() else None
    m["mode_coverage"] = None if cov is None else cov["mode_coverage"]
    if cov:
        m.update({k: v for k, v in cov.items() if k != "mode_coverage"})
    for k, v in list(m.items()):
        if isinstance(v, float) and not math.isfinite(v):
            m[k] = None if math.isnan(v) else v
    m["warnings"] = trust_warnings(m)
    sampler.train(was_training)
    return Evaluation(m, x, log_w, x_true)
