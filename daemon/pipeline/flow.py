"""One job file, start to end: parse → claim → codex → session log → outbox → inbox state.

The only module that wires the stages together. Each job moves through visible folders
(`processing/`, `done/`, `failed/`); the move is the state change, and a small run record in
`processing/` keeps the codex thread id so that a crash never spends the user's quota twice.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon import files
from daemon.codex.generation import (
    CodexSetup,
    ImageRequest,
    generate_variants,
    merge,
    prepare_codex,
)
from daemon.codex.quota import RateLimit
from daemon.config import Config
from daemon.errors import (
    Cancelled,
    Disposition,
    InboxError,
    OutboxUnwritable,
    ReferenceMissing,
)
from daemon.job.names import job_name, sibling_references
from daemon.job.parse import Job, parse_job
from daemon.outbox.delivery import Progress, deliver, find_progress, write_error
from daemon.pipeline.run_record import RunRecord


class Status(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    """Failed for a passing reason; back in the inbox for another try after a backoff."""
    PAUSED = "paused"
    """The environment is not ready (login, limit, network, disk); back in the inbox."""
    CANCELLED = "cancelled"
    """Stopped on purpose (shutdown, Ctrl-C); back in the inbox untouched."""
    REQUEUED = "requeued"
    """Found half-done after a crash, with no image to take: back in the inbox to run again."""
    REMOVED = "removed"
    """The job file was deleted before it could run: nothing to do."""


@dataclass(frozen=True, slots=True)
class Outcome:
    job: str
    status: Status
    outputs: tuple[Path, ...] = ()
    error: InboxError | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A job moved into `processing/`, and what settling its outcome needs to know."""

    job_file: str  # its name in the inbox root, as the outcome and the sidecars name it
    job: Job
    group: list[Path]
    ref_names: list[str]  # as the person named them, relative to the inbox
    setup: CodexSetup
    started: float

    @property
    def stem(self) -> str:
        return job_name(self.group[0])


def cached_setup(config: Config) -> Callable[[], CodexSetup]:
    """Probe codex on first use and remember it; a failed probe is tried again next time."""
    found: list[CodexSetup] = []

    def get() -> CodexSetup:
        if not found:
            found.append(prepare_codex(config.codex))
        return found[0]

    return get


def process_job(
    path: Path,
    *,
    config: Config,
    get_setup: Callable[[], CodexSetup],
    final_attempt: bool = True,
    cancel: threading.Event | None = None,
    kill_now: threading.Event | None = None,
    on_run: Callable[[float, list[str]], None] = lambda _timeout, _refs: None,
    on_rate_limits: Callable[[tuple[RateLimit, ...]], None] = lambda _limits: None,
) -> Outcome:
    """Run the job at `path` (in the inbox root) and leave every file in its final place.

    `on_run` learns the job's timeout (the daemon's watchdog needs it) and its references, as
    named relative to the inbox, just before codex starts; `on_rate_limits` the plan's rate
    limits the run's session log records, whether the job succeeds or not.
    """
    claimed = _claim_job(path, config, get_setup, final_attempt)
    if isinstance(claimed, Outcome):
        return claimed
    request = _request(claimed.job, config)
    progress = _progress(claimed, config)
    record = _run_record(claimed, request, progress)
    try:
        record.save()
    except InboxError as error:  # processing/ takes no write: put the job back and wait
        _return_to_inbox(claimed.group, config.inbox, claimed.stem)
        return _paused(claimed.job_file, error, claimed.started)
    on_run(request.timeout_sec, record.refs)
    events = _RunEvents(cancel=cancel, kill_now=kill_now, on_rate_limits=on_rate_limits)
    try:
        outputs = _generate_and_deliver(claimed, request, record, progress, config, events)
    except Cancelled:
        files.move_group(claimed.group, config.inbox, claimed.stem)
        record.delete()
        return Outcome(claimed.job_file, Status.CANCELLED, seconds=_since(claimed.started))
    except OutboxUnwritable as error:
        # codex's work is safe in its session log: the job and its run record stay in
        # processing/, and recovery delivers it once the disk takes writes again.
        return _paused(claimed.job_file, error, claimed.started)
    except InboxError as error:
        record.delete()
        return _settle_claimed_failure(claimed, error, config, final_attempt)
    record.delete()
    return Outcome(claimed.job_file, Status.DONE, outputs, seconds=_since(claimed.started))


def _claim_job(
    path: Path, config: Config, get_setup: Callable[[], CodexSetup], final_attempt: bool
) -> _Claimed | Outcome:
    """Parse the job, make sure codex is there, and move the job into `processing/`; the
    outcome instead when any of that fails, with the job's files where that puts them."""
    started = time.monotonic()
    group = [path, *sibling_references(path)]
    try:
        job = parse_job(path, inbox=config.inbox)
    except InboxError as error:
        return _settle_failure(path.name, group, error, config, final_attempt, started)
    ref_names = _ref_names(job, config.inbox)  # as the person named them, before the move
    try:
        setup = get_setup()
    except InboxError as error:  # codex missing: the job itself is fine and waits
        return _settle_failure(
            path.name, group, error, config, final_attempt, started, job, ref_names
        )
    try:
        job, group = claim(job, config.inbox)
    except FileNotFoundError:
        return Outcome(path.name, Status.REMOVED, seconds=_since(started))
    except InboxError as error:
        return _paused(path.name, error, started)
    return _Claimed(path.name, job, group, ref_names, setup, started)


def _progress(claimed: _Claimed, config: Config) -> Progress | None:
    """What an earlier, stopped run of this job already delivered: it is not made again."""
    job = claimed.job
    return find_progress(
        config.outbox,
        job_file=claimed.job_file,
        wanted=job.out or job.name,
        prompt=job.prompt,
        variants=job.variants,
    )


def _run_record(claimed: _Claimed, request: ImageRequest, progress: Progress | None) -> RunRecord:
    job = claimed.job
    return RunRecord(
        claimed.group[0],
        job=claimed.job_file,
        refs=claimed.ref_names,
        prompt=job.prompt,
        prompt_source=job.prompt_source.value,
        wanted=job.out or job.name,
        format=job.format.value if job.format else None,
        timeout_sec=request.timeout_sec,
        transparent=job.transparent,
        aspect=job.aspect,
        variants=job.variants,
        progress=progress.sidecar if progress else None,
    )


@dataclass(frozen=True, slots=True)
class _RunEvents:
    """What the caller hands codex's run: the stop events and the rate-limit listener."""

    cancel: threading.Event | None
    kill_now: threading.Event | None
    on_rate_limits: Callable[[tuple[RateLimit, ...]], None]


def _generate_and_deliver(
    claimed: _Claimed,
    request: ImageRequest,
    record: RunRecord,
    progress: Progress | None,
    config: Config,
    events: _RunEvents,
) -> tuple[Path, ...]:
    """Run codex until the job's images exist, write them to the outbox and move the job to
    `done/`; the outputs written. A run stopped part-way raises, after delivering what it made."""
    job = claimed.job
    batch = generate_variants(
        request,
        claimed.setup,
        made=len(progress.images) if progress else 0,
        on_thread_id=record.set_thread,
        on_start=record.set_process,
        on_generation=lambda generation: record.add_run(generation.thread_id),
        cancel=events.cancel,
        kill_now=events.kill_now,
        on_rate_limits=events.on_rate_limits,
    )
    outputs = deliver(
        merge(batch.generations),
        config.outbox,
        job_file=claimed.job_file,
        prompt=job.prompt,
        wanted=job.out or job.name,
        fmt=job.format,
        refs=record.refs,
        prompt_source=job.prompt_source.value,
        ref_files=job.refs,
        on_plan=lambda plan: record.set_delivery(plan.to_json()),
        transparent=job.transparent,
        aspect=job.aspect,
        variants=job.variants,
        progress=progress,
    )
    if batch.stopped is not None:
        raise _unfinished(batch.stopped, outputs[-1], job.variants)
    files.move_group(claimed.group, config.inbox / files.DONE, claimed.stem)
    return outputs


def _paused(job_file: str, error: InboxError, started: float) -> Outcome:
    return Outcome(job_file, Status.PAUSED, error=error, seconds=_since(started))


def _settle_claimed_failure(
    claimed: _Claimed, error: InboxError, config: Config, final_attempt: bool
) -> Outcome:
    return _settle_failure(
        claimed.job_file,
        claimed.group,
        error,
        config,
        final_attempt,
        claimed.started,
        claimed.job,
        claimed.ref_names,
    )


def _unfinished(error: InboxError, sidecar: Path, variants: int) -> InboxError:
    """`error`, saying how many of the job's images were made and where they are.

    Their incomplete result sidecar is what the job continues from when it runs again, so
    those images are never made twice.
    """
    if isinstance(error, Cancelled):
        return error  # a stopped job goes back to the inbox without an error sidecar
    data = files.read_yaml(sidecar) or {}
    made = len(data.get("images") or [])
    note = (
        f" {made} of {variants} images were made and are listed in {sidecar.name}; "
        f"{variants - made} missing."
    )
    return type(error)(
        error.message + note, hint=error.hint, detail=error.detail, retry_at=error.retry_at
    )


def claim(job: Job, inbox: Path) -> tuple[Job, list[Path]]:
    """Move the job file, then its siblings, into `processing/` so no watcher takes it again.

    The job file goes first: a crash in between leaves siblings in the root, which the next
    start's recovery reunites with their job file. FileNotFoundError when the job file is gone.
    """
    group = [job.path, *job.siblings]
    where = files.move_group(group, inbox / files.PROCESSING, job.name)
    if job.path not in where:
        raise FileNotFoundError(job.path)
    # A sibling deleted in the meantime keeps its old path: codex's run then reports it.
    claimed = dataclasses.replace(
        job,
        path=where[job.path],
        siblings=tuple(where.get(s, s) for s in job.siblings),
        refs=tuple(where.get(r, r) for r in job.refs),
    )
    return claimed, list(where.values())


def _request(job: Job, config: Config) -> ImageRequest:
    timeout = job.timeout_sec if job.timeout_sec is not None else config.codex.timeout_sec
    return ImageRequest(
        prompt=job.prompt,
        refs=job.refs,
        model=job.model,
        timeout_sec=timeout,
        transparent=job.transparent,
        aspect=job.aspect,
        variants=job.variants,
    )


def _ref_names(job: Job, inbox: Path) -> list[str]:
    return [_relative(r, inbox) for r in job.refs]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _settle_failure(
    job_file: str,
    group: list[Path],
    error: InboxError,
    config: Config,
    final_attempt: bool,
    started: float,
    job: Job | None = None,
    ref_names: list[str] | None = None,
) -> Outcome:
    """Write the error sidecar, then put the job where its failure says it belongs.

    Without a `job` (its file did not pass the checks) the sidecar shows what is known: the
    prompt when only a reference was missing, and the images that travel with the job file.
    """
    give_up = error.disposition is Disposition.FINAL or (
        error.disposition is Disposition.RETRY and final_attempt
    )
    stem = job_name(group[0])
    wanted = (job.out or job.name) if job else stem
    prompt, ref_files = (job.prompt, list(job.refs)) if job else (None, group[1:])
    if isinstance(error, ReferenceMissing) and job is None:
        prompt, ref_files = error.prompt, list(error.references)
    if ref_names is None:
        ref_names = [_relative(p, config.inbox) for p in ref_files]
    try:
        sidecar = write_error(
            config.outbox,
            error,
            job_file=job_file,
            wanted=wanted,
            prompt=prompt,
            retrying=not give_up,
            refs=ref_names,
            ref_files=ref_files,
        )
    except InboxError as disk_error:
        # Without a sidecar the failure would be silent: keep the job and wait for the files.
        _return_to_inbox(group, config.inbox, stem)
        return _paused(job_file, disk_error, started)
    if give_up:
        files.move_group(group, config.inbox / files.FAILED, stem)
        status = Status.FAILED
    else:
        _return_to_inbox(group, config.inbox, stem)
        status = Status.PAUSED if error.disposition is Disposition.PAUSE else Status.RETRY
    return Outcome(job_file, status, (sidecar,), error, _since(started))


def _return_to_inbox(group: list[Path], inbox: Path, stem: str) -> None:
    if group and group[0].parent != inbox:
        files.move_group(group, inbox, stem)
