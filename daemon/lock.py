"""One worker per inbox: an advisory lock file that names its holder.

`run` and `once` both take it, so two processes never run the same job or two codex processes
share one login (which can get the login revoked).
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path

from daemon.errors import InboxBusy

LOCK_NAME = ".gpt-image-inbox.lock"


class InboxLock:
    def __init__(self, inbox: Path, *, command: str) -> None:
        self.path = inbox / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self.path)
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


def _describe(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
        return (
            f"gpt-image-inbox {data['command']} (pid {data['pid']} on {data['host']}, "
            f"since {data['since']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "Another gpt-image-inbox process"
