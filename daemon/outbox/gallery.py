"""The outbox gallery: one static `index.html` built from the result and error sidecars alone.

No script runs in the page (its Content-Security-Policy forbids it); every piece of text is escaped.
While the daemon has work (a job running, jobs queued, a pause) the page reloads itself with a
meta refresh; the page built once it is idle has none. The cards come from sidecars.py (which
files are read) and cards.py (what one holds); card_html.py renders each, this module the page.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from daemon import files
from daemon.codex.failures import clock_text
from daemon.codex.quota import RateLimit, from_json_list
from daemon.errors import OutboxUnwritable
from daemon.loop.status import pause_summary
from daemon.outbox.card_html import (
    escape,
    format_seconds,
    format_when,
    render_failure,
    render_result,
)
from daemon.outbox.cards import Card, CardKind, as_text, parse_time
from daemon.outbox.sidecars import SHARED_CACHE, CardCache, read_cards

INDEX_NAME = "index.html"
DEFAULT_LIMIT = 500
CSP = (
    "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
# How often a page built while the daemon has work reloads itself, in seconds.
REFRESH_SEC = 5


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the daemon was doing when it built the page (from its status file's fields)."""

    state: str  # idle | working | paused | stopped
    current_job: str | None = None
    job_started_at: datetime | None = None
    queue_length: int = 0
    pause_summary: str | None = None  # "image limit until 14:05"
    pause_reason: str | None = None  # codex's message
    resumes_at: datetime | None = None
    rate_limits: tuple[RateLimit, ...] = ()

    @property
    def busy(self) -> bool:
        """Whether there is work the page should follow: it then reloads itself."""
        if self.state == "stopped":
            return False
        return self.state in ("working", "paused") or self.queue_length > 0


def live_state(status: dict[str, Any]) -> LiveState:
    """The page's view of a status file's fields (as `Status.fields()` or status.json hold)."""
    paused = status.get("paused") if isinstance(status.get("paused"), dict) else None
    queued = status.get("queue_length")
    return LiveState(
        state=as_text(status.get("state")) or "idle",
        current_job=as_text(status.get("current_job")),
        job_started_at=parse_time(status.get("job_started_at")),
        queue_length=queued if isinstance(queued, int) and not isinstance(queued, bool) else 0,
        pause_summary=as_text(paused.get("summary")) if paused else None,
        pause_reason=as_text(paused.get("message")) if paused else None,
        resumes_at=parse_time(paused.get("resumes_at")) if paused else None,
        rate_limits=from_json_list(status.get("rate_limits")),
    )


def _render_header(
    total: int, shown: list[Card], now: datetime, live: LiveState | None = None
) -> str:
    failed = sum(1 for c in shown if c.kind is CardKind.FAILURE)
    images = sum(len(c.pictures) for c in shown)
    summary = (
        f"{total} job{'s' if total != 1 else ''}: newest first."
        if total
        else "No results yet. Drop a prompt file into the inbox; its picture appears here."
    )
    lines = [f"<p>{escape(summary)}</p>"]
    if total:
        lines.append(f"<p>{images} image(s) and {failed} failure(s) on this page.</p>")
    hidden = total - len(shown)
    if hidden > 0:
        lines.append(
            f'<p class="capped">Showing the newest {len(shown)}; '
            f"{hidden} older job{'s are' if hidden != 1 else ' is'} not shown.</p>"
        )
    # The daemon's own word on a pause, when it builds the page, before the sidecars'.
    paused = None if live is not None and live.pause_summary else _pause_line(shown, now)
    if paused:
        lines.append(f'<p class="paused">{escape(paused)}</p>')
    lines.extend(_live_lines(live, now) if live is not None else [])
    reloads = (
        f"; this page reloads every {REFRESH_SEC} s while there is work"
        if (live is not None and live.busy)
        else ""
    )
    lines.append(f"<p>Updated {format_when(now, None)}{reloads}.</p>")
    return f"<header><h1>Outbox</h1>{''.join(lines)}</header>"


def _pause_line(shown: list[Card], now: datetime) -> str | None:
    """The header's "Queue paused: image limit until 14:05." while a job waits for a limit to
    reset: its sidecar says it is kept for a retry at a time still to come."""
    for card in shown:
        if card.retrying and card.layer and card.retry_at and card.retry_at > now:
            what = pause_summary(card.layer, "", card.retry_at, now=now)
            if what:
                return f"Queue paused: {what}."
    return None


def _live_lines(live: LiveState, now: datetime) -> list[str]:
    """The header's lines on what the daemon is doing, and the plan's limits."""
    lines = []
    if live.state == "working" and live.current_job:
        text = f"Working on {live.current_job}"
        if live.job_started_at is not None:
            started = live.job_started_at.astimezone()
            took = format_seconds(max(0.0, (now - live.job_started_at).total_seconds()))
            text += f" since {started:%H:%M:%S} ({took} when this page was built)"
        lines.append(f'<p class="live working">{escape(text)}.</p>')
    if live.pause_summary:
        text = f"Queue paused: {live.pause_summary}"
        resumes = clock_text(live.resumes_at, now=now) if live.resumes_at else None
        if resumes and resumes not in live.pause_summary:  # "image limit until 17:46" says it
            text += f", resumes {resumes}"
        lines.append(f'<p class="paused">{escape(text)}.</p>')
        if live.pause_reason and live.pause_reason != live.pause_summary:
            lines.append(f'<p class="reason">Reason: {escape(live.pause_reason)}</p>')
    if live.queue_length:
        plural = "s" if live.queue_length != 1 else ""
        lines.append(f'<p class="live queue">{live.queue_length} job{plural} queued.</p>')
    for limit in live.rate_limits:
        lines.append(f'<p class="quota">{escape(limit.name)}: {escape(limit.usage(now=now))}</p>')
    return lines


def render(
    cards: list[Card],
    *,
    total: int,
    now: datetime,
    tz: timezone | None = None,
    live: LiveState | None = None,
) -> str:
    """The whole page for the given cards (already ordered and capped); `live` is the daemon's
    state when it builds the page: while it has work, the page reloads itself."""
    body = "".join(
        render_result(c, tz) if c.kind is CardKind.RESULT else render_failure(c, tz) for c in cards
    )
    busy = live is not None and live.busy
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SEC}">' if busy else ""
    return _template("page.html").substitute(
        csp=escape(CSP),
        refresh=refresh,
        css=_template("gallery.css").template,
        header=_render_header(total, cards, now, live),
        body=body,
    )


@functools.cache
def _template(name: str) -> string.Template:
    """A file of daemon/outbox/templates/, read once per process."""
    folder = resources.files("daemon.outbox").joinpath("templates")
    return string.Template(folder.joinpath(name).read_text(encoding="utf-8"))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def build_gallery(
    outbox: Path,
    *,
    limit: int = DEFAULT_LIMIT,
    now: Callable[[], datetime] = _now,
    tz: timezone | None = None,
    cache: CardCache | None = SHARED_CACHE,
    live: LiveState | None = None,
) -> str:
    """The gallery page for `outbox`, built from its sidecars alone.

    The page is capped, not paged: it shows the `limit` newest jobs (results and failures alike,
    newest first by finished_at / failed_at, else the sidecar's mtime) and says how many older ones
    it leaves out. Unreadable, broken or foreign sidecars are skipped. Times show in `tz`
    (default: the local time zone). `cache` keeps unchanged sidecars from being read again by
    the next build in this process (None: read everything); it never changes the page.
    """
    cards, total = read_cards(outbox, limit=limit, cache=cache)
    return render(cards, total=total, now=now(), tz=tz, live=live)


def write_gallery(
    outbox: Path,
    *,
    limit: int = DEFAULT_LIMIT,
    now: Callable[[], datetime] = _now,
    tz: timezone | None = None,
    cache: CardCache | None = SHARED_CACHE,
    live: LiveState | None = None,
) -> Path:
    """Build the gallery and put it at `outbox/index.html` atomically; returns that path.

    Raises OutboxUnwritable when the outbox cannot be written.
    """
    page = build_gallery(outbox, limit=limit, now=now, tz=tz, cache=cache, live=live)
    path = outbox / INDEX_NAME
    try:
        # "replace": a lone surrogate from a YAML escape must not stop the whole page.
        files.replace_file(path, page.encode("utf-8", "replace"), mode=0o644)
    except (OSError, OutboxUnwritable) as exc:
        # A disk error comes as OutboxUnwritable already; the page's own message names the page.
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) else None
        raise OutboxUnwritable(
            f"The gallery could not be written to {path}: {reason or cause or exc}."
        ) from exc
    return path
