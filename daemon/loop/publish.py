"""What the loop tells the world: status.json, the gallery page and the service manager's
STATUS= line. The page is rebuilt at most every GALLERY_EVERY_SEC during a burst of jobs."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from daemon.codex import quota
from daemon.config import Config
from daemon.errors import InboxError
from daemon.job.names import is_job_file
from daemon.logs import get_logger
from daemon.loop.sd_notify import SystemdNotifier
from daemon.loop.status import STATUS_NAME, StatusFile, pause_summary
from daemon.outbox.gallery import LiveState, live_state
from daemon.pipeline.flow import Outcome, Status

log = get_logger()

# During a burst of jobs the gallery page is rebuilt at most this often (each build renders
# up to 500 cards); it is rebuilt at once whenever the queue runs empty.
GALLERY_EVERY_SEC = 2.0
# The status fields the page shows, the times aside (they change every build).
_PAGE_FIELDS = ("state", "current_job", "job_started_at", "queue_length", "paused", "rate_limits")

RefreshGallery = Callable[..., None]  # (config, *, live: LiveState) -> None


class Publisher:
    """Owns the status file's contents; the loop changes them through these methods only."""

    def __init__(
        self,
        config: Config,
        *,
        notifier: SystemdNotifier,
        clock: Callable[[], float],
        queued: Callable[[], int],
        refresh_gallery: RefreshGallery,
    ) -> None:
        self.config = config  # replaced on a reload
        self._notifier = notifier
        self._clock = clock
        self._queued = queued  # jobs the loop holds: the count when the inbox cannot be listed
        self._refresh_gallery = refresh_gallery
        self.status = StatusFile(config.outbox / STATUS_NAME, since=self.now().isoformat())
        self._gallery_stale = False
        self._gallery_built_at = -GALLERY_EVERY_SEC
        self._gallery_shows: dict[str, Any] | None = None  # the live state the page shows

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock()).astimezone().replace(microsecond=0)

    def move_to(self, config: Config) -> None:
        """After a reload: a new outbox gets the status file from now on."""
        self.config = config
        self.status.path = config.outbox / STATUS_NAME

    def publish(self) -> None:
        self.status.queue_length = self._waiting()
        try:
            self.status.save(updated_at=self.now().isoformat())
        except InboxError as error:
            log.warning("status file not written", message=error.message)

    def set_state(self, state: str, *, page: bool = True, idle: bool = True) -> None:
        """Say the new state everywhere; `page` False before the loop serves, `idle` whether
        nothing is due (a page then is rebuilt at once)."""
        self.status.state = state
        self.publish()  # "recovering" and a stop during it, too: the file tells the truth
        if page:
            # A pause, and the stop, go on the page at once; the rest as throttled.
            self.refresh_gallery(now=state in ("paused", "stopped"), idle=idle)
        self._notifier.status(self._status_line())

    def job_started(self, job: str) -> None:
        self.status.current_job = job
        self.status.job_started_at = self.now().isoformat()

    def job_ended(self) -> None:
        self.status.current_job = self.status.job_started_at = None

    def record(self, outcome: Outcome) -> None:
        """A job's outputs go on the page; its end (or retry) into the file."""
        if outcome.outputs:
            self._gallery_stale = True
        if outcome.status in (Status.DONE, Status.FAILED, Status.RETRY):
            self._remember(outcome)

    def paused(self, error: InboxError, resumes: datetime) -> str:
        """The queue is paused until `resumes`: status.json says why; returns its summary."""
        now = self.now()
        summary = pause_summary(error.layer, error.message, error.retry_at or resumes, now=now)
        self.status.paused = {
            "error": error.layer,
            "message": error.message,
            "summary": summary,
            "hint": error.hint,
            "resumes_at": resumes.isoformat(timespec="seconds"),
        }
        return summary

    def resumed(self) -> None:
        self.status.paused = None

    def note_rate_limits(self, limits: tuple[quota.RateLimit, ...]) -> None:
        """Keep the newest snapshot of each limit a run's session log recorded."""
        known = quota.from_json_list(self.status.rate_limits)
        self.status.rate_limits = [s.to_json() for s in quota.merge(known, limits)]

    def refresh_gallery(self, *, now: bool = False, idle: bool = True) -> None:
        """Rebuild the gallery if a job changed the outbox or the daemon's state changed: at
        once when nothing else is due (`idle`), otherwise at most every GALLERY_EVERY_SEC, so a
        burst is not slowed by its page. The page follows the state (running job, queue, pause,
        limits) and reloads itself while there is work; the page of an idle daemon does not."""
        fields = self.status.fields()
        shows = {key: fields[key] for key in _PAGE_FIELDS}
        if shows != self._gallery_shows:
            self._gallery_stale = True
        if not self._gallery_stale:
            return
        live = live_state(shows)
        due = self._clock() - self._gallery_built_at >= GALLERY_EVERY_SEC
        if now or idle or due or self._flips(live):
            self._refresh_gallery(self.config, live=live)
            self._gallery_stale = False
            self._gallery_shows = shows
            self._gallery_built_at = self._clock()

    def _flips(self, live: LiveState) -> bool:
        """A page that does not reload itself (idle) must not miss the start of work, nor a
        reloading one the end of it: either change is built at once."""
        return self._gallery_shows is None or live.busy != live_state(self._gallery_shows).busy

    def _remember(self, outcome: Outcome) -> None:
        entry: dict[str, Any] = {
            "job": outcome.job,
            "at": self.now().isoformat(),
            "outputs": [p.name for p in outcome.outputs],
        }
        if outcome.status is Status.DONE:
            self.status.last_success = entry
        elif outcome.error is not None:
            entry.update(error=outcome.error.layer, message=outcome.error.message)
            self.status.last_failure = entry

    def _waiting(self) -> int:
        """Job files waiting in the inbox root (queued, settling, retrying or paused).

        Counted on disk rather than as our queue plus the watcher's: a job put back in the inbox
        for a retry or a pause is in both until the watcher hands it over again.
        """
        try:
            names = os.listdir(self.config.inbox)
        except OSError:
            return self._queued()
        current = self.status.current_job  # still in the root until it is claimed
        return sum(1 for name in names if is_job_file(name) and name != current)

    def _status_line(self) -> str:
        status = self.status
        if status.state == "working":
            line = f"working on {status.current_job}"
        elif status.state == "recovering":
            line = f"recovering {status.current_job}: waiting for the codex an earlier run left"
        elif status.paused is not None:
            line = f"paused: {status.paused['summary']}"
        else:
            line = f"{status.state}, {status.queue_length} queued"
        limits = quota.from_json_list(status.rate_limits)
        if limits:
            now = self.now()
            line += ", " + ", ".join(s.describe(now=now) for s in limits)
        return line
