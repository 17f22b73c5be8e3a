"""The outbox gallery: one static `index.html` built from the result and error sidecars alone.

No script runs in the page (its Content-Security-Policy forbids it); every piece of text is escaped.
While the daemon has work (a job running, jobs queued, a pause) the page reloads itself with a
meta refresh; the page built once it is idle has none.
"""

from __future__ import annotations

import enum
import html
import os
import re
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from daemon import yaml_text
from daemon.codex.failures import clock_text
from daemon.codex.quota import RateLimit, from_json_list
from daemon.errors import OutboxUnwritable
from daemon.loop.status import pause_summary

INDEX_NAME = "index.html"
DEFAULT_LIMIT = 500
RESULT_SUFFIX = ".result.yaml"
ERROR_SUFFIX = ".error.yaml"
# A sidecar holds a prompt of at most 1 MiB plus a few fields; anything far larger is not ours.
MAX_SIDECAR_BYTES = 4 * 1024 * 1024
CSP = (
    "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
# How often a page built while the daemon has work reloads itself, in seconds.
REFRESH_SEC = 5


class CardKind(enum.Enum):
    RESULT = "result"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Picture:
    """One image of a result, as its sidecar describes it."""

    file: str
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference image of a job: its name as the job gave it, and its thumbnail's file in
    the outbox (None when there is none, e.g. the reference was missing)."""

    name: str
    thumbnail: str | None


# Each failure layer (the `error` of an error sidecar) as a person would say it.
LAYER_WORDS = {
    "job": "the job file has a mistake",
    "arguments": "bad command-line arguments",
    "config": "the configuration has a mistake",
    "reference": "a reference image is missing or not an image",
    "codex-missing": "the codex command was not found",
    "codex": "codex failed",
    "codex-arguments": "codex refused its arguments",
    "timeout": "it took longer than its time limit",
    "usage-limit": "your plan's usage limit is reached",
    "login": "codex is not logged in",
    "network": "the network is down",
    "session-log": "codex's session log was not found",
    "no-image": "the answer held no image",
    "refused": "the image was refused",
    "outbox": "the outbox could not be written",
    "lock": "another process holds the inbox",
    "cancelled": "it was stopped",
}


@dataclass(frozen=True, slots=True)
class Card:
    """What the gallery shows of one sidecar."""

    kind: CardKind
    sidecar: str
    sort_time: float  # seconds since the epoch: the sidecar's own time, else its mtime
    when: datetime | None
    prompt: str | None
    job: str | None
    pictures: tuple[Picture, ...] = ()
    revised_prompt: str | None = None
    seconds: float | None = None
    code: int | None = None
    message: str | None = None
    hint: str | None = None
    detail: str | None = None
    retrying: bool = False
    retry_at: datetime | None = None
    layer: str | None = None  # the sidecar's `error`: "image-limit", "refused", ...
    refs: tuple[Reference, ...] = ()
    missing: int = 0  # images a job of several variants still waits for (`complete: false`)


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
        state=_text(status.get("state")) or "idle",
        current_job=_text(status.get("current_job")),
        job_started_at=_timestamp(status.get("job_started_at")),
        queue_length=queued if isinstance(queued, int) and not isinstance(queued, bool) else 0,
        pause_summary=_text(paused.get("summary")) if paused else None,
        pause_reason=_text(paused.get("message")) if paused else None,
        resumes_at=_timestamp(paused.get("resumes_at")) if paused else None,
        rate_limits=from_json_list(status.get("rate_limits")),
    )


# ---------------------------------------------------------------- reading sidecars


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dimension(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _timestamp(value: object) -> datetime | None:
    """A sidecar time: YAML may hand back a datetime already, or the ISO text we wrote."""
    if isinstance(value, str):
        try:
            # Python 3.10's fromisoformat does not read a trailing "Z".
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    # A naive time is taken as local time, as the machine that wrote it would have meant.
    return value if value.tzinfo is not None else value.astimezone()


def _pictures(value: object) -> tuple[Picture, ...]:
    if not isinstance(value, list):
        return ()
    pictures = []
    for item in value:
        if isinstance(item, dict) and _text(item.get("file")):
            pictures.append(
                Picture(item["file"], _dimension(item.get("width")), _dimension(item.get("height")))
            )
    return tuple(pictures)


def _references(data: dict[str, Any]) -> tuple[Reference, ...]:
    names = data.get("refs")
    thumbs = data.get("ref_thumbnails")
    if not isinstance(names, list):
        return ()
    thumbs = thumbs if isinstance(thumbs, list) else []
    found = []
    for n, name in enumerate(names):
        if isinstance(name, str):
            thumb = thumbs[n] if n < len(thumbs) else None
            found.append(Reference(name, _text(thumb)))
    return tuple(found)


def _result_card(name: str, data: dict[str, Any], mtime: Callable[[], float]) -> Card | None:
    if not isinstance(data.get("images"), list):
        return None
    when = _timestamp(data.get("finished_at"))
    return Card(
        kind=CardKind.RESULT,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime(),
        when=when,
        prompt=_text(data.get("prompt")),
        job=_text(data.get("job")),
        pictures=_pictures(data["images"]),
        revised_prompt=_text(data.get("revised_prompt")),
        seconds=_number(data.get("seconds")),
        refs=_references(data),
        missing=_missing(data),
    )


def _missing(data: dict[str, Any]) -> int:
    missing = _number(data.get("missing"))
    return int(missing) if data.get("complete") is False and missing and missing > 0 else 0


def _failure_card(name: str, data: dict[str, Any], mtime: Callable[[], float]) -> Card | None:
    if _text(data.get("message")) is None and _number(data.get("code")) is None:
        return None
    when = _timestamp(data.get("failed_at"))
    code = _number(data.get("code"))
    return Card(
        kind=CardKind.FAILURE,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime(),
        when=when,
        prompt=_text(data.get("prompt")),
        job=_text(data.get("job")),
        code=int(code) if code is not None else None,
        message=_text(data.get("message")),
        hint=_text(data.get("hint")),
        detail=_text(data.get("detail")),
        retrying=data.get("retrying") is True,
        retry_at=_timestamp(data.get("retry_at")),
        layer=_text(data.get("error")),
        refs=_references(data),
    )


Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns of one file version


_UNREAD: Stamp = (-1, -1, -1, -1)  # matches no file: the sidecar is read again next build


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_raw(path: str | Path) -> tuple[bytes | None, os.stat_result | None]:
    """The file's bytes (None when oversized) and the stat of what was read; (None, None) on error.

    O_NONBLOCK: a FIFO named like a sidecar must not hang the build; only regular files are read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None, None
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
                return None, (st if stat.S_ISREG(st.st_mode) else None)
            # Sized by fstat, not by the limit: a 4 MiB buffer per file would cost more than
            # the read. A file that grew meanwhile is read on, up to just past the limit.
            raw = f.read(st.st_size + 1)
            if len(raw) > st.st_size:
                raw += f.read(MAX_SIDECAR_BYTES + 1 - len(raw)) or b""
        except OSError:
            return None, None
    return (raw if len(raw) <= MAX_SIDECAR_BYTES else None), st


def parse_card(path: Path, raw: bytes, *, mtime: float | None = None) -> Card | None:
    """The card for one sidecar's bytes, or None when they are not YAML or not one of ours.

    `mtime` orders a sidecar without its own time; when not given it is read from `path`.
    """
    try:
        data = yaml_text.load(raw)
    except (yaml.YAMLError, ValueError):  # ValueError: bytes that are not valid UTF-8/16
        return None
    if not isinstance(data, dict):
        return None

    def file_mtime() -> float:
        if mtime is not None:
            return mtime
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    build = _result_card if path.name.endswith(RESULT_SUFFIX) else _failure_card
    return build(path.name, data, file_mtime)


def read_card(path: Path) -> Card | None:
    """The card for one sidecar file, or None when it is unreadable, broken or foreign."""
    raw, st = _read_raw(path)
    return None if raw is None or st is None else parse_card(path, raw, mtime=st.st_mtime)


_TIME_LINES = {
    RESULT_SUFFIX: re.compile(rb"^finished_at:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$", re.MULTILINE),
    ERROR_SUFFIX: re.compile(rb"^failed_at:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$", re.MULTILINE),
}


def quick_time(name: str, raw: bytes) -> float | None:
    """The sidecar's time read off its top-level time line without parsing the YAML, or None.

    Parsing YAML is most of a build's cost; this lets a build parse only the sidecars it shows.
    """
    suffix = RESULT_SUFFIX if name.endswith(RESULT_SUFFIX) else ERROR_SUFFIX
    match = _TIME_LINES[suffix].search(raw)
    if match is None:
        return None
    value = match.group(1).decode("ascii", "replace")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    when = _timestamp(value)
    return when.timestamp() if when else None


def _is_sidecar_name(name: str) -> bool:
    return name.endswith((RESULT_SUFFIX, ERROR_SUFFIX)) and not name.startswith(".")


def sidecar_paths(outbox: Path) -> Iterator[Path]:
    """Every result and error sidecar directly in the outbox (not in sub-folders)."""
    for entry, _ in _scan(outbox):
        yield Path(entry.path)


def _scan(outbox: Path) -> list[tuple[os.DirEntry[str], os.stat_result]]:
    """Sidecar entries of one directory listing with their stat; non-regular files left out."""
    try:
        with os.scandir(outbox) as it:
            entries = [e for e in it if _is_sidecar_name(e.name)]
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            st = entry.stat()  # follows a symlink, as opening the file would
        except OSError:  # removed since the listing, or a dangling link
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((entry, st))
    return found


@dataclass(frozen=True, slots=True)
class Sidecar:
    """What one build learnt about one version of a sidecar file."""

    stamp: Stamp
    size: int
    quick: float | None  # its time read off the time line; None: it is parsed on every build
    parsed: bool  # `card` holds the parse result (None: broken or foreign)
    card: Card | None = None


class CardCache:
    """Sidecars seen by earlier builds, per outbox, so an unchanged sidecar is not read again.

    An entry is used only while the file's device, inode, size and mtime (ns) are unchanged, so
    an edit, an atomic replace or a deletion shows in the next build. Bounded: at most
    `max_entries` sidecars and `max_card_bytes` of parsed sidecars (by file size) are kept,
    preferring the newest; what is dropped is simply read again when needed.
    """

    def __init__(self, *, max_entries: int = 20_000, max_card_bytes: int = 16 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_card_bytes = max_card_bytes
        self.reads = 0  # sidecar files opened through this cache: how well it is working
        self._outboxes: OrderedDict[str, dict[str, Sidecar]] = OrderedDict()
        self._lock = threading.Lock()  # the daemon's loop and a `gallery` call may share it

    def __len__(self) -> int:
        with self._lock:
            return sum(len(known) for known in self._outboxes.values())

    def known(self, outbox: Path) -> dict[str, Sidecar]:
        """The sidecars of the last build of `outbox`, by file name."""
        with self._lock:
            return self._outboxes.get(os.path.abspath(outbox), {})

    def store(self, outbox: Path, newest_first: list[tuple[str, Sidecar]]) -> None:
        """Keep what this build of `outbox` saw, newest first, within the bounds."""
        kept: dict[str, Sidecar] = {}
        card_bytes = 0
        for name, sidecar in newest_first[: self.max_entries]:
            if sidecar.card is not None:
                card_bytes += sidecar.size
                if card_bytes > self.max_card_bytes:  # keep its time, drop the parsed text
                    sidecar = Sidecar(sidecar.stamp, sidecar.size, sidecar.quick, parsed=False)
            kept[name] = sidecar
        key = os.path.abspath(outbox)
        with self._lock:
            self._outboxes[key] = kept
            self._outboxes.move_to_end(key)
            total = sum(len(known) for known in self._outboxes.values())
            while total > self.max_entries and len(self._outboxes) > 1:
                total -= len(self._outboxes.popitem(last=False)[1])  # least recently built

    def clear(self) -> None:
        with self._lock:
            self._outboxes.clear()


# Used by builds that do not pass their own: the daemon rebuilds the same outbox after every job.
SHARED_CACHE = CardCache()


def _look(path: str, name: str, cache: CardCache | None) -> Sidecar | None:
    """Read one sidecar: its time line, or the whole card when there is no time line."""
    if cache is not None:
        cache.reads += 1
    raw, st = _read_raw(path)
    if st is None:
        return None  # unreadable now; not remembered, so the next build tries again
    if raw is None:  # oversized: never ours, and not worth reading again while unchanged
        return Sidecar(_stamp(st), st.st_size, None, parsed=True)
    quick = quick_time(name, raw)
    if quick is not None:
        return Sidecar(_stamp(st), st.st_size, quick, parsed=False)
    card = parse_card(Path(path), raw, mtime=st.st_mtime)
    return Sidecar(_stamp(st), st.st_size, None, parsed=True, card=card)


def _parsed(path: Path, sidecar: Sidecar, cache: CardCache | None) -> Sidecar:
    """`sidecar` with its card, reading the file again unless a parse is already known."""
    if sidecar.parsed:
        return sidecar
    if cache is not None:
        cache.reads += 1
    raw, st = _read_raw(path)
    if raw is None or st is None:  # counted as broken this time, but read again next build
        return Sidecar(_UNREAD, sidecar.size, sidecar.quick, parsed=True)
    card = parse_card(path, raw, mtime=st.st_mtime)
    # The stamp of what was read: a file changed since the listing is read again next build.
    return Sidecar(_stamp(st), st.st_size, sidecar.quick, parsed=True, card=card)


def _newest_first(cards: Iterable[Card]) -> list[Card]:
    return sorted(cards, key=lambda c: (-c.sort_time, c.sidecar))


def read_cards(
    outbox: Path, *, limit: int | None = None, cache: CardCache | None = None
) -> tuple[list[Card], int]:
    """The newest `limit` (default: all) cards, newest first, and how many cards there are in all.

    Sidecars whose time line can be read off directly are parsed only when they are among the
    newest; older ones are counted, not parsed, so a broken one among them still counts. With a
    `cache`, unchanged sidecars are not read again; the result is the same as without one.
    """
    known = cache.known(outbox) if cache is not None else {}
    seen: dict[str, Sidecar] = {}
    for entry, st in _scan(outbox):
        sidecar = known.get(entry.name)
        if sidecar is None or sidecar.stamp != _stamp(st):
            sidecar = _look(entry.path, entry.name, cache)
        if sidecar is not None:
            seen[entry.name] = sidecar
    direct = [(n, _parsed(outbox / n, s, cache)) for n, s in seen.items() if s.quick is None]
    pending = sorted(
        ((n, s) for n, s in seen.items() if s.quick is not None),
        key=lambda p: (-(p[1].quick or 0.0), p[0]),
    )
    want = len(direct) + len(pending) if limit is None else max(limit, 0)
    checked, rejected = _parse_newest(outbox, pending, want, cache)
    good = [s.card for _, s in direct if s.card is not None]
    chosen = [s.card for _, s in checked if s.card is not None]
    if cache is not None:
        cache.store(outbox, checked + direct + pending[len(checked) :])
    return _newest_first(good + chosen)[:want], len(good) + len(pending) - rejected


def _parse_newest(
    outbox: Path, pending: list[tuple[str, Sidecar]], want: int, cache: CardCache | None
) -> tuple[list[tuple[str, Sidecar]], int]:
    """Parse pending sidecars newest first until `want` of them are good; also count the bad."""
    checked: list[tuple[str, Sidecar]] = []
    good = rejected = 0
    for name, sidecar in pending:
        if good >= want:
            break
        sidecar = _parsed(outbox / name, sidecar, cache)
        checked.append((name, sidecar))
        if sidecar.card is None:
            rejected += 1
        else:
            good += 1
    return checked, rejected


# ---------------------------------------------------------------- rendering


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def image_href(file: str) -> str | None:
    """A relative URL for an image named in a sidecar; None for a path that leaves the outbox."""
    parts = file.replace("\\", "/").split("/")
    if file.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts):
        return None
    # quote() with no safe characters turns "#", "?", ":" and spaces into %xx, so a name can never
    # become a fragment, a query or a scheme such as "javascript:".
    return "/".join(quote(p, safe="") for p in parts)


def _format_when(when: datetime | None, tz: timezone | None) -> str:
    if when is None:
        return ""
    local = when.astimezone(tz)
    return (
        f'<time datetime="{_e(local.isoformat(timespec="seconds"))}">'
        f"{_e(local.strftime('%Y-%m-%d %H:%M'))}</time>"
    )


def _format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _render_picture(picture: Picture) -> str:
    href = image_href(picture.file)
    if href is None:
        return f'<p class="missing">Image outside the outbox: {_e(picture.file)}</p>'
    size = ""
    if picture.width and picture.height:
        size = f' width="{picture.width}" height="{picture.height}"'
    return (
        f'<a class="pic" href="{_e(href)}"><img src="{_e(href)}" alt="{_e(picture.file)}"'
        f'{size} loading="lazy" decoding="async"></a>'
    )


def _render_prompt(card: Card) -> str:
    parts = []
    if card.prompt is not None:
        parts.append(f'<p class="prompt">{_e(card.prompt)}</p>')
    if card.revised_prompt and card.revised_prompt != card.prompt:
        # Folded: codex's rewrite can be long, and the person's own prompt leads the card.
        parts.append(
            '<details class="fold"><summary class="label">Revised prompt</summary>'
            f'<p class="prompt revised">{_e(card.revised_prompt)}</p></details>'
        )
    return "".join(parts)


def _render_refs(card: Card) -> str:
    """The job's references as small pictures from outbox/references/, each with its name."""
    if not card.refs:
        return ""
    items = []
    for ref in card.refs:
        href = image_href(ref.thumbnail) if ref.thumbnail else None
        picture = (
            f'<img src="{_e(href)}" alt="{_e(ref.name)}" loading="lazy" decoding="async">'
            if href
            else '<span class="nothumb">no picture</span>'
        )
        items.append(
            f'<li class="ref" title="{_e(ref.name)}">{picture}<span>{_e(ref.name)}</span></li>'
        )
    return f'<p class="label">References</p><ul class="refs">{"".join(items)}</ul>'


def _render_meta(card: Card, tz: timezone | None) -> str:
    items = []
    when = _format_when(card.when, tz)
    if when:
        items.append(("Finished " if card.kind is CardKind.RESULT else "Failed ") + when)
    took = _format_seconds(card.seconds)
    if took:
        items.append(f"took {_e(took)}")
    if card.job:
        items.append(f'<span class="job">{_e(card.job)}</span>')
    if card.kind is CardKind.FAILURE and card.code is not None:
        items.append(f"exit code {card.code}")
    return f'<p class="meta">{" · ".join(items)}</p>' if items else ""


def _render_result(card: Card, tz: timezone | None) -> str:
    pictures = "".join(_render_picture(p) for p in card.pictures) or (
        '<p class="missing">No image listed in this result.</p>'
    )
    count = len(card.pictures)
    waiting = (
        f'<p class="partial">{count} of {count + card.missing} images so far: the job waits in '
        f"the inbox for the rest</p>"
        if card.missing
        else ""
    )
    return (
        f'<article class="card ok" id="{_e(card.sidecar)}">'
        f'<div class="pics" style="--n:{max(count, 1)}">{pictures}</div>'
        f'<div class="body">{waiting}{_render_prompt(card)}{_render_refs(card)}'
        f"{_render_meta(card, tz)}</div></article>"
    )


def _render_failure(card: Card, tz: timezone | None) -> str:
    words = LAYER_WORDS.get(card.layer or "")
    badge = f"Failed: {words}" if words else "Failed"
    retry = ""
    if card.retrying:
        until = _format_when(card.retry_at, tz)
        retry = f'<span class="retry">will retry{" after " + until if until else ""}</span>'
    parts = [
        f'<article class="card failed" id="{_e(card.sidecar)}">',
        f'<div class="body"><p class="badge">{_e(badge)} {retry}</p>',
        f'<p class="message">{_e(card.message or "The job failed.")}</p>',
    ]
    if card.hint:
        parts.append(f'<p class="hint"><span class="label">What to do: </span>{_e(card.hint)}</p>')
    parts.append(
        _render_prompt(card)
        if card.prompt is not None
        else '<p class="noprompt">No prompt is known: the job file did not pass its checks.</p>'
    )
    parts.append(_render_refs(card))
    if card.detail:
        parts.append(f"<details><summary>Details</summary><pre>{_e(card.detail)}</pre></details>")
    parts.append(f"{_render_meta(card, tz)}</div></article>")
    return "".join(parts)


_CSS = """
:root{color-scheme:light dark;--bg:#f6f6f4;--card:#fff;--fg:#1d1d1f;--muted:#6b6b70;
--line:#e2e2e0;--bad:#b3261e;--badbg:#fdf0ef;--accent:#2455c3}
@media (prefers-color-scheme:dark){:root{--bg:#121214;--card:#1e1e21;--fg:#ececee;
--muted:#a0a0a8;--line:#34343a;--bad:#ff8a80;--badbg:#2c1a1a;--accent:#8fb4ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:1rem clamp(.75rem,3vw,2rem) .25rem}
h1{font-size:1.3rem;margin:0 0 .25rem}
header p{margin:.1rem 0;color:var(--muted);font-size:.9rem}
main{display:grid;gap:1rem;padding:1rem clamp(.75rem,3vw,2rem) 2rem;
grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr));align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;overflow:hidden}
.card.failed{border:2px solid var(--bad);background:var(--badbg)}
.pics{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:2px;
background:var(--line)}
.pic{display:block;background:var(--card)}
.pic img{display:block;width:100%;height:auto;max-height:70vh;object-fit:contain}
.body{padding:.75rem .9rem}
.prompt{white-space:pre-wrap;overflow-wrap:anywhere;margin:0 0 .5rem}
.revised{color:var(--muted);font-size:.92rem}
.label{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;
margin:.25rem 0 .1rem;font-weight:600}
.meta{color:var(--muted);font-size:.85rem;margin:.25rem 0 0;overflow-wrap:anywhere}
.badge{color:var(--bad);font-weight:700;margin:0 0 .35rem}
.partial{color:var(--accent);font-weight:600;margin:0 0 .35rem}
.retry{display:inline-block;margin-left:.4rem;padding:0 .45rem;border-radius:999px;
border:1px solid currentColor;font-size:.8rem;font-weight:600}
.paused{color:var(--bad);font-weight:600}
.live{color:var(--fg);font-weight:600}
.quota{color:var(--fg)}
.fold summary{cursor:pointer;display:list-item}
.message{font-weight:600;margin:0 0 .4rem;overflow-wrap:anywhere}
.hint{margin:0 0 .6rem;overflow-wrap:anywhere}
.missing{color:var(--muted);padding:.75rem .9rem;margin:0}
details{margin:0 0 .5rem;font-size:.85rem}
.noprompt{color:var(--muted);font-style:italic;margin:0 0 .5rem}
.refs{display:flex;flex-wrap:wrap;gap:.5rem;list-style:none;margin:0 0 .5rem;padding:0}
.ref{display:flex;flex-direction:column;align-items:center;gap:.15rem;width:5.5rem;
font-size:.75rem;color:var(--muted);overflow-wrap:anywhere;text-align:center}
.ref img{display:block;width:5.5rem;height:5.5rem;object-fit:cover;border-radius:6px;
border:1px solid var(--line);background:var(--card)}
.nothumb{display:flex;align-items:center;justify-content:center;width:5.5rem;height:5.5rem;
border:1px dashed var(--line);border-radius:6px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0 0;font-size:.8rem}
a{color:var(--accent)}
"""


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
    lines = [f"<p>{_e(summary)}</p>"]
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
        lines.append(f'<p class="paused">{_e(paused)}</p>')
    lines.extend(_live_lines(live, now) if live is not None else [])
    reloads = (
        f"; this page reloads every {REFRESH_SEC} s while there is work"
        if (live is not None and live.busy)
        else ""
    )
    lines.append(f"<p>Updated {_format_when(now, None)}{reloads}.</p>")
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
            took = _format_seconds(max(0.0, (now - live.job_started_at).total_seconds()))
            text += f" since {started:%H:%M:%S} ({took} when this page was built)"
        lines.append(f'<p class="live working">{_e(text)}.</p>')
    if live.pause_summary:
        text = f"Queue paused: {live.pause_summary}"
        resumes = clock_text(live.resumes_at, now=now) if live.resumes_at else None
        if resumes and resumes not in live.pause_summary:  # "image limit until 17:46" says it
            text += f", resumes {resumes}"
        lines.append(f'<p class="paused">{_e(text)}.</p>')
        if live.pause_reason and live.pause_reason != live.pause_summary:
            lines.append(f'<p class="reason">Reason: {_e(live.pause_reason)}</p>')
    if live.queue_length:
        plural = "s" if live.queue_length != 1 else ""
        lines.append(f'<p class="live queue">{live.queue_length} job{plural} queued.</p>')
    for limit in live.rate_limits:
        lines.append(f'<p class="quota">{_e(limit.name)}: {_e(limit.usage(now=now))}</p>')
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
        _render_result(c, tz) if c.kind is CardKind.RESULT else _render_failure(c, tz)
        for c in cards
    )
    busy = live is not None and live.busy
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SEC}">' if busy else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        f"{refresh}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>Outbox</title><style>{_CSS}</style></head>"
        f"<body>{_render_header(total, cards, now, live)}<main>{body}</main></body></html>\n"
    )


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


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the page is for any local reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        _write_atomically(path, page.encode("utf-8", "replace"))
    except OSError as exc:
        raise OutboxUnwritable(
            f"The gallery could not be written to {path}: {exc.strerror or exc}."
        ) from exc
    return path
