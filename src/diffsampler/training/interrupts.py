"""Stopping a run on SIGTERM or SIGINT without losing work.

A batch scheduler (or `timeout`) sends SIGTERM; Ctrl-C sends SIGINT. While a run trains, either
signal only raises a flag: the loop finishes the current step (or search block), writes a checkpoint
and raises `Interrupted`, which the command line turns into one line saying how to resume and the
exit status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as shells report a signal.
A second signal of the same kind stops at once (the default action)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import DiffSamplerError

EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


class Interrupted(DiffSamplerError):
    """The run stopped on a signal after writing a checkpoint (`exit_code`: 128 + the signal)."""

    def __init__(self, signal_name: str, iteration: int, out: str | None) -> None:
        self.signal_name, self.iteration, self.out = signal_name, iteration, out
        self.exit_code = EXIT_CODES.get(signal_name, 1)
        where = (f"; checkpoint written, resume with: diffsampler train ... --out {out} --resume" if out
                 else " (no run directory: nothing was saved)")
        super().__init__(f"stopped by {signal_name} at iteration {iteration}{where}")


class SearchTimeUp(Exception):
    """The time budget ran out between two blocks of a search (the run stops as 'max_seconds')."""


class StopFlag:
    """Set by the signal handlers; the loop reads `reason` (None, 'SIGTERM' or 'SIGINT')."""

    def __init__(self) -> None:
        self.reason: str | None = None


@contextmanager
def stop_on_signals(raise_now: Interrupted | None = None) -> Iterator[StopFlag]:
    """Within the block SIGTERM and SIGINT set the flag (a second one acts as usual); outside the
    main thread (where handlers cannot be installed) the flag is never set. `raise_now`: raise this
    (with the signal's name) at once instead, for work after the last checkpoint (the final
    evaluation, which a resume redoes)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    names = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
    old = {s: signal.getsignal(s) for s in names}

    def handler(signum, frame):
        if raise_now is not None:
            raise Interrupted(names[signum], raise_now.iteration, raise_now.out)
        if flag.reason == names[signum]:        # the second one: stop now
            signal.signal(signum, old[signum] if callable(old[signum]) else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        flag.reason = names[signum]
    try:
        for s in names:
            signal.signal(s, handler)
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


__all__ = ["Interrupted", "SearchTimeUp", "StopFlag", "stop_on_signals", "EXIT_CODES"]
