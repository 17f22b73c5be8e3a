"""Read a JSONL session log line by line, leaving its big JSON strings in the file.

Lines that cannot matter are stepped over by their first bytes, unparsed. A long line's big
strings stay in the file as byte ranges (placeholders in the parsed line) and only a result
image is decoded from its range, so memory stays near the size of the images kept.
"""

from __future__ import annotations

import binascii
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

_CHUNK = 1 << 20
BLOB_MARK = "\x00rollout-blob:"
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))

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

# Whether a line of this kind and payload type is to be parsed; None is what the head leaves
# unknown.
Wanted = Callable[[bytes | None, bytes | None], bool]


@dataclass(frozen=True, slots=True)
class BufferSizes:
    """How much of a log is held at a time (bytes)."""

    # Read a quarter MiB at a time into one small buffer: a fresh buffer costs a page fault
    # per 4 KiB, more than the read itself on a small log.
    read: int = 256 << 10
    # A line shorter than this is parsed whole; a longer one keeps its big strings in the
    # file, so an image is decoded from the file's bytes without passing through a Python str.
    inline_line_max: int = 128 << 10
    # codex writes both types within the first ~150 bytes of a line.
    head: int = 1024
    # Strings longer than this inside a long line are left in the file as byte ranges.
    blob_min: int = 64 << 10


DEFAULT_SIZES = BufferSizes()


@dataclass(frozen=True, slots=True)
class Blob:
    """A JSON string left in the file: the raw bytes between its quotes."""

    start: int
    end: int


def line_types(buf: bytearray, pos: int, end: int) -> tuple[bytes | None, bytes | None]:
    """(kind, payload type) of the line starting at `pos`; None where the head does not say."""
    match = _LINE_HEAD.match(buf, pos, end)
    if match is None:
        return None, None
    if match[1] is not None:
        return match[1], match[2]
    return match[3], None


class LogLines:
    """Yields (value, blobs) for each complete JSONL line `wanted` keeps; split on b"\\n" only.

    Lines `wanted` turns down by their head are stepped over without being copied or parsed.
    One fixed buffer is read into, so no chunk is copied to join it to the rest of a line.
    """

    def __init__(self, f: io.RawIOBase, wanted: Wanted, sizes: BufferSizes = DEFAULT_SIZES):
        self.f = f
        self.wanted = wanted
        self.sizes = sizes
        # Room for the start of a line being kept (or classified) plus one read after it.
        self.buf = bytearray(max(sizes.inline_line_max, sizes.head) + sizes.read)
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

    def __iter__(self) -> Iterator[tuple[Any, list[Blob]]]:
        while self._fill_head():
            head_end = min(self.end, self.pos + self.sizes.head)
            if self.wanted(*line_types(self.buf, self.pos, head_end)):
                yield from self._take_line()
            else:
                self._skip_line()

    def _fill_head(self) -> bool:
        """Read until the next line's head or end is in the buffer; False when none is left."""
        while (
            self.end - self.pos < self.sizes.head and self.buf.find(b"\n", self.pos, self.end) < 0
        ):
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

    def _take_line(self) -> Iterator[tuple[Any, list[Blob]]]:
        searched = self.pos
        while True:
            nl = self.buf.find(b"\n", searched, self.end)
            if (nl if nl >= 0 else self.end) - self.pos >= self.sizes.inline_line_max:
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

    def _long_line(self) -> tuple[bytes | None, list[Blob]]:
        """Copy the line minus its big strings; None when it ends inside a string."""
        out = bytearray()
        blobs: list[Blob] = []
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
                    # A last line without "\n", like a short one: kept if it parses.
                    return bytes(out), blobs
                continue
            out += self.view[self.pos : quote]
            self.pos = quote + 1
            if not self._string(out, blobs):
                return None, blobs

    def _string(self, out: bytearray, blobs: list[Blob]) -> bool:
        """Consume one string body after its opening quote; False if the line ends inside it."""
        start, mark, odd = self.base + self.pos, len(out), False
        small = self.sizes.blob_min
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
            if len(out) - mark <= small:
                out += self.view[self.pos : stop]
            self.pos, odd = stop, odd and quote < 0
            if quote < 0 and not self._refill():
                return False
        if len(out) - mark <= small:
            out += self.view[self.pos : quote]
        self.pos = quote + 1
        if len(out) - mark > small:
            del out[mark:]
            blobs.append(Blob(start, self.base + quote))
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


def _loads(line: bytes | bytearray, blobs: list[Blob]) -> Iterator[tuple[Any, list[Blob]]]:
    if not line.strip():
        return
    try:
        value = json.loads(line)
    except ValueError:  # a line cut short by a killed run, or not JSON at all
        return
    if isinstance(value, dict):
        yield value, blobs


class FileStrings:
    """Resolves a parsed string that may be a placeholder for a byte range of the log."""

    def __init__(self, f: BinaryIO, blobs: list[Blob]) -> None:
        self.f = f
        self.blobs = blobs

    def blob(self, value: object) -> Blob | None:
        if isinstance(value, str) and value.startswith(BLOB_MARK):
            index = int(value[len(BLOB_MARK) :])
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


def decode_base64(chunks: Iterator[bytes]) -> bytes | None:
    """Decode base64 (or a base64 data URL) chunk by chunk; None when it is not base64."""
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
