"""Weights & Biases, offline by default: the run is written under RUN/wandb/ and never sent
anywhere unless the user set WANDB_MODE (e.g. `WANDB_MODE=online`; `wandb sync RUN/wandb/offline-run-*`
uploads an offline run later). Every numeric entry is logged with `iteration` as its step metric,
and again as "by_calls/<key>" with `energy_calls/total` as its step metric (`define_metric`); the
run's PNG plots are logged as images at the end. Needs the `wandb` package
(pip install diffsampler[wandb])."""
from __future__ import annotations

import os
import uuid

from ..errors import ConfigError
from .base import BY_CALLS, CALLS_KEY, STEP_KEY, LazyStream, calls_of, scalar_sets, step_of

INSTALL = "pip install diffsampler[wandb]"
ID_FILE = "diffsampler_run_id"      # under RUN/wandb/: a resumed run continues the same W&B run
DEFAULT_PROJECT = "diffsampler"


def wandb_module():
    """The wandb package, or a ConfigError that says what to install."""
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(f"logger=wandb needs the wandb package ({e}): {INSTALL}") from None
    return wandb


def wandb_mode() -> str:
    """WANDB_MODE when the user set it, else "offline" (never contact a server unasked)."""
    return os.environ.get("WANDB_MODE") or "offline"


def _run_id(run_dir: str) -> str:
    d = os.path.join(run_dir, "wandb")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, ID_FILE)
    if os.path.exists(path):
        return open(path).read().strip()
    rid = uuid.uuid4().hex[:12]
    with open(path, "w") as f:
        f.write(rid)
    return rid


class WandbStream(LazyStream):
    """One W&B run per run directory (resumed runs continue it), opened at the first row."""

    def __init__(self, run_dir: str, config: dict, run_name: str) -> None:
        self.wandb = wandb_module()
        self.run_dir, self.config, self.run_name = run_dir, dict(config), run_name
        self.run = None
        self.defined: set[str] = set()

    def _open(self, first_row: dict) -> None:
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), name=self.run_name,
                                   dir=self.run_dir, mode=wandb_mode(), config=self.config,
                                   id=_run_id(self.run_dir), resume="allow")
        self.run.define_metric(STEP_KEY)
        self.run.define_metric(CALLS_KEY)

    def _define(self, keys) -> None:
        for k in keys:
            if k not in self.defined and k not in (STEP_KEY, CALLS_KEY):   # the x values have no x
                self.run.define_metric(k, step_metric=CALLS_KEY if k.startswith(BY_CALLS) else STEP_KEY)
                self.defined.add(k)

    def log(self, row: dict) -> None:
        self.ensure_open(row)
        by_step, by_calls = scalar_sets(row)
        self._define([*by_step, *by_calls])
        data = {**by_step, **by_calls, STEP_KEY: step_of(row)}
        if calls_of(row) is not None:
            data[CALLS_KEY] = calls_of(row)
        self.run.log(data)

    def log_images(self, paths: dict[str, str]) -> None:
        if not paths:
            return
        self.ensure_open({})
        self.run.log({f"plots/{name}": self.wandb.Image(path) for name, path in paths.items()})

    def _close(self) -> None:
        self.run.finish()
