"""When is a job complete? The settle rules, without threads or observers.

A job is ready when its file and its sibling images (and the references it names) kept the same
size and modification time for the settle time, it is not an iCloud placeholder, and its YAML
parses. A job that arrived complete (moved in, or closed after writing, as observer events
report) and is unchanged since is ready at once instead. `Settler` is driven by listings, those
arrival facts and a clock, so the rules are testable on a fake one.
"""

from __future__ import annotations

import enum
import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon import files, yaml_text
from daemon.job.names import is_job_file, is_litter, job_name, named_references, sibling_owners
from daemon.job.parse import MAX_JOB_BYTES
from daemon.logs import get_logger
from daemon.watching.icloud import icloud_stub_target, is_icloud_placeholder

_log = get_logger()

# File timestamps come from the kernel's coarse clock, up to a scheduler tick behind time_ns().
_TIMESTAMP_LAG_NS = 20_000_000

# A held-back file is looked at again once its change time clears the lag, plus this margin for
# the time between reading the clock and listing.
_ADMIT_MARGIN_SEC = 0.005

# A change time that stays ahead of our clock (a file server's clock on a network mount) must not
# hold a file back forever: it is admitted after this long. It also spaces the forced admission
# well beyond the lag, so older files missed by the first listing are admitted with it.
_HOLD_LIMIT_SEC = 0.5

# A job that arrived complete is taken this long after the event was noted, not at once: the
# events of a writer that closed and reopened it at once (an editor's second write) are still on
# their way through the observer's threads, and must reach the settler before it decides.
ARRIVAL_QUIET_SEC = 0.1

Signature = tuple[tuple[str, int, int] | tuple[str, None, None], ...]


class Arrival(enum.Enum):
    """What the last observer event about a name in the inbox root says of its content."""

    COMPLETE = "complete"
    """Moved (renamed) in, or closed after writing: whole at that moment."""

    CHANGED = "changed"
    """Created, written, truncated, deleted or moved away: it may still be changing."""

    TOUCHED = "touched"
    """Only its attributes changed (`shutil.copy`'s chmod after the close): what was noted of
    its content before stands; a new mtime still shows in the size and mtime comparison."""


@dataclass(frozen=True, slots=True)
class _Noted:
    """The last arrival fact about a name, when the settler got it, and what stat saw then."""

    complete: bool
    at: float
    stat: tuple[int, int] | None


class JobState(enum.Enum):
    """Where a job seen in the inbox stands before it is handed over."""

    SETTLING = "settling"
    """It or one of its references changed recently, or it does not parse yet."""

    WAITING = "waiting"
    """An iCloud placeholder or a missing explicit reference: its bytes are not here yet."""

    READY = "ready"
    """Complete: the next `get()` may hand it over."""


@dataclass(frozen=True, slots=True)
class Listing:
    """One look at the inbox root: job files, and image siblings per job name."""

    jobs: frozenset[str]
    siblings: dict[str, tuple[str, ...]]
    evicted: frozenset[str]

    @classmethod
    def of(cls, names: Iterable[str]) -> Listing:
        """Classify the entry names of the inbox root."""
        jobs: set[str] = set()
        evicted: set[str] = set()
        siblings: dict[str, list[str]] = {}
        for name in names:
            target = icloud_stub_target(name)
            if target is not None and not is_litter(target):
                evicted.add(target)
                name = target
            elif is_litter(name):
                continue
            if is_job_file(name) and target is None:
                jobs.add(name)
            for owner in sibling_owners(name):
                siblings.setdefault(owner, []).append(name)
        frozen = {owner: tuple(sorted(set(found))) for owner, found in siblings.items()}
        return cls(frozenset(jobs), frozen, frozenset(evicted))

    def siblings_of(self, job: str) -> tuple[str, ...]:
        """Sibling image names of a job file name, present or evicted."""
        return self.siblings.get(job_name(Path(job)), ())


@dataclass(slots=True)
class _Candidate:
    """A job file seen in the inbox root and not handed over yet (mutable bookkeeping)."""

    name: str
    seen_at: float
    stable_since: float
    ctime_ns: int = 0
    admit_at: float | None = None
    """While held back: when a listing will admit it (see Settler._admit)."""
    due: float | None = None
    """When a look may next change its state without any event (None: only events or rechecks)."""
    signature: Signature = ()
    parsed: tuple[int, int] | None = None
    parses: bool = False
    refs: tuple[str, ...] = ()
    state: JobState = JobState.SETTLING
    notes: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Look:
    """What stat saw of a job and its references this tick."""

    signature: Signature
    job_stat: tuple[int, int] | None
    evicted: bool
    refs_missing: bool
    ctimes: dict[str, int]


def _parse(path: Path) -> tuple[bool, tuple[str, ...]]:
    """Whether the job file parses as YAML, and the explicit relative references it names."""
    data = _read_to_parse(path)
    if not isinstance(data, bytes):
        return data, ()
    try:
        document = yaml_text.load(data)
    except (yaml.YAMLError, RecursionError):
        return False, ()
    return True, named_references(document)


def _read_to_parse(path: Path) -> bytes | bool:
    """The job file's bytes, or instead whether it may be handed over unread.

    True for a file the pipeline refuses with an error sidecar: a link out of the inbox (not
    read), a FIFO or a device, a file too big to be a job. False while it cannot be read, or is
    empty: some clients create the file empty and fill it later.
    """
    if not files.inside(path, path.parent):
        return True
    try:
        data = files.read_regular(path, limit=MAX_JOB_BYTES)
    except files.NotRegularFile:
        return True
    except OSError:
        return False
    if not data.strip():
        return False
    return True if len(data) > MAX_JOB_BYTES else data


class Settler:
    """Decides which jobs are complete; not thread-safe (InboxWatcher holds a lock around it).

    A job is READY when it and its references kept the same (size, mtime_ns) for `settle_sec`
    and it parses as YAML; one that still does not parse, or whose explicit references are still
    missing, is handed over `grace_sec` after it stopped changing, so the pipeline reports why.

    It is READY sooner, a moment after the fact was noted (see `_quick_at`), when it parses and
    every file of it arrived complete and is unchanged since: the job file and each sibling
    image by an `Arrival.COMPLETE` fact whose (size, mtime_ns) is still what stat sees, and a
    reference no event was noted for by an inode change time at least `settle_sec` old.
    """

    def __init__(
        self,
        inbox: Path,
        *,
        settle_sec: float,
        grace_sec: float,
        stat: Callable[[Path], os.stat_result] = os.stat,
        log: Any = _log,
    ) -> None:
        self.inbox = inbox
        self.settle_sec = settle_sec
        self.grace_sec = grace_sec
        self._stat = stat
        self._log = log
        self._candidates: dict[str, _Candidate] = {}  # insertion order is arrival order
        self._delivered: set[str] = set()
        self._held: dict[str, _Candidate] = {}  # seen, not queued yet: see _admit
        self._noted: dict[str, _Noted] = {}  # arrival facts about names in the inbox root

    def update(
        self,
        names: Iterable[str],
        now: float,
        *,
        listed_at_ns: int | None = None,
        arrivals: Mapping[str, Arrival] | None = None,
    ) -> None:
        """Take a fresh listing of the inbox root and re-check every waiting job.

        `listed_at_ns` is the wall-clock time (time.time_ns) just before the listing was read;
        without it, every new job file in `names` is admitted at once. `now` should be read
        after the listing, so that a job is never thought stable for longer than it was seen.
        `arrivals` are the facts observer events gave since the last update, the last per name
        (read before the listing); each replaces what was noted of that name before.
        """
        names = list(names)
        listing = Listing.of(names)
        present = set(names)
        self._noted = {name: noted for name, noted in self._noted.items() if name in present}
        for name, arrival in (arrivals or {}).items():
            if arrival is Arrival.TOUCHED:
                continue
            stat = self._size_mtime(name) if arrival is Arrival.COMPLETE else None
            self._noted[name] = _Noted(stat is not None, now, stat)
        self._delivered &= listing.jobs  # a handed-over job that left may come back as new
        for pending in (self._candidates, self._held):
            for name in [n for n in pending if n not in listing.jobs]:
                del pending[name]
                self._log.info("job.dropped", job=name, reason="gone before it was taken")
        self._admit(listing, now, listed_at_ns)
        for candidate in (*self._candidates.values(), *self._held.values()):
            self._check(candidate, listing, now, listed_at_ns)

    def next_due(self) -> float | None:
        """The earliest time (on the clock `update` is given) a look may make progress by itself:
        a job's settle time or grace running out, or a held-back file's admission. None when no
        job waits for a time; changes are noticed by events and periodic rechecks instead."""
        times = [c.due for c in self._candidates.values()]
        for held in self._held.values():
            times += [held.due, held.admit_at]
        return min((t for t in times if t is not None), default=None)

    def take(self) -> Path | None:
        """Hand over the earliest-arrived READY job, or None when none is ready."""
        for name, candidate in self._candidates.items():
            if candidate.state is JobState.READY:
                del self._candidates[name]
                self._delivered.add(name)
                return self.inbox / name
        return None

    def done(self, path: Path) -> None:
        """Forget a handed-over job: if it is (still or again) in the inbox, it is new."""
        self._delivered.discard(path.name)

    @property
    def busy(self) -> bool:
        """True while some job waits, so the inbox must be looked at again soon."""
        return bool(self._candidates or self._held)

    def _admit(self, listing: Listing, now: float, listed_at_ns: int | None) -> None:
        """Queue new job files in arrival order: by inode change time, then name.

        A file whose change time is not clearly before the listing began may have been created
        while it ran, with older siblings not returned by it (directory order is hash order on
        ext4): it is held back until a listing that began after its change time cleared the lag,
        which returns every older file too. Held files are checked meanwhile, so the wait does
        not add to their settle time.
        """
        for name in listing.jobs:
            if name in self._candidates or name in self._held or name in self._delivered:
                continue
            ctime = self._ctime(name)
            self._held[name] = _Candidate(name, seen_at=now, stable_since=now, ctime_ns=ctime)
        cutoff = 2**63 if listed_at_ns is None else listed_at_ns - _TIMESTAMP_LAG_NS
        admitted = [
            held
            for held in self._held.values()
            if held.ctime_ns < cutoff or now - held.seen_at >= _HOLD_LIMIT_SEC
        ]
        floor = float("-inf")
        for candidate in sorted(admitted, key=lambda c: (c.ctime_ns, c.name)):
            # Not stable before an older file admitted with it, which this listing saw first:
            # otherwise it could be ready, and handed over, a pass before that one.
            floor = candidate.stable_since = max(floor, candidate.stable_since)
            del self._held[candidate.name]
            self._candidates[candidate.name] = candidate
            self._log.debug("job.seen", job=candidate.name)
        for candidate in self._held.values():
            clears = now + max((candidate.ctime_ns - cutoff) / 1e9, 0.0) + _ADMIT_MARGIN_SEC
            candidate.admit_at = min(clears, candidate.seen_at + _HOLD_LIMIT_SEC)

    def _size_mtime(self, name: str) -> tuple[int, int] | None:
        try:
            st = self._stat(self.inbox / name)
        except OSError:
            return None  # gone already: nothing arrived
        return (st.st_size, st.st_mtime_ns)

    def _ctime(self, name: str) -> int:
        try:
            return self._stat(self.inbox / name).st_ctime_ns
        except OSError:
            return 0  # gone already: the next listing drops it

    def _check(
        self, candidate: _Candidate, listing: Listing, now: float, listed_at_ns: int | None
    ) -> None:
        """Move one job between SETTLING, WAITING and READY."""
        look = self._look(candidate, listing)
        if self._waits(candidate, look, now, listed_at_ns):
            return
        if candidate.parsed != look.job_stat:
            look = self._read(candidate, look, listing)
            if self._waits(candidate, look, now, listed_at_ns):
                return
        self._decide(candidate, look, now)

    def _waits(
        self, candidate: _Candidate, look: _Look, now: float, listed_at_ns: int | None
    ) -> bool:
        """Whether the job must wait still (its state and due time set): it changed, is not
        downloaded, or neither its settle time has passed nor may it be taken at once."""
        quick_at = self._quick_at(candidate, look, listed_at_ns)
        if self._changed(candidate, look, now):
            if quick_at is None:
                return True
            candidate.due = min(now + self.settle_sec, quick_at)
            if now < quick_at:
                return True
        elif look.evicted:
            candidate.stable_since, candidate.due = now, None  # once downloaded, it still settles
            self._set_state(candidate, JobState.WAITING, note="job.not_downloaded")
            return True
        ready_at = candidate.stable_since + self.settle_sec
        if quick_at is not None:
            ready_at = min(ready_at, quick_at)
        if now < ready_at:
            candidate.due = ready_at
            self._set_state(candidate, JobState.SETTLING)  # its settle time may have moved later
            return True
        return False

    def _quick_at(
        self, candidate: _Candidate, look: _Look, listed_at_ns: int | None
    ) -> float | None:
        """When the job may be taken without waiting for its settle time, or None.

        Every file of it must have arrived complete and be unchanged since. The job file and
        any other file noted by an event need a COMPLETE fact that saw what stat sees now; a
        reference with no fact (in a subfolder, or there before the watch began) must not have
        changed for `settle_sec`, by its inode change time against the listing's start, which no
        writer sets back. The time is a moment after the newest fact, for events still on their
        way (see ARRIVAL_QUIET_SEC).
        """
        if look.job_stat is None or look.evicted or look.refs_missing:
            return None
        newest = float("-inf")
        for name, size, mtime in look.signature:
            noted = self._noted.get(name)
            if noted is not None:
                if not noted.complete or noted.stat != (size, mtime):
                    return None
                newest = max(newest, noted.at)
            elif name == candidate.name or not self._settled_before(look, name, listed_at_ns):
                return None
        return newest + ARRIVAL_QUIET_SEC

    def _settled_before(self, look: _Look, name: str, listed_at_ns: int | None) -> bool:
        """Whether the file's inode last changed at least `settle_sec` before the listing."""
        if listed_at_ns is None or name not in look.ctimes:
            return False
        return look.ctimes[name] <= listed_at_ns - self.settle_sec * 1e9

    def _changed(self, candidate: _Candidate, look: _Look, now: float) -> bool:
        """Restart the settle time when the job or a reference changed, or the job is no file."""
        if look.signature == candidate.signature and look.job_stat is not None:
            return False
        candidate.signature, candidate.stable_since = look.signature, now
        candidate.due = now + self.settle_sec
        self._set_state(candidate, JobState.SETTLING)
        return True

    def _read(self, candidate: _Candidate, look: _Look, listing: Listing) -> _Look:
        """Parse a settled job file, then look again within the same pass.

        A change while it was read, or references it newly names, restart the settle time now
        rather than a pass later; otherwise the job can be decided on at once.
        """
        candidate.parsed = look.job_stat
        candidate.parses, candidate.refs = _parse(self.inbox / candidate.name)
        return self._look(candidate, listing)

    def _decide(self, candidate: _Candidate, look: _Look, now: float) -> None:
        """A settled job: READY, unless it does not parse or lacks references and grace remains.

        One taken at once before its settle time must parse; else the settle rules apply.
        """
        settled_at = candidate.stable_since + self.settle_sec
        if now < settled_at and not candidate.parses:
            candidate.due = settled_at
            self._set_state(candidate, JobState.SETTLING)
            return
        overdue_at = candidate.stable_since + self.grace_sec
        overdue = now >= overdue_at
        candidate.due = None if overdue else overdue_at
        if not candidate.parses and not overdue:
            self._set_state(candidate, JobState.SETTLING, note="job.unparsable")
        elif look.refs_missing and not overdue:
            self._set_state(candidate, JobState.WAITING, note="job.references_missing")
        else:
            candidate.due = None  # edits are seen by events and rechecks, not by the clock
            self._set_state(candidate, JobState.READY)

    def _look(self, candidate: _Candidate, listing: Listing) -> _Look:
        """Stat the job file, its sibling images and its explicit references."""
        signature: list[Any] = []
        job_stat: tuple[int, int] | None = None
        evicted = missing = False
        ctimes: dict[str, int] = {}
        siblings = listing.siblings_of(candidate.name)
        for name in (candidate.name, *siblings, *candidate.refs):
            path = self.inbox / name
            try:
                st = self._stat(path)
            except OSError:
                signature.append((name, None, None))
                missing = missing or name in candidate.refs
                evicted = evicted or name in listing.evicted
                continue
            if name == candidate.name and not stat_mod.S_ISDIR(st.st_mode):
                # Not only regular files: a FIFO must settle too, to be refused with a sidecar.
                job_stat = (st.st_size, st.st_mtime_ns)
            evicted = evicted or is_icloud_placeholder(path, st)
            signature.append((name, st.st_size, st.st_mtime_ns))
            ctimes[name] = st.st_ctime_ns
        return _Look(tuple(signature), job_stat, evicted, missing, ctimes)

    def _set_state(self, candidate: _Candidate, state: JobState, *, note: str = "") -> None:
        if candidate.state is not state:
            if candidate.state is JobState.READY:  # edited before it was taken: it waits again
                self._log.debug("job.changed", job=candidate.name, state=state.value)
            candidate.state = state
            candidate.notes.clear()
        if note and note not in candidate.notes:
            candidate.notes.add(note)
            self._log.info(note, job=candidate.name, state=state.value)
        if state is JobState.READY and "ready" not in candidate.notes:
            candidate.notes.add("ready")
            self._log.debug("job.ready", job=candidate.name)
