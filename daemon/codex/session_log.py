"""Find one codex run's session log and stream it for the images that run generated.

Lines that cannot matter are stepped over by their first bytes, unparsed. Big JSON strings are
never loaded: they stay in the file as byte ranges and only a result image is decoded from its
range, so memory stays near the size of the images kept.
"""

from __future__ import annotations

import binascii
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from daemon.codex.quota import RateLimit
from daemon.images import ImageFormat, sniff_format

_THREAD_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{7,79}")
_CHUNK = 1 << 20
# Lines are read a quarter MiB at a time into one small buffer: a fresh buffer costs a page
# fault per 4 KiB, more than the read itself on a small log.
_READ = 256 << 10
# A line shorter than this is parsed whole; a longer one keeps its big strings in the file, so
# an image is decoded from the file's bytes without passing through a Python str.
_INLINE_LINE_MAX = 128 << 10
# Strings longer than this inside a long line are left in the file as byte ranges.
_BLOB_MIN = 64 << 10
_BLOB_MARK = "\x00rollout-blob:"
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))
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
    completed: bool  # a task_complete line was seen
    cli_version: str | None
    limits: tuple[LimitHit, ...] = ()  # failed generations that met a usage limit
    rate_limits: tuple[RateLimit, ...] = ()  # the newest snapshot of each limit the log names


def _check_thread_id(thread_id: str) -> None:
    # The id goes into a glob pattern and a folder name: no separators, no metacharacters.
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        raise ValueError(f"not a codex thread id: {thread_id!r}")


def find_session_log(codex_home: Path, thread_id: str, *, started_at: datetime) -> Path | None:
    """This run's log, looked for only in the local-date folders around `started_at`.

    Thread ids of current releases are UUIDv7s that carry their creation time, which is also
    the log's name: those logs are found by name alone, without listing any folder.
    """
    _check_thread_id(thread_id)
    for candidate in _named_candidates(codex_home, thread_id):
        if candidate.is_file():
            return candidate
    day = (started_at.astimezone() if started_at.tzinfo else started_at).date()
    for offset in (0, -1, 1):
        d = day + timedelta(days=offset)
        folder = codex_home / "sessions" / f"{d:%Y}" / f"{d:%m}" / f"{d:%d}"
        found = sorted(folder.glob(f"rollout-*-{thread_id}.jsonl"))
        if found:
            return found[-1]
    return None


_HEX = "[0-9a-fA-F]"
_UUID_TEXT = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")


def _named_candidates(codex_home: Path, thread_id: str) -> list[Path]:
    """Exact log paths for a UUIDv7 thread id: its local creation second, and one either side."""
    # Read straight from the text (the uuid module costs a start-up ~2 ms): 8-4-4-4-12 hex
    # digits, the version in the first digit of the third group, the time in the first 48 bits.
    if not _UUID_TEXT.fullmatch(thread_id) or thread_id[14] != "7":
        return []
    try:
        millis = int(thread_id[:8] + thread_id[9:13], 16)
        created = datetime.fromtimestamp(millis / 1000).astimezone()
        times = [created + timedelta(seconds=delta) for delta in (0, 1, -1)]
    except (ValueError, OverflowError, OSError):
        return []  # a version-7 id whose time no calendar holds: leave it to the folder search
    paths = []
    for t in times:
        name = f"rollout-{t:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"
        paths.append(codex_home / "sessions" / f"{t:%Y}" / f"{t:%m}" / f"{t:%d}" / name)
    return paths


def generated_images(codex_home: Path, thread_id: str) -> list[FoundImage]:
    """Images codex saved under `generated_images/<thread_id>/`, oldest first, by real format."""
    _check_thread_id(thread_id)
    folder = codex_home / "generated_images" / thread_id
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file()]
    found = []
    for path in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name)):
        data = path.read_bytes()
        fmt = sniff_format(data[:16])
        if fmt is not None:
            found.append(FoundImage(data, fmt, path.stem, None))
    return found


# --- reading lines -----------------------------------------------------------------------------

# A line's kind and payload type, read off its first bytes without parsing it. The pattern
# matches only a prefix of the JSON grammar itself (scalar members, strings without escapes,
# nothing that can cross a line), so a match is exact for valid JSON; anything else (other key
# orders, whitespace, a nested value first) leaves a group empty and the line is parsed whole.
_SCALAR = rb'(?:"[^"\\\n]*"|-?[0-9][0-9.eE+-]*|true|false|null)'
_MEMBER = rb'"[A-Za-z_]+":' + _SCALAR
_LINE_HEAD = re.compile(
    rb"\{(?:" + _MEMBER + rb",)*" + rb'"type":"([A-Za-z_]+)"'
    rb"(?:," + _MEMBER + rb")*"
    rb',"payload":\{(?:' + _MEMBER + rb",)*" + rb'"type":"([A-Za-z_]+)"'
    rb"|\{(?:" + _MEMBER + rb",)*" + rb'"type":"([A-Za-z_]+)"'
)
_HEAD = 1024  # codex writes both types within the first ~150 bytes of a line


def _line_types(buf: bytearray, pos: int, end: int) -> tuple[bytes | None, bytes | None]:
    """(kind, payload type) of the line starting at `pos`; None where the head does not say."""
    match = _LINE_HEAD.match(buf, pos, min(end, pos + _HEAD))
    if match is None:
        return None, None
    if match[1] is not None:
        return match[1], match[2]
    return match[3], None


@dataclass(frozen=True, slots=True)
class _Blob:
    """A JSON string left in the file: the raw bytes between its quotes."""

    start: int
    end: int


class _Lines:
    """Yields (value, blobs) for each complete JSONL line `wanted` keeps; split on b"\\n" only.

    Lines `wanted` turns down by their head are stepped over without being copied or parsed.
    One fixed buffer is read into, so no chunk is copied to join it to the rest of a line.
    """

    def __init__(
        self, f: io.RawIOBase, wanted: Callable[[bytes | None, bytes | None], bool]
    ) -> None:
        self.f = f
        self.wanted = wanted
        # Room for the start of a line being kept (or classified) plus one read after it.
        self.buf = bytearray(max(_INLINE_LINE_MAX, _HEAD) + _READ)
        self.view = memoryview(self.buf)
        self.pos = 0  # next unread byte in buf
        self.end = 0  # end of the bytes read into buf
        self.base = 0  # file offset of buf[0]

    def _refill(self) -> bool:
        """Move the unread bytes to the front and read more after them; False at end of file."""
        kept = self.end - self.pos
        if self.pos:
            self.buf[:kept] = self.buf[self.pos : self.end]
            self.base += self.pos
            self.pos, self.end = 0, kept
        read = self.f.readinto(self.view[self.end :])
        if not read:
            return False
        self.end += read
        return True

    def __iter__(self) -> Iterator[tuple[Any, list[_Blob]]]:
        while self._fill_head():
            if self.wanted(*_line_types(self.buf, self.pos, self.end)):
                yield from self._take_line()
            else:
                self._skip_line()

    def _fill_head(self) -> bool:
        """Read until the next line's head or end is in the buffer; False when none is left."""
        while self.end - self.pos < _HEAD and self.buf.find(b"\n", self.pos, self.end) < 0:
            if not self._refill():
                break
        return self.pos < self.end

    def _skip_line(self) -> None:
        while True:
            nl = self.buf.find(b"\n", self.pos, self.end)
            if nl >= 0:
                self.pos = nl + 1
                return
            self.pos = self.end  # nothing of a skipped line is kept
            if not self._refill():
                return

    def _take_line(self) -> Iterator[tuple[Any, list[_Blob]]]:
        searched = self.pos
        while True:
            nl = self.buf.find(b"\n", searched, self.end)
            if (nl if nl >= 0 else self.end) - self.pos >= _INLINE_LINE_MAX:
                skeleton, blobs = self._long_line()
                if skeleton is not None:
                    yield from _loads(skeleton, blobs)
                return
            if nl >= 0:
                line, self.pos = self.buf[self.pos : nl], nl + 1
                yield from _loads(line, [])
                return
            searched = self.end - self.pos  # offsets move to the front on refill
            if not self._refill():
                # A last line without "\n": kept if whole, dropped if the run was killed mid-write.
                line, self.pos = self.buf[self.pos : self.end], self.end
                yield from _loads(line, [])
                return
            searched += self.pos

    def _long_line(self) -> tuple[bytes | None, list[_Blob]]:
        """Copy the line minus its big strings; None when it ends inside a string."""
        out = bytearray()
        blobs: list[_Blob] = []
        while True:
            quote = self.buf.find(b'"', self.pos, self.end)
            nl = self.buf.find(b"\n", self.pos, quote if quote >= 0 else self.end)
            if nl >= 0:
                out += self.view[self.pos : nl]
                self.pos = nl + 1
                return bytes(out), blobs
            if quote < 0:
                out += self.view[self.pos : self.end]
                self.pos = self.end
                if not self._refill():
                    return None, blobs
                continue
            out += self.view[self.pos : quote]
            self.pos = quote + 1
            if not self._string(out, blobs):
                return None, blobs

    def _string(self, out: bytearray, blobs: list[_Blob]) -> bool:
        """Consume one string body after its opening quote; False if the line ends inside it."""
        start, mark, odd = self.base + self.pos, len(out), False
        out += b'"'
        while True:
            quote = self.buf.find(b'"', self.pos, self.end)
            nl = self.buf.find(b"\n", self.pos, quote if quote >= 0 else self.end)
            if nl >= 0:  # a broken line: stop here rather than swallow the lines after it
                self.pos = nl
                return False
            odd = self._odd_backslashes(quote if quote >= 0 else self.end, odd)
            if quote >= 0 and not odd:
                break
            stop = quote + 1 if quote >= 0 else self.end  # an escaped quote is string content
            if len(out) - mark <= _BLOB_MIN:
                out += self.view[self.pos : stop]
            self.pos, odd = stop, odd and quote < 0
            if quote < 0 and not self._refill():
                return False
        if len(out) - mark <= _BLOB_MIN:
            out += self.view[self.pos : quote]
        self.pos = quote + 1
        if len(out) - mark > _BLOB_MIN:
            del out[mark:]
            blobs.append(_Blob(start, self.base + quote))
            out += b'"\\u0000rollout-blob:%d"' % (len(blobs) - 1)
        else:
            out += b'"'
        return True

    def _odd_backslashes(self, stop: int, odd: bool) -> bool:
        """Whether the string read so far, up to `stop`, ends in an odd run of backslashes."""
        i = stop
        while i > self.pos and self.buf[i - 1] == 0x5C:
            i -= 1
        run_is_odd = bool((stop - i) & 1)
        # A run reaching back to where this look started continues the run carried from before.
        return odd != run_is_odd if i == self.pos else run_is_odd


def _loads(line: bytes | bytearray, blobs: list[_Blob]) -> Iterator[tuple[Any, list[_Blob]]]:
    if not line.strip():
        return
    try:
        value = json.loads(line)
    except ValueError:  # a line cut short by a killed run, or not JSON at all
        return
    if isinstance(value, dict):
        yield value, blobs


# --- strings that may live in the file ---------------------------------------------------------


class _Strings:
    """Resolves a parsed string that may be a placeholder for a byte range of the log."""

    def __init__(self, f: BinaryIO, blobs: list[_Blob]) -> None:
        self.f = f
        self.blobs = blobs

    def blob(self, value: object) -> _Blob | None:
        if isinstance(value, str) and value.startswith(_BLOB_MARK):
            index = int(value[len(_BLOB_MARK) :])
            return self.blobs[index] if index < len(self.blobs) else None
        return None

    def text(self, value: object, limit: int = 64 << 10) -> str | None:
        """The string itself, or the start of a long one read back from the file."""
        blob = self.blob(value)
        if blob is None:
            return value if isinstance(value, str) else None
        self.f.seek(blob.start)
        raw = self.f.read(min(limit, blob.end - blob.start))
        # The cut may split an escape or a UTF-8 sequence: back off a few bytes until it parses.
        for cut in range(len(raw), max(len(raw) - 12, 0) - 1, -1):
            try:
                return str(json.loads(b'"' + raw[:cut] + b'"'))
            except ValueError:
                continue
        return raw.decode("utf-8", "replace")

    def chunks(self, value: object) -> Iterator[bytes]:
        """The raw bytes of a string, a chunk at a time."""
        blob = self.blob(value)
        if blob is None:
            text = value if isinstance(value, str) else ""
            for i in range(0, len(text), _CHUNK):
                yield text[i : i + _CHUNK].encode("ascii", "ignore")
            return
        self.f.seek(blob.start)
        left = blob.end - blob.start
        while left > 0:
            chunk = self.f.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _a2b_plain(data: bytes) -> bytes:
    """Decode whole groups of pure base64 alphabet; binascii.Error for anything else."""
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(data, strict_mode=True)
    if len(data) % 4 or len(data.translate(None, _NOT_B64)) != len(data):
        raise binascii.Error("not plain base64")
    return binascii.a2b_base64(data)


def _decode_base64(chunks: Iterator[bytes]) -> bytes | None:
    """Decode base64 (or a base64 data URL) chunk by chunk."""
    out, carry, first, plain = io.BytesIO(), b"", True, True
    try:
        for chunk in chunks:
            if first and chunk.startswith(b"data:"):
                chunk = chunk[chunk.find(b",") + 1 :]
            first = False
            if plain and not carry:
                # A result is one unescaped run of base64: decode it without a filtering pass.
                try:
                    out.write(_a2b_plain(chunk))
                    continue
                except binascii.Error:
                    plain = False
            # Drops JSON escape backslashes ("\/" -> "/") and line breaks along with junk.
            data = carry + chunk.translate(None, _NOT_B64)
            whole = len(data) - len(data) % 4
            out.write(binascii.a2b_base64(data[:whole]))
            carry = data[whole:]
        if carry:
            out.write(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4)))
    except binascii.Error:
        return None
    return out.getvalue()


# --- what the lines mean -----------------------------------------------------------------------


def _output_text(output: object, strings: _Strings) -> str:
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


def _failure_text(failure: object, strings: _Strings) -> str | None:
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


# The payload types _Scanner acts on; lines of any other type are skipped unparsed.
_ITEMS = frozenset({b"image_generation_call"})
_TOOL_OUTPUTS = frozenset({b"function_call_output", b"custom_tool_call_output"})
# token_count lines are small (token totals and rate limits): cheap to parse.
_EVENTS = frozenset(
    {b"image_generation_end", b"item_completed", b"task_complete", b"error", b"token_count"}
)


@dataclass(slots=True)
class _Scanner:
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
    completed: bool = False
    cli_version: str | None = None
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    seen_at: datetime | None = None  # the current line's time

    def wanted(self, kind: bytes | None, ptype: bytes | None) -> bool:
        """Whether a line of this kind and payload type can change the scan; None is unknown."""
        if kind is None or kind == b"session_meta":
            return True
        if kind == b"event_msg":
            return ptype is None or ptype in _EVENTS
        if kind == b"response_item":
            if ptype in _TOOL_OUTPUTS:
                return bool(self.pending)  # read only for a failed generation's reason
            return ptype is None or ptype in _ITEMS
        return False  # turn_context, world_state, compacted, token_usage_record, ...

    def line(self, line: dict[str, Any], strings: _Strings) -> None:
        payload = line.get("payload")
        if not isinstance(payload, dict):
            return
        kind, ptype = line.get("type"), payload.get("type")
        self.seen_at = _log_time(line)
        if kind == "session_meta" and isinstance(payload.get("cli_version"), str):
            self.cli_version = payload["cli_version"]
        elif kind == "response_item":
            self._response_item(ptype, payload, strings)
        elif kind == "event_msg":
            self._event(ptype, payload, strings)

    def _response_item(self, ptype: object, payload: dict[str, Any], strings: _Strings) -> None:
        if ptype == "image_generation_call":  # 0.111-0.142, hosted tool (in _ITEMS)
            self._generation(payload, payload.get("id"), payload.get("revised_prompt"), strings)
        elif ptype in ("function_call_output", "custom_tool_call_output"):  # _TOOL_OUTPUTS
            self._tool_output(_output_text(payload.get("output"), strings))

    def _event(self, ptype: object, payload: dict[str, Any], strings: _Strings) -> None:
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
        self, item: dict[str, Any], call_id: object, revised: object, strings: _Strings
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
        data = _decode_base64(strings.chunks(result))
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
            self.completed,
            self.cli_version,
            tuple(self.limits),
            tuple(self.rate_limits.values()),
        )


def scan_rollout(path: Path) -> RolloutScan:
    """Everything one session log says about its run's images, refusals and turn outcome."""
    scanner = _Scanner()
    with path.open("rb", buffering=0) as lines_file, path.open("rb") as blob_file:
        for line, blobs in _Lines(lines_file, scanner.wanted):
            scanner.line(line, _Strings(blob_file, blobs))
    return scanner.result()
