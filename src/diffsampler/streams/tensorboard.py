"""TensorBoard event files under RUN/tensorboard/: scalars against the iteration in `by_iteration/`,
the same scalars (tags prefixed "by_calls/") against the total energy calls in `by_calls/`, the
config as text, the run's PNG plots as images at the end. Needs the `tensorboard` package
(pip install diffsampler[tensorboard])."""
from __future__ import annotations

import glob
import json
import os

from ..errors import ConfigError
from .base import LazyStream, calls_of, scalar_sets, step_of

SUBDIR = "tensorboard"
INSTALL = "pip install diffsampler[tensorboard]"


def summary_writer_class():
    """torch's SummaryWriter, or a ConfigError that says what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:   # torch raises ImportError when the tensorboard package is absent
        raise ConfigError(f"logger=tensorboard needs the tensorboard package ({e}): {INSTALL}") from None
    return SummaryWriter


def _config_markdown(config: dict, run_name: str) -> str:
    rows = [f"| {k} | {json.dumps(v)} |" for k, v in sorted(config.items())]
    return "\n".join([f"**{run_name}**", "", "| key | value |", "| --- | --- |", *rows])


class TensorBoardStream(LazyStream):
    """Two writers, one per x axis, so that each can purge what a resumed run recomputes: when its
    folder already holds events, a writer opens with purge_step = its first new x value, and
    TensorBoard drops the older events from that step on (the rows logged after the checkpoint)."""

    def __init__(self, run_dir: str, config: dict, run_name: str) -> None:
        self.writer_class = summary_writer_class()
        self.root = os.path.join(run_dir, SUBDIR)
        self.config, self.run_name = dict(config), run_name
        self.writers: dict[str, object] = {}
        self.last_step = 0

    def _writer(self, axis: str, first_x: int):
        if axis not in self.writers:
            d = os.path.join(self.root, axis)
            resumed = bool(glob.glob(os.path.join(d, "events.out.tfevents.*")))
            self.writers[axis] = self.writer_class(log_dir=d, purge_step=first_x if resumed else None)
        return self.writers[axis]

    def _open(self, first_row: dict) -> None:
        w = self._writer("by_iteration", step_of(first_row))
        w.add_text("config", _config_markdown(self.config, self.run_name), global_step=step_of(first_row))

    def log(self, row: dict) -> None:
        self.ensure_open(row)
        step = self.last_step = step_of(row, self.last_step)
        by_step, by_calls = scalar_sets(row)
        w = self._writer("by_iteration", step)
        for tag, v in by_step.items():
            w.add_scalar(tag, v, global_step=step)
        calls = calls_of(row)
        if by_calls:
            wc = self._writer("by_calls", calls)
            for tag, v in by_calls.items():
                wc.add_scalar(tag, v, global_step=calls)

    def log_images(self, paths: dict[str, str]) -> None:
        if not paths:
            return
        import matplotlib.image as mpimg

        self.ensure_open({"iteration": self.last_step})
        w = self._writer("by_iteration", self.last_step)
        for name, path in paths.items():
            img = mpimg.imread(path)   # (H, W, 3 or 4) floats in [0, 1]
            w.add_image(f"plots/{name}", img[..., :3], global_step=self.last_step, dataformats="HWC")

    def _close(self) -> None:
        for w in self.writers.values():
            w.flush()
            w.close()
