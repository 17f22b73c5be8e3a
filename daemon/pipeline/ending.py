"""The end of a job, the same for `run` and `once`: the log's summary line, the person's hooks
and the gallery page; for the one-shot commands, what the end needs imported while codex runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from daemon import logs
from daemon.config import Config
from daemon.errors import InboxError
from daemon.pipeline.flow import Outcome, Status

if TYPE_CHECKING:
    from daemon.outbox.gallery import LiveState

# Needed only once codex has finished: imported in the background while it runs (structlog
# too), which takes ~65 ms off the end of a `once` job (measured). PIL.Image.open() first
# imports the Bmp, Gif and Ppm plugins as well.
END_OF_JOB_MODULES = (
    "daemon.codex.session_log",
    "daemon.outbox.gallery",
    "PIL.Image",
    *(f"PIL.{name}ImagePlugin" for name in ("Png", "Jpeg", "WebP", "Bmp", "Gif", "Ppm")),
)


def warm_up_end_of_job(*_args: object) -> None:
    """The hook run as codex starts: then, not earlier, because a thread importing beside the
    work before codex takes the GIL from it at each system call (~30 ms later codex, measured)."""
    logs.warm_up(*END_OF_JOB_MODULES)


# What each outcome means for the person reading the log: what happened, and what comes next.
_OUTCOME_EVENTS = {
    Status.DONE: "job finished",
    Status.FAILED: "job failed; it is in failed/",
    Status.RETRY: "job failed; it is tried again",
    Status.PAUSED: "job waits in the inbox; the queue is paused",
    Status.CANCELLED: "job stopped; it is back in the inbox",
    Status.REQUEUED: "job left half-done by a crash; it is back in the inbox to run again",
    Status.REMOVED: "job file removed before it ran",
}


def log_outcome(outcome: Outcome) -> None:
    """One summary line per job: what happened to it, with its error if any."""
    fields = {
        "job": outcome.job,
        "outcome": outcome.status.value,
        "seconds": outcome.seconds,
        "outputs": [p.name for p in outcome.outputs],
    }
    if outcome.error is not None:
        fields.update(error=outcome.error.layer, message=outcome.error.message)
        if outcome.error.retry_at:
            fields["retry_at"] = outcome.error.retry_at.isoformat()
    log = logs.get_logger()
    quiet = outcome.status in (Status.DONE, Status.REQUEUED, Status.REMOVED, Status.CANCELLED)
    (log.info if quiet else log.warning)(_OUTCOME_EVENTS[outcome.status], **fields)


def run_hooks(
    outcome: Outcome,
    config: Config,
    *,
    environ: Mapping[str, str] = os.environ,
    stop: threading.Event | None = None,
) -> None:
    """The configured hooks of a job that ended (done, or failed for good), one after the
    other and bounded by hooks.timeout_sec each; a hook's own failure is only logged."""
    hooks = config.hooks
    if not (hooks.on_done or hooks.on_failed or hooks.notifier):
        return
    from daemon.pipeline.hooks import run_job_hooks

    run_job_hooks(outcome, hooks, environ=environ, log=logs.get_logger(), stop=stop)


def after_job(config: Config, *, live: LiveState | None = None) -> None:
    """Work shared by every finished job; the gallery is rebuilt here when enabled.

    `live` is the daemon's state, for a page that follows it while there is work."""
    if not config.gallery:
        return
    from daemon.outbox.gallery import write_gallery

    try:
        write_gallery(config.outbox, live=live)
    except InboxError as error:  # the page is a view: a full disk must not stop the jobs
        logs.get_logger().warning("gallery not written", message=error.message)
