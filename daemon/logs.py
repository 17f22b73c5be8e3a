"""structlog set-up: readable lines on a terminal, JSON lines elsewhere (journald, launchd logs).

structlog costs ~40 ms to import, a large share of a one-shot command's own time: `configure`
only remembers the settings, and structlog is imported and set up on the first `get_logger()`,
which `warm_up()` can do in the background while codex runs.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

# The stdlib logging levels, written out: importing `logging` alone costs ~5 ms.
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_lock = threading.Lock()
_settings: dict[str, Any] = {"level": "info", "stream": None, "applied": False}


def configure(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Logs go to stderr: stdout is kept for what a command prints (`gen` prints the path)."""
    with _lock:
        _settings.update(level=level, stream=stream, applied=False)
    if "structlog" in sys.modules:
        get_logger()  # loggers made before this call follow the new settings at once


def get_logger() -> Any:
    """structlog's logger; the first call imports structlog and applies the settings."""
    import structlog

    with _lock:
        if not _settings["applied"]:
            _apply(structlog, _settings["level"], _settings["stream"])
            _settings["applied"] = True
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


def _apply(structlog: Any, level: str, stream: TextIO | None) -> None:
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
