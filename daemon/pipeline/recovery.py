"""Crash recovery: finish what an earlier process left in `inbox/processing/`.

A job whose codex finished is delivered from its session log; a codex still running is waited
for first; anything else goes back to the inbox root to run again. Nothing runs codex here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from daemon import files, processes
from daemon.codex import run as codex_run
from daemon.codex.generation import CodexSetup, Generation, merge, recover, remove_dead_run_folders
from daemon.config import Config
from daemon.errors import InboxError, OutboxUnwritable, RecoveryFailed
from daemon.images import ImageFormat
from daemon.job.names import is_job_file, job_name, sibling_references
from daemon.outbox.delivery import DeliveryPlan, deliver, load_progress, write_error
from daemon.outbox.thumbs import FOLDER as THUMBNAILS
from daemon.pipeline.flow import Outcome, Status
from daemon.pipeline.run_record import RunRecord

OnWait = Callable[[str, float], None]


def recover_processing(
    config: Config,
    *,
    get_setup: Callable[[], CodexSetup],
    stop: threading.Event | None = None,
    on_wait: OnWait | None = None,
) -> list[Outcome]:
    """After a crash: finish jobs whose codex already ran, return the others to the inbox.

    `on_wait(job, seconds)` is told before waiting up to `seconds` for a codex still running;
    setting `stop` ends such a wait at once, the codex stopped and its job treated as usual.
    """
    processing = config.inbox / files.PROCESSING
    outcomes = []
    if processing.is_dir():
        outcomes = [
            _recover_one(path, config, get_setup, stop, on_wait)
            for path in sorted(p for p in processing.iterdir() if is_job_file(p.name))
        ]
        _return_orphans(processing, config.inbox)
    return outcomes


def remove_leftovers(config: Config) -> None:
    """What killed processes left behind: half-written temp files, per-run folders.

    Once per start, after the start-up recovery (so a leftover codex has been waited for).
    Only the folders files are written into are looked at: done/ and failed/ only get moves.
    """
    folders = [
        config.outbox,
        config.outbox / THUMBNAILS,
        config.inbox,
        config.inbox / files.PROCESSING,
    ]
    for folder in folders:
        files.remove_dead_temp_files(folder, alive=processes.process_alive)
    remove_dead_run_folders()


def _return_orphans(processing: Path, inbox: Path) -> None:
    """Files a crash separated from their job file go back to the inbox root (where the job
    file is, or will be); those of a job still kept in processing/ stay with it."""
    kept: set[Path] = set()
    for job in (p for p in processing.iterdir() if is_job_file(p.name)):
        kept.update([job, RunRecord.load(job).path, *sibling_references(job)])
    for orphan in sorted(processing.iterdir()):
        if orphan in kept or not orphan.is_file():
            continue
        if orphan.name.startswith(".") and orphan.name.endswith(".run.json"):
            orphan.unlink(missing_ok=True)
        else:
            files.move_group([orphan], inbox, orphan.name)


# A recovery that raised this often for one job (a bug, or a session log that breaks it) gives
# the job up instead of failing every start again.
MAX_FAILED_RECOVERIES = 2


def _recover_one(
    path: Path,
    config: Config,
    get_setup: Callable[[], CodexSetup],
    stop: threading.Event | None,
    on_wait: OnWait | None,
) -> Outcome:
    record = RunRecord.load(path)
    if record.failed_recoveries >= MAX_FAILED_RECOVERIES:
        return _give_up(path, record, config)
    try:
        return _finish(path, record, config, get_setup, stop, on_wait)
    except Exception:
        # Counted, then raised again: the bug still shows, but cannot stop every start.
        record.failed_recoveries += 1
        with contextlib.suppress(InboxError):
            record.save()
        raise


def _finish(
    path: Path,
    record: RunRecord,
    config: Config,
    get_setup: Callable[[], CodexSetup],
    stop: threading.Event | None,
    on_wait: OnWait | None,
) -> Outcome:
    group = [path, *sibling_references(path)]
    stem = job_name(path)
    _wait_for_leftover_codex(record, stop, on_wait)
    try:
        outputs = _delivered(config.outbox, record) or _deliver_session(record, config, get_setup)
        complete = bool(outputs) and _is_complete(outputs[-1])
        if complete:
            files.move_group(group, config.inbox / files.DONE, stem)
    except OutboxUnwritable as error:
        return Outcome(record.job, Status.PAUSED, error=error)  # kept for the next try
    if not complete:
        # Runs codex may still owe images: the job runs again, and an incomplete result
        # sidecar delivered here makes it ask only for the missing ones.
        files.move_group(group, config.inbox, stem)
        record.delete()
        return Outcome(record.job, Status.REQUEUED, outputs)
    record.delete()
    return Outcome(record.job, Status.DONE, outputs)


def _give_up(path: Path, record: RunRecord, config: Config) -> Outcome:
    """Move a job whose recovery kept failing to failed/, with an error sidecar saying so."""
    error = RecoveryFailed(
        f"{record.job} could not be finished after a crash: recovering it failed "
        f"{record.failed_recoveries} times.",
    )
    stem = job_name(path)
    try:
        sidecar = write_error(
            config.outbox,
            error,
            job_file=record.job,
            wanted=record.wanted or stem,
            prompt=record.prompt or None,
            retrying=False,
        )
        files.move_group([path, *sibling_references(path)], config.inbox / files.FAILED, stem)
    except OutboxUnwritable as disk_error:
        return Outcome(record.job, Status.PAUSED, error=disk_error)
    record.delete()
    return Outcome(record.job, Status.FAILED, (sidecar,), error)


def _deliver_session(
    record: RunRecord, config: Config, get_setup: Callable[[], CodexSetup]
) -> tuple[Path, ...]:
    """Deliver the images of the recorded session; () when there are none to deliver."""
    generations = _recovered_generations(record, get_setup)
    if not generations:
        return ()
    progress = (
        load_progress(config.outbox, record.progress, job_file=record.job)
        if isinstance(record.progress, str)
        else None
    )
    try:
        return deliver(
            merge(generations),
            config.outbox,
            job_file=record.job,
            prompt=record.prompt,
            wanted=record.wanted or job_name(record.job_path),
            fmt=ImageFormat(record.format) if record.format else None,
            refs=record.refs,
            plan=DeliveryPlan.from_json(record.delivery),
            on_plan=lambda plan: record.set_delivery(plan.to_json()),
            prompt_source=record.prompt_source,
            ref_files=[_where_now(name, record, config.inbox) for name in record.refs],
            transparent=record.transparent is True,
            aspect=record.aspect if isinstance(record.aspect, str) else None,
            variants=record.variants if isinstance(record.variants, int) else 1,
            progress=progress,
        )
    except OutboxUnwritable:
        raise
    except InboxError:
        return ()  # the session's images do not decode: the job runs again


def _where_now(ref: str, record: RunRecord, inbox: Path) -> Path:
    """A recorded reference (named relative to the inbox): explicit ones stay where they are,
    siblings were moved into processing/ beside the job file."""
    beside = record.job_path.parent / Path(ref).name
    return beside if beside.exists() else inbox / ref


def _wait_for_leftover_codex(
    record: RunRecord, stop: threading.Event | None, on_wait: OnWait | None
) -> None:
    """A codex started by a process that died keeps running in its own session: let it
    finish (its image is this job's), but no longer than the job's own timeout allowed, nor
    past a stop request."""
    if record.pgid is None or not processes.group_alive(record.pgid):
        return
    remaining = record.timeout_sec or 300.0
    if record.started_at:
        try:
            started = datetime.fromisoformat(record.started_at)
            elapsed = (datetime.now(started.tzinfo) - started).total_seconds()
            remaining = max(0.0, remaining - elapsed)
        except ValueError:
            pass
    if on_wait is not None:
        on_wait(record.job, remaining)
    codex_run.wait_for_group(record.pgid, deadline=time.monotonic() + remaining, stop=stop)


def _recovered_generations(
    record: RunRecord, get_setup: Callable[[], CodexSetup]
) -> list[Generation]:
    """The images of every run the record names: those that finished, and the one that ran
    when the process died; runs without images are left out."""
    recorded = record.runs if isinstance(record.runs, list) else []
    runs = [(str(r.get("thread_id")), r.get("started_at")) for r in recorded if isinstance(r, dict)]
    if record.thread_id and record.thread_id not in {thread for thread, _ in runs}:
        runs.append((record.thread_id, record.started_at))
    found = (_recovered_generation(thread, started, get_setup) for thread, started in runs)
    return [generation for generation in found if generation is not None]


def _recovered_generation(
    thread_id: str, started_at: object, get_setup: Callable[[], CodexSetup]
) -> Generation | None:
    if not (thread_id and isinstance(started_at, str)):
        return None
    try:
        return recover(thread_id, datetime.fromisoformat(started_at), get_setup())
    except (InboxError, ValueError):
        return None


def _lists_run(data: dict[str, object], thread_id: str) -> bool:
    """Whether a complete result sidecar accounts for the run `thread_id`."""
    runs = data.get("runs")
    threads = (
        [r.get("thread_id") for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
    )
    return data.get("complete") is not False and thread_id in (data.get("thread_id"), *threads)


def _is_complete(sidecar: Path) -> bool:
    data = files.read_yaml(sidecar)
    return data is not None and data.get("complete") is not False


def _delivered(outbox: Path, record: RunRecord) -> tuple[Path, ...]:
    """The outputs of this very run when its result sidecar is already in the outbox."""
    if not record.thread_id:
        return ()
    plan = DeliveryPlan.from_json(record.delivery)
    if plan is not None:
        names = [plan.sidecar]
    else:  # a record written before delivery plans were kept
        wanted = record.wanted or job_name(record.job_path)
        pattern = str(outbox / f"{glob.escape(wanted)}*{files.RESULT_SUFFIX}")
        names = [os.path.basename(name) for name in glob.glob(pattern)]
    for name in names:
        data = files.read_yaml(outbox / name)
        if data and data.get("job") == record.job and _lists_run(data, record.thread_id):
            images = [
                outbox / str(i.get("file")) for i in data.get("images") or [] if isinstance(i, dict)
            ]
            if all(image.is_file() for image in images):
                return (*images, outbox / name)
    return ()
