"""structlog set-up: readable lines on a terminal, JSON lines elsewhere (journald, launchd logs)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Logs go to stderr: stdout is kept for what a command prints (`gen` prints the path)."""
    out = stream if stream is not None else sys.stderr
    on_terminal = out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if on_terminal
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
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # Resolved at each use, not now: whoever replaces sys.stderr later (a test runner, a
        # re-exec) still gets the lines, and a closed stream is never written to.
        logger_factory=(
            (lambda *_args: structlog.PrintLogger(sys.stderr))
            if stream is None
            else structlog.PrintLoggerFactory(stream)
        ),
        cache_logger_on_first_use=False,
    )
