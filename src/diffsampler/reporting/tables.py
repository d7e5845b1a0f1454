"""The report's tables: summary metrics of a report.json, config keys, and the comparison of runs."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from html import escape

PSIS_K_UNRELIABLE = 0.7   # Pareto k-hat above which importance weights are not to be trusted
PSIS_K_CAUTION = 0.5
PSIS_WORDS = re.compile(r"psis|pareto|k-hat|k̂", re.I)   # a report's own warning about k-hat


def fmt(v, digits: int = 3) -> str:
    """A compact, readable value: thousands separators for integers, n/a for None."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -digits):
            return f"{v:.{digits + 1}g}"
        return f"{v:.{digits}f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def fmt_config(v) -> str:
    """A config value as one would type it: 0.001, 100.0, 3000, None, true."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) or v is None:
        return repr(v)
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _calls(rep: dict, phase: str):
    return (rep.get("energy_calls") or {}).get(phase)


def _raw_gap(rep: dict):
    return (rep.get("raw_weights") or {}).get("eubo_minus_elbo")


# (label, value getter, better: "low" | "high" | None) — the summary table's rows, in order
SUMMARY: list[tuple[str, Callable[[dict], object], str | None]] = [
    ("target", lambda r: r.get("target"), None),
    ("log Z (true)", lambda r: r.get("log_Z_true"), None),
    ("ELBO", lambda r: r.get("elbo"), "high"),
    ("EUBO", lambda r: r.get("eubo"), "low"),
    ("EUBO − ELBO", lambda r: r.get("eubo_minus_elbo"), "low"),
    ("EUBO − ELBO (last iterate)", _raw_gap, "low"),
    ("log Z (IS)", lambda r: r.get("log_Z_is"), None),
    ("|Δ log Z| (IS)", lambda r: r.get("delta_log_Z_is"), "low"),
    ("log Z (learned)", lambda r: r.get("log_Z_learned"), None),
    ("ESS", lambda r: r.get("ess"), "high"),
    ("PSIS k̂", lambda r: r.get("psis_k"), "low"),
    ("W2", lambda r: r.get("w2"), "low"),
    ("MMD", lambda r: r.get("mmd"), "low"),
    ("energy W2", lambda r: r.get("energy_w2"), "low"),
    ("distance W2", lambda r: r.get("distance_w2"), "low"),
    ("equivariant W2", lambda r: r.get("equivariant_w2"), "low"),
    ("mode coverage", lambda r: r.get("mode_coverage"), "high"),
    ("energy calls: search", lambda r: _calls(r, "search"), None),
    ("energy calls: train", lambda r: _calls(r, "train"), None),
    ("energy calls: eval", lambda r: _calls(r, "eval"), None),
    ("energy calls: total", lambda r: _calls(r, "total"), None),
    ("iterations", lambda r: r.get("iterations"), None),
    ("train seconds", lambda r: r.get("train_seconds"), None),
    ("stop reason", lambda r: r.get("stop_reason"), None),
    ("evaluation", lambda r: _evaluation(r), None),
]


def _evaluation(r: dict) -> str | None:
    if r.get("eval_steps") is None:
        return None
    return (f"{r.get('n_eval_samples', '?')} samples, {r.get('integrator', 'euler_maruyama')}, "
            f"{r.get('eval_grid', '?')} grid x{r.get('eval_steps')}")


def psis_class(v) -> str:
    if not isinstance(v, (int, float)):
        return ""
    return "bad" if v > PSIS_K_UNRELIABLE else ("warn" if v > PSIS_K_CAUTION else "")


def warnings_of(rep: dict | None) -> list[str]:
    """The trust warnings a report carries: its `warnings` list, and a PSIS k-hat past 0.7."""
    if not rep:
        return []
    w = rep.get("warnings") or []
    out = [str(x) for x in (w if isinstance(w, list) else [w])]
    k = rep.get("psis_k")
    if isinstance(k, (int, float)) and k > PSIS_K_UNRELIABLE and not any(PSIS_WORDS.search(s) for s in out):
        out.append(f"PSIS k̂ = {k:.2f} > {PSIS_K_UNRELIABLE}: the importance weights are heavy-tailed, so "
                   "log Z (IS) and ESS are not reliable")
    return out


def summary_rows(reports: list[dict | None]) -> list[tuple[str, list[object], str | None]]:
    """(label, values, better) for the rows where some report has a value."""
    rows = []
    for label, get, better in SUMMARY:
        vals = [get(r) if r else None for r in reports]
        if any(v is not None for v in vals):
            rows.append((label, vals, better))
    return rows


def _best(vals: list[object], better: str | None) -> set[int]:
    nums = [(i, v) for i, v in enumerate(vals) if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]
    if better is None or len(nums) < 2:
        return set()
    target = (min if better == "low" else max)(v for _, v in nums)
    return {i for i, v in nums if v == target}


def table_html(headers: list[str], reports: list[dict | None], mark_best: bool = False) -> str:
    """The summary table: one column per report (a run's, or its re-evaluation)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for label, vals, better in summary_rows(reports):
        best = _best(vals, better) if mark_best else set()
        cells = []
        for i, v in enumerate(vals):
            cls = " ".join(c for c in ("num", psis_class(v) if label == "PSIS k̂" else "", "best" if i in best else "")
                           if c)
            cells.append(f'<td class="{cls}">{escape(fmt(v))}</td>')
        body.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    return f'<table class="summary"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def config_html(config: dict, columns: int = 3) -> str:
    """All config keys as a compact grid of key/value pairs, `columns` pairs per line."""
    items = sorted((k, v) for k, v in config.items())
    per = math.ceil(len(items) / columns) or 1
    cols = [items[i * per:(i + 1) * per] for i in range(columns)]
    lines = []
    for j in range(per):
        cells = []
        for col in cols:
            if j < len(col):
                k, v = col[j]
                cells.append(f'<td class="key">{escape(k)}</td><td>{escape(fmt_config(v))}</td>')
            else:
                cells.append("<td></td><td></td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="config">{"".join(lines)}</table>'


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys whose values are not the same in every run (absent counts as a value)."""
    keys = sorted(set().union(*configs)) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def comparison_config_html(names: list[str], configs: list[dict]) -> str:
    """Config keys side by side: the differing ones highlighted first, the shared ones folded away."""
    diff = differing_keys(configs)
    same = [k for k in sorted(set().union(*configs)) if k not in diff]
    head = "".join(f"<th>{escape(n)}</th>" for n in names)

    def cell(c: dict, k: str) -> str:
        return f"<td>{escape(fmt_config(c[k]) if k in c else '—')}</td>"   # —: the run has no such key

    def rows(keys: list[str], cls: str) -> str:
        return "".join(f'<tr class="{cls}"><th>{escape(k)}</th>{"".join(cell(c, k) for c in configs)}</tr>'
                       for k in keys)
    out = [f'<p>{len(diff)} config key(s) differ between the runs (highlighted).</p>',
           f'<table class="compare"><tr><th>key</th>{head}</tr>{rows(diff, "differs")}</table>']
    if same:
        out.append(f'<details><summary>{len(same)} config keys shared by all runs</summary>'
                   f'<table class="compare"><tr><th>key</th>{head}</tr>{rows(same, "")}</table></details>')
    return "".join(out)
