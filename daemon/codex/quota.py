"""The plan's rate limits as codex records them in its session log, and how they are shown.

Read from the log's `token_count` events only (and from an image item's typed limit failure):
never from auth.json or an account endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.codex.failures import clock_text

# codex's limit ids as a person names them; others read "<id> limit".
_NAMES = {"codex": "usage limit", "image_gen": "image limit"}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit's usage: the window nearest its cap, as last recorded in a session log."""

    limit_id: str  # "codex" (turns), "image_gen" (images), ...
    used_percent: float
    window_minutes: int | None
    resets_at: datetime | None  # aware
    plan_type: str | None
    seen_at: datetime | None  # the log line's time: newer snapshots replace older ones

    @property
    def name(self) -> str:
        return _NAMES.get(self.limit_id, f"{self.limit_id} limit")

    def usage(self, *, now: datetime) -> str:
        """How much is used and when it resets: `80 % used, resets 17:46`."""
        text = f"{self.used_percent:g} % used"
        if self.resets_at is not None:
            text += f", resets {clock_text(self.resets_at, now=now)}"
        return text

    def describe(self, *, now: datetime) -> str:
        """The limit named with its usage: `image limit 80 % used, resets 17:46`."""
        return f"{self.name} {self.usage(now=now)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "limit_id": self.limit_id,
            "used_percent": self.used_percent,
            "window_minutes": self.window_minutes,
            "resets_at": _iso(self.resets_at),
            "plan_type": self.plan_type,
            "seen_at": _iso(self.seen_at),
        }

    @classmethod
    def from_json(cls, data: object) -> RateLimit | None:
        """The snapshot a sidecar or status.json holds; None for anything malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("limit_id"), str):
            return None
        used = data.get("used_percent")
        window = data.get("window_minutes")
        plan = data.get("plan_type")
        if not isinstance(used, (int, float)) or isinstance(used, bool):
            return None
        return cls(
            data["limit_id"],
            float(used),
            window if isinstance(window, int) and not isinstance(window, bool) else None,
            _parse(data.get("resets_at")),
            plan if isinstance(plan, str) else None,
            _parse(data.get("seen_at")),
        )


def merge(old: Iterable[RateLimit], new: Iterable[RateLimit]) -> tuple[RateLimit, ...]:
    """The newest snapshot of each limit; one without a time never replaces one with a time."""
    kept: dict[str, RateLimit] = {}
    for snapshot in (*old, *new):
        previous = kept.get(snapshot.limit_id)
        if previous is None or not _older(snapshot, previous):
            kept[snapshot.limit_id] = snapshot
    return tuple(kept.values())


def from_json_list(value: object) -> tuple[RateLimit, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(s for s in map(RateLimit.from_json, value) if s is not None)


def describe_all(snapshots: Iterable[RateLimit], *, now: datetime) -> str:
    """Every limit, `usage limit 42 % used, resets 18:00; image limit 80 % used, ...`."""
    return "; ".join(s.describe(now=now) for s in snapshots)


def _older(candidate: RateLimit, current: RateLimit) -> bool:
    if candidate.seen_at is None:
        return current.seen_at is not None
    return current.seen_at is not None and candidate.seen_at < current.seen_at


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
