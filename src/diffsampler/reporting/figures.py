"""Training curves drawn from metrics.jsonl rows, against iterations and against energy calls, for
one run or overlaid for several (one colour per run). Returned as PNG bytes to embed."""
from __future__ import annotations

import io
from collections.abc import Callable

from .rundata import RunData

AXES = {"iteration": "iteration", "calls": "energy calls (total)"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def x_of(row: dict, axis: str) -> float | None:
    """A row's x value: its iteration, or its total energy calls (None when it has none)."""
    if axis == "iteration":
        return row.get("iteration")
    ec = row.get("energy_calls")
    return ec.get("total") if isinstance(ec, dict) else None


def series(rows: list[dict], key: str, axis: str) -> tuple[list[float], list[float]]:
    """(x, y) of the rows that carry a numeric `key`."""
    pts = [(x_of(r, axis), r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    pts = [(x, y) for x, y in pts if x is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def final_point(run: RunData, key: str, axis: str) -> tuple[float, float] | None:
    """The final report's value of `key` at the run's last iteration (or its energy calls)."""
    rep = run.report or {}
    if not isinstance(rep.get(key), (int, float)):
        return None
    x = rep.get("iterations") if axis == "iteration" else (rep.get("energy_calls") or {}).get("total")
    return None if x is None else (x, rep[key])


def _markers(x: list) -> dict:
    """Small markers where a curve has few points (a single point draws no line)."""
    return {"marker": "o", "ms": 2.5} if len(x) < 40 else {}


def _panel_loss(ax, run: RunData, axis: str, color: str, label: str | None) -> bool:
    x, y = series(run.rows, "loss", axis)
    if not x:
        return False
    ax.plot(x, y, lw=0.9, color=color, label=label, **_markers(x))
    ax.set_yscale("log" if all(v > 0 for v in y) else "symlog")
    ax.set_title("loss")
    return True


def _panel_log_z(ax, run: RunData, axis: str, color: str, label: str | None) -> bool:
    x, y = series(run.rows, "log_Z", axis)
    if not x:
        return False
    ax.plot(x, y, lw=0.9, color=color, label=label, **_markers(x))
    truth = (run.report or {}).get("log_Z_true")
    if isinstance(truth, (int, float)):
        ax.axhline(truth, color="k", ls="--", lw=0.8)
    ax.set_title("learned log Z (dashed: true)")
    return True


def _panel_bounds(ax, run: RunData, axis: str, color: str, label: str | None) -> bool:
    drew = False
    for key, style, marker in (("elbo", "-", "o"), ("eubo", "--", "s")):
        x, y = series(run.rows, key, axis)
        if x:
            ax.plot(x, y, ls=style, marker=marker, ms=3, lw=1, color=color, label=f"{label + ' ' if label else ''}"
                    f"{key.upper()}")
            drew = True
        p = final_point(run, key, axis)
        if p is not None:
            ax.plot(*p, marker=marker, ms=7, color=color, mfc="white" if key == "eubo" else color, ls="none",
                    label=None if x else f"{label + ' ' if label else ''}{key.upper()} (final)")
            drew = True
    truth = (run.report or {}).get("log_Z_true")
    if drew and isinstance(truth, (int, float)):
        ax.axhline(truth, color="k", ls=":", lw=0.8)
    ax.set_title("ELBO ≤ log Z ≤ EUBO (dotted: true log Z)")
    return drew


def _panel_ess(ax, run: RunData, axis: str, color: str, label: str | None) -> bool:
    x, y = series(run.rows, "ess", axis)
    if x:
        ax.plot(x, y, marker="o", ms=3, lw=1, color=color, label=label)
    p = final_point(run, "ess", axis)
    if p is not None:
        ax.plot(*p, marker="D", ms=6, color=color, ls="none")
    ax.set_title("ESS (fraction; diamond: final)")
    return bool(x) or p is not None


def _has(keys: tuple[str, ...], final: bool) -> Callable[[RunData, str], bool]:
    """Whether a run has data for a panel: rows with one of `keys` (or, with `final`, a final value)."""
    def has(run: RunData, axis: str) -> bool:
        return any(series(run.rows, k, axis)[0] or (final and final_point(run, k, axis)) for k in keys)
    return has


# (has data, draw) per panel, left to right
PANELS: list[tuple[Callable, Callable]] = [(_has(("loss",), False), _panel_loss),
                                           (_has(("log_Z",), False), _panel_log_z),
                                           (_has(("elbo", "eubo"), True), _panel_bounds),
                                           (_has(("ess",), True), _panel_ess)]


def _search_marks(ax, run: RunData, axis: str, color: str) -> None:
    for r in run.rows:
        if "search" in r and x_of(r, axis) is not None:
            ax.axvline(x_of(r, axis), color=color, ls=":", lw=0.8, alpha=0.6)


def curves_png(runs: list[RunData], axis: str, dpi: int = 100) -> bytes | None:
    """One row of panels (loss, learned log Z, ELBO/EUBO, ESS: those with data in some run) against
    `axis` ("iteration" or "calls"); dotted verticals mark search rounds. None when no run has rows."""
    present = [draw for has, draw in PANELS if any(has(r, axis) for r in runs)]
    if not present:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(present), figsize=(4.1 * len(present), 3.3), squeeze=False)
    many = len(runs) > 1
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for ax, panel in zip(axes[0], present):
            panel(ax, run, axis, color, run.name if many else None)
            _search_marks(ax, run, axis, color)
    for ax in axes[0]:
        ax.set_xlabel(AXES[axis])
        ax.grid(alpha=0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    # fixed margins: tight_layout would double the cost of the figure (a report is written per run)
    fig.subplots_adjust(left=0.55 / fig.get_figwidth(), right=0.99, bottom=0.16, top=0.9,
                        wspace=0.75 / (fig.get_figwidth() / len(present)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
