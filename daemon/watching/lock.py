"""One worker per inbox: an advisory lock file that names its holder.

`run` and `once` both take it, so two processes never run the same job or two codex processes
share one login (which can get the login revoked).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.errors import InboxBusy

LOCK_NAME = ".gpt-image-inbox.lock"
# `probe` holds the lock for a moment: a process starting just then tries again before it
# concludes that another one works on the inbox.
_ACQUIRE_TRIES = 4
_ACQUIRE_RETRY_SEC = 0.05


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether a process holds an inbox's lock now, and what its lock file says."""

    held: bool
    holder: dict[str, Any]
    """The lock file's description (pid, host, command, since) of the last process that held
    it; empty when there is none."""

    @property
    def elsewhere(self) -> bool:
        """Not held here, but last held on another host: a lock there is invisible from here."""
        host = self.holder.get("host")
        return not self.held and isinstance(host, str) and host != os.uname().nodename


def probe(inbox: Path) -> Probe:
    """Is a `run` or `once` working on `inbox`? The lock tells, unlike a pid that may be reused:
    the kernel drops it the moment its holder exits, even on `kill -9`."""
    try:
        fd = os.open(inbox / LOCK_NAME, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return Probe(False, {})  # no lock file: nothing ever worked on this inbox
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held = True
        return Probe(held, _read_holder(fd))
    finally:
        os.close(fd)


def describe_holder(holder: dict[str, Any]) -> str:
    """`gpt-image-inbox run (pid 12 on host, since …)`, from a lock file's description."""
    try:
        return (
            f"gpt-image-inbox {holder['command']} (pid {holder['pid']} on {holder['host']}, "
            f"since {holder['since']})"
        )
    except KeyError:
        return "Another gpt-image-inbox process"


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return {}  # being rewritten by a process that just took the lock
    return data if isinstance(data, dict) else {}


class InboxLock:
    def __init__(self, inbox: Path, *, command: str) -> None:
        self.path = inbox / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(_ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < _ACQUIRE_TRIES:
                    time.sleep(_ACQUIRE_RETRY_SEC)
                    continue
                holder = describe_holder(_read_holder(fd))
                os.close(fd)
                raise InboxBusy(f"{holder} is already working on {self.path.parent}.") from None
        # The holder's description is written in place: the file itself is the lock.
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": os.uname().nodename,
                    "command": self.command,
                    "since": datetime.now().astimezone().isoformat(timespec="seconds"),
                }
            ).encode(),
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InboxLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
