"""The interface every metric stream implements, and the flattening of a metrics row into scalars."""
from __future__ import annotations

import atexit
import os

BY_CALLS = "by_calls/"          # prefix of the tags whose x value is the total energy calls
CALLS_KEY = "energy_calls/total"
STEP_KEY = "iteration"
PLOT_SUFFIX = ".png"


class MetricStream:
    """One destination of a run's metric rows. A row is what the trainer writes to metrics.jsonl:
    {"iteration": k, "loss": ..., "log_Z": ..., "energy_calls": {"search", "train", "eval", "total"},
    "train_seconds": ..., in-run evaluations ("elbo", "eubo", "ess", ...), search statistics under
    "search"}. Backends plot every numeric entry against the iteration and, under `BY_CALLS`,
    against the total energy calls. The base class is the stream that drops everything."""

    def log(self, row: dict) -> None:
        """Record one metrics row."""

    def log_images(self, paths: dict[str, str]) -> None:
        """Record PNG plots, {name: path}, once at the end of a run."""

    def close(self) -> None:
        """Flush and release; safe to call twice."""

    def finish(self, run_dir: str | None) -> None:
        """The end of a run: the run directory's PNG plots, then close."""
        if run_dir:
            self.log_images(run_plots(run_dir))
        self.close()


class MultiStream(MetricStream):
    """Fan a row out to several streams."""

    def __init__(self, streams: list[MetricStream]) -> None:
        self.streams = list(streams)

    def log(self, row: dict) -> None:
        for s in self.streams:
            s.log(row)

    def log_images(self, paths: dict[str, str]) -> None:
        for s in self.streams:
            s.log_images(paths)

    def close(self) -> None:
        errors = []
        for s in self.streams:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 - close every stream, then report the first failure
                errors.append(e)
        if errors:
            raise errors[0]


class LazyStream(MetricStream):
    """A backend that opens its writer at the first row (so a resumed run knows where it restarts)
    and closes it at close() or, failing that, at interpreter exit."""

    opened: bool = False
    closed: bool = False

    def _open(self, first_row: dict) -> None:   # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:   # pragma: no cover - abstract
        raise NotImplementedError

    def ensure_open(self, first_row: dict) -> None:
        if not self.opened:
            self._open(first_row)
            self.opened = True
            atexit.register(self.close)

    def close(self) -> None:
        if self.opened and not self.closed:
            self.closed = True
            self._close()


def flatten(row: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested row, keys joined with "/" (booleans as 0/1; strings, None and lists
    are left out): {"energy_calls": {"total": 5}} -> {"energy_calls/total": 5.0}."""
    out: dict[str, float] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (bool, int, float)) and not isinstance(v, complex):
            out[key] = float(v)
    return out


def step_of(row: dict, default: int = 0) -> int:
    """The row's iteration (its step)."""
    return int(row.get(STEP_KEY, default))


def calls_of(row: dict) -> int | None:
    """The row's total energy calls, or None when the row has no energy_calls."""
    ec = row.get("energy_calls")
    if isinstance(ec, dict) and "total" in ec:
        return int(ec["total"])
    return None


def scalar_sets(row: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(tags against the iteration, tags against the energy calls) of one row. The x value itself is
    left out of its own set; non-finite values are kept (a NaN loss should show)."""
    flat = flatten(row)
    by_step = {k: v for k, v in flat.items() if k != STEP_KEY}
    if calls_of(row) is None:
        return by_step, {}
    return by_step, {BY_CALLS + k: v for k, v in flat.items() if k != CALLS_KEY}


def run_plots(run_dir: str) -> dict[str, str]:
    """The PNG plots at the top of a run directory, {file stem: path}, sorted by name."""
    if not os.path.isdir(run_dir):
        return {}
    return {f[: -len(PLOT_SUFFIX)]: os.path.join(run_dir, f) for f in sorted(os.listdir(run_dir))
            if f.endswith(PLOT_SUFFIX)}
