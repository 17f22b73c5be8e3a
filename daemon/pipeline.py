"""One job file, start to end: parse → claim → codex → session log → outbox → inbox state.

The only module that wires the stages together. Each job moves through visible folders
(`processing/`, `done/`, `failed/`); the move is the state change, and a small run record in
`processing/` keeps the codex thread id so that a crash never spends the user's quota twice.
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import outbox as disk
from daemon.config import Config
from daemon.errors import Cancelled, Disposition, InboxError, NoImage
from daemon.generation import CodexSetup, Generation, ImageRequest, generate, recover
from daemon.images import ImageFormat, convert, inspect
from daemon.job import JOB_SUFFIX, Job, is_job_file, parse_job, sibling_references


class Status(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    """Failed for a passing reason; back in the inbox for another try after a backoff."""
    PAUSED = "paused"
    """The environment is not ready (login, limit, network, disk); back in the inbox."""
    CANCELLED = "cancelled"


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
) -> Outcome:
    """Run the job at `path` (in the inbox root) and leave every file in its final place."""
    started = time.monotonic()
    group = [path, *sibling_references(path)]
    try:
        job = parse_job(path, inbox=config.inbox)
        setup = get_setup()
    except InboxError as error:
        return _settle_failure(path.name, group, error, config, final_attempt, started)
    ref_names = _ref_names(job, config.inbox)  # as the person named them, before the move
    try:
        job, group = claim(job, config.inbox)
    except InboxError as error:
        return Outcome(path.name, Status.PAUSED, error=error, seconds=_since(started))
    record = RunRecord(group[0], job=path.name, refs=ref_names,
                       prompt=job.prompt, wanted=job.out or job.name,
                       format=job.format.value if job.format else None)
    record.save()
    try:
        generation = generate(
            _request(job, config), setup, on_thread_id=record.set_thread, cancel=cancel
        )
        outputs = deliver(generation, config.outbox, job_file=path.name, prompt=job.prompt,
                          wanted=job.out or job.name, fmt=job.format, refs=record.refs)
    except Cancelled:
        disk.move_group(group, config.inbox, job_stem(group[0]))
        record.delete()
        return Outcome(path.name, Status.CANCELLED, seconds=_since(started))
    except InboxError as error:
        record.delete()
        return _settle_failure(path.name, group, error, config, final_attempt, started, job)
    disk.move_group(group, config.inbox / disk.DONE, job_stem(group[0]))
    record.delete()
    return Outcome(path.name, Status.DONE, outputs, seconds=_since(started))


def claim(job: Job, inbox: Path) -> tuple[Job, list[Path]]:
    """Move the job file, then its siblings, into `processing/` so no watcher takes it again.

    The job file goes first: a crash in between leaves siblings in the root, which the next
    start's recovery reunites with their job file.
    """
    group = [job.path, *job.siblings]
    moved = disk.move_group(group, inbox / disk.PROCESSING, job.name)
    where = dict(zip(group, moved))
    claimed = dataclasses.replace(
        job,
        path=moved[0],
        siblings=tuple(moved[1:]),
        refs=tuple(where.get(r, r) for r in job.refs),
    )
    return claimed, moved


def _request(job: Job, config: Config) -> ImageRequest:
    timeout = job.timeout_sec if job.timeout_sec is not None else config.codex.timeout_sec
    return ImageRequest(prompt=job.prompt, refs=job.refs, model=job.model, timeout_sec=timeout)


def _ref_names(job: Job, inbox: Path) -> list[str]:
    return [_relative(r, inbox) for r in job.refs]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


# --- the outbox ---------------------------------------------------------------------------


def deliver(
    generation: Generation,
    outbox: Path,
    *,
    job_file: str,
    prompt: str,
    wanted: str,
    fmt: ImageFormat | None,
    refs: list[str],
) -> tuple[Path, ...]:
    """Write the images and then the result sidecar (last: its presence means "complete")."""
    images = _verified_images(generation, fmt)
    disk.ensure_dir(outbox)
    stale = _stale_errors(outbox, wanted, job_file)
    suffixes = [_image_suffix(n, f) for n, (f, _, _) in enumerate(images)]
    while True:
        base = disk.choose_base(outbox, wanted, [*suffixes, disk.RESULT_SUFFIX, disk.ERROR_SUFFIX],
                                reusable=stale)
        try:
            written = _write_images(outbox, base, images, suffixes)
            break
        except FileExistsError:
            continue  # someone took the name between the check and the write: pick again
    sidecar = outbox / f"{base}{disk.RESULT_SUFFIX}"
    disk.write_new(sidecar, disk.dump_yaml(_result_fields(
        generation, written, images, job_file=job_file, prompt=prompt, refs=refs)))
    for path in stale:
        path.unlink(missing_ok=True)
    return (*written, sidecar)


def _verified_images(
    generation: Generation, fmt: ImageFormat | None
) -> list[tuple[ImageFormat, bytes, Any]]:
    verified = []
    for found in generation.images:
        data = convert(found.data, fmt) if fmt is not None else found.data
        info = inspect(data)
        if info is not None:
            verified.append((info.format, data, info))
    if not verified:
        raise NoImage("codex produced image data that does not decode as PNG, JPEG or WebP.")
    return verified


def _image_suffix(index: int, fmt: ImageFormat) -> str:
    return f".{fmt.extension}" if index == 0 else f".{index + 1}.{fmt.extension}"


def _write_images(
    outbox: Path, base: str, images: list[tuple[ImageFormat, bytes, Any]], suffixes: list[str]
) -> list[Path]:
    written: list[Path] = []
    try:
        for (_, data, _), suffix in zip(images, suffixes):
            path = outbox / f"{base}{suffix}"
            disk.write_new(path, data)
            written.append(path)
    except FileExistsError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _result_fields(
    generation: Generation,
    written: list[Path],
    images: list[tuple[ImageFormat, bytes, Any]],
    *,
    job_file: str,
    prompt: str,
    refs: list[str],
) -> dict[str, Any]:
    return {
        "job": job_file,
        "images": [
            {
                "file": path.name,
                "format": info.format.value,
                "width": info.width,
                "height": info.height,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for path, (_, data, info) in zip(written, images)
        ],
        "prompt": prompt,
        "revised_prompt": generation.revised_prompt,
        "refs": refs,
        "codex_version": generation.codex_version,
        "thread_id": generation.thread_id,
        "started_at": _iso(generation.started_at),
        "finished_at": _iso(generation.finished_at),
        "seconds": round((generation.finished_at - generation.started_at).total_seconds(), 3),
    }


def _stale_errors(outbox: Path, wanted: str, job_file: str) -> list[Path]:
    """Error sidecars an earlier try of this same job left; a success replaces them."""
    pattern = str(outbox / f"{glob.escape(wanted)}*{disk.ERROR_SUFFIX}")
    stale = []
    for name in glob.glob(pattern):
        data = disk.read_yaml(Path(name))
        if data is not None and data.get("job") == job_file:
            stale.append(Path(name))
    return stale


def write_error(
    outbox: Path,
    error: InboxError,
    *,
    job_file: str,
    wanted: str,
    prompt: str | None,
    retrying: bool,
) -> Path:
    """The error sidecar, replacing this job's own earlier one rather than piling up copies."""
    disk.ensure_dir(outbox)
    stale = _stale_errors(outbox, wanted, job_file)
    fields = {
        "job": job_file,
        "code": error.exit_code,
        "error": error.layer,
        "message": error.message,
        "hint": error.hint,
        "detail": error.detail,
        "retrying": retrying,
        "retry_at": _iso(error.retry_at) if error.retry_at else None,
        "prompt": prompt,
        "failed_at": _iso(datetime.now().astimezone()),
    }
    if stale:
        disk.replace_file(stale[0], disk.dump_yaml(fields))
        return stale[0]
    while True:
        base = disk.choose_base(outbox, wanted, [disk.ERROR_SUFFIX])
        path = outbox / f"{base}{disk.ERROR_SUFFIX}"
        try:
            disk.write_new(path, disk.dump_yaml(fields))
            return path
        except FileExistsError:
            continue


def _settle_failure(
    job_file: str,
    group: list[Path],
    error: InboxError,
    config: Config,
    final_attempt: bool,
    started: float,
    job: Job | None = None,
) -> Outcome:
    """Write the error sidecar, then put the job where its failure says it belongs."""
    give_up = error.disposition is Disposition.FINAL or (
        error.disposition is Disposition.RETRY and final_attempt
    )
    stem = job_stem(group[0])
    wanted = (job.out or job.name) if job else stem
    try:
        sidecar = write_error(config.outbox, error, job_file=job_file, wanted=wanted,
                              prompt=job.prompt if job else None, retrying=not give_up)
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


def _iso(moment: datetime) -> str:
    return moment.astimezone().isoformat(timespec="seconds")


# --- crash recovery -----------------------------------------------------------------------


@dataclass
class RunRecord:
    """`processing/.<job>.run.json`: the job's codex thread id, saved the moment it is known."""

    job_path: Path
    job: str
    refs: list[str]
    prompt: str = ""
    wanted: str = ""
    format: str | None = None
    thread_id: str | None = None
    started_at: str | None = None

    @property
    def path(self) -> Path:
        return self.job_path.with_name(f".{self.job_path.name}.run.json")

    def save(self) -> None:
        fields = {name: getattr(self, name) for name in _RECORD_FIELDS}
        disk.replace_file(self.path, json.dumps(fields).encode())

    def set_thread(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.started_at = datetime.now().astimezone().isoformat()
        self.save()

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, job_path: Path) -> RunRecord:
        record = cls(job_path, job=job_path.name, refs=[])
        try:
            data = json.loads(record.path.read_text())
        except (OSError, ValueError):
            return record
        if isinstance(data, dict):
            for name in _RECORD_FIELDS:
                if name in data:
                    setattr(record, name, data[name])
        return record


_RECORD_FIELDS = ("job", "refs", "prompt", "wanted", "format", "thread_id", "started_at")


def recover_processing(
    config: Config, *, get_setup: Callable[[], CodexSetup]
) -> list[Outcome]:
    """After a crash: finish jobs whose codex already ran, return the others to the inbox."""
    processing = config.inbox / disk.PROCESSING
    if not processing.is_dir():
        return []
    outcomes = []
    for path in sorted(p for p in processing.iterdir() if is_job_file(p.name)):
        outcomes.append(_recover_one(path, config, get_setup))
    for orphan in sorted(processing.iterdir()):
        if orphan.name.endswith(".run.json") and orphan.name.startswith("."):
            orphan.unlink(missing_ok=True)
        elif orphan.is_file():
            disk.move_group([orphan], config.inbox, orphan.name)
    return outcomes


def _recover_one(path: Path, config: Config, get_setup: Callable[[], CodexSetup]) -> Outcome:
    record = RunRecord.load(path)
    group = [path, *sibling_references(path)]
    stem = job_stem(path)
    wanted = record.wanted or stem
    # A crash after the result was written but before the move: only the move is left to do.
    outputs = _delivered(config.outbox, record, wanted)
    if not outputs:
        generation = _recovered_generation(record, get_setup)
        if generation is None:
            disk.move_group(group, config.inbox, stem)
            record.delete()
            return Outcome(record.job, Status.CANCELLED)
        outputs = deliver(generation, config.outbox, job_file=record.job, prompt=record.prompt,
                          wanted=wanted,
                          fmt=ImageFormat(record.format) if record.format else None,
                          refs=record.refs)
    disk.move_group(group, config.inbox / disk.DONE, stem)
    record.delete()
    return Outcome(record.job, Status.DONE, outputs)


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
            images = [outbox / str(i.get("file")) for i in data.get("images") or []
                      if isinstance(i, dict)]
            return (*images, Path(name))
    return ()
