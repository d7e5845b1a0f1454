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


def plot_training_curves(metrics_path: str, path: str, log_Z_true: float | None = None) -> None:
    """Loss and ELBO/EUBO against iterations from a metrics.jsonl file."""
    if not os.path.exists(metrics_path):
        return
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    if not rows:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    it = [r["iteration"] for r in rows if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    axes[0].plot(it, losses, lw=0.8)
    # maximum likelihood losses (negative log-likelihoods of continuous states) may be negative
    axes[0].set_yscale("log" if all(v > 0 for v in losses) else "symlog")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss")
    ev = [r for r in rows if r.get("elbo") is not None]
    if ev:
        axes[1].plot([r["iteration"] for r in ev], [r["elbo"] for r in ev], "o-", label="ELBO")
        if any(r.get("eubo") is not None for r in ev):
            axes[1].plot([r["iteration"] for r in ev if r.get("eubo") is not None],
                         [r["eubo"] for r in ev if r.get("eubo") is not None], "s-", label="EUBO")
        if log_Z_true is not None:
            axes[1].axhline(log_Z_true, color="k", ls="--", lw=0.8, label="log Z")
        axes[1].set_xlabel("iteration")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
