"""The one-shot commands: `gen` (one prompt to one file) and `once` (drain the inbox, then exit)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from daemon import files, logs
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
from daemon.job.names import is_job_file
from daemon.loop.backoff import retry_delay
from daemon.outbox.delivery import verified_images
from daemon.pipeline.ending import after_job, log_outcome, run_hooks
from daemon.pipeline.flow import Outcome, Status, cached_setup, process_job
from daemon.pipeline.recovery import recover_processing, remove_leftovers
from daemon.watching.lock import InboxLock

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
    target = _check_arguments(prompt, refs, out, transparent=transparent)
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
        raise _part_written(batch.stopped, written, variants)
    return written


def _check_arguments(
    prompt: str, refs: Sequence[Path], out: Path | None, *, transparent: bool
) -> ImageFormat | None:
    """Refuse what cannot work before codex runs; the format `--out`'s extension asks for."""
    if not prompt.strip():
        raise UsageError("--prompt is empty.", hint="Give the prompt text after --prompt.")
    target = ImageFormat.named(out.suffix.lower().lstrip(".")) if out else None
    if transparent and target is ImageFormat.JPEG:
        raise UsageError(
            f"--transparent cannot be kept in {out}: JPEG has no alpha channel.",
            hint="Give --out a .png or .webp name, or leave out --transparent.",
        )
    for ref in refs:
        check_reference_argument(ref)
    return target


def _part_written(error: InboxError, written: list[Path], variants: int) -> InboxError:
    """`error`, naming the images written before it."""
    made = ", ".join(str(p) for p in written)
    return type(error)(
        f"{error.message} {len(written)} of {variants} images were written: {made}.",
        hint=error.hint,
        detail=error.detail,
        retry_at=error.retry_at,
    )


def _write_images(
    generation: Generation, out: Path | None, target: ImageFormat | None
) -> list[Path]:
    """Each image that decodes (converted to `--out`'s format), under gen's names; the same
    checks as a daemon job's (delivery.verified_images), a decompression bomb refused."""
    written = []
    for n, image in enumerate(verified_images(generation, target)):
        path = _output_path(out, n, image.info.format)
        files.replace_file(path, image.data)
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
    elif ImageFormat.named(out.suffix.lower().lstrip(".")) is None:
        out = out.with_name(f"{out.name}.{fmt.extension}")
    if index:
        out = out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
    return out.absolute()


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
            on_run=_warm_up,
        )
        if outcome.status is not Status.RETRY:
            return outcome
        log_outcome(outcome)
        sleep(retry_delay(config.retry, attempt))
        if stop.requested:  # the job waits in the inbox with its retrying error sidecar
            break
    return outcome
