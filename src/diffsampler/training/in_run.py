"""In-run evaluations: a quick look at the weights a run would report, every `eval_every` iterations."""
from __future__ import annotations

KEEP = ("elbo", "eubo", "log_Z_is", "ess", "w2", "mode_coverage")
PARTICLE = ("energy_w1", "energy_w2", "equivariant_w2")   # particle targets with reference samples


def in_run_metrics(sampler, cfg, ema=None) -> dict:
    """A quick evaluation (at most 1000 samples) of the weights the run would report: the moving
    average when `ema` is given (then also the raw weights, keys prefixed 'raw_')."""
    from ..evaluation import evaluate

    def metrics() -> dict:
        m = evaluate(sampler, n=min(cfg.eval_samples, 1000), steps=cfg.eval_steps, grid=cfg.eval_grid).metrics
        return {**{k: m.get(k) for k in KEEP}, **{k: m[k] for k in PARTICLE if k in m}}
    if ema is None:
        return metrics()
    raw = metrics()
    with ema.applied(sampler):
        return {**metrics(), **{f"raw_{k}": v for k, v in raw.items()}}


__all__ = ["in_run_metrics"]
