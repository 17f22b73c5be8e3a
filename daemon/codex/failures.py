"""Turn what codex said about a failed turn into one of our error classes.

codex words its failures for people; the session log's `codex_error_info` kind is preferred
when there is one, the message text is the fallback (see the failure table in the docs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from daemon.errors import (
    CodexFailed,
    CodexRejected,
    ImageLimit,
    InboxError,
    NetworkDown,
    NotLoggedIn,
    UsageLimit,
)

_KIND_CLASSES: dict[str, type[CodexFailed]] = {
    "usage_limit_exceeded": UsageLimit,
    "usage_limit_reached": UsageLimit,
    "quota_exceeded": UsageLimit,
    "unauthorized": NotLoggedIn,
}
# Kinds that say too little on their own: a persistent HTTP 401 is also reported as
# `http_connection_failed`, so codex's words are read first and the kind decides only after.
_FALLBACK_KIND_CLASSES: dict[str, type[CodexFailed]] = {
    "http_connection_failed": NetworkDown,
}

# Ordered: the first pattern that matches decides.
_MESSAGE_CLASSES: list[tuple[re.Pattern[str], type[CodexFailed]]] = [
    # A stream the server dropped is server trouble worth a retry, not a network outage.
    (re.compile(r"stream disconnected|high demand", re.I), CodexFailed),
    (re.compile(r"usage limit|quota exceeded|rate limit", re.I), UsageLimit),
    (
        re.compile(
            r"access token could not be refreshed|sign in again|log ?in again|not logged in"
            r"|unauthorized|\b401\b|upgrade to plus|codex login",
            re.I,
        ),
        NotLoggedIn,
    ),
    (
        re.compile(
            r"connection failed|waiting for network|error sending request|dns error"
            r"|failed to lookup address|connection refused|network is unreachable",
            re.I,
        ),
        NetworkDown,
    ),
    (
        re.compile(r"unknown feature flag|unexpected argument|invalid value|usage: codex", re.I),
        CodexRejected,
    ),
]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_AT_TIME = re.compile(
    r"try again at\s+(?:(?P<mon>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+"
    r"(?:(?P<year>\d{4})\s+)?)?(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])?"
)
_IN_DURATION = re.compile(
    r"try again in\s+(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>second|minute|hour|day)s?", re.I
)


def classify(
    message: str,
    *,
    kind: str | None = None,
    returncode: int = 1,
    detail: str = "",
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> InboxError:
    """The error for a failed turn; `message` is codex's own sentence, `kind` its error kind."""
    cls = _KIND_CLASSES.get(kind or "")
    if cls is None:
        cls = next((c for p, c in _MESSAGE_CLASSES if p.search(message)), None)
    if cls is None:
        cls = _FALLBACK_KIND_CLASSES.get(kind or "")
    if cls is None:
        cls = CodexRejected if returncode == 2 else CodexFailed
    first_line = message.strip().splitlines()[0] if message.strip() else "codex failed."
    retry_at = parse_retry_at(message, now=now()) if cls is UsageLimit else None
    return cls(_SENTENCES[cls].format(reason=first_line), detail=detail, retry_at=retry_at)


_SENTENCES: dict[type[CodexFailed], str] = {
    UsageLimit: "codex reports that the ChatGPT usage limit is reached: {reason}",
    NotLoggedIn: "codex is not logged in with a usable ChatGPT account: {reason}",
    NetworkDown: "codex could not reach the server: {reason}",
    CodexRejected: "codex rejected its arguments or configuration: {reason}",
    CodexFailed: "codex failed: {reason}",
}


def image_limit(
    reason: str,
    *,
    resets_at: datetime | None,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> ImageLimit:
    """The error for a generation the plan's image limit stopped; `reason` is codex's words."""
    # A reset time already past (a skewed clock) would resume the queue into the same limit
    # at once: without a usable time the pause backs off instead.
    current = now()
    retry_at = resets_at if resets_at is not None and resets_at > current else None
    when = f"; it resets at {clock_text(retry_at, now=current)}" if retry_at else ""
    return ImageLimit(
        f"The ChatGPT plan's image limit is reached{when}.", detail=reason, retry_at=retry_at
    )


def clock_text(moment: datetime, *, now: datetime) -> str:
    """A local time as a person reads it: "14:05" today, "2026-12-03 14:05" on another day."""
    local, today = moment.astimezone(), now.astimezone().date()
    return f"{local:%H:%M}" if local.date() == today else f"{local:%Y-%m-%d %H:%M}"


def parse_retry_at(message: str, *, now: datetime) -> datetime | None:
    """When codex says to try again, as an aware local datetime; None when it does not say.

    codex gives a local wall-clock time ("try again at 5:46 PM"), sometimes with a date
    ("Mar 17th, 2030 5:46 PM"), or a duration ("try again in 3 days").
    """
    duration = _IN_DURATION.search(message)
    if duration:
        seconds = (
            float(duration["n"])
            * {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[duration["unit"].lower()]
        )
        return now + timedelta(seconds=seconds)
    match = _AT_TIME.search(message)
    if match is None:
        return None
    hour, minute = int(match["hour"]), int(match["minute"])
    if match["ampm"]:
        hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    if match["mon"]:
        return _on_date(match, hour, minute, now)
    candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    # A bare time names the next time the clock shows it.
    return candidate if candidate > now else candidate + timedelta(days=1)


def _on_date(match: re.Match[str], hour: int, minute: int, now: datetime) -> datetime | None:
    """The time on the date codex named ("Mar 17th, 2030"), the year now's when left out."""
    month = _MONTHS.get(match["mon"].lower())
    if month is None:
        return None
    year = int(match["year"]) if match["year"] else now.year
    try:
        return now.replace(
            year=year,
            month=month,
            day=int(match["day"]),
            hour=hour,
            minute=minute,
            second=0,
            microsecond=0,
        )
    except ValueError:
        return None
