"""Render an HTML run report in headless Chromium: check that every image loaded and that the page
requested nothing outside the file, then save a screenshot.

    python experiments/report_screenshot.py RUN [RUN ...] -o docs/images/report.png [--html report.html]
    python experiments/report_screenshot.py --report report.html -o shot.png
    python experiments/report_screenshot.py --self-test      # a page with outside requests must fail

Checks (any failure exits 1):
  1. static: every <img> is an embedded PNG that decodes, no <script>/<link>, no http(s)/file/// URL
     in src, href or CSS url() (`diffsampler.reporting.check`);
  2. in the browser: a copy of the page with a small inline script that, after `load`, counts the
     images whose naturalWidth is 0 and lists `performance.getEntriesByType("resource")`, read back
     with --dump-dom;
  3. the network log (--log-net-log, every name resolving to nothing with --host-resolver-rules):
     no request initiated by the page (Chromium's own background requests carry the initiator
     "not an origin" and are reported, not counted).
Needs Debian's `chromium` (apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BASE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--host-resolver-rules=MAP * ~NOTFOUND"]
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  var res = performance.getEntriesByType("resource").map(function (e) { return e.name; })
    .filter(function (n) { return n.indexOf("data:") !== 0; });
  document.body.setAttribute("data-check", JSON.stringify({images: imgs.length, broken: broken, resources: res}));
});
</script>"""
TIMEOUT = 180


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(chromium: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *BASE_FLAGS, *args], capture_output=True, text=True, timeout=TIMEOUT)


def page_requests(netlog_path: str) -> tuple[list[str], list[str]]:
    """(URLs requested by the page, URLs Chromium requested on its own) from a --log-net-log file."""
    with open(netlog_path) as f:
        log = json.load(f)
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    page, browser = [], []
    for e in log.get("events", []):
        p = e.get("params") or {}
        if names.get(e.get("type")) != "URL_REQUEST_START_JOB" or "url" not in p:
            continue
        if not re.match(r"(https?|wss?|ftp):", p["url"]):
            continue
        (browser if p.get("initiator") == "not an origin" else page).append(p["url"])
    return page, browser


def browser_check(chromium: str, html_path: str) -> dict:
    """Load an instrumented copy of the page; {'images', 'broken', 'resources', 'page_requests',
    'browser_requests'}."""
    with tempfile.TemporaryDirectory() as tmp:
        copy, netlog = os.path.join(tmp, "page.html"), os.path.join(tmp, "netlog.json")
        text = open(html_path, encoding="utf-8").read()
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE)
        r = run_chromium(chromium, ["--dump-dom", "--virtual-time-budget=15000", f"--log-net-log={netlog}",
                                    f"file://{copy}"])
        m = re.search(r'data-check="([^"]*)"', r.stdout)
        if not m:
            raise RuntimeError(f"the page did not report back (chromium exit {r.returncode}): {r.stderr[-500:]}")
        result = json.loads(html.unescape(m.group(1)))
        result["page_requests"], result["browser_requests"] = page_requests(netlog)
    return result


def screenshot(chromium: str, html_path: str, out_png: str, size: str = "1280,2400") -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    r = run_chromium(chromium, [f"--screenshot={os.path.abspath(out_png)}", f"--window-size={size}",
                                f"file://{os.path.abspath(html_path)}"])
    if not os.path.exists(out_png):
        raise RuntimeError(f"no screenshot written (chromium exit {r.returncode}): {r.stderr[-500:]}")


def check_report(html_path: str, chromium: str | None) -> list[str]:
    """Every problem found (empty: the page is self-contained and its images load)."""
    from diffsampler.reporting.check import self_containment_problems

    n_img, problems = self_containment_problems(open(html_path, encoding="utf-8").read())
    print(f"static check: {n_img} images, {len(problems)} problems")
    if chromium is None:
        return problems + ["chromium not found (apt-get install -y chromium)"]
    b = browser_check(chromium, html_path)
    print(f"browser: {b['images']} images, {b['broken']} not loaded, {len(b['resources'])} fetched resources, "
          f"{len(b['page_requests'])} page requests; Chromium's own background requests (blocked): "
          f"{len(b['browser_requests'])}")
    if b["broken"]:
        problems.append(f"{b['broken']} of {b['images']} images did not load in the browser")
    problems += [f"the page fetched {u}" for u in b["resources"]]
    problems += [f"the page requested {u}" for u in b["page_requests"]]
    return problems


def self_test(chromium: str | None) -> int:
    """A control page with an outside image and stylesheet must be caught by every check."""
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.html")
        with open(bad, "w") as f:
            f.write('<html><head><link rel="stylesheet" href="https://fonts.example.org/a.css"></head>'
                    '<body><img src="http://example.com/x.png"></body></html>')
        problems = check_report(bad, chromium)
    print("\n".join(f"  caught: {p}" for p in problems))
    needed = ["points outside the file", "did not load", "requested http://example.com/x.png"]
    missing = [n for n in needed if not any(n in p for p in problems)]
    print("self-test:", "ok" if not missing else f"FAILED, not caught: {missing}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run directories to report on")
    ap.add_argument("--report", help="an existing report.html to check instead")
    ap.add_argument("--html", help="where to write the report of RUNS (default: a temporary file)")
    ap.add_argument("-o", "--output", help="screenshot PNG")
    ap.add_argument("--window-size", default="1280,2400")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if args.self_test:
        return self_test(chromium)
    if not args.runs and not args.report:
        ap.error("give RUN directories or --report FILE")
    path = args.report
    if not path:
        from diffsampler.reporting import write_html_report
        path = args.html or os.path.join(tempfile.mkdtemp(), "report.html")
        write_html_report(args.runs, path)
        print(f"wrote {path}")
    problems = check_report(path, chromium)
    if args.output and chromium:
        screenshot(chromium, path, args.output, args.window_size)
        print(f"screenshot: {args.output}")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
