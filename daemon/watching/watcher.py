"""Turns inbox activity into complete job files, in arrival order, each once while it is there.

Observer handlers only note names that may have changed, and whether the event says the file
arrived complete (moved in, or closed after writing); one settle thread lists the inbox, lets
`settle.Settler` decide when a job is complete, and keeps the queue `get()` takes from.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.job.names import is_litter
from daemon.logs import get_logger
from daemon.watching.icloud import icloud_stub_target
from daemon.watching.settle import Arrival, Settler

_log = get_logger()

# Passes over the inbox start at least this far apart, and this many times what the last one
# took: a storm of events (a burst of copies, a slow writer) cannot keep the thread busy.
_MIN_PASS_GAP_SEC = 0.01
_PASS_GAP_FACTOR = 4

# Only inotify's events are taken as arrival facts: macOS FSEvents coalesces events and may deliver
# them late, and polling sees only snapshots, so there every job waits for its settle time.
_NATIVE_ARRIVALS = sys.platform.startswith("linux")

# Why the native observer could not start, and what the user can do about it.
_NATIVE_FAILURE_HINTS = {
    errno.ENOSPC: "inotify watch limit reached: raise fs.inotify.max_user_watches "
    "(sysctl -w fs.inotify.max_user_watches=524288)",
    errno.EMFILE: "inotify instance limit reached: raise fs.inotify.max_user_instances "
    "(sysctl -w fs.inotify.max_user_instances=1024)",
    errno.ENFILE: "the system is out of file handles: raise fs.file-max",
    errno.ENOSYS: "this system has no native file watching",
}


class _Hints:
    """Names that may have changed, with what the last event said of each, noted by observer
    threads and drained by the settle loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, Arrival] = {}
        self.changed = threading.Event()

    def note(self, name: str, arrival: Arrival = Arrival.CHANGED) -> None:
        with self._lock:
            if arrival is not Arrival.TOUCHED or name not in self._names:
                self._names.pop(name, None)  # the last event about the content decides
                self._names[name] = arrival
            self.changed.set()

    def drain(self) -> dict[str, Arrival]:
        with self._lock:
            names, self._names = self._names, {}
            self.changed.clear()
            return names


INBOX_ITSELF = ""  # the hint noted when the watched folder itself was deleted or moved


class _Handler(FileSystemEventHandler):
    """Notes the inbox-root names an event touches; moves count for both ends.

    With `arrivals`, a file closed after writing, or the destination of a move, is noted as
    having arrived complete; anything else as changed. Without, every name is only changed.
    """

    _READS = (FileOpenedEvent, FileClosedNoWriteEvent)  # our own reads of job files

    def __init__(self, watched: str, hints: _Hints, *, arrivals: bool) -> None:
        self._watched = watched
        self._hints = hints
        self._arrivals = arrivals

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, self._READS):
            return
        for raw, arrival in self._ends(event):
            path = os.fsdecode(raw)
            if path == self._watched and event.is_directory and event.event_type != "modified":
                self._hints.note(INBOX_ITSELF)
            elif path and os.path.dirname(path) == self._watched:
                name = os.path.basename(path)
                if not is_litter(name) or icloud_stub_target(name):
                    self._hints.note(name, arrival)

    def _ends(self, event: FileSystemEvent) -> list[tuple[bytes | str, Arrival]]:
        """The paths an event touches, each with what it says of that file's content."""
        complete = Arrival.COMPLETE if self._arrivals else Arrival.CHANGED
        if isinstance(event, FileMovedEvent):  # the source is "" for a move in from outside
            return [(event.src_path, Arrival.CHANGED), (event.dest_path, complete)]
        if isinstance(event, FileClosedEvent):
            return [(event.src_path, complete)]
        if isinstance(event, FileAttribEvent):
            return [(event.src_path, Arrival.TOUCHED)]
        return [
            (event.src_path, Arrival.CHANGED),
            (getattr(event, "dest_path", ""), Arrival.CHANGED),
        ]


def _native_observer() -> BaseObserver:
    """The platform's observer; on Linux one that reports a file moved in from outside the inbox
    as a move (from ""), not as a creation, so that it counts as arrived complete."""
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    return Observer()


def _polling_observer(interval: float) -> BaseObserver:
    return PollingObserver(timeout=interval)


class InboxWatcher:
    """Watches one inbox folder and hands over complete job files, oldest arrival first.

    Threads: the watchdog observer's own threads only note names; one settle thread (started by
    `start()`, joined by `stop()`) lists the inbox, checks jobs and keeps the queue. `get()`
    and `done()` may be called from any thread.
    """

    def __init__(
        self,
        inbox: Path,
        *,
        settle_sec: float = 2.0,
        rescan_sec: float = 60.0,
        polling: bool = False,
        grace_sec: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[Path], os.stat_result] = os.stat,
        listdir: Callable[[Path], list[str]] = os.listdir,
        wall_clock: Callable[[], int] = time.time_ns,
        native_observer: Callable[[], BaseObserver] = _native_observer,
        polling_observer: Callable[[float], BaseObserver] = _polling_observer,
        log: Any = _log,
    ) -> None:
        self.inbox = Path(inbox)
        self.settle_sec = settle_sec
        self.rescan_sec = rescan_sec
        self.polling = polling
        self._clock = clock
        self._stat = stat
        self._listdir = listdir
        self._wall_clock = wall_clock
        self._native_observer = native_observer
        self._polling_observer = polling_observer
        self._log = log.bind(inbox=str(self.inbox))
        grace = grace_sec if grace_sec is not None else max(10.0, 5 * settle_sec)
        self._settler = Settler(
            self.inbox, settle_sec=settle_sec, grace_sec=grace, stat=stat, log=self._log
        )
        # While jobs wait, each is looked at again at least this often: reference folders raise
        # no events, and events can be lost. Settle times are met by waking when they fall due.
        self._recheck_sec = min(max(settle_sec / 4, 0.05), 0.5)
        self._last_pass = float("-inf")
        self._pass_gap = _MIN_PASS_GAP_SEC
        self._check_sec = min(rescan_sec, 1.0)
        self._cond = threading.Condition()
        self._hints = _Hints()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None
        self._next_check = self._next_rescan = 0.0
        self._last_problem = ""
        self._present: bool | None = None

    @property
    def observer_kind(self) -> str | None:
        """Which observer runs: `native` or `polling`; None while the inbox is missing."""
        if self._observer is None:
            return None
        return "polling" if self.polling else "native"

    def start(self) -> None:
        """Start watching: observer, initial scan, settle thread. Raises RuntimeError if reused."""
        if self._thread is not None:
            raise RuntimeError("InboxWatcher.start() called twice")
        self._tick()  # the start-up scan: jobs already there are seen before start() returns
        self._thread = threading.Thread(target=self._run, name="inbox-settle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every thread this watcher started and wait for them; wakes blocked `get()`s."""
        self._stopping.set()
        self._hints.changed.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._stop_observer()

    def __enter__(self) -> InboxWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def get(self, timeout: float | None = None) -> Path | None:
        """The next READY job file (oldest arrival first), waiting up to `timeout` seconds.

        Returns None on timeout or once stopped. A job handed over is not handed over again
        until `done(path)` is called, or it leaves the inbox root and comes back. Raises
        RuntimeError if the settle thread died of an unexpected exception.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._stopping.is_set():
                if self._thread is not None and not self._thread.is_alive():
                    # A bug killed the settle loop: fail loudly rather than wait for jobs forever.
                    raise RuntimeError("the inbox watcher's settle thread has died")
                path = self._settler.take()
                if path is not None:
                    return path
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
        return None

    def done(self, path: Path) -> None:
        """The consumer is finished with `path`; if it is still in the inbox it is a new job."""
        with self._cond:
            self._settler.done(path)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wait_for_work()
            if not self._stopping.is_set():
                self._tick()

    def _wait_for_work(self) -> None:
        """Sleep until a hint arrives or something falls due, then keep passes apart."""
        remaining = self._next_wake() - self._clock()
        if remaining > 0:
            self._hints.changed.wait(remaining)  # stop() sets it too
        spacing = self._last_pass + self._pass_gap - self._clock()
        if spacing > 0:
            self._stopping.wait(spacing)

    def _next_wake(self) -> float:
        """The next watch-health check or rescan, a job's settle time, or its periodic recheck."""
        with self._cond:
            due = self._settler.next_due()
            busy = self._settler.busy
        wakes = [self._next_check, self._next_rescan]
        if busy:
            wakes.append(self._last_pass + self._recheck_sec)
        if due is not None and due > self._last_pass:  # else stale: that pass could not list
            wakes.append(due)
        return min(wakes)

    def _tick(self) -> None:
        """One pass: watch health, then a listing when something may have changed."""
        now = self._clock()
        hints = self._hints.drain()
        if INBOX_ITSELF in hints or now >= self._next_check:
            self._next_check = now + self._check_sec
            self._check_inbox()
        rescan = now >= self._next_rescan
        if self._identity is None or not (hints or rescan or self._settler.busy):
            return
        if rescan:
            self._next_rescan = now + self.rescan_sec
        self._look_at_inbox(hints)

    def _look_at_inbox(self, arrivals: dict[str, Arrival]) -> None:
        """List the inbox root and let the settler re-check every job; note what the pass cost."""
        started = self._last_pass = self._clock()
        listed_at_ns = self._wall_clock()
        try:
            names = self._listdir(self.inbox)
        except OSError as exc:
            self._problem("inbox.unreadable", exc)
            return
        with self._cond:
            # The clock is read after the listing: a job is never thought stable for longer
            # than it has been seen.
            self._settler.update(names, self._clock(), listed_at_ns=listed_at_ns, arrivals=arrivals)
            self._cond.notify_all()
        self._pass_gap = max(_MIN_PASS_GAP_SEC, _PASS_GAP_FACTOR * (self._clock() - started))

    def _check_inbox(self) -> None:
        """Notice the inbox missing, replaced or remounted, or the observer dead; recover."""
        try:
            st = self._stat(self.inbox)
        except OSError as exc:
            self._inbox_gone(str(exc))
            return
        if not stat_mod.S_ISDIR(st.st_mode):
            self._inbox_gone("not a folder")
            return
        self._present = True
        identity = (st.st_dev, st.st_ino)
        reason = self._restart_reason(identity)
        if reason:
            if not self._last_problem and reason != "start":  # a start is logged as "watching"
                self._log.info("watch.restarting", reason=reason)
            self._stop_observer()
            self._start_observer()
            if self._observer is not None:
                self._identity = identity
                self._next_rescan = 0.0  # look at everything: events were missed meanwhile

    def _inbox_gone(self, why: str) -> None:
        """Stop watching a vanished inbox; its jobs are gone with it. Logged once per outage."""
        if self._present is not False:
            self._log.warning("inbox.missing", error=why, waiting=True)
            self._present = False
        if self._identity is not None:
            self._stop_observer()
            self._identity = None
            with self._cond:
                self._settler.update((), self._clock())

    def _restart_reason(self, identity: tuple[int, int]) -> str:
        if self._identity is None:
            return "start" if self._thread is None else "inbox is back"
        if identity != self._identity:
            return "inbox replaced or remounted"
        observer = self._observer
        if observer is None or not observer.is_alive():
            return "observer stopped"
        return "" if all(e.is_alive() for e in list(observer.emitters)) else "observer stopped"

    def _start_observer(self) -> None:
        """Native observer unless polling is asked for or the native one cannot start."""
        watched = os.path.realpath(self.inbox)
        if not self.polling:
            try:
                self._observer = self._scheduled(self._native_observer(), watched)
                return
            except (FileNotFoundError, NotADirectoryError) as exc:
                self._problem("watch.start_failed", exc)
                return
            except OSError as exc:
                hint = _NATIVE_FAILURE_HINTS.get(exc.errno or 0, "")
                self._log.warning(
                    "watch.native_unavailable",
                    error=str(exc),
                    errno=exc.errno,
                    hint=hint,
                    fallback="polling",
                )
                self.polling = True
        try:
            interval = min(max(self.settle_sec / 2, 0.1), 1.0)
            self._observer = self._scheduled(self._polling_observer(interval), watched)
        except OSError as exc:
            self._problem("watch.start_failed", exc)

    def _scheduled(self, observer: BaseObserver, watched: str) -> BaseObserver:
        handler = _Handler(watched, self._hints, arrivals=_NATIVE_ARRIVALS and not self.polling)
        observer.schedule(handler, watched, recursive=False)
        try:
            observer.start()
        except OSError:
            observer.unschedule_all()
            raise
        self._last_problem = ""
        self._log.info("watch.started", observer="polling" if self.polling else "native")
        return observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        if observer.is_alive():
            observer.join()

    def _problem(self, event: str, exc: OSError) -> None:
        """Log a recurring failure once, not on every pass."""
        if str(exc) != self._last_problem:
            self._last_problem = str(exc)
            self._log.warning(event, error=str(exc), errno=exc.errno)
