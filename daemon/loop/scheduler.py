"""What the loop does next, decided from data and a clock: no threads, no files, no signals.

The queue holds the job files the watcher handed over, in arrival order; a job that failed for
a passing reason waits its backoff there. A pause (login, limit, network, full disk) holds the
whole queue until a time, which a reset time codex names decides, or else a doubling backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon.config import RetryConfig
from daemon.errors import InboxError, NetworkDown, NotLoggedIn, OutboxUnwritable, UsageLimit
from daemon.loop.backoff import doubling, retry_delay

# With nothing due the loop waits at most this long between looks while jobs wait or a pause
# lasts: a pause can end early (a login, a disk with room again) and is looked at this often.
TICK_SEC = 0.5
# With nothing queued the loop only waits for the watcher; a stop request wakes it at once
# (the heartbeat stops the watcher), so long waits cost no responsiveness, only idle CPU.
IDLE_WAIT_SEC = 5.0
# How long a pause lasts when codex gives no time: doubling from the first value up to the cap.
PAUSE_FIRST_SEC: dict[type[InboxError], float] = {
    NetworkDown: 10.0,
    NotLoggedIn: 60.0,
    UsageLimit: 300.0,
}
PAUSE_DEFAULT_FIRST_SEC = 30.0
PAUSE_MAX_SEC = 900.0
# A disk-full pause ends early once a test write succeeds; the tests double in spacing along
# with the pauses, since a disk with some room but not enough passes the test and fails the
# job's real write again.
PROBE_FIRST_SEC = 1.0


@dataclass
class Queued:
    """A job handed over by the watcher and not finished yet (waiting, retrying or paused)."""

    path: Path
    attempts: int = 0
    not_before: float = 0.0  # clock time before which it does not run (its retry backoff)


@dataclass(frozen=True, slots=True)
class Pause:
    """The queue holds still until `until` (clock time), or until the loop sees it can end."""

    error: InboxError
    until: float
    probe_every: float  # spacing of the test writes that may end a disk-full pause early

    @property
    def resumes_at(self) -> datetime:
        return datetime.fromtimestamp(self.until).astimezone()

    @property
    def probes_disk(self) -> bool:
        return isinstance(self.error, OutboxUnwritable)


class Scheduler:
    """The queue, the retries and the pauses; `clock` gives the time in seconds (Unix time,
    so that a reset time codex names can be compared with it)."""

    def __init__(self, retry: RetryConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.retry = retry  # replaced on a reload
        self._clock = clock
        self._queue: list[Queued] = []
        self._pause: Pause | None = None
        self._probe_at = 0.0
        self._streak = 0  # consecutive pauses without a job getting through: their backoff
        self._stopped = False

    # --- the queue ----------------------------------------------------------------------

    def add(self, path: Path) -> bool:
        """Queue a handed-over job; False when it is queued already (the watcher hands a job
        put back in the inbox for a retry over again)."""
        if self._find(path) is not None:
            return False
        self._queue.append(Queued(path))
        return True

    def drop(self, path: Path) -> None:
        """The job is finished (or its file gone): it leaves the queue."""
        entry = self._find(path)
        if entry is not None:
            self._queue.remove(entry)

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def final_attempt(self, path: Path) -> bool:
        """Whether the job's next try is its last one: a passing failure then fails it."""
        entry = self._find(path)
        attempts = entry.attempts if entry is not None else 0
        return attempts + 1 >= self.retry.attempts

    def retry_later(self, path: Path) -> float:
        """The job failed for a passing reason: it runs again after its backoff (returned)."""
        entry = self._find(path)
        assert entry is not None, path
        entry.attempts += 1
        delay = retry_delay(self.retry, entry.attempts)
        entry.not_before = self._clock() + delay
        return delay

    def due(self) -> Path | None:
        """The job to run now: the first in arrival order whose backoff is over. None while
        paused, after a stop, or when every queued job still waits."""
        if self._stopped or self._pause is not None:
            return None
        now = self._clock()
        return next((q.path for q in self._queue if q.not_before <= now), None)

    def sleep_time(self) -> float:
        """How long the loop may wait for the watcher before something here falls due."""
        if self._pause is not None:
            return TICK_SEC
        now = self._clock()
        waits = [q.not_before - now for q in self._queue]
        waits.append(TICK_SEC if self._queue else IDLE_WAIT_SEC)
        return max(0.01, min(waits))

    def stop(self) -> None:
        """No further job runs; the queue is kept (its files wait in the inbox)."""
        self._stopped = True

    # --- pauses -------------------------------------------------------------------------

    @property
    def pause(self) -> Pause | None:
        return self._pause

    def pause_for(self, error: InboxError) -> Pause:
        """Hold the queue: until the reset time the error names, else for a backoff that
        doubles with each pause in a row (by the nearest listed class: an ImageLimit backs
        off like any UsageLimit)."""
        self._streak += 1
        now = self._clock()
        first = next(
            (PAUSE_FIRST_SEC[c] for c in type(error).__mro__ if c in PAUSE_FIRST_SEC),
            PAUSE_DEFAULT_FIRST_SEC,
        )
        wait = doubling(first, self._streak, cap=PAUSE_MAX_SEC)
        if error.retry_at is not None:
            wait = max(1.0, error.retry_at.timestamp() - now)
        probe_every = doubling(PROBE_FIRST_SEC, self._streak, cap=PAUSE_MAX_SEC)
        self._pause = Pause(error, now + wait, probe_every)
        self._probe_at = now + probe_every
        return self._pause

    def pause_expired(self) -> bool:
        return self._pause is not None and self._clock() >= self._pause.until

    def probe_due(self) -> bool:
        """Whether a disk-full pause should test the disk now; the next test is then due one
        spacing later."""
        if self._pause is None or not self._pause.probes_disk:
            return False
        now = self._clock()
        if now < self._probe_at:
            return False
        self._probe_at = now + self._pause.probe_every
        return True

    def resume(self) -> None:
        self._pause = None

    def got_through(self) -> None:
        """A job ended other than by a pause: the next pause starts from the first backoff."""
        self._streak = 0

    def _find(self, path: Path) -> Queued | None:
        return next((q for q in self._queue if q.path == path), None)
