"""structlog set-up: readable lines on a terminal, JSON lines elsewhere (journald, launchd logs).

structlog costs ~60 ms to import, more than a one-shot command's own work around codex: so
`configure` only notes the set-up, the first `get_logger()` imports structlog and applies it,
and a one-shot command has `warm_up()` do that in a background thread while codex runs.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

# The stdlib logging levels, written out: importing `logging` alone costs ~5 ms.
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_lock = threading.Lock()
# configure() calls not yet applied, while structlog is not imported; structlog itself holds
# the configuration once they are.
_unapplied: list[Callable[[Any], None]] = []


def configure(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Logs go to stderr: stdout is kept for what a command prints (`gen` prints the path)."""
    with _lock:
        _unapplied.append(functools.partial(_apply, level=level, stream=stream))
    if "structlog" in sys.modules:
        get_logger()  # loggers made before this call follow the new settings at once


def get_logger() -> Any:
    """structlog's logger; the first call imports structlog and applies the set-up."""
    import structlog

    with _lock:
        for apply in _unapplied:
            apply(structlog)
        _unapplied.clear()
        if not structlog.is_configured():
            _apply(structlog, level="info", stream=None)
    return structlog.get_logger()


def warm_up(*modules: str) -> threading.Thread:
    """Import structlog (and `modules`) in a background thread, e.g. while codex runs."""

    def work() -> None:
        get_logger()
        for name in modules:
            __import__(name)

    thread = threading.Thread(target=work, name="warm-up", daemon=True)
    thread.start()
    return thread


def _apply(structlog: Any, *, level: str, stream: TextIO | None) -> None:
    out = stream if stream is not None else sys.stderr
    renderer = (
        structlog.dev.ConsoleRenderer(colors=True)
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        # Resolved at each use, not now: whoever replaces sys.stderr later (a test runner, a
        # re-exec) still gets the lines, and a closed stream is never written to.
        logger_factory=(
            (lambda *_args: structlog.PrintLogger(sys.stderr))
            if stream is None
            else structlog.PrintLoggerFactory(stream)
        ),
        cache_logger_on_first_use=False,
    )
