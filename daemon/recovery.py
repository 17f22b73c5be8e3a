"""Crash recovery: finish what an earlier process left in `inbox/processing/`.

A job whose codex finished is delivered from its session log; a codex still running is waited
for first; anything else goes back to the inbox root to run again. Nothing runs codex here.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from daemon import codex
from daemon import outbox as disk
from daemon.config import Config
from daemon.delivery import deliver
from daemon.errors import InboxError, OutboxUnwritable
from daemon.generation import CodexSetup, Generation, recover
from daemon.images import ImageFormat
from daemon.job import is_job_file, sibling_references
from daemon.pipeline import Outcome, Status, job_stem
from daemon.runrecord import RunRecord


def recover_processing(config: Config, *, get_setup: Callable[[], CodexSetup]) -> list[Outcome]:
    """After a crash: finish jobs whose codex already ran, return the others to the inbox."""
    processing = config.inbox / disk.PROCESSING
    if not processing.is_dir():
        return []
    outcomes = [
        _recover_one(path, config, get_setup)
        for path in sorted(p for p in processing.iterdir() if is_job_file(p.name))
    ]
    _return_orphans(processing, config.inbox)
    return outcomes


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
            disk.move_group([orphan], inbox, orphan.name)


def _recover_one(path: Path, config: Config, get_setup: Callable[[], CodexSetup]) -> Outcome:
    record = RunRecord.load(path)
    group = [path, *sibling_references(path)]
    stem = job_stem(path)
    _wait_for_leftover_codex(record)
    try:
        # A crash after the result was written but before the move leaves only the move.
        outputs = _delivered(config.outbox, record, record.wanted or stem) or _deliver_session(
            record, config, get_setup, record.wanted or stem
        )
    except OutboxUnwritable as error:
        return Outcome(record.job, Status.PAUSED, error=error)  # kept for the next try
    if not outputs:
        disk.move_group(group, config.inbox, stem)
        record.delete()
        return Outcome(record.job, Status.CANCELLED)
    disk.move_group(group, config.inbox / disk.DONE, stem)
    record.delete()
    return Outcome(record.job, Status.DONE, outputs)


def _deliver_session(
    record: RunRecord, config: Config, get_setup: Callable[[], CodexSetup], wanted: str
) -> tuple[Path, ...]:
    """Deliver the images of the recorded session; () when there are none to deliver."""
    generation = _recovered_generation(record, get_setup)
    if generation is None:
        return ()
    try:
        return deliver(
            generation,
            config.outbox,
            job_file=record.job,
            prompt=record.prompt,
            wanted=wanted,
            fmt=ImageFormat(record.format) if record.format else None,
            refs=record.refs,
            prompt_source=record.prompt_source,
            ref_files=[_where_now(name, record, config.inbox) for name in record.refs],
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


def _wait_for_leftover_codex(record: RunRecord) -> None:
    """A codex started by a process that died keeps running in its own session: let it
    finish (its image is this job's), but no longer than the job's own timeout allowed."""
    if record.pgid is None or not codex.group_alive(record.pgid):
        return
    remaining = record.timeout_sec or 300.0
    if record.started_at:
        try:
            started = datetime.fromisoformat(record.started_at)
            elapsed = (datetime.now(started.tzinfo) - started).total_seconds()
            remaining = max(0.0, remaining - elapsed)
        except ValueError:
            pass
    codex.wait_for_group(record.pgid, deadline=time.monotonic() + remaining)


def _recovered_generation(
    record: RunRecord, get_setup: Callable[[], CodexSetup]
) -> Generation | None:
    if not (record.thread_id and record.started_at):
        return None
    try:
        return recover(record.thread_id, datetime.fromisoformat(record.started_at), get_setup())
    except (InboxError, ValueError):
        return None


def _delivered(outbox: Path, record: RunRecord, wanted: str) -> tuple[Path, ...]:
    """The outputs of this very run when its result sidecar is already in the outbox."""
    if not record.thread_id:
        return ()
    for name in glob.glob(str(outbox / f"{glob.escape(wanted)}*{disk.RESULT_SUFFIX}")):
        data = disk.read_yaml(Path(name))
        if data and data.get("job") == record.job and data.get("thread_id") == record.thread_id:
            images = [
                outbox / str(i.get("file")) for i in data.get("images") or [] if isinstance(i, dict)
            ]
            return (*images, Path(name))
    return ()
