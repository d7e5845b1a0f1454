"""Reports a person reads: `write_html_report(run_dirs, path)` writes one self-contained HTML file
(inline CSS, images as data: URIs, nothing fetched) with each run's summary, trust warnings,
training curves against iterations and energy calls, plots and config, and for several runs a
side-by-side comparison. `diffsampler report RUN [RUN ...] -o report.html`; every run writes its
own RUN/report.html at the end."""
from .html_report import render_html, write_html_report
from .rundata import RunData, load_run_data

__all__ = ["write_html_report", "render_html", "load_run_data", "RunData"]
