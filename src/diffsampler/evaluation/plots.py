"""PNG plots a person can look at: samples vs truth, marginals, training curves."""
from __future__ import annotations

import json
import os

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_samples(x, x_true, dims: tuple[int, int], path: str, title: str = "") -> None:
    """2-D projection of model samples next to true samples."""
    plt = _plt()
    i, j = dims
    fig, axes = plt.subplots(1, 2 if x_true is not None else 1, figsize=(9 if x_true is not None else 4.5, 4.2),
                             sharex=True, sharey=True, squeeze=False)
    x = np.asarray(x)
    axes[0, 0].scatter(x[:, i], x[:, j], s=2, alpha=0.4)
    axes[0, 0].set_title("sampler")
    if x_true is not None:
        xt = np.asarray(x_true)
        axes[0, 1].scatter(xt[:, i], xt[:, j], s=2, alpha=0.4, color="C1")
        axes[0, 1].set_title("truth")
    for ax in axes[0]:
        ax.set_xlabel(f"x[{i}]")
        ax.set_ylabel(f"x[{j}]")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_marginals(x, x_true, path: str, max_dims: int = 4) -> None:
    plt = _plt()
    x = np.asarray(x)
    k = min(max_dims, x.shape[1])
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3), squeeze=False)
    for d in range(k):
        ax = axes[0, d]
        lo, hi = np.percentile(x[:, d], [0.5, 99.5])
        if x_true is not None:
            xt = np.asarray(x_true)
            lo, hi = min(lo, np.percentile(xt[:, d], 0.5)), max(hi, np.percentile(xt[:, d], 99.5))
            ax.hist(xt[:, d], bins=60, range=(lo, hi), density=True, alpha=0.5, label="truth", color="C1")
        ax.hist(x[:, d], bins=60, range=(lo, hi), density=True, alpha=0.5, label="sampler", color="C0")
        ax.set_title(f"x[{d}]")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _final_report(metrics_path: str, report: dict | None) -> dict | None:
    """The run's final report: `report`, else the report.json beside metrics.jsonl, else None."""
    if report is not None:
        return report
    path = os.path.join(os.path.dirname(os.path.abspath(metrics_path)), "report.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _plot_bounds(ax, rows: list[dict], final: dict | None, log_Z_true: float | None) -> None:
    """ELBO/EUBO of the in-run evaluations as lines, the final report's values as large points."""
    ev = [r for r in rows if r.get("elbo") is not None]
    if ev:
        ax.plot([r["iteration"] for r in ev], [r["elbo"] for r in ev], "o-", label="ELBO")
        ub = [r for r in ev if r.get("eubo") is not None]
        if ub:
            ax.plot([r["iteration"] for r in ub], [r["eubo"] for r in ub], "s-", label="EUBO")
    it = (final or {}).get("iterations")
    if it is not None:
        for key, marker in (("elbo", "o"), ("eubo", "s")):
            if isinstance((final or {}).get(key), (int, float)):
                ax.plot([it], [final[key]], marker, ms=9, mfc="white", mew=1.5, color="k",
                        label=f"{key.upper()} (final report)")
    if log_Z_true is not None:
        ax.axhline(log_Z_true, color="k", ls="--", lw=0.8, label="log Z")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)


def plot_training_curves(metrics_path: str, path: str, log_Z_true: float | None = None,
                         report: dict | None = None) -> None:
    """Loss, and ELBO/EUBO, against iterations from a metrics.jsonl file. The second panel shows the
    in-run evaluations (eval_every > 0) and the final report's values as points (`report`, or the
    report.json beside metrics.jsonl); with neither, only the loss panel is drawn."""
    if not os.path.exists(metrics_path):
        return
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    if not rows:
        return
    final = _final_report(metrics_path, report)
    final_points = (final or {}).get("iterations") is not None and any(
        isinstance((final or {}).get(k), (int, float)) for k in ("elbo", "eubo"))
    has_bounds = final_points or any(r.get("elbo") is not None for r in rows)
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if has_bounds else 1, figsize=(10 if has_bounds else 5.2, 3.6), squeeze=False)
    it = [r["iteration"] for r in rows if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    axes[0, 0].plot(it, losses, lw=0.8, marker="o" if len(it) < 40 else None, ms=3)
    # maximum likelihood losses (negative log-likelihoods of continuous states) may be negative
    axes[0, 0].set_yscale("log" if losses and all(v > 0 for v in losses) else "symlog")
    axes[0, 0].set_xlabel("iteration")
    axes[0, 0].set_ylabel("loss")
    if has_bounds:
        _plot_bounds(axes[0, 1], rows, final, log_Z_true)
        # one x range for both panels, so the final report's point sits at the end of training
        xs = [*it, *(r["iteration"] for r in rows if r.get("elbo") is not None), (final or {}).get("iterations")]
        xs = [x for x in xs if x is not None]
        if max(xs) > min(xs):
            pad = 0.04 * (max(xs) - min(xs))
            for ax in axes[0]:
                ax.set_xlim(min(xs) - pad, max(xs) + pad)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
