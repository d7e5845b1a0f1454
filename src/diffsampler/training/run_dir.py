"""The run directory's life: created for a new run, reused by a resume, removed when a run fails
before its first checkpoint (so nothing half-written stays)."""
from __future__ import annotations

import os
import shutil

from ..errors import CheckpointError, ConfigError


def prepare_run_dir(out: str, resume: bool) -> bool:
    """Create the run directory; returns True when this call created it."""
    if resume:
        if not os.path.isdir(out):
            raise CheckpointError(f"cannot resume: run directory {out} does not exist")
        return False
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


__all__ = ["prepare_run_dir", "cleanup_failed_run"]
