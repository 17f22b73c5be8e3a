"""Process groups the daemon starts (codex, hooks) or finds left over: whether they still run,
and stopping a whole group the one way: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable


def process_alive(pid: int) -> bool:
    """True while the process `pid` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group `pgid` still runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to the group; a group already gone (or no longer ours) is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(
    pgid: int,
    *,
    grace_sec: float,
    ended: Callable[[], bool],
    cut_short: threading.Event | None = None,
    poll_sec: float = 0.05,
) -> None:
    """SIGTERM the whole group, wait up to `grace_sec` until `ended()`, then SIGKILL it.

    The program always gets the chance to stop cleanly first (a SIGKILL during codex's token
    refresh can corrupt auth.json), unless `cut_short` is set (a second Ctrl-C).
    """
    signal_group(pgid, signal.SIGTERM)
    grace_end = time.monotonic() + grace_sec
    waiter = cut_short or threading.Event()
    while not ended() and not waiter.is_set():
        remaining = grace_end - time.monotonic()
        if remaining <= 0:
            break
        waiter.wait(min(poll_sec, remaining))
    # Grandchildren may outlive the leader; the group id stays valid while any member lives.
    signal_group(pgid, signal.SIGKILL)
