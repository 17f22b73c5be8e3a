"""The heartbeat thread: keeps the service manager's watchdog fed while the loop is alive, and
turns a stop request whose grace has run out into a cancel of the running job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from daemon.logs import get_logger
from daemon.loop.scheduler import IDLE_WAIT_SEC, TICK_SEC
from daemon.loop.sd_notify import SystemdNotifier, watchdog_interval

log = get_logger()


class Heartbeat:
    """Told by the loop when it ticks and how long a job may keep it busy; runs in a thread."""

    def __init__(
        self,
        *,
        stopping: threading.Event,
        cancel: threading.Event,
        notifier: SystemdNotifier,
        environ: Mapping[str, str],
        clock: Callable[[], float],
        grace_sec: Callable[[], float],
        on_stop: Callable[[], None],
        current_job: Callable[[], str | None],
    ) -> None:
        self._stopping = stopping
        self._cancel = cancel
        self._notifier = notifier
        self._environ = environ
        self._clock = clock
        self._grace_sec = grace_sec  # the configuration's: a reload may change it
        self._on_stop = on_stop  # wakes the loop if it waits for a job
        self._current_job = current_job
        self._busy_until = 0.0
        self._last_tick = clock()

    def tick(self) -> None:
        """The loop went round once: it is alive."""
        self._last_tick = self._clock()

    def busy_for(self, timeout_sec: float) -> None:
        """Keep the watchdog pings going while a job may legitimately run: the job's own
        timeout_sec can exceed codex.timeout_sec, which would otherwise look like a stuck loop."""
        self._busy_until = self._clock() + timeout_sec + self._grace_sec() + 60

    def idle(self) -> None:
        self._busy_until = 0.0

    def run(self) -> None:
        """Pings the service manager while the loop is alive, and stops a running job when the
        shutdown grace runs out: the one place that turns a stop request into a cancel."""
        interval = watchdog_interval(self._environ)
        grace_deadline: float | None = None
        next_ping = 0.0
        while True:
            now = self._clock()
            if self._stopping.is_set():
                if grace_deadline is None:
                    grace_deadline = now + self._grace_sec()
                    self._say_stopping()
                    self._on_stop()
                if not self._busy_until:
                    return
                if now >= grace_deadline:
                    self._cancel.set()
            # A loop stuck outside a job stops the pings, so systemd's watchdog can restart us.
            alive = now - self._last_tick < 2 * IDLE_WAIT_SEC or now < self._busy_until
            if interval and alive and now >= next_ping:
                self._notifier.watchdog()
                next_ping = now + interval
            if self._stopping.is_set():
                time.sleep(TICK_SEC)
            else:  # sleeps until the next ping is due, or a stop request
                self._stopping.wait(min(interval or IDLE_WAIT_SEC, IDLE_WAIT_SEC))

    def _say_stopping(self) -> None:
        """At the first stop signal, say at once what the wait is for and how to cut it short."""
        job = self._current_job()
        if not self._busy_until or job is None:
            return
        grace = self._grace_sec()
        log.warning(
            "stopping",
            job=job,
            grace_sec=grace,
            message=f"waiting up to {grace:g} s for {job}, Ctrl-C again to stop it now",
        )
