"""The suite's outputs: the markdown table (one row per target, NUTS beside) and per-target marginals."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import normalised_weights
from .target import HeldoutTarget


def _f(v, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pair(a, b, fmt: str = "{:.2f}") -> str:
    return f"{_f(a, fmt)} / {_f(b, fmt)}"


def _sampler_cells(s: dict | None) -> list[str]:
    if not s or s.get("status") != "ok":
        why = "not run" if not s else f"**{s.get('status')}**: {str(s.get('error', ''))[:60]}"
        return [why] + [""] * 9
    raw, w = s["errors_raw"], s["errors_weighted"]
    lz = "–" if s["log_Z_is"] is None else f"{s['log_Z_is']:.2f} ± {s['log_Z_se']:.2f}"
    return [_pair(raw["mean_err_max"], w["mean_err_max"]), _pair(raw["sd_err_max"], w["sd_err_max"]),
            _f(s["psis_k"]), _f(100 * s["ess_fraction"], "{:.1f}"), _f(s["eubo_minus_elbo"]), lz,
            _f(s["train_seconds"], "{:.0f}") + f" ({s['train_wall_seconds']:.0f}) + {s['sample_seconds']:.0f}",
            f"{s['train_energy_calls'] / 1e6:.2f}M + {s['sample_energy_calls'] / 1e6:.1f}M",
            _f(s.get("stop_reason"), "{}"), _warned(s)]


GOAL = {"mean_err_max": 0.1, "sd_err_max": 0.1, "psis_k": 0.7}


def goal_met(s: dict | None) -> str:
    """The suite's goal on the weighted draws: means within 0.1 reference sd, sds within 10%, k̂ <= 0.7."""
    if not s or s.get("status") != "ok":
        return ""
    w = s["errors_weighted"]
    ok = (w["mean_err_max"] <= GOAL["mean_err_max"] and w["sd_err_max"] <= GOAL["sd_err_max"]
          and s["psis_k"] <= GOAL["psis_k"])
    return "yes" if ok else "no"


def _floor_cell(f: dict | None) -> str:
    """The 90% quantile of exact (or bootstrap, marked b) draws' max errors at the suite's n."""
    if not f:
        return "–"
    return _pair(f["mean_err_max"], f["sd_err_max"]) + ("" if f["method"] == "exact" else " (b)")


def _warned(s: dict) -> str:
    """Whether the run's own summary warned (its trust warnings on its final evaluation)."""
    w = s.get("warnings_report")
    if w is None:
        return "–"
    return "yes: " + ", ".join(sorted({_warning_kind(x) for x in w})) if w else "no"


def _warning_kind(msg: str) -> str:
    return next((k for k in ("EUBO - ELBO", "k-hat", "ESS", "non-finite") if k in msg), "other")


def _nuts_cells(n: dict | None) -> list[str]:
    if not n or n.get("status", "ok") != "ok":
        return ["not run" if not n else f"**{n.get('status')}**", "", "", "", ""]
    e = n["errors"]
    return [_f(e["mean_err_max"]), _f(e["sd_err_max"]), f"{n['grad_evals'] / 1e6:.2f}M",
            f"{n['seconds']:.0f} (+{n['compile_seconds']:.0f})", f"{n['rhat_max']:.2f} / {n['divergences']}"]


HEADER = ["target", "d", "kind", "log Z true",
          "mean err raw / w", "sd err raw / w", "exact-draw floor mean / sd", "goal met", "k̂", "ESS %", "EUBO−ELBO", "log Z (IS) ± se", "s train (wall) + draw",
          "grad evals train + draw", "stop", "run warned",
          "NUTS mean err", "NUTS sd err", "NUTS grad evals", "NUTS s (+jit)", "NUTS R̂ / div"]


def markdown_table(rows: dict[str, dict], seconds: float | None = None) -> str:
    """suite.md: the table, then the notes that read it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, r in rows.items():
        cells = [name, str(r["dim"]), r["kind"], _f(r.get("log_Z_true"))]
        sampler = _sampler_cells(r.get("sampler"))
        sampler[2:2] = [_floor_cell(r.get("floor")), goal_met(r.get("sampler"))]
        lines.append("| " + " | ".join(cells + sampler + _nuts_cells(r.get("nuts"))) + " |")
    notes = [
        "",
        f"- Diffusion sampler: library defaults, {seconds:g} s of training per target; 20,000 draws with 100 steps."
        if seconds else "",
        ("- Errors are in the unconstrained space, max over coordinates: mean err = |mean - ref mean| / ref sd,"
         " sd err = |sd / ref sd - 1|; raw = plain average, w = self-normalised importance weights."),
        ("- exact-draw floor: the 90% quantile, over 50 sets of as many draws as the sampler's, of the max errors"
         " of draws that follow the target exactly (its exact sampler; (b): draws with replacement from the"
         " reference, scored against the reference's own moments, a lower bound). goal met: weighted mean"
         " err <= 0.1, sd err <= 0.1 and k̂ <= 0.7."),
        ("- run warned: the trust warnings of the run's own summary (its final evaluation's draws: k-hat,"
         " ESS, EUBO - ELBO, non-finite energies)."),
        ("- k̂: PSIS Pareto k of the 20,000 log-weights; ESS %: Kish ESS / n; log Z (IS) = log mean w with the"
         " delta-method se sqrt((n/ESS - 1)/n), which is not to be trusted where k̂ > 0.7."),
        ("- s train (wall): the library's training seconds (its wall time, with its search and final"
         " evaluation); draw: seconds for the 20,000 draws."),
        ("- grad evals: energy+gradient evaluations (search + train; the 20,000 draws). NUTS: numpyro defaults,"
         " 4 chains x (1,000 warm-up + 1,000 draws) from uniform(-2, 2) inits, gradient evaluations = sum of"
         " leapfrog steps over warm-up and sampling; seconds exclude the jit compile (in brackets)."),
    ]
    return "\n".join(lines + notes + _defensive_section(rows) + _mode_section(rows) + _cost_section(rows)) + "\n"


def _defensive_section(rows: dict[str, dict]) -> list[str]:
    """The same trained samplers' draws weighted by the defensive mixture, beside their own weights."""
    got = {n: r["sampler"] for n, r in rows.items() if (r.get("sampler") or {}).get("defensive")}
    if not got:
        return []
    out = ["", "Defensive mixture (`diffsampler.evaluation.DefensiveMixture`: a share of the draws from a "
           "Student-t, dof 3, twice the sampler's spread; every draw weighted by the mixture):", "",
           "| target | share | weighted mean / sd err, own weights | the same, mixture | k̂ own / mixture "
           "| ESS % own / mixture | log Z (IS) ± se, mixture |", "|---|---|---|---|---|---|---|"]
    for name, s in got.items():
        d, w, dw = s["defensive"], s["errors_weighted"], s["defensive"]["errors_weighted"]
        out.append(f"| {name} | {d['fraction']:g} | {_pair(w['mean_err_max'], w['sd_err_max'])} | "
                   f"{_pair(dw['mean_err_max'], dw['sd_err_max'])} | {_pair(s['psis_k'], d['psis_k'])} | "
                   f"{_pair(100 * s['ess_fraction'], 100 * d['ess_fraction'], '{:.1f}')} | "
                   f"{d['log_Z_is']:.2f} ± {d['log_Z_se']:.2f} |")
    return out


def _mode_section(rows: dict[str, dict]) -> list[str]:
    out = []
    for name, r in rows.items():
        s, n = r.get("sampler") or {}, r.get("nuts") or {}
        if "mode_weights_true" not in r:
            continue
        fmt = lambda v: "–" if v is None else "/".join(f"{x:.2f}" for x in v)
        out += ["", f"**{name}: mass per mode** true {fmt(r['mode_weights_true'])}; sampler raw "
                f"{fmt(s.get('mode_fractions_raw'))}, weighted {fmt(s.get('mode_fractions_weighted'))}; NUTS "
                f"pooled {fmt(n.get('mode_fractions'))}, per chain "
                + ", ".join(fmt(c) for c in n.get("mode_fractions_per_chain", []))]
    return out


def _cost_section(rows: dict[str, dict]) -> list[str]:
    """Cost of further draws once trained / warmed up: gradient evaluations and seconds per 1,000 draws
    (NUTS: its sampling phase, seconds pro rata of its gradient evaluations)."""
    out = ["", "**Further draws** (per 1,000, after training / warm-up): sampler grads, s | NUTS grads, s"]
    for name, r in rows.items():
        s, n = r.get("sampler") or {}, r.get("nuts") or {}
        cells = []
        if s.get("status") == "ok":
            per = 1000 / s.get("n_draws", 20_000)
            cells.append(f"{s['sample_energy_calls'] * per:,.0f}, {s['sample_seconds'] * per:.2f}")
        if n.get("status", "") == "ok":
            draws = n["settings"]["chains"] * n["settings"]["samples"]
            g = n["grad_evals"] - n["grad_evals_warmup"]
            cells.append(f"{g / draws * 1000:,.0f}, {n['seconds'] * g / n['grad_evals'] / draws * 1000:.2f}")
        out.append(f"- {name}: " + " | ".join(cells))
    return out


def plot_marginals(target: HeldoutTarget, x: np.ndarray | None, log_w: np.ndarray | None,
                   nuts: np.ndarray | None, path: Path, max_panels: int = 16) -> None:
    """One panel per coordinate: reference (filled), sampler raw and weighted, NUTS (steps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = min(target.dim, max_panels)
    cols = min(d, 4)
    rows = -(-d // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    ref = target.reference
    lo, hi = np.quantile(ref, 0.005, 0), np.quantile(ref, 0.995, 0)
    pad = 0.3 * (hi - lo)
    w = None if x is None else normalised_weights(log_w, x.shape[0])
    for i, ax in enumerate(axes.flat):
        if i >= d:
            ax.axis("off")
            continue
        bins = np.linspace(lo[i] - pad[i], hi[i] + pad[i], 60)
        ax.hist(ref[:, i], bins, density=True, color="0.8", label="reference")
        if x is not None:
            ax.hist(x[:, i], bins, density=True, histtype="step", color="C0", label="sampler raw")
            ax.hist(x[:, i], bins, weights=w, density=True, histtype="step", color="C1", label="sampler weighted")
        if nuts is not None:
            ax.hist(nuts[:, i], bins, density=True, histtype="step", color="C2", ls="--", label="NUTS")
        ax.set_title(target.param_names[i], fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{target.name} ({target.source})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
