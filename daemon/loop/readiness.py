"""Whether the environment a pause waits for is back: a disk that takes writes, a new login."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from daemon import files
from daemon.codex import run as codex_run
from daemon.config import Config


def disk_writable(config: Config) -> bool:
    """Whether the outbox and the inbox's state folders take a small write again."""
    inbox = config.inbox
    folders = (config.outbox, inbox, *(inbox / d for d in (files.PROCESSING, files.DONE)))
    return all(_takes_write(folder) for folder in folders if folder.is_dir())


def auth_stamp(environ: Mapping[str, str], config: Config) -> tuple[int, int] | None:
    """auth.json's (mtime, size): `codex login` rewrites it, which ends a login pause."""
    env = codex_run.child_environment(environ, config.codex.home)
    home = codex_run.codex_home_of(env)
    try:
        st = (home / "auth.json").stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _takes_write(folder: Path) -> bool:
    # Some bytes and an fsync: on a full disk creating an empty file can still succeed.
    probe = folder / f".gpt-image-inbox-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
