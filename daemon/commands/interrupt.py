"""Ctrl-C and SIGTERM for the one-shot commands (`gen`, `once`, `submit --wait`).

codex runs in a session of its own, so a terminal's Ctrl-C reaches only this process: codex is
stopped by us, through these events. The first signal asks for a stop (codex gets SIGTERM and a
grace period); a second one asks to kill it now. The handlers only set events.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """What the stop signals asked for so far; `cancel` and `now` go to `run_codex`."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.now = threading.Event()
        # Which signal came first decides the exit code (128 + its number).
        self._first = {sig: threading.Event() for sig in STOP_SIGNALS}

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.cancel.is_set():
            self.now.set()
        else:
            self._first[signal.Signals(signum)].set()
            self.cancel.set()

    def sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`, less once a stop is asked for.

        Polls rather than waiting on `cancel`: the handler sets that event in this same (main)
        thread, and an Event.set() that interrupts an Event.wait() on the same event can
        deadlock on the event's non-reentrant lock.
        """
        end = time.monotonic() + seconds
        while not self.cancel.is_set() and (left := end - time.monotonic()) > 0:
            time.sleep(min(0.1, left))

    @property
    def requested(self) -> bool:
        return self.cancel.is_set()

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM, as a shell reports a command they ended."""
        first = next((sig for sig, seen in self._first.items() if seen.is_set()), signal.SIGINT)
        return 128 + int(first)

    def report(self, what: str) -> int:
        """Say in one line what the stop did; returns the exit code."""
        print(f"gpt-image-inbox: stopped: {what}", file=sys.stderr)
        return self.exit_code


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM set the events of the yielded request instead of ending the process;
    the earlier handlers come back afterwards."""
    stop = StopRequest()
    previous: dict[signal.Signals, Any] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, stop.handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
