"""The run directory's own record: every row appended to metrics.jsonl, as the trainer writes it."""
from __future__ import annotations

import json
import os

from ..faults import fault_point
from .base import MetricStream

METRICS_FILE = "metrics.jsonl"


class JsonlStream(MetricStream):
    """Appends `json.dumps(row)` lines to RUN/metrics.jsonl, opening the file for each row (the trainer
    rewrites the file when it resumes, dropping rows past the checkpoint). Images are not recorded:
    they are files in the run directory already."""

    def __init__(self, run_dir: str, filename: str = METRICS_FILE) -> None:
        self.path = os.path.join(run_dir, filename)

    def log(self, row: dict) -> None:
        line = json.dumps(row) + "\n"
        with open(self.path, "a") as f:
            f.write(line[: len(line) // 2])
            f.flush()
            fault_point("metrics_append")       # a kill here leaves a torn line, which a resume drops
            f.write(line[len(line) // 2:])
