"""Fault injection points, for the fault-injection experiment (experiments/fault_injection.py) and its
test: with DIFFSAMPLER_FAULT=POINT:K[:SIGNAL[:RANK]] in the environment, the process sends itself
SIGNAL (KILL by default, or TERM) at the K-th time it reaches POINT, one of

    search_block      after a block of a search, before its checkpoint;
    checkpoint_write  inside an atomic write, after the temporary file is written, before the rename;
    metrics_append    in the middle of appending a row to metrics.jsonl (a torn line);
    evaluation        at the start of the final evaluation, after training;
    iteration         after a learner iteration, before its checkpoint (every process of a run reaches it).

With RANK, only the process of that rank (the environment's RANK under torchrun; 0 alone) does it.

Before the signal it prints one line to stderr, `FAULT point=... calls=N seconds=S`, the energy calls
and training seconds so far (from `report_calls`), so the experiment can measure the work a kill loses. Without the variable
every call here is a cheap no-op."""
from __future__ import annotations

import os
import signal
import sys

POINTS = ("search_block", "checkpoint_write", "metrics_append", "evaluation", "iteration")
_seen: dict[str, int] = {}
_progress = {"calls": 0, "seconds": 0.0}


def _spec() -> tuple[str, int, int] | None:
    raw = os.environ.get("DIFFSAMPLER_FAULT")
    if not raw:
        return None
    parts = raw.split(":")
    if len(parts) > 3 and parts[3] != (os.environ.get("RANK") or "0"):
        return None   # meant for another process of the run
    sig = signal.SIGTERM if len(parts) > 2 and parts[2].upper() in ("TERM", "SIGTERM") else signal.SIGKILL
    return parts[0], int(parts[1]), sig


def report_calls(total: int, seconds: float) -> None:
    """The energy calls and training seconds so far (the trainer keeps them current)."""
    _progress["calls"], _progress["seconds"] = int(total), float(seconds)


def fault_point(point: str) -> None:
    """Send the configured signal to this process at the K-th arrival at `point` (see module)."""
    spec = _spec()
    if spec is None or spec[0] != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == spec[1]:
        print(f"FAULT point={point} calls={_progress['calls']} seconds={_progress['seconds']:.3f}", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), spec[2])


__all__ = ["fault_point", "report_calls", "POINTS"]
