"""`gpt-image-inbox once`: every job now in the inbox, one at a time, then exit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from daemon import files
from daemon.codex.generation import CodexSetup
from daemon.commands.interrupt import StopRequest
from daemon.config import Config
from daemon.errors import Cancelled
from daemon.job.names import is_job_file
from daemon.loop.backoff import retry_delay
from daemon.pipeline.ending import after_job, log_outcome, run_hooks, warm_up_end_of_job
from daemon.pipeline.flow import Outcome, Status, cached_setup, process_job
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.watching.lock import InboxLock


def pending_jobs(inbox: Path) -> list[Path]:
    """Job files in the inbox root, oldest first (arrival order)."""
    jobs = []
    for path in inbox.iterdir():
        # Anything but a folder: a FIFO or a link out of the inbox is refused with a sidecar.
        if is_job_file(path.name) and not path.is_dir():
            with contextlib.suppress(OSError):
                jobs.append((path.lstat().st_mtime_ns, path.name, path))
    return [p for _, _, p in sorted(jobs)]


def process_inbox(
    config: Config,
    *,
    sleep: Callable[[float], object] | None = None,
    stop: StopRequest | None = None,
) -> int:
    """`once`: every job now in the inbox, one at a time; 0 when all succeeded.

    An environment failure (login, usage limit, network, disk) stops the run: the jobs not yet
    run stay in the inbox untouched, and the exit code is that failure's. `stop` set takes no
    further job and stops a running codex: that job goes back to the inbox and `Cancelled` is
    raised naming it.
    """
    stop = stop or StopRequest()
    files.ensure_dir(config.inbox)
    files.ensure_dir(config.outbox)
    with InboxLock(config.inbox, command="once"):
        # A stop request cuts a retry's backoff short as well.
        return _drain(config, sleep or stop.sleep, stop)


def _drain(config: Config, sleep: Callable[[float], object], stop: StopRequest) -> int:
    get_setup = cached_setup(config)
    for outcome in recover_processing(config, get_setup=get_setup, stop=stop.cancel):
        log_outcome(outcome)
        run_hooks(outcome, config, stop=stop.cancel)
    remove_leftovers(config)
    exit_code = 0
    for path in pending_jobs(config.inbox):
        if stop.requested:
            break
        outcome = run_with_retries(path, config, get_setup, sleep=sleep, stop=stop)
        log_outcome(outcome)
        if outcome.status is Status.CANCELLED:
            raise Cancelled(f"codex was stopped, {outcome.job} is back in the inbox")
        run_hooks(outcome, config, stop=stop.cancel)
        after_job(config)
        if outcome.status not in (Status.DONE, Status.REMOVED) and exit_code == 0:
            exit_code = outcome.error.exit_code if outcome.error else 1
        if outcome.status is Status.PAUSED:
            break
    return exit_code


def run_with_retries(
    path: Path,
    config: Config,
    get_setup: Callable[[], CodexSetup],
    *,
    sleep: Callable[[float], object],
    stop: StopRequest,
) -> Outcome:
    attempts = config.retry.attempts
    for attempt in range(1, attempts + 1):
        outcome = process_job(
            path,
            config=config,
            get_setup=get_setup,
            final_attempt=attempt == attempts,
            cancel=stop.cancel,
            kill_now=stop.now,
            on_run=warm_up_end_of_job,
        )
        if outcome.status is not Status.RETRY:
            return outcome
        log_outcome(outcome)
        sleep(retry_delay(config.retry, attempt))
        if stop.requested:  # the job waits in the inbox with its retrying error sidecar
            break
    return outcome
