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

from daemon import files as disk
from daemon.codex.generation import CodexSetup, ImageRequest, generate_variants, merge
from daemon.codex.quota import RateLimit
from daemon.config import Config
from daemon.errors import (
    Cancelled,
    Disposition,
    InboxError,
    OutboxUnwritable,
    ReferenceMissing,
)
from daemon.job.names import JOB_SUFFIX, sibling_references
from daemon.job.parse import Job, parse_job
from daemon.outbox.delivery import deliver, find_progress, write_error
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

    @property
    def sidecar(self) -> Path | None:
        return next((p for p in self.outputs if p.name.endswith(".yaml")), None)


def job_stem(path: Path) -> str:
    return path.name[: -len(JOB_SUFFIX)]


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
        return Outcome(path.name, Status.PAUSED, error=error, seconds=_since(started))
    request = _request(job, config)
    wanted = job.out or job.name
    progress = find_progress(
        config.outbox, job_file=path.name, wanted=wanted, prompt=job.prompt, variants=job.variants
    )
    record = RunRecord(
        group[0],
        job=path.name,
        refs=ref_names,
        prompt=job.prompt,
        prompt_source=job.prompt_source.value,
        wanted=wanted,
        format=job.format.value if job.format else None,
        timeout_sec=request.timeout_sec,
        transparent=job.transparent,
        aspect=job.aspect,
        variants=job.variants,
        progress=progress.sidecar if progress else None,
    )
    try:
        record.save()
    except InboxError as error:  # processing/ takes no write: put the job back and wait
        _return_to_inbox(group, config.inbox, job_stem(group[0]))
        return Outcome(path.name, Status.PAUSED, error=error, seconds=_since(started))
    on_run(request.timeout_sec, record.refs)
    try:
        batch = generate_variants(
            request,
            setup,
            made=len(progress.images) if progress else 0,
            on_thread_id=record.set_thread,
            on_start=record.set_process,
            on_generation=lambda generation: record.add_run(generation.thread_id),
            cancel=cancel,
            kill_now=kill_now,
            on_rate_limits=on_rate_limits,
        )
        outputs = deliver(
            merge(batch.generations),
            config.outbox,
            job_file=path.name,
            prompt=job.prompt,
            wanted=wanted,
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
        disk.move_group(group, config.inbox / disk.DONE, job_stem(group[0]))
    except Cancelled:
        disk.move_group(group, config.inbox, job_stem(group[0]))
        record.delete()
        return Outcome(path.name, Status.CANCELLED, seconds=_since(started))
    except OutboxUnwritable as error:
        # codex's work is safe in its session log: the job and its run record stay in
        # processing/, and recovery delivers it once the disk takes writes again.
        return Outcome(path.name, Status.PAUSED, error=error, seconds=_since(started))
    except InboxError as error:
        record.delete()
        return _settle_failure(
            path.name, group, error, config, final_attempt, started, job, ref_names
        )
    record.delete()
    return Outcome(path.name, Status.DONE, outputs, seconds=_since(started))


def _unfinished(error: InboxError, sidecar: Path, variants: int) -> InboxError:
    """`error`, saying how many of the job's images were made and where they are.

    Their incomplete result sidecar is what the job continues from when it runs again, so
    those images are never made twice.
    """
    if isinstance(error, Cancelled):
        return error  # a stopped job goes back to the inbox without an error sidecar
    data = disk.read_yaml(sidecar) or {}
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
    where = disk.move_group(group, inbox / disk.PROCESSING, job.name)
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
    stem = job_stem(group[0])
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
        # Without a sidecar the failure would be silent: keep the job and wait for the disk.
        _return_to_inbox(group, config.inbox, stem)
        return Outcome(job_file, Status.PAUSED, error=disk_error, seconds=_since(started))
    if give_up:
        disk.move_group(group, config.inbox / disk.FAILED, stem)
        status = Status.FAILED
    else:
        _return_to_inbox(group, config.inbox, stem)
        status = Status.PAUSED if error.disposition is Disposition.PAUSE else Status.RETRY
    return Outcome(job_file, status, (sidecar,), error, _since(started))


def _return_to_inbox(group: list[Path], inbox: Path, stem: str) -> None:
    if group and group[0].parent != inbox:
        disk.move_group(group, inbox, stem)
