"""The suite over several seeds: one table of each target's spread across training seeds.

`run_suite --seeds 0 1 2` runs each seed into OUT/seed<S>/ (a whole suite each, resumable as one) and
then writes OUT/seeds.md and OUT/seeds.json from their suite.json files: per target, for the
importance-weighted mean and sd errors, k̂ and EUBO − ELBO, the median over seeds and the range
(min–max), and how many seeds met the goal. A single seed's row is one draw from that spread (the
pilot, the search and the learner all re-seed from it), so the median and the worst seed are what a
user can expect.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .report import goal_met

FIGURES = {  # column -> how to read it from a row's 'sampler' entry
    "weighted mean err": lambda s: s["errors_weighted"]["mean_err_max"],
    "weighted sd err": lambda s: s["errors_weighted"]["sd_err_max"],
    "k̂": lambda s: s["psis_k"],
    "EUBO − ELBO": lambda s: s["eubo_minus_elbo"],
}


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def load_seed_suites(out: Path, seeds: list[int]) -> dict[int, dict]:
    """{seed: its suite.json's rows} for the seeds whose suite exists under `out`."""
    suites = {}
    for s in seeds:
        path = seed_dir(out, s) / "suite.json"
        if path.exists():
            suites[s] = json.loads(path.read_text())["rows"]
    return suites


def spread(values: list[float]) -> dict | None:
    """Median, min and max of the finite values; None when there are none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def aggregate(suites: dict[int, dict]) -> dict[str, dict]:
    """Per target: the spread of each figure over the seeds whose run finished, the seeds run and failed,
    and the seeds that met the goal."""
    names = list(dict.fromkeys(n for rows in suites.values() for n in rows))
    out = {}
    for name in names:
        runs = {s: rows[name].get("sampler") for s, rows in suites.items() if name in rows}
        ok = {s: r for s, r in runs.items() if r and r.get("status") == "ok"}
        out[name] = {"seeds": sorted(runs), "failed": sorted(set(runs) - set(ok)),
                     "goal_met": sorted(s for s, r in ok.items() if goal_met(r) == "yes"),
                     **{k: spread([f(r) for r in ok.values()]) for k, f in FIGURES.items()}}
    return out


def _cell(sp: dict | None) -> str:
    if sp is None:
        return "–"
    if sp["n"] == 1:
        return f"{sp['median']:.2f}"
    return f"{sp['median']:.2f} ({sp['min']:.2f}–{sp['max']:.2f})"


def seeds_table(agg: dict[str, dict]) -> str:
    """seeds.md: one row per target, median (min–max) over seeds."""
    head = ["target", "seeds", "goal met", *FIGURES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in agg.items():
        met = f"{len(a['goal_met'])} of {len(a['seeds'])}" + (f" ({len(a['failed'])} failed)" if a["failed"] else "")
        lines.append("| " + " | ".join([name, ", ".join(map(str, a["seeds"])), met,
                                        *(_cell(a[k]) for k in FIGURES)]) + " |")
    lines += ["", "- Each cell: the median over the seeds, (min–max) beside it; errors are importance-weighted, max "
              "over coordinates (mean in reference sds, sd relative), as in each seed's suite.md.",
              "- goal met: seeds whose weighted mean err <= 0.1, sd err <= 0.1 and k̂ <= 0.7."]
    return "\n".join(lines) + "\n"


__all__ = ["seed_dir", "load_seed_suites", "aggregate", "seeds_table"]
