"""The status file in the outbox (`status.json`): what the daemon is doing, always current.

The daemon rewrites it atomically on every change; `gpt-image-inbox status` reads and prints it,
so a person (or a script, or a phone looking at the synced folder) sees the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.codex.failures import clock_text
from daemon.codex.quota import describe_all, from_json_list
from daemon.files import replace_file

STATUS_NAME = "status.json"
# Pauses that end at a known time are named by their limit: "image limit until 14:05".
_LIMIT_NAMES = {"image-limit": "image limit", "usage-limit": "usage limit"}


@dataclass
class StatusFile:
    """Mutable by the one worker only; every change is followed by `save()`. The times are
    ISO 8601 with the offset, by the writer's clock."""

    path: Path
    state: str = "starting"  # starting | recovering | idle | working | paused | stopped
    pid: int = field(default_factory=os.getpid)
    since: str = ""  # when the daemon started
    current_job: str | None = None
    job_started_at: str | None = None
    queue_length: int = 0
    paused: dict[str, Any] | None = None
    last_success: dict[str, Any] | None = None
    last_failure: dict[str, Any] | None = None
    # The newest snapshot of each of the plan's limits, from the session logs of any job.
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str = ""

    def fields(self) -> dict[str, Any]:
        """What status.json holds."""
        fields = asdict(self)
        fields.pop("path")
        return fields

    def save(self, *, updated_at: str) -> None:
        self.updated_at = updated_at
        fields = self.fields()
        replace_file(
            self.path, json.dumps(fields, indent=2, ensure_ascii=False).encode(), durable=False
        )


def read_status(outbox: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((outbox / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(data: dict[str, Any], *, now: datetime | None = None, running: bool = True) -> str:
    """The status as a few lines for a person; `running=False`: its writer is gone."""
    now = now or datetime.now().astimezone()
    lines = [f"state: {data.get('state')} (pid {data.get('pid')}, since {data.get('since')})"]
    if not running:
        lines = [
            f"state: not running (pid {data.get('pid')} wrote this file and is gone; it last "
            f"said {data.get('state')!s} at {data.get('updated_at')})"
        ]
        if data.get("current_job"):
            lines.append(f"was working on: {data['current_job']} (it runs again, or is")
            lines.append("  recovered from codex's session, when the daemon starts)")
    elif data.get("current_job"):
        started = _parse(data.get("job_started_at"))
        took = f", running for {int((now - started).total_seconds())} s" if started else ""
        lines.append(f"working on: {data['current_job']}{took}")
    lines.append(f"queued: {data.get('queue_length', 0)}")
    paused = data.get("paused")
    if paused:
        lines.extend(_pause_lines(paused))
    limits = from_json_list(data.get("rate_limits"))
    if limits:
        lines.append(f"quota: {describe_all(limits, now=now)}")
    for key, label in (("last_success", "last success"), ("last_failure", "last failure")):
        entry = data.get(key)
        if entry:
            extra = entry.get("message") or ", ".join(entry.get("outputs") or [])
            lines.append(f"{label}: {entry.get('job')} at {entry.get('at')}: {extra}")
    lines.append(f"updated: {data.get('updated_at')}")
    return "\n".join(lines)


def _pause_lines(paused: dict[str, Any]) -> list[str]:
    lines = [f"paused: {paused.get('summary') or paused.get('message')}"]
    if paused.get("summary") and paused.get("message") != paused["summary"]:
        lines.append(f"  reason: {paused.get('message')}")
    if paused.get("hint"):
        lines.append(f"  hint: {paused['hint']}")
    if paused.get("resumes_at"):
        lines.append(f"  resumes at: {paused['resumes_at']}")
    return lines


def not_running_notice(inbox: Path, config: Path | None) -> tuple[bool | None, str]:
    """Whether a daemon (or `once`) works on `inbox`, and, when none does, what to tell a person:
    that it is not running and how to start it. None: it may run on another host."""
    from daemon.watching.lock import describe_holder, probe

    found = probe(inbox)
    if found.held:
        return True, f"{describe_holder(found.holder)} is working on {inbox}."
    if found.elsewhere:
        return None, (
            f"No daemon runs on this machine for {inbox}; it was last run on "
            f"{found.holder.get('host')}, where this machine cannot see whether it still runs."
        )
    option = f" --config {config}" if config is not None else ""
    return False, (
        f"The daemon is not running: nothing works on {inbox}.\n"
        f"  Start it with `gpt-image-inbox run{option}` (or, to run it at login,\n"
        f"  `gpt-image-inbox service install{option}`),\n"
        f"  or process the waiting jobs now and exit: `gpt-image-inbox once{option}`."
    )


def pause_summary(layer: str, message: str, until: datetime | None, *, now: datetime) -> str:
    """What a pause is, in a few words: "image limit until 14:05" (with the date when it is not
    today) for a limit with its reset time, codex's own message otherwise."""
    name = _LIMIT_NAMES.get(layer)
    if name is None or until is None:
        return message
    return f"{name} until {clock_text(until, now=now)}"


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
