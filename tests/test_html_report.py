"""The HTML run report: one self-contained file (embedded PNGs, inline CSS, nothing fetched) with the
summary, trust warnings, curves against iterations and energy calls, plots and config; several runs
side by side; written at the end of every run; and the training-curves plot without in-run evaluations."""
import base64
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

import diffsampler as ds
from diffsampler.cli import main
from diffsampler.errors import CheckpointError
from diffsampler.reporting import load_run_data, render_html, write_html_report
from diffsampler.reporting.check import DATA_PNG, png_size, self_containment_problems
from diffsampler.reporting.tables import differing_keys, fmt, warnings_of

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(recipe="tb", width=16, depth=1, batch_size=16, train_steps=4, eval_steps=5, eval_samples=200,
             iterations=12, log_every=2, threads=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs that differ in a few config keys (the first with in-run evaluations)."""
    base = tmp_path_factory.mktemp("runs")
    a, b = str(base / "tb_a"), str(base / "tb_b")
    ds.train("gmm25", out=a, progress=False, **{**SMALL, "eval_every": 6})
    ds.train("gmm25", out=b, progress=False, **{**SMALL, "lr": 0.003, "seed": 1})
    return a, b


def images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def test_every_run_writes_a_self_contained_report(runs):
    html = open(os.path.join(runs[0], "report.html"), encoding="utf-8").read()
    n, problems = self_containment_problems(html)
    assert problems == [] and n == len(images(html)) >= 4     # 2 curve figures + samples + marginals
    for src in images(html):
        assert src.startswith(DATA_PNG) and min(png_size(src[len(DATA_PNG):])) > 0
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", html) and "<script" not in html
    assert "url(" not in html and "<link" not in html
    for text in ("ELBO", "EUBO − ELBO", "|Δ log Z| (IS)", "ESS", "W2", "mode coverage", "energy calls: search",
                 "energy calls: train", "energy calls: eval", "iterations", "train seconds",
                 "training curves against iterations", "training curves against energy calls",
                 "samples against the truth", "marginals against the truth", "Config", "batch_size"):
        assert text in html, text


def test_comparison_of_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["report", *runs, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert self_containment_problems(html)[1] == []
    assert "Comparison" in html and "Training curves, overlaid" in html
    assert html.count("<section") == 3                         # comparison + one section per run
    differs = re.findall(r'<tr class="differs"><th>([^<]*)</th>', html)
    assert {"lr", "seed", "eval_every"} <= set(differs) and "batch_size" not in differs
    assert 'class="num best"' in html                          # best values marked
    assert differing_keys([{"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 1}]) == ["b"]


def test_report_of_a_run_still_going_and_bad_dirs(tmp_path, runs, capsys):
    going = tmp_path / "going"
    going.mkdir()
    (going / "config.json").write_text(json.dumps({"recipe": "tb", "target": "gmm25"}))
    (going / "metrics.jsonl").write_text(
        '{"iteration": 1, "loss": 3.0, "log_Z": 0.1, "energy_calls": {"search": 0, "train": 10, "eval": 0, '
        '"total": 10}}\n{"iteration": 2, "loss"')                # a line cut by a kill
    html = render_html([load_run_data(str(going))])
    assert "has not finished" in html and "training curves against iterations" in html
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        write_html_report([str(tmp_path)], str(tmp_path / "y.html"))


def test_trust_warnings_are_shown(runs, tmp_path):
    rep = json.load(open(os.path.join(runs[1], "report.json")))
    rep.update(psis_k=0.93, warnings=["EUBO uses 200 reference samples only"])
    assert warnings_of(rep)[0] == "EUBO uses 200 reference samples only"
    assert any("PSIS k̂ = 0.93" in w for w in warnings_of(rep))
    run = load_run_data(runs[1])
    run.report = rep
    html = render_html([run])
    assert "trust warnings" in html and "EUBO uses 200 reference samples only" in html
    assert re.search(r'<tr><th>PSIS k̂</th><td class="num bad">0.930</td>', html)
    assert fmt(1234567) == "1,234,567" and fmt(None) == "n/a" and fmt(0.5) == "0.500"


def test_training_curves_without_in_run_evaluations(runs, tmp_path):
    """eval_every=0 (the default): the loss panel, and the final report's ELBO/EUBO as points,
    never an empty panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsampler.evaluation import plots

    drawn = []
    real = plt.subplots

    def spy(*a, **k):
        fig, axes = real(*a, **k)
        drawn.append(axes)
        return fig, axes
    metrics = os.path.join(runs[1], "metrics.jsonl")
    rows = [json.loads(line) for line in open(metrics)]
    assert not any("elbo" in r for r in rows)
    try:
        plt.subplots = spy
        plots.plot_training_curves(metrics, str(tmp_path / "with_report.png"))          # report.json beside it
        only = tmp_path / "metrics.jsonl"
        only.write_text(open(metrics).read())
        plots.plot_training_curves(str(only), str(tmp_path / "loss_only.png"))          # no report: loss only
    finally:
        plt.subplots = real
    with_report, loss_only = drawn
    assert with_report.shape == (1, 2) and len(with_report[0, 1].lines) >= 2           # ELBO and EUBO points
    assert loss_only.shape == (1, 1) and len(loss_only[0, 0].lines) == 1
    assert (tmp_path / "with_report.png").exists() and (tmp_path / "loss_only.png").exists()


def _screenshot_script():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "experiments" / "report_screenshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_in_headless_chromium(runs, tmp_path):
    """Every image loads in a real browser, the page requests nothing, and a screenshot is taken."""
    shot = _screenshot_script()
    chromium = shot.find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = str(tmp_path / "cmp.html")
    write_html_report(list(runs), page)
    b = shot.browser_check(chromium, page)
    assert b["images"] == len(images(open(page, encoding="utf-8").read())) and b["broken"] == 0
    assert b["resources"] == [] and b["page_requests"] == []
    png = tmp_path / "shot.png"
    shot.screenshot(chromium, page, str(png), "1280,1600")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same checks catch a page that does fetch something
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://example.com/x.png"></body></html>')
    b = shot.browser_check(chromium, str(bad))
    assert b["broken"] == 1 and b["page_requests"] == ["http://example.com/x.png"]
    assert base64.b64decode(images(open(page, encoding="utf-8").read())[0][len(DATA_PNG):])[:4] == b"\x89PNG"
