"""The one-shot commands: `gen` (one prompt to one file) and `once` (drain the inbox, then exit)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import files as disk
from daemon import logs
from daemon.codex.generation import (
    CodexSetup,
    Generation,
    ImageRequest,
    generate_variants,
    merge,
    prepare_codex,
)
from daemon.commands.interrupt import StopRequest
from daemon.config import Config
from daemon.errors import Cancelled, InboxError, UsageError
from daemon.images import ImageFormat, check_reference_argument
from daemon.job.parse import is_job_file
from daemon.outbox.delivery import verified_images
from daemon.pipeline.flow import Outcome, Status, process_job
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.watching.lock import InboxLock

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


def _warm_up(*_args: object) -> None:
    """The hook run as codex starts: then, not earlier, because a thread importing beside the
    work before codex takes the GIL from it at each system call (~30 ms later codex, measured)."""
    logs.warm_up(*END_OF_JOB_MODULES)


_EXTENSION_FORMATS = {
    "png": ImageFormat.PNG,
    "jpg": ImageFormat.JPEG,
    "jpeg": ImageFormat.JPEG,
    "webp": ImageFormat.WEBP,
}


def generate_to_file(
    *,
    prompt: str,
    refs: Sequence[Path],
    out: Path | None,
    timeout_sec: float | None,
    model: str | None,
    config: Config,
    stop: StopRequest | None = None,
    transparent: bool = False,
    aspect: str | None = None,
    variants: int = 1,
) -> list[Path]:
    """`gen`: check the arguments, run codex, write the image(s); returns the paths written.

    `stop` set stops codex (Cancelled); once codex has finished, its images are still written.
    With `variants` codex runs until that many images exist; a failure part-way writes the
    images made and is then raised, naming them.
    """
    if not prompt.strip():
        raise UsageError("--prompt is empty.", hint="Give the prompt text after --prompt.")
    target = _EXTENSION_FORMATS.get(out.suffix.lower().lstrip(".")) if out else None
    if transparent and target is ImageFormat.JPEG:
        raise UsageError(
            f"--transparent cannot be kept in {out}: JPEG has no alpha channel.",
            hint="Give --out a .png or .webp name, or leave out --transparent.",
        )
    for ref in refs:
        check_reference_argument(ref)
    setup = prepare_codex(config.codex)
    request = ImageRequest(
        prompt=prompt,
        refs=tuple(r.resolve() for r in refs),
        model=model,
        timeout_sec=timeout_sec or config.codex.timeout_sec,
        transparent=transparent,
        aspect=aspect,
        variants=variants,
    )
    batch = generate_variants(
        request,
        setup,
        on_start=_warm_up,
        cancel=stop.cancel if stop else None,
        kill_now=stop.now if stop else None,
    )
    written = _write_images(merge(batch.generations), out, target)
    if batch.stopped is not None and not isinstance(batch.stopped, Cancelled):
        # A stop request after some images is answered like a stop after codex finished.
        error = batch.stopped
        made = ", ".join(str(p) for p in written)
        raise type(error)(
            f"{error.message} {len(written)} of {variants} images were written: {made}.",
            hint=error.hint,
            detail=error.detail,
            retry_at=error.retry_at,
        )
    return written


def _write_images(
    generation: Generation, out: Path | None, target: ImageFormat | None
) -> list[Path]:
    """Each image that decodes (converted to `--out`'s format), under gen's names; the same
    checks as a daemon job's (delivery.verified_images), a decompression bomb refused."""
    written = []
    for n, image in enumerate(verified_images(generation, target)):
        path = _output_path(out, n, image.info.format)
        disk.replace_file(path, image.data)
        written.append(path)
        logs.get_logger().info(
            "image written",
            path=str(path),
            format=image.info.format.value,
            width=image.info.width,
            height=image.info.height,
            thread_id=generation.thread_id,
        )
    return written


def _output_path(out: Path | None, index: int, fmt: ImageFormat) -> Path:
    """`--out` as given (its extension decides the format), or ./image-<time>.<real ext>;
    further images of the same run get `-2`, `-3` before the extension."""
    if out is None:
        out = Path(f"image-{datetime.now():%Y%m%d-%H%M%S}.{fmt.extension}")
    elif out.suffix.lower().lstrip(".") not in _EXTENSION_FORMATS:
        out = out.with_name(f"{out.name}.{fmt.extension}")
    if index:
        out = out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
    return out.absolute()


def cached_setup(config: Config) -> Callable[[], CodexSetup]:
    """Probe codex on first use and remember it; a failed probe is tried again next time."""
    found: list[CodexSetup] = []

    def get() -> CodexSetup:
        if not found:
            found.append(prepare_codex(config.codex))
        return found[0]

    return get


def pending_jobs(inbox: Path) -> list[Path]:
    """Job files in the inbox root, oldest first (arrival order)."""
    jobs = []
    for path in inbox.iterdir():
        # Anything but a folder: a FIFO or a link out of the inbox is refused with a sidecar.
        if is_job_file(path.name) and not path.name.startswith(".") and not path.is_dir():
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
    disk.ensure_dir(config.inbox)
    disk.ensure_dir(config.outbox)
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
            on_run=_warm_up,
        )
        if outcome.status is not Status.RETRY:
            return outcome
        log_outcome(outcome)
        sleep(backoff(config, attempt))
        if stop.requested:  # the job waits in the inbox with its retrying error sidecar
            break
    return outcome


def backoff(config: Config, attempt: int) -> float:
    """Seconds before try `attempt + 1`: doubling from retry.backoff_sec, capped."""
    return float(min(config.retry.backoff_sec * 2 ** (attempt - 1), config.retry.max_backoff_sec))


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
