"""`gpt-image-inbox run`: the long-running loop. One worker, jobs in arrival order, one at a time.

The watcher hands over complete job files; this loop owns the queue, the retries, the pauses
when the environment is not ready, the status file and the service manager's notifications.
Signal handlers only set events; the loop and a small heartbeat thread react to them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from daemon import files as disk
from daemon.codex import quota
from daemon.codex import run as codex
from daemon.codex.generation import CodexSetup
from daemon.commands.oneshot import after_job, backoff, cached_setup, log_outcome, run_hooks
from daemon.config import load_config
from daemon.errors import (
    ConfigError,
    InboxError,
    NetworkDown,
    NotLoggedIn,
    OutboxUnwritable,
    UsageLimit,
)
from daemon.job.names import is_job_file
from daemon.logs import get_logger
from daemon.loop.notify import SystemdNotifier, watchdog_interval
from daemon.loop.status import STATUS_NAME, pause_summary
from daemon.loop.status import Status as StatusFile
from daemon.outbox.gallery import live_state
from daemon.pipeline.flow import Outcome, Status, process_job
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.watching.lock import InboxLock
from daemon.watching.watcher import InboxWatcher

log = get_logger()

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
# During a burst of jobs the gallery page is rebuilt at most this often (each build renders
# up to 500 cards); it is rebuilt at once whenever the queue runs empty.
GALLERY_EVERY_SEC = 2.0
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
    not_before: float = 0.0


@dataclass
class Pause:
    error: InboxError
    until: float
    auth_stamp: tuple[int, int] | None
    summary: str  # "image limit until 14:05": the STATUS= line and status.json say it
    probe_at: float  # when a full disk may next be tested for having room again
    probe_every: float


class Daemon:
    def __init__(
        self,
        config_path: Path | None,
        *,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.environ = environ
        self.clock = clock
        self.notifier = notifier or SystemdNotifier(environ)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.cancel = threading.Event()
        self.kill_now = threading.Event()  # a second stop signal: no grace for codex either
        self.queue: list[Queued] = []
        self.pause: Pause | None = None
        self.pause_streak = 0  # consecutive pauses without a job getting through: the backoff
        self.get_setup: Callable[[], CodexSetup] = cached_setup(self.config)
        self.status = StatusFile(self.config.outbox / STATUS_NAME)
        self.lock = InboxLock(self.config.inbox, command="run")
        self.watcher: InboxWatcher | None = None
        self._busy_until = 0.0
        self._last_tick = clock()
        self._gallery_stale = False
        self._gallery_built_at = -GALLERY_EVERY_SEC
        self._gallery_shows: dict[str, Any] | None = None  # the live state the page shows

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code."""
        self._install_signal_handlers()
        for folder in (self.config.inbox, self.config.outbox):
            disk.ensure_dir(folder)
        self.lock.acquire()
        try:
            # Ready before recovery: waiting for a codex an earlier run left can take up to a
            # job's timeout, far beyond a Type=notify start timeout; the heartbeat keeps the
            # watchdog fed and turns a stop request into a cancel meanwhile.
            self.notifier.ready()
            heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
            heartbeat.start()
            try:
                self._recover()
                remove_leftovers(self.config)  # once: not at every recovery after a pause
                if not self.stopping.is_set():
                    self._serve()
            finally:
                self.notifier.stopping()
                self._set_state("stopped")
                heartbeat.join(timeout=5)
        finally:
            self.lock.release()
        log.info("stopped")
        return 0

    def _serve(self) -> None:
        self.watcher = self._new_watcher()
        self.watcher.start()
        log.info(
            "watching",
            inbox=str(self.config.inbox),
            outbox=str(self.config.outbox),
            observer=self.watcher.observer_kind,
        )
        self._set_state("idle")
        try:
            while not self.stopping.is_set():
                self._step()
        finally:
            self._refresh_gallery(now=True)
            self.watcher.stop()

    def _recover(self) -> None:
        """Finish what a crashed process left in processing/; a disk that is not writable yet
        pauses the queue, and recovery runs again when the pause ends. A stop request ends a
        wait for a leftover codex as it ends a running job: after the shutdown grace."""
        try:
            outcomes = recover_processing(
                self.config,
                get_setup=self.get_setup,
                stop=self.cancel,
                on_wait=self._recovery_wait,
            )
        finally:
            self._busy_until = 0.0
            self.status.current_job = None
        for outcome in outcomes:
            log_outcome(outcome)
            self._run_hooks(outcome)
            if outcome.status is Status.PAUSED and outcome.error is not None:
                self._start_pause(outcome.error)

    def _recovery_wait(self, job: str, seconds: float) -> None:
        log.info("waiting for the codex an earlier run left", job=job, seconds=round(seconds))
        self._busy_for(seconds)  # the watchdog pings go on while we wait
        self.status.current_job = job
        self._set_state("recovering")

    def _new_watcher(self) -> InboxWatcher:
        watch = self.config.watch
        return InboxWatcher(
            self.config.inbox,
            settle_sec=watch.settle_sec,
            rescan_sec=watch.rescan_sec,
            polling=watch.polling,
        )

    def _install_signal_handlers(self) -> None:
        def stop(_signum: int, _frame: FrameType | None) -> None:
            if self.stopping.is_set():
                self.kill_now.set()
                self.cancel.set()
            self.stopping.set()

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # --- the loop -----------------------------------------------------------------------

    def _step(self) -> None:
        self._last_tick = self.clock()
        if self.reload_requested.is_set():
            self._reload()
        self._take_handed_over()
        if self.pause is not None and not self._pause_over():
            self._refresh_gallery()  # a queue that changed while paused
            self.stopping.wait(TICK_SEC)
            return
        entry = self._next_due()
        if entry is None:
            self._refresh_gallery()
            assert self.watcher is not None
            path = self.watcher.get(timeout=self._wait_time())
            if path is not None:
                self._enqueue(path)
            return
        self._run_entry(entry)

    def _take_handed_over(self) -> None:
        assert self.watcher is not None
        added = False
        while (path := self.watcher.get(timeout=0)) is not None:
            added = self._enqueue(path, publish=False) or added
        if added:
            self._publish()  # once for a whole burst: publishing lists the inbox

    def _enqueue(self, path: Path, *, publish: bool = True) -> bool:
        # The watcher may hand a retried job over again once it is back in the inbox root.
        if any(q.path == path for q in self.queue):
            return False
        self.queue.append(Queued(path))
        if publish:
            self._publish()
        return True

    def _next_due(self) -> Queued | None:
        now = self.clock()
        return next((q for q in self.queue if q.not_before <= now), None)

    def _wait_time(self) -> float:
        now = self.clock()
        waits = [q.not_before - now for q in self.queue] + [
            TICK_SEC if self.queue else IDLE_WAIT_SEC
        ]
        return max(0.01, min(waits))

    def _run_entry(self, entry: Queued) -> None:
        if self.stopping.is_set():
            return
        if not entry.path.exists():
            self._finish(entry)  # deleted while queued: dropped
            return
        config = self.config
        self._busy_for(config.codex.timeout_sec)
        self.status.current_job = entry.path.name
        self.status.job_started_at = _now_iso()
        self._set_state("working")

        def started(timeout_sec: float, refs: list[str]) -> None:  # codex is about to run
            log.info("job started", job=entry.path.name, refs=refs, timeout_sec=timeout_sec)
            self._busy_for(timeout_sec)

        outcome = process_job(
            entry.path,
            config=config,
            get_setup=self.get_setup,
            final_attempt=entry.attempts + 1 >= config.retry.attempts,
            cancel=self.cancel,
            kill_now=self.kill_now,
            on_run=started,
            on_rate_limits=self._note_rate_limits,
        )
        self._busy_until = 0.0
        self.status.current_job = self.status.job_started_at = None
        self._after(entry, outcome)

    def _busy_for(self, timeout_sec: float) -> None:
        """Keep the watchdog pings going while a job may legitimately run: the job's own
        timeout_sec can exceed codex.timeout_sec, which would otherwise look like a stuck loop."""
        self._busy_until = self.clock() + timeout_sec + self.config.shutdown_grace_sec + 60

    def _after(self, entry: Queued, outcome: Outcome) -> None:
        log_outcome(outcome)
        self._run_hooks(outcome)
        if outcome.status is not Status.PAUSED:
            self.pause_streak = 0
        if outcome.status in (Status.DONE, Status.FAILED):
            self._finish(entry)
            self._remember(outcome)
        elif outcome.status is Status.REMOVED:
            self._finish(entry)
        elif outcome.status is Status.RETRY:
            entry.attempts += 1
            entry.not_before = self.clock() + backoff(self.config, entry.attempts)
            self._remember(outcome)
        elif outcome.status is Status.PAUSED:
            assert outcome.error is not None
            self._start_pause(outcome.error)
        if outcome.outputs:
            self._gallery_stale = True
        # A pause may last hours: _set_state puts it on the page at once.
        self._set_state("paused" if self.pause else "idle")

    def _run_hooks(self, outcome: Outcome) -> None:
        """Hooks run here, in the loop, once the job's files are in place: never alongside
        codex, in job order. The watchdog counts the loop busy for the hook's time limit, and
        a stop whose grace runs out (or a second stop signal) kills the hook as it does codex."""
        self._busy_for(self.config.hooks.timeout_sec)
        try:
            run_hooks(outcome, self.config, environ=self.environ, stop=self.cancel)
        finally:
            self._busy_until = 0.0

    def _note_rate_limits(self, limits: tuple[quota.RateLimit, ...]) -> None:
        """Keep the newest snapshot of each limit a run's session log recorded."""
        known = quota.from_json_list(self.status.rate_limits)
        self.status.rate_limits = [s.to_json() for s in quota.merge(known, limits)]

    def _refresh_gallery(self, *, now: bool = False) -> None:
        """Rebuild the gallery if a job changed the outbox or the daemon's state changed: at
        once when nothing else is due, otherwise at most every GALLERY_EVERY_SEC, so a burst
        is not slowed by its page. The page follows the state (running job, queue, pause,
        limits) and reloads itself while there is work; the page of an idle daemon does not."""
        shows = self._live_fields()
        if shows != self._gallery_shows:
            self._gallery_stale = True
        if not self._gallery_stale:
            return
        live = live_state(shows)
        # A page that does not reload itself (idle) must not miss the start of work, nor a
        # reloading one the end of it: either change is built at once.
        flips = self._gallery_shows is None or live.busy != live_state(self._gallery_shows).busy
        due = self.clock() - self._gallery_built_at >= GALLERY_EVERY_SEC
        if now or flips or due or self._next_due() is None:
            after_job(self.config, live=live)
            self._gallery_stale = False
            self._gallery_shows = shows
            self._gallery_built_at = self.clock()

    def _live_fields(self) -> dict[str, Any]:
        """The status fields the page shows, the times aside (they change every build)."""
        fields = self.status.fields()
        keys = ("state", "current_job", "job_started_at", "queue_length", "paused", "rate_limits")
        return {key: fields[key] for key in keys}

    def _finish(self, entry: Queued) -> None:
        assert self.watcher is not None
        self.queue.remove(entry)
        self.watcher.done(entry.path)

    # --- pauses -------------------------------------------------------------------------

    def _start_pause(self, error: InboxError) -> None:
        self.pause_streak += 1
        count = self.pause_streak
        # By the nearest listed class: an ImageLimit backs off like any UsageLimit.
        first = next(
            (PAUSE_FIRST_SEC[c] for c in type(error).__mro__ if c in PAUSE_FIRST_SEC),
            PAUSE_DEFAULT_FIRST_SEC,
        )
        wait = min(first * 2 ** (count - 1), PAUSE_MAX_SEC)
        if error.retry_at is not None:
            wait = max(1.0, (error.retry_at - datetime.now(error.retry_at.tzinfo)).total_seconds())
        probe_every = min(PROBE_FIRST_SEC * 2 ** (count - 1), PAUSE_MAX_SEC)
        now = datetime.now().astimezone()
        resumes = now + timedelta(seconds=wait)
        summary = pause_summary(error.layer, error.message, error.retry_at or resumes, now=now)
        tick = self.clock()
        self.pause = Pause(
            error, tick + wait, self._auth_stamp(), summary, tick + probe_every, probe_every
        )
        self.status.paused = {
            "error": error.layer,
            "message": error.message,
            "summary": summary,
            "hint": error.hint,
            "resumes_at": resumes.isoformat(timespec="seconds"),
        }
        log.warning(
            "queue paused",
            error=error.layer,
            message=error.message,
            resumes_at=self.status.paused["resumes_at"],
        )

    def _pause_over(self) -> bool:
        assert self.pause is not None
        why = None
        if self.clock() >= self.pause.until:
            why = "time"
        elif self._auth_stamp() != self.pause.auth_stamp:
            why = "login changed"
        elif isinstance(self.pause.error, OutboxUnwritable) and self._probe_disk():
            why = "disk writable"
        if why is None:
            return False
        log.info("queue resumed", reason=why)
        self.pause = None
        self.status.paused = None
        self._recover()  # a job kept in processing/ by an unwritable outbox goes out first
        self._set_state("paused" if self.pause else "idle")
        return self.pause is None

    def _probe_disk(self) -> bool:
        """A test write, when the pause's spacing says one is due."""
        assert self.pause is not None
        if self.clock() < self.pause.probe_at:
            return False
        self.pause.probe_at = self.clock() + self.pause.probe_every
        return self._disk_writable()

    def _disk_writable(self) -> bool:
        """Whether the outbox and the inbox's state folders take a small write again."""
        inbox = self.config.inbox
        folders = (self.config.outbox, inbox, *(inbox / d for d in (disk.PROCESSING, disk.DONE)))
        return all(_takes_write(folder) for folder in folders if folder.is_dir())

    def _auth_stamp(self) -> tuple[int, int] | None:
        """auth.json's (mtime, size): `codex login` rewrites it, which ends a login pause."""
        env = codex.child_environment(self.environ, self.config.codex.home)
        home = codex.codex_home_of(env)
        try:
            st = (home / "auth.json").stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    # --- reload, status, heartbeat ------------------------------------------------------

    def _reload(self) -> None:
        self.reload_requested.clear()
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("reload failed; keeping the running configuration", message=error.message)
            return
        if new.inbox != self.config.inbox:
            try:
                self._move_lock(new.inbox)
            except InboxError as error:
                log.error("reload failed; keeping the running configuration", message=error.message)
                return
        old, self.config = self.config, new
        self.get_setup = cached_setup(new)
        self.pause = None
        self.status.paused = None
        if (new.inbox, new.watch) != (old.inbox, old.watch):
            log.info("reload: restarting the watcher", inbox=str(new.inbox))
            assert self.watcher is not None
            self.watcher.stop()
            disk.ensure_dir(new.inbox)
            self.queue.clear()
            self.watcher = self._new_watcher()
            self.watcher.start()
        if new.outbox != old.outbox:
            disk.ensure_dir(new.outbox)
            self.status.path = new.outbox / STATUS_NAME
        log.info("configuration reloaded", source=str(new.source))
        self._set_state("idle")  # a reload ends a pause; the status file (maybe new) says so

    def _move_lock(self, inbox: Path) -> None:
        """Take the new inbox's lock before letting go of the old one."""
        disk.ensure_dir(inbox)
        lock = InboxLock(inbox, command="run")
        lock.acquire()
        self.lock.release()
        self.lock = lock

    def _remember(self, outcome: Outcome) -> None:
        entry: dict[str, Any] = {
            "job": outcome.job,
            "at": _now_iso(),
            "outputs": [p.name for p in outcome.outputs],
        }
        if outcome.status is Status.DONE:
            self.status.last_success = entry
        elif outcome.error is not None:
            entry.update(error=outcome.error.layer, message=outcome.error.message)
            self.status.last_failure = entry

    def _publish(self) -> None:
        self.status.queue_length = self._waiting()
        try:
            self.status.save()
        except InboxError as error:
            log.warning("status file not written", message=error.message)

    def _waiting(self) -> int:
        """Job files waiting in the inbox root (queued, settling, retrying or paused).

        Counted on disk rather than as our queue plus the watcher's: a job put back in the inbox
        for a retry or a pause is in both until the watcher hands it over again.
        """
        try:
            names = os.listdir(self.config.inbox)
        except OSError:
            return len(self.queue)
        current = self.status.current_job  # still in the root until it is claimed
        return sum(1 for name in names if is_job_file(name) and name != current)

    def _set_state(self, state: str) -> None:
        self.status.state = state
        self._publish()  # "recovering" and a stop during it, too: the file tells the truth
        if self.watcher is not None:
            # A pause, and the stop, go on the page at once; the rest as throttled.
            self._refresh_gallery(now=state in ("paused", "stopped"))
        self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        if self.status.state == "working":
            line = f"working on {self.status.current_job}"
        elif self.status.state == "recovering":
            job = self.status.current_job
            line = f"recovering {job}: waiting for the codex an earlier run left"
        elif self.pause is not None:
            line = f"paused: {self.pause.summary}"
        else:
            line = f"{self.status.state}, {self.status.queue_length} queued"
        limits = quota.from_json_list(self.status.rate_limits)
        if limits:
            now = datetime.now().astimezone()
            line += ", " + ", ".join(s.describe(now=now) for s in limits)
        return line

    def _heartbeat(self) -> None:
        """Pings the service manager while the loop is alive, and stops a running job when the
        shutdown grace runs out: the one place that turns a stop request into a cancel."""
        interval = watchdog_interval(self.environ)
        grace_deadline: float | None = None
        next_ping = 0.0
        while True:
            now = self.clock()
            if self.stopping.is_set():
                if grace_deadline is None:
                    grace_deadline = now + self.config.shutdown_grace_sec
                    self._say_stopping()
                    if self.watcher is not None:
                        self.watcher.stop()  # wakes the loop if it waits for a job
                if not self._busy_until:
                    return
                if now >= grace_deadline:
                    self.cancel.set()
            # A loop stuck outside a job stops the pings, so systemd's watchdog can restart us.
            alive = now - self._last_tick < 2 * IDLE_WAIT_SEC or now < self._busy_until
            if interval and alive and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + interval
            if self.stopping.is_set():
                time.sleep(TICK_SEC)
            else:  # sleeps until the next ping is due, or a stop request
                self.stopping.wait(min(interval or IDLE_WAIT_SEC, IDLE_WAIT_SEC))

    def _say_stopping(self) -> None:
        """At the first stop signal, say at once what the wait is for and how to cut it short."""
        job = self.status.current_job
        if not self._busy_until or job is None:
            return
        grace = self.config.shutdown_grace_sec
        log.warning(
            "stopping",
            job=job,
            grace_sec=grace,
            message=f"waiting up to {grace:g} s for {job}, Ctrl-C again to stop it now",
        )


def _takes_write(folder: Path) -> bool:
    # Some bytes and an fsync: on a full disk creating an empty file can still succeed.
    probe = folder / f".gpt-image-inbox-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def run_daemon(config_path: Path | None) -> int:
    return Daemon(config_path).run()
