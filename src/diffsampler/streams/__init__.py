"""Metric streams: where a run's metric rows go besides the console. `make_streams` builds them from
the config key `logger`: a "|"- or ","-separated list of STREAM_NAMES (default "jsonl").

    jsonl        RUN/metrics.jsonl, the run directory's record (always on: the plots, the HTML report
                 and resume read it)
    tensorboard  RUN/tensorboard/{by_iteration,by_calls}/ event files   (pip install diffsampler[tensorboard])
    wandb        a W&B run under RUN/wandb/, offline unless WANDB_MODE says otherwise
                 (pip install diffsampler[wandb])

Every stream has `log(row)` (a metrics.jsonl row: nested keys are flattened with "/", each numeric
entry is logged against the iteration and, as "by_calls/<key>", against the total energy calls),
`log_images({name: png_path})`, `close()`, and `finish(run_dir)` (the run's PNGs, then close).
"""
from __future__ import annotations

import difflib
import re

from ..errors import ConfigError
from .base import BY_CALLS, MetricStream, MultiStream, flatten, run_plots, scalar_sets
from .jsonl import JsonlStream

STREAM_NAMES = ("jsonl", "tensorboard", "wandb")
DEFAULT_LOGGER = "jsonl"


def parse_logger_option(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate the config key `logger` ("tensorboard|wandb", "jsonl,tensorboard", or a list): the
    names, without repeats, "jsonl" always first (metrics.jsonl is the run's own record). Unknown
    names raise ConfigError naming the key."""
    if value is None:
        value = DEFAULT_LOGGER
    parts = value if isinstance(value, (list, tuple)) else re.split(r"[|,]", str(value))
    names = ["jsonl"]
    for p in parts:
        name = str(p).strip().lower()
        if not name:
            continue
        if name not in STREAM_NAMES:
            close = difflib.get_close_matches(name, STREAM_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"config key 'logger': unknown stream {name!r}{hint}; choose from "
                              f"{', '.join(STREAM_NAMES)}, separated by '|' or ','")
        if name not in names:
            names.append(name)
    return names


def make_streams(names: list[str] | str, run_dir: str | None, config: dict, run_name: str) -> MetricStream:
    """The streams named (validated by `parse_logger_option`) for a run directory, as one stream.
    Without a run directory (an in-memory run) nothing is streamed. A backend whose package is
    missing raises ConfigError naming the pip extra, here, before the run starts."""
    if not run_dir:
        return MetricStream()
    streams: list[MetricStream] = []
    for name in parse_logger_option(names):
        if name == "jsonl":
            streams.append(JsonlStream(run_dir))
        elif name == "tensorboard":
            from .tensorboard import TensorBoardStream
            streams.append(TensorBoardStream(run_dir, config, run_name))
        else:
            from .wandb import WandbStream
            streams.append(WandbStream(run_dir, config, run_name))
    return MultiStream(streams)


__all__ = ["STREAM_NAMES", "DEFAULT_LOGGER", "BY_CALLS", "MetricStream", "MultiStream", "JsonlStream",
           "make_streams", "parse_logger_option", "flatten", "scalar_sets", "run_plots"]
