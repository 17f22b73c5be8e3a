"""Which sidecars an outbox holds, read as cheaply as a build allows: a time line first, the
whole card only for those the page shows, and nothing again while a file is unchanged.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.files import ERROR_SUFFIX, RESULT_SUFFIX
from daemon.outbox.cards import Card, parse_card, quick_time

# A sidecar holds a prompt of at most 1 MiB plus a few fields; anything far larger is not ours.
MAX_SIDECAR_BYTES = 4 * 1024 * 1024

Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns of one file version
_UNREAD: Stamp = (-1, -1, -1, -1)  # matches no file: the sidecar is read again next build


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_sidecar(path: str | Path) -> tuple[bytes | None, os.stat_result | None]:
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


# How a build reads one sidecar file: `read_sidecar`, or a test's counting wrapper around it.
Reader = Callable[[str | Path], tuple[bytes | None, os.stat_result | None]]


def _is_sidecar_name(name: str) -> bool:
    return name.endswith((RESULT_SUFFIX, ERROR_SUFFIX)) and not name.startswith(".")


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


# Used by builds that do not pass their own: the daemon rebuilds the same outbox after every job.
SHARED_CACHE = CardCache()


def _look(path: str, name: str, read: Reader) -> Sidecar | None:
    """Read one sidecar: its time line, or the whole card when there is no time line."""
    raw, st = read(path)
    if st is None:
        return None  # unreadable now; not remembered, so the next build tries again
    if raw is None:  # oversized: never ours, and not worth reading again while unchanged
        return Sidecar(_stamp(st), st.st_size, None, parsed=True)
    quick = quick_time(name, raw)
    if quick is not None:
        return Sidecar(_stamp(st), st.st_size, quick, parsed=False)
    card = parse_card(name, raw, mtime=st.st_mtime)
    return Sidecar(_stamp(st), st.st_size, None, parsed=True, card=card)


def _parsed(path: Path, sidecar: Sidecar, read: Reader) -> Sidecar:
    """`sidecar` with its card, reading the file again unless a parse is already known."""
    if sidecar.parsed:
        return sidecar
    raw, st = read(path)
    if raw is None or st is None:  # counted as broken this time, but read again next build
        return Sidecar(_UNREAD, sidecar.size, sidecar.quick, parsed=True)
    card = parse_card(path.name, raw, mtime=st.st_mtime)
    # The stamp of what was read: a file changed since the listing is read again next build.
    return Sidecar(_stamp(st), st.st_size, sidecar.quick, parsed=True, card=card)


def _newest_first(cards: Iterable[Card]) -> list[Card]:
    return sorted(cards, key=lambda c: (-c.sort_time, c.sidecar))


def read_cards(
    outbox: Path,
    *,
    limit: int | None = None,
    cache: CardCache | None = None,
    read: Reader = read_sidecar,
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
            sidecar = _look(entry.path, entry.name, read)
        if sidecar is not None:
            seen[entry.name] = sidecar
    direct = [(n, _parsed(outbox / n, s, read)) for n, s in seen.items() if s.quick is None]
    pending = sorted(
        ((n, s) for n, s in seen.items() if s.quick is not None),
        key=lambda p: (-(p[1].quick or 0.0), p[0]),
    )
    want = len(direct) + len(pending) if limit is None else max(limit, 0)
    checked, rejected = _parse_newest(outbox, pending, want, read)
    good = [s.card for _, s in direct if s.card is not None]
    chosen = [s.card for _, s in checked if s.card is not None]
    if cache is not None:
        cache.store(outbox, checked + direct + pending[len(checked) :])
    return _newest_first(good + chosen)[:want], len(good) + len(pending) - rejected


def _parse_newest(
    outbox: Path, pending: list[tuple[str, Sidecar]], want: int, read: Reader
) -> tuple[list[tuple[str, Sidecar]], int]:
    """Parse pending sidecars newest first until `want` of them are good; also count the bad."""
    checked: list[tuple[str, Sidecar]] = []
    good = rejected = 0
    for name, sidecar in pending:
        if good >= want:
            break
        sidecar = _parsed(outbox / name, sidecar, read)
        checked.append((name, sidecar))
        if sidecar.card is None:
            rejected += 1
        else:
            good += 1
    return checked, rejected
