"""What a report reads from a run directory: config, report(s), metric rows, PNG plots."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import CheckpointError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OWN_PLOTS = {"training_curves.png"}   # the report draws its own curves (against iterations and calls)
PLOT_TITLES = {"samples": "samples against the truth", "marginals": "marginals against the truth",
               "histograms": "interatomic distances and energies", "ramachandran": "Ramachandran plot"}


@dataclass
class RunData:
    """One run directory's contents, as the report needs them."""

    dir: str
    name: str
    config: dict
    report: dict | None                  # RUN/report.json (None while the run is going)
    rows: list[dict] = field(default_factory=list)            # RUN/metrics.jsonl
    images: list[tuple[str, str]] = field(default_factory=list)       # (title, path) of RUN/*.png
    eval_report: dict | None = None      # RUN/eval/report.json (`diffsampler eval`)
    eval_images: list[tuple[str, str]] = field(default_factory=list)  # RUN/eval/*.png
    target_spec: dict | None = None      # RUN/target_spec.json (a user energy)

    @property
    def target(self) -> str:
        return str((self.report or {}).get("target") or self.config.get("target") or "?")


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def read_rows(path: str) -> list[dict]:
    """metrics.jsonl rows; a line that does not parse (a run killed mid-write) is skipped."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def is_png(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def plot_title(filename: str) -> str:
    stem = os.path.splitext(filename)[0]
    return PLOT_TITLES.get(stem, stem.replace("_", " "))


def find_plots(directory: str, skip: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(title, path) of the PNG files directly in `directory`: samples and marginals first."""
    if not os.path.isdir(directory):
        return []
    names = [f for f in os.listdir(directory) if f.lower().endswith(".png") and f not in skip
             and is_png(os.path.join(directory, f))]
    order = {"samples.png": 0, "marginals.png": 1}
    names.sort(key=lambda f: (order.get(f, 2), f))
    return [(plot_title(f), os.path.join(directory, f)) for f in names]


def load_run_data(run_dir: str, name: str | None = None) -> RunData:
    """Read a run directory (finished or still going). Raises CheckpointError when it is not one."""
    cfg = _read_json(os.path.join(run_dir, "config.json"))
    if cfg is None:
        raise CheckpointError(f"{run_dir} is not a run directory (no readable config.json)")
    eval_dir = os.path.join(run_dir, "eval")
    return RunData(dir=run_dir, name=name or os.path.basename(os.path.normpath(run_dir)), config=cfg,
                   report=_read_json(os.path.join(run_dir, "report.json")),
                   rows=read_rows(os.path.join(run_dir, "metrics.jsonl")),
                   images=find_plots(run_dir, OWN_PLOTS),
                   eval_report=_read_json(os.path.join(eval_dir, "report.json")),
                   eval_images=find_plots(eval_dir, OWN_PLOTS),
                   target_spec=_read_json(os.path.join(run_dir, "target_spec.json")))


def unique_names(run_dirs: list[str]) -> list[str]:
    """Display names: the folder names, made unique with their parent folders where they clash."""
    base = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    names = ["/".join(os.path.normpath(d).split(os.sep)[-2:]) if base.count(b) > 1 else b
             for d, b in zip(run_dirs, base)]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]
