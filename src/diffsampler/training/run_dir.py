"""The run directory's life: created for a new run, reused by a resume, removed when a run fails
before its first checkpoint (so nothing half-written stays)."""
from __future__ import annotations

import json
import os
import shutil

from ..errors import CheckpointError, ConfigError


def prepare_run_dir(out: str, resume: bool) -> bool:
    """Create the run directory; returns True when this call created it."""
    if resume:
        if not os.path.isdir(out):
            raise CheckpointError(f"cannot resume: run directory {out} does not exist")
        if not os.path.exists(os.path.join(out, "config.json")):
            raise CheckpointError(f"cannot resume: {out} is not a run directory (no config.json)")
        return False
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file, not a run directory; choose another --out")
    if os.path.exists(out) and os.listdir(out):
        raise ConfigError(f"run directory {out} already exists and is not empty "
                          "(use --resume to continue it, or choose another --out)")
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    return created


def cleanup_failed_run(out: str, created: bool, trainer) -> None:
    """Remove a run directory that never got a checkpoint (so nothing half-written stays)."""
    if out and created and (trainer is None or trainer.checkpoints_written == 0):
        shutil.rmtree(out, ignore_errors=True)


def truncate_metrics(path: str, iteration: int) -> None:
    """Drop metric rows written after the checkpoint's iteration (they will be recomputed), and a
    torn last line left by a kill during an append."""
    if not os.path.exists(path):
        return
    rows = []
    for line in open(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("iteration", 0) <= iteration:
            rows.append(json.dumps(row) + "\n")
    with open(path, "w") as f:
        f.writelines(rows)


def remove_stale_temporaries(out: str) -> None:
    """Temporary files of an atomic write that a kill interrupted (never renamed into place)."""
    for name in os.listdir(out):
        if name.startswith(".tmp-"):
            os.remove(os.path.join(out, name))


__all__ = ["prepare_run_dir", "cleanup_failed_run", "truncate_metrics", "remove_stale_temporaries"]
