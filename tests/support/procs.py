"""Polling with a deadline, and whether a process still runs: for tests and benchmarks alike.

No pytest here: bench/ imports it too. A timeout is an AssertionError, so a test reports it
as a failure with the message saying what was awaited.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 60.0


class Timeout(AssertionError):
    """A polled condition did not come true before its deadline."""


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    what: str = "condition",
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, which is returned; raise Timeout
    naming `what` after `timeout` seconds. `alive` may raise early (a daemon that died will
    never meet the condition)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > end:
            raise Timeout(f"{what}: not met within {timeout:g} s")
        time.sleep(interval)


def pid_alive(pid: int | None) -> bool:
    """True while `pid` runs. A zombie counts as gone: a killed orphan may stay one until init
    reaps it, and daemon.codex.run.process_alive (for production) counts it as running."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:  # gone, or no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_alive(pids: Iterable[int | None]) -> None:
    """SIGKILL those of `pids` still running: what a test left behind must not outlive it."""
    for pid in pids:
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
