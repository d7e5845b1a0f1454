"""A self-contained HTML report of one or several run directories: inline CSS, every image a
base64 data: URI, no script and no address outside the file."""
from __future__ import annotations

import base64
import datetime
import os
from html import escape

from .figures import curves_png
from .rundata import RunData, is_png, load_run_data, unique_names
from .tables import comparison_config_html, config_html, table_html, warnings_of

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1d232a;
max-width:1240px;background:#fff;line-height:1.35}
h1{font-size:1.55em;margin:0 0 4px}h2{font-size:1.25em;margin:28px 0 8px;border-bottom:2px solid #d5dbe1;
padding-bottom:3px}h3{font-size:1.05em;margin:18px 0 6px}
.meta{color:#5b6670;font-size:.9em}.run{margin-bottom:36px}
table{border-collapse:collapse;font-size:.86em;margin:6px 0 10px}
th,td{border:1px solid #d5dbe1;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.config td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
table.config td.key{color:#44515c;background:#fafbfc}
tr.differs th,tr.differs td{background:#fff4cc}td.best{font-weight:700;background:#e3f4e1}
td.warn{background:#fff1d6}td.bad{background:#fde0dc;font-weight:700}
.warnings{border-left:4px solid #d9822b;background:#fff6ec;padding:6px 12px;margin:8px 0}
.warnings li{margin:2px 0}.ok{color:#2d7a3a}
figure{display:inline-block;margin:6px 12px 12px 0;vertical-align:top}figure img{max-width:100%;
border:1px solid #e3e7eb}figcaption{font-size:.85em;color:#5b6670}
.curves img{max-width:100%}details{margin:6px 0}summary{cursor:pointer;color:#44515c}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str, alt: str | None = None) -> str:
    return (f'<figure><img src="{data_uri(png)}" alt="{escape(alt or caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def file_figure(path: str, caption: str) -> str:
    """A PNG file embedded; a missing or non-PNG file leaves a note instead of a broken image."""
    if not is_png(path):
        return f"<p class='meta'>{escape(caption)}: {escape(path)} is not a readable PNG</p>"
    with open(path, "rb") as f:
        return figure(f.read(), caption)


def curves_html(runs: list[RunData]) -> str:
    parts = []
    for axis, what in (("iteration", "iterations"), ("calls", "energy calls")):
        try:
            png = curves_png(runs, axis)
        except Exception as e:  # noqa: BLE001 - a report never fails the run it describes
            parts.append(f"<p class='meta'>the curves against {what} could not be drawn ({escape(str(e))})</p>")
            continue
        if png is not None:
            parts.append(figure(png, f"training curves against {what}"))
    return f'<div class="curves">{"".join(parts)}</div>' if parts else "<p class='meta'>no metric rows yet</p>"


def warnings_html(rep: dict | None, label: str = "") -> str:
    ws = warnings_of(rep)
    if not ws:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in ws)
    return f'<div class="warnings"><b>{escape(label)}trust warnings</b><ul>{items}</ul></div>'


def _spec_line(run: RunData) -> str:
    s = run.target_spec
    if not s:
        return ""
    where = s.get("location", "?") + (f":{s['function']}" if s.get("function") else "")
    return (f"<p class='meta'>user energy <code>{escape(where)}</code>, SHA-256 "
            f"<code>{escape(str(s.get('sha256', ''))[:16])}…</code></p>")


def run_section(run: RunData, curves: bool = True) -> str:
    """One run: summary (and its re-evaluation), warnings, curves, plots, config."""
    headers, reports = ["final report"], [run.report]
    if run.eval_report:
        headers.append("re-evaluation (eval/)")
        reports.append(run.eval_report)
    state = "" if run.report else "<p class='meta'>no report.json yet: the run has not finished</p>"
    parts = [f'<section class="run"><h2>{escape(run.name)} <span class="meta">({escape(run.target)})</span></h2>',
             f"<p class='meta'>{escape(os.path.abspath(run.dir))}</p>", _spec_line(run), state,
             "<h3>Summary</h3>", table_html(headers, reports) if any(reports) else "",
             warnings_html(run.report), warnings_html(run.eval_report, "re-evaluation: ")]
    if curves:
        parts += ["<h3>Training curves</h3>", curves_html([run])]
    if run.images:
        parts += ["<h3>Samples and plots</h3>", "".join(file_figure(p, t) for t, p in run.images)]
    if run.eval_images:
        parts += ["<h3>Re-evaluation plots (eval/)</h3>", "".join(file_figure(p, t) for t, p in run.eval_images)]
    parts += ["<h3>Config</h3>", config_html(run.config), "</section>"]
    return "".join(parts)


def comparison_section(runs: list[RunData]) -> str:
    names = [r.name for r in runs]
    return "".join([
        "<section class='run'><h2>Comparison</h2>",
        "<p class='meta'>best value of each metric in green (lower is better for gaps, errors and distances; "
        "higher for ELBO, ESS and coverage)</p>",
        table_html(names, [r.report for r in runs], mark_best=True),
        "<h3>Training curves, overlaid</h3>", curves_html(runs),
        "<h3>Config</h3>", comparison_config_html(names, [r.config for r in runs]), "</section>"])


def render_html(runs: list[RunData]) -> str:
    """The whole page."""
    from .. import __version__

    title = f"diffsampler report: {runs[0].name}" if len(runs) == 1 else f"diffsampler report: {len(runs)} runs"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>{escape(title)}</h1>", f"<p class='meta'>diffsampler {__version__}, written {stamp}</p>"]
    if len(runs) > 1:
        body.append(comparison_section(runs))
    body += [run_section(r) for r in runs]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def write_html_report(run_dirs: list[str], path: str) -> str:
    """Write one self-contained HTML file about the run directories (finished or still going) to
    `path`; returns the path. Raises CheckpointError for a folder that is not a run directory."""
    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("write_html_report: no run directories given")
    runs = [load_run_data(d, n) for d, n in zip(run_dirs, unique_names(list(run_dirs)))]
    html = render_html(runs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, path)
    return path
