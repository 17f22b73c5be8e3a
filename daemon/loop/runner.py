"""`gpt-image-inbox run`: the long-running loop. One worker, jobs in arrival order, one at a time.

The watcher hands over complete job files; the scheduler decides what runs when (retries,
pauses); this shell owns the threads, the signals, the inbox lock, the reload and what the loop
tells the world. Signal handlers only set events; the loop and a small heartbeat thread react.
Every collaborator is a keyword-only parameter with the real one as its default.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from daemon import files
from daemon.config import Config, load_config
from daemon.errors import InboxError
from daemon.logs import get_logger
from daemon.loop import readiness
from daemon.loop.heartbeat import Heartbeat
from daemon.loop.publish import Publisher, RefreshGallery
from daemon.loop.scheduler import Scheduler
from daemon.loop.sd_notify import SystemdNotifier
from daemon.pipeline import ending
from daemon.pipeline import flow as pipeline
from daemon.pipeline.flow import Outcome, Status
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.watching.lock import InboxLock
from daemon.watching.watcher import InboxWatcher

log = get_logger()


class JobSource(Protocol):
    """What the loop needs of the watcher: complete job files, handed over one at a time."""

    @property
    def observer_kind(self) -> str | None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def get(self, timeout: float | None = None) -> Path | None: ...
    def done(self, path: Path) -> None: ...


def watch_inbox(config: Config) -> JobSource:
    watch = config.watch
    return InboxWatcher(
        config.inbox,
        settle_sec=watch.settle_sec,
        rescan_sec=watch.rescan_sec,
        polling=watch.polling,
    )


class Daemon:
    def __init__(
        self,
        config_path: Path | None,
        *,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        notifier: SystemdNotifier | None = None,
        watcher: Callable[[Config], JobSource] = watch_inbox,
        process_job: Callable[..., Outcome] = pipeline.process_job,
        recover: Callable[..., list[Outcome]] = recover_processing,
        refresh_gallery: RefreshGallery = ending.after_job,
        config_loader: Callable[[Path | None], Config] = load_config,
    ) -> None:
        self.config_path = config_path
        self._load_config = config_loader
        self.config = config_loader(config_path)
        self.environ = environ
        self.notifier = notifier or SystemdNotifier(environ)
        self._new_watcher = watcher
        self._process_job = process_job
        self._recover_processing = recover
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.cancel = threading.Event()
        self.kill_now = threading.Event()  # a second stop signal: no grace for codex either
        self.scheduler = Scheduler(self.config.retry, clock=clock)
        self.publisher = Publisher(
            self.config,
            notifier=self.notifier,
            clock=clock,
            queued=lambda: len(self.scheduler),
            refresh_gallery=refresh_gallery,
        )
        self.heartbeat = Heartbeat(
            stopping=self.stopping,
            cancel=self.cancel,
            notifier=self.notifier,
            environ=environ,
            # The watchdog's pings and the stop grace count elapsed time, which a change of the
            # wall clock (NTP at boot, a laptop waking) must not stretch or shrink.
            clock=monotonic,
            grace_sec=lambda: self.config.shutdown_grace_sec,
            on_stop=lambda: self.watcher.stop() if self.watcher else None,
            current_job=lambda: self.publisher.status.current_job,
        )
        self.get_setup = pipeline.cached_setup(self.config)
        self.lock = InboxLock(self.config.inbox, command="run")
        self.watcher: JobSource | None = None
        self._auth_at_pause: tuple[int, int] | None = None

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code."""
        restore = _install_signal_handlers(stop=self.request_stop, reload=self.reload_requested)
        try:
            for folder in (self.config.inbox, self.config.outbox):
                files.ensure_dir(folder)
            self.lock.acquire()
            try:
                self._run_locked()
            finally:
                self.lock.release()  # a reload may have moved it to another inbox
        finally:
            restore()
        log.info("stopped")
        return 0

    def request_stop(self) -> None:
        """The first request stops after the running job's grace; a second one at once."""
        if self.stopping.is_set():
            self.kill_now.set()
            self.cancel.set()
        self.stopping.set()

    def _run_locked(self) -> None:
        # Ready before recovery: waiting for a codex an earlier run left can take up to a
        # job's timeout, far beyond a Type=notify start timeout; the heartbeat keeps the
        # watchdog fed and turns a stop request into a cancel meanwhile.
        self.notifier.ready()
        heartbeat = threading.Thread(target=self.heartbeat.run, name="heartbeat", daemon=True)
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

    def _serve(self) -> None:
        self.watcher = self._new_watcher(self.config)
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
            self.publisher.refresh_gallery(now=True)
            self.watcher.stop()

    def _recover(self) -> None:
        """Finish what a crashed process left in processing/; a disk that is not writable yet
        pauses the queue, and recovery runs again when the pause ends. A stop request ends a
        wait for a leftover codex as it ends a running job: after the shutdown grace."""
        try:
            outcomes = self._recover_processing(
                self.config,
                get_setup=self.get_setup,
                stop=self.cancel,
                on_wait=self._recovery_wait,
            )
        finally:
            self.heartbeat.idle()
            self.publisher.job_ended()
        for outcome in outcomes:
            ending.log_outcome(outcome)
            self._run_hooks(outcome)
            if outcome.status is Status.PAUSED and outcome.error is not None:
                self._start_pause(outcome.error)

    def _recovery_wait(self, job: str, seconds: float) -> None:
        log.info("waiting for the codex an earlier run left", job=job, seconds=round(seconds))
        self.heartbeat.busy_for(seconds)  # the watchdog pings go on while we wait
        self.publisher.status.current_job = job
        self._set_state("recovering")

    # --- the loop -----------------------------------------------------------------------

    def _step(self) -> None:
        self.heartbeat.tick()
        if self.reload_requested.is_set():
            self._reload()
        self._take_handed_over()
        if self.scheduler.pause is not None:
            self._pause_over()
        if self.stopping.is_set():
            self.scheduler.stop()
        path = self.scheduler.due()
        if path is None:
            self.publisher.refresh_gallery()  # a queue that changed, maybe while paused
            assert self.watcher is not None
            handed = self.watcher.get(timeout=self.scheduler.sleep_time())
            if handed is not None:
                self._enqueue(handed)
            return
        self._run_job(path)

    def _take_handed_over(self) -> None:
        assert self.watcher is not None
        added = False
        while (path := self.watcher.get(timeout=0)) is not None:
            added = self._enqueue(path, publish=False) or added
        if added:
            self.publisher.publish()  # once for a whole burst: publishing lists the inbox

    def _enqueue(self, path: Path, *, publish: bool = True) -> bool:
        added = self.scheduler.add(path)
        if added and publish:
            self.publisher.publish()
        return added

    def _run_job(self, path: Path) -> None:
        if not path.exists():
            self._finish(path)  # deleted while queued: dropped
            return
        config = self.config
        self.heartbeat.busy_for(config.codex.timeout_sec)
        self.publisher.job_started(path.name)
        self._set_state("working")

        def started(timeout_sec: float, refs: list[str]) -> None:  # codex is about to run
            log.info("job started", job=path.name, refs=refs, timeout_sec=timeout_sec)
            self.heartbeat.busy_for(timeout_sec)

        outcome = self._process_job(
            path,
            config=config,
            get_setup=self.get_setup,
            final_attempt=self.scheduler.final_attempt(path),
            cancel=self.cancel,
            kill_now=self.kill_now,
            on_run=started,
            on_rate_limits=self.publisher.note_rate_limits,
        )
        self.heartbeat.idle()
        self.publisher.job_ended()
        self._after(path, outcome)

    def _after(self, path: Path, outcome: Outcome) -> None:
        ending.log_outcome(outcome)
        self._run_hooks(outcome)
        if outcome.status is not Status.PAUSED:
            self.scheduler.got_through()
        if outcome.status in (Status.DONE, Status.FAILED, Status.REMOVED):
            self._finish(path)
        elif outcome.status is Status.RETRY:
            self.scheduler.retry_later(path)
        elif outcome.status is Status.PAUSED:
            assert outcome.error is not None
            self._start_pause(outcome.error)
        self.publisher.record(outcome)
        # A pause may last hours: _set_state puts it on the page at once.
        self._set_state("paused" if self.scheduler.pause else "idle")

    def _run_hooks(self, outcome: Outcome) -> None:
        """Hooks run here, in the loop, once the job's files are in place: never alongside
        codex, in job order. The watchdog counts the loop busy for the hook's time limit, and
        a stop whose grace runs out (or a second stop signal) kills the hook as it does codex."""
        self.heartbeat.busy_for(self.config.hooks.timeout_sec)
        try:
            ending.run_hooks(outcome, self.config, environ=self.environ, stop=self.cancel)
        finally:
            self.heartbeat.idle()

    def _finish(self, path: Path) -> None:
        assert self.watcher is not None
        self.scheduler.drop(path)
        self.watcher.done(path)

    # --- pauses -------------------------------------------------------------------------

    def _start_pause(self, error: InboxError) -> None:
        pause = self.scheduler.pause_for(error)
        self._auth_at_pause = readiness.auth_stamp(self.environ, self.config)
        self.publisher.paused(error, pause.resumes_at)
        paused = self.publisher.status.paused or {}
        log.warning(
            "queue paused",
            error=error.layer,
            message=error.message,
            resumes_at=paused.get("resumes_at"),
        )

    def _pause_over(self) -> None:
        """End the pause if its time has come or what it waits for is back; recovery then
        delivers a job an unwritable outbox kept in processing/, which may pause again."""
        why = self._pause_reason()
        if why is None:
            return
        log.info("queue resumed", reason=why)
        self.scheduler.resume()
        self.publisher.resumed()
        self._recover()  # a job kept in processing/ by an unwritable outbox goes out first
        self._set_state("paused" if self.scheduler.pause else "idle")

    def _pause_reason(self) -> str | None:
        if self.scheduler.pause_expired():
            return "time"
        if readiness.auth_stamp(self.environ, self.config) != self._auth_at_pause:
            return "login changed"
        if self.scheduler.probe_due() and readiness.disk_writable(self.config):
            return "disk writable"
        return None

    # --- reload, status -----------------------------------------------------------------

    def _reload(self) -> None:
        self.reload_requested.clear()
        try:
            new = self._load_config(self.config_path)
            if new.inbox != self.config.inbox:
                self.lock = _hand_over_lock(self.lock, new.inbox)
        except InboxError as error:  # ConfigError, or a new inbox another process holds
            log.error("reload failed; keeping the running configuration", message=error.message)
            return
        old, self.config = self.config, new
        self.get_setup = pipeline.cached_setup(new)
        self.scheduler.retry = new.retry
        self.scheduler.resume()
        self.publisher.resumed()
        if (new.inbox, new.watch) != (old.inbox, old.watch):
            log.info("reload: restarting the watcher", inbox=str(new.inbox))
            assert self.watcher is not None
            self.watcher.stop()
            files.ensure_dir(new.inbox)
            self.scheduler.clear()
            self.watcher = self._new_watcher(new)
            self.watcher.start()
        if new.outbox != old.outbox:
            files.ensure_dir(new.outbox)
        self.publisher.move_to(new)
        log.info("configuration reloaded", source=str(new.source))
        self._set_state("idle")  # a reload ends a pause; the status file (maybe new) says so

    def _set_state(self, state: str) -> None:
        self.publisher.set_state(
            state, page=self.watcher is not None, idle=self.scheduler.due() is None
        )


def _hand_over_lock(held: InboxLock, inbox: Path) -> InboxLock:
    """Take the new inbox's lock before letting go of the old one."""
    files.ensure_dir(inbox)
    lock = InboxLock(inbox, command="run")
    lock.acquire()
    held.release()
    return lock


def _install_signal_handlers(
    *, stop: Callable[[], None], reload: threading.Event
) -> Callable[[], None]:
    """SIGTERM and SIGINT ask for a stop, SIGHUP for a reload; returns what puts the earlier
    handlers back."""

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stop()

    def on_reload(_signum: int, _frame: FrameType | None) -> None:
        reload.set()

    handlers: dict[signal.Signals, Any] = {
        signal.SIGTERM: on_stop,
        signal.SIGINT: on_stop,
        signal.SIGHUP: on_reload,
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
