"""What every experiment script shares: its output folder, JSON and markdown writers, a plot helper,
training a case (resumable) from config keys or a preset, and the common command-line options.

    from experiments import harness
    out = harness.out_dir("grid_floor")                    # experiments/out/grid_floor/ (git-ignored)
    harness.write_json(os.path.join(out, "grid_floor.json"), rows)
    harness.write_text(os.path.join(out, "grid_floor.md"), harness.md_table(header, cells))
    with harness.figure(os.path.join(out, "x.png"), 1, 2) as (fig, axes): ...
    report = harness.run_case("gmm40", {**harness.preset("NAME"), "seed": 1}, harness.out_dir("x", "runs", "case"))

A script runs from the repository root as `python experiments/NAME.py` (see `script_path`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_ROOT = os.path.join(HERE, "out")          # every script's outputs, one folder per experiment
CONFIGS = os.path.join(HERE, "configs")       # presets: JSON objects of config keys


def out_dir(name: str, *parts: str) -> str:
    """experiments/out/<name>[/<parts>...], created."""
    path = os.path.join(OUT_ROOT, name, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def _atomic(path: str, data: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)   # a reader never sees half a file, a kill never leaves one


def _default(o):
    if hasattr(o, "tolist"):       # numpy / torch scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str, obj, indent: int = 1) -> None:
    """Write obj as JSON, atomically."""
    _atomic(path, json.dumps(obj, indent=indent, default=_default) + "\n")


def write_text(path: str, text: str) -> None:
    """Write a text (markdown) file atomically, ending in one newline."""
    _atomic(path, text.rstrip("\n") + "\n")


def write_results(base: str, obj, text: str) -> None:
    """An experiment's results: base.json (obj) and base.md (text), atomically; the text is printed."""
    write_json(base + ".json", obj)
    write_text(base + ".md", text)
    print(text)


def read_json(path: str, default=None):
    """The JSON at path, or `default` where there is no file yet (resumable tables)."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(v, spec: str = "{:.2f}", missing: str = "n/a") -> str:
    """A table cell: spec.format(v), or `missing` for None."""
    return missing if v is None else spec.format(v)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@contextmanager
def figure(path: str, nrows: int = 1, ncols: int = 1, figsize=None, dpi: int = 110, squeeze: bool = True, **kw):
    """with figure(path, 1, 2) as (fig, axes): draw; the figure is laid out, saved to path and closed."""
    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (5 * ncols, 3.8 * nrows), squeeze=squeeze, **kw)
    try:
        yield fig, axes
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def preset(name: str) -> dict:
    """Config keys of experiments/configs/<name>.json (or of a path to any JSON file of keys)."""
    path = name if os.path.sep in name or name.endswith(".json") else os.path.join(CONFIGS, f"{name}.json")
    with open(path) as f:
        return json.load(f)


def tag(keys: dict) -> str:
    """File-name tag of config overrides ("_k1v1_k2v2"); long ones are cut and end in a hash, so every
    name fits the OS limit (the full keys are in each run's config)."""
    s = "".join(f"_{k}{v}" for k, v in sorted(keys.items()))
    return s if len(s) <= 120 else s[:100] + "_" + hashlib.sha1(s.encode()).hexdigest()[:10]


def run_case(target, keys: dict, out: str, progress: bool = False) -> dict:
    """Train `target` with exactly the config `keys` (TrainConfig defaults under them, no target
    defaults) into run directory `out` and return its report, plus run_dir and wall_seconds.
    Resumable: a finished run (report.json) is reused as it is (delete the folder to rerun); a run
    with a checkpoint continues from it; a folder without either (killed before its first
    checkpoint) is removed and the run starts over. A reused or resumed run keeps its saved config:
    keys that differ from it are printed."""
    import diffsampler as ds
    from diffsampler.training import TrainConfig
    report, saved = os.path.join(out, "report.json"), read_json(os.path.join(out, "config.json"))
    if saved is not None:
        want = TrainConfig.from_dict(keys).to_dict()
        diff = {k: (saved.get(k), v) for k, v in want.items() if k in saved and saved[k] != v}
        if diff:
            print(f"{out}: the saved config differs from the one asked for (saved, asked): {diff}", file=sys.stderr)
    if os.path.exists(report):
        return {**read_json(report), "run_dir": out}
    resume = os.path.exists(os.path.join(out, "checkpoint.pt"))
    if os.path.isdir(out) and not resume:
        shutil.rmtree(out)
    from diffsampler.training.interrupts import Interrupted
    t0 = time.perf_counter()
    try:
        run = ds.train(target, config=dict(keys), out=out, resume=resume, progress=progress)
    except Interrupted as e:     # SIGTERM / SIGINT: the run wrote its checkpoint; rerunning resumes it
        print(f"{sys.argv[0]}: {e}; run the same command again to resume", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    return {**run.report, "run_dir": out, "wall_seconds": round(time.perf_counter() - t0, 1)}


def read_metrics(run_dir: str) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def machine() -> dict:
    """Where a figure was measured."""
    import torch
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def command() -> str:
    """The command line that is running, as a user would type it from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if sys.argv and sys.argv[0] else "?"
    return " ".join(["python", script] + sys.argv[1:])


# -- command line --------------------------------------------------------------------------------
def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help prints the script's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_set(p: argparse.ArgumentParser, help: str = "config overrides (key=value)") -> None:
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=help)


def add_only(p: argparse.ArgumentParser, choices, help: str = "run only these") -> None:
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help=f"{help}: {', '.join(choices)}")


def add_threads(p: argparse.ArgumentParser, default: int = 1) -> None:
    p.add_argument("--threads", type=int, default=default, help=f"torch CPU threads (default {default})")


def parse_set(p: argparse.ArgumentParser, items: list[str]) -> dict:
    """--set KEY=VALUE ... -> typed config keys; an unknown key or unreadable value exits naming it.
    Each key is typed alone: rules across keys are checked against each case's full config."""
    from diffsampler.errors import ConfigError
    from diffsampler.training.config import coerce_keys, parse_overrides
    try:
        return coerce_keys(parse_overrides(items))
    except ConfigError as err:
        p.error(f"--set: {err}")


def check_only(p: argparse.ArgumentParser, only, choices) -> list:
    """The names asked for by --only (all when not given); a name not among `choices` exits."""
    unknown = sorted(set(only or []) - set(choices))
    if unknown:
        p.error(f"--only {' '.join(unknown)}: not among {list(choices)}")
    return [c for c in choices if not only or c in only]


def set_threads(n: int) -> None:
    import torch
    if n:
        torch.set_num_threads(n)
