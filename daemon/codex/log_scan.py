"""What the lines of one session log say: the images a run generated, its refusals, usage
limits and rate limits, and how its turn ended.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.codex.log_lines import FileStrings, decode_base64
from daemon.codex.quota import RateLimit
from daemon.images import ImageFormat, sniff_format

_REASON_HINTS = re.compile(r"fail|error|block|refus|reject|moderation|safety|denied", re.I)
_FAILED = re.compile(r"image generation failed", re.I)
# Lines of code-mode's own framing around a script's output, never a reason by themselves.
_BOILERPLATE = re.compile(r"(script (failed|completed|error:?)|wall time .*|output:)$", re.I)
_REASON_MAX = 1000
GENERIC_REFUSAL = "image generation failed (codex gave no reason)"
# A failed generation's typed `failure` when the plan's limit stopped it (0.169+).
_LIMIT_FAILURE = "usageLimitExceeded"
# The same limit in codex's words, the API's JSON quoted inside with escaped quotes:
# `http 429 Too Many Requests: Some("{\"error\": {\"type\": \"usage_limit_reached\", ...
# \"resets_at\": 1796176329, ...}}")`. Releases without the typed failure say only this.
_LIMIT_TEXT = re.compile(r"\b429\b.*?usage_limit_reached", re.S)
_RESETS_AT_TEXT = re.compile(r'resets_at\\*"?\s*:\s*(\d+)')


@dataclass(frozen=True, slots=True)
class FoundImage:
    data: bytes
    format: ImageFormat
    call_id: str | None
    revised_prompt: str | None


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A generation the plan's usage limit stopped; codex still ends such a turn normally."""

    limit_id: str | None  # codex's name for the limit ("image_gen"), when it gives one
    resets_at: datetime | None  # aware local time
    reason: str  # codex's words


@dataclass(frozen=True, slots=True)
class RolloutScan:
    images: tuple[FoundImage, ...]
    refusals: tuple[str, ...]  # codex's reason for each failed generation, limits aside
    turn_error: str | None  # task_complete / turn error message, if the turn failed
    turn_error_kind: str | None  # codex_error_info kind ("usage_limit_exceeded", ...)
    limits: tuple[LimitHit, ...] = ()  # failed generations that met a usage limit
    rate_limits: tuple[RateLimit, ...] = ()  # the newest snapshot of each limit the log names


def _output_text(output: object, strings: FileStrings) -> str:
    """The text parts of a function_call_output / custom_tool_call_output, never its images."""
    if isinstance(output, list):
        parts = [
            _output_text(item.get("text"), strings)
            for item in output
            if isinstance(item, dict) and item.get("type") in ("input_text", "output_text", "text")
        ]
        return "\n".join(parts)
    if isinstance(output, dict):
        return _output_text(output.get("content", output.get("output")), strings)
    return strings.text(output) or ""


def _pick_reason(text: str) -> str | None:
    """The line of a tool output that says why generation failed, if one does."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not _BOILERPLATE.match(line)]
    for wanted in (_FAILED, _REASON_HINTS):
        for line in lines:
            found = wanted.search(line)
            if found:
                start = found.start() if wanted is _FAILED else 0
                return line[start:][:_REASON_MAX]
    return None


def _failure_text(failure: object, strings: FileStrings) -> str | None:
    text = strings.text(failure, _REASON_MAX * 4)
    if text is not None and text.strip():
        return text.strip()[:_REASON_MAX]
    if isinstance(failure, dict):
        for key in ("message", "reason", "error"):
            if isinstance(failure.get(key), str):
                return str(failure[key])[:_REASON_MAX]
        return json.dumps(failure)[:_REASON_MAX]
    return None


def _limit_hit(failure: object, text: str, reason: str) -> LimitHit | None:
    """The usage limit a failed generation met, from its typed failure or else from codex's
    words (429, usage_limit_reached and a resets_at); None for any other failure."""
    typed = failure if isinstance(failure, dict) and failure.get("type") == _LIMIT_FAILURE else None
    resets_in_text = _RESETS_AT_TEXT.search(text)
    if typed is None and not (_LIMIT_TEXT.search(text) and resets_in_text):
        return None
    resets = typed.get("resetsAt") if typed else None
    if (not isinstance(resets, (int, float)) or isinstance(resets, bool)) and resets_in_text:
        resets = int(resets_in_text[1])
    limit_id = typed.get("limitId") if typed else None
    return LimitHit(
        limit_id if isinstance(limit_id, str) else None,
        _from_epoch(resets),
        reason,
    )


def _from_epoch(seconds: object) -> datetime | None:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    try:
        return datetime.fromtimestamp(seconds).astimezone()
    except (ValueError, OverflowError, OSError):
        return None


def _log_time(line: dict[str, Any]) -> datetime | None:
    stamp = line.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _window(value: object) -> tuple[float, int | None, datetime | None] | None:
    """(used percent, window minutes, resets at) of a `primary`/`secondary` window."""
    if not isinstance(value, dict):
        return None
    used = value.get("used_percent")
    if not isinstance(used, (int, float)) or isinstance(used, bool):
        return None
    minutes = value.get("window_minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        minutes = None
    return float(used), minutes, _from_epoch(value.get("resets_at"))


def _rate_limit(value: object, seen_at: datetime | None) -> RateLimit | None:
    """A token_count's `rate_limits`, by the window nearest its cap; None without a window
    (codex writes null windows when the server sent no rate-limit headers)."""
    if not isinstance(value, dict):
        return None
    windows = [w for w in (_window(value.get("primary")), _window(value.get("secondary"))) if w]
    if not windows:
        return None
    used, minutes, resets = max(windows, key=lambda w: w[0])  # max keeps the first of a tie
    limit_id = value.get("limit_id")
    plan = value.get("plan_type")
    return RateLimit(
        limit_id if isinstance(limit_id, str) and limit_id else "codex",
        used,
        minutes,
        resets,
        plan if isinstance(plan, str) else None,
        seen_at,
    )


def _error_kind(info: object) -> str | None:
    if isinstance(info, str):
        return info
    if isinstance(info, dict) and info:
        return str(next(iter(info)))
    return None


# The payload types Scanner acts on; lines of any other type are skipped unparsed.
_ITEMS = frozenset({b"image_generation_call"})
_TOOL_OUTPUTS = frozenset({b"function_call_output", b"custom_tool_call_output"})
# token_count lines are small (token totals and rate limits): cheap to parse.
_EVENTS = frozenset(
    {b"image_generation_end", b"item_completed", b"task_complete", b"error", b"token_count"}
)


@dataclass(slots=True)
class Scanner:
    """Accumulates what the lines of one log say, in order."""

    images: list[FoundImage] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    limits: list[LimitHit] = field(default_factory=list)
    # Failures awaiting the tool output with their reason: (their own text, their `failure`).
    pending: list[tuple[str | None, object]] = field(default_factory=list)
    seen_calls: set[str] = field(default_factory=set)
    turn_error: str | None = None
    turn_error_kind: str | None = None
    error_event: tuple[str | None, str | None] | None = None
    completed: bool = False  # a task_complete line was seen
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    seen_at: datetime | None = None  # the current line's time

    def wanted(self, kind: bytes | None, ptype: bytes | None) -> bool:
        """Whether a line of this kind and payload type can change the scan; None is unknown."""
        if kind is None:
            return True
        if kind == b"event_msg":
            return ptype is None or ptype in _EVENTS
        if kind == b"response_item":
            if ptype in _TOOL_OUTPUTS:
                return bool(self.pending)  # read only for a failed generation's reason
            return ptype is None or ptype in _ITEMS
        return False  # session_meta, turn_context, world_state, compacted, ...

    def line(self, line: dict[str, Any], strings: FileStrings) -> None:
        payload = line.get("payload")
        if not isinstance(payload, dict):
            return
        kind, ptype = line.get("type"), payload.get("type")
        self.seen_at = _log_time(line)
        if kind == "response_item":
            self._response_item(ptype, payload, strings)
        elif kind == "event_msg":
            self._event(ptype, payload, strings)

    def _response_item(self, ptype: object, payload: dict[str, Any], strings: FileStrings) -> None:
        if ptype == "image_generation_call":  # 0.111-0.142, hosted tool (in _ITEMS)
            self._generation(payload, payload.get("id"), payload.get("revised_prompt"), strings)
        elif ptype in ("function_call_output", "custom_tool_call_output"):  # _TOOL_OUTPUTS
            self._tool_output(_output_text(payload.get("output"), strings))

    def _event(self, ptype: object, payload: dict[str, Any], strings: FileStrings) -> None:
        # Every payload type handled here is in _EVENTS, or its lines are never read.
        if ptype == "image_generation_end":  # 0.117-0.145
            self._generation(
                payload, payload.get("call_id"), payload.get("revised_prompt"), strings
            )
        elif ptype == "item_completed":  # 0.150+
            item = payload.get("item")
            if isinstance(item, dict) and item.get("kind") == "image_gen.generation":
                self._generation(item, item.get("id"), item.get("revisedPrompt"), strings)
        elif ptype == "task_complete":
            self.completed = True
            error = payload.get("error")
            if isinstance(error, dict):
                self.turn_error = strings.text(error.get("message")) or "the turn failed"
                self.turn_error_kind = _error_kind(error.get("codex_error_info"))
        elif ptype == "error":
            message = strings.text(payload.get("message"))
            self.error_event = (message, _error_kind(payload.get("codex_error_info")))
        elif ptype == "token_count":
            snapshot = _rate_limit(payload.get("rate_limits"), self.seen_at)
            if snapshot is not None:
                self.rate_limits[snapshot.limit_id] = snapshot

    def _generation(
        self, item: dict[str, Any], call_id: object, revised: object, strings: FileStrings
    ) -> None:
        call = call_id if isinstance(call_id, str) else None
        if call is not None and call in self.seen_calls:
            return  # 0.117-0.142 log the same image twice under one id
        if item.get("status") == "failed":
            if call is not None:
                self.seen_calls.add(call)
            failure = item.get("failure")
            self.pending.append((_failure_text(failure, strings), failure))
            self._note_limit_failure(failure)
            return
        result = item.get("result")
        if not result or not isinstance(result, str):
            return
        data = decode_base64(strings.chunks(result))
        if data is None:
            return
        fmt = sniff_format(data[:16])
        # Bytes compare by length first: a second image costs a memcmp only on equal sizes.
        if fmt is None or any(data == image.data for image in self.images):
            return
        if call is not None:
            self.seen_calls.add(call)
        self.images.append(FoundImage(data, fmt, call, strings.text(revised)))

    def _note_limit_failure(self, failure: object) -> None:
        """A typed limit failure (0.169+) as a snapshot: that limit is used up until its reset."""
        if not isinstance(failure, dict) or failure.get("type") != _LIMIT_FAILURE:
            return
        limit_id = failure.get("limitId")
        if isinstance(limit_id, str) and limit_id:
            resets = _from_epoch(failure.get("resetsAt"))
            self.rate_limits[limit_id] = RateLimit(
                limit_id, 100.0, None, resets, None, self.seen_at
            )

    def _tool_output(self, text: str) -> None:
        # 0.144+ give a failed generation's reason only in the next tool output's text.
        if self.pending:
            self._settle_pending(text, _pick_reason(text))

    def _settle_pending(self, text: str, reason: str | None) -> None:
        """File each pending failure as a usage limit or a refusal, with its reason."""
        for own_text, failure in self.pending:
            why = reason or own_text or GENERIC_REFUSAL
            hit = _limit_hit(failure, text, why)
            if hit is not None:
                self.limits.append(hit)
            else:
                self.refusals.append(why)
        self.pending.clear()

    def result(self) -> RolloutScan:
        self._settle_pending("", None)
        error, kind = self.turn_error, self.turn_error_kind
        # Without task_complete, a fatal `error` event is the only word on why the turn ended.
        if not self.completed and self.error_event is not None:
            error, kind = self.error_event
        return RolloutScan(
            tuple(self.images),
            tuple(self.refusals),
            error,
            kind,
            tuple(self.limits),
            tuple(self.rate_limits.values()),
        )
