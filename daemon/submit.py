"""`gpt-image-inbox submit`: write a job into the inbox atomically, and optionally follow it.

References are copied in first, as the job's siblings; the job file appears last, in one
rename, so the daemon never sees a job without its references.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from daemon import outbox as disk
from daemon.config import Config
from daemon.errors import Cancelled, UsageError, class_for_layer
from daemon.images import check_reference_argument
from daemon.job import JOB_SUFFIX, parse_job, sibling_references
from daemon.status import read_status


def submit_job(*, prompt: str, refs: Sequence[Path], name: str | None, config: Config) -> Path:
    """Write `<name>.prompt.yaml` (and its references) into the inbox; returns the job path."""
    if not prompt.strip():
        raise UsageError("--prompt is empty.", hint="Give the prompt text after --prompt.")
    formats = [check_reference_argument(ref) for ref in refs]
    text = yaml.safe_dump({"prompt": prompt}, allow_unicode=True, sort_keys=False, width=10**6)
    if yaml.safe_load(text) != {"prompt": prompt}:  # the prompt must arrive exactly as given
        raise UsageError("The prompt cannot be written to a job file unchanged.")
    inbox = disk.ensure_dir(config.inbox)
    stem = _free_stem(inbox, name or f"job-{datetime.now():%Y%m%d-%H%M%S}")
    for n, (ref, fmt) in enumerate(zip(refs, formats, strict=True), 1):
        disk.write_new(inbox / f"{stem}.ref-{n:02d}.{fmt.extension}", ref.read_bytes())
    job_path = inbox / f"{stem}{JOB_SUFFIX}"
    disk.write_new(job_path, text.encode("utf-8"))
    parse_job(job_path, inbox=inbox)  # the same checks the daemon makes, reported now
    return job_path


def _free_stem(inbox: Path, wanted: str) -> str:
    if "/" in wanted or "\\" in wanted or wanted.startswith(".") or not wanted.strip():
        raise UsageError(f"--name {wanted!r} must be a plain file name without folders.")
    places = [inbox, *(inbox / state for state in (disk.PROCESSING, disk.DONE, disk.FAILED))]
    for n in range(1, 10_000):
        stem = wanted if n == 1 else f"{wanted}-{n}"
        if not any((place / f"{stem}{JOB_SUFFIX}").exists() for place in places):
            return stem
    raise UsageError(f"No free job name for {wanted!r}.")


def wait_for_result(
    job_path: Path,
    config: Config,
    *,
    since: datetime,
    out: TextIO = sys.stderr,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> list[Path]:
    """Follow the job until its result or final error sidecar appears; returns the images.

    `stop` set ends the wait (Cancelled, saying where the job is): the daemon keeps the job.
    """
    shown = ""
    while True:
        if stop is not None and stop.is_set():
            raise Cancelled(left_behind(job_path, config))
        sidecar = _find_sidecar(config.outbox, job_path.name, since)
        if sidecar is not None:
            path, data = sidecar
            if path.name.endswith(disk.RESULT_SUFFIX):
                return [config.outbox / img["file"] for img in data.get("images") or []]
            if not data.get("retrying"):
                # The same error class the daemon raised: `submit --wait` exits like `gen`.
                cls = class_for_layer(str(data.get("error")))
                raise cls(
                    str(data.get("message")),
                    hint=str(data.get("hint") or ""),
                    detail=str(data.get("detail") or ""),
                )
        line = _progress(job_path, config, sidecar)
        if line != shown and out.isatty():
            print(line, file=out)
            shown = line
        sleep(0.5)


def left_behind(job_path: Path, config: Config) -> str:
    """What becomes of a job whose `submit --wait` stopped waiting: the daemon owns it now."""
    name = job_path.name
    if job_path.exists():
        files = " ".join(str(p) for p in [job_path, *sibling_references(job_path)])
        return (
            f"{name} is still queued in the inbox and the daemon will run it; "
            f"to withdraw it, delete {files}"
        )
    if (config.inbox / disk.PROCESSING / name).exists():
        return (
            f"the daemon is running {name} and will finish it; its result will be in "
            f"{config.outbox} (only stopping the daemon puts it back in the inbox)"
        )
    return f"{name} has left the queue; its result or error is in {config.outbox}"


def _find_sidecar(
    outbox: Path, job_file: str, since: datetime
) -> tuple[Path, dict[str, Any]] | None:
    """The newest sidecar of this job written after it was submitted."""
    found = []
    for suffix in (disk.RESULT_SUFFIX, disk.ERROR_SUFFIX):
        for path in outbox.glob(f"*{suffix}"):
            data = disk.read_yaml(path)
            if data is None or data.get("job") != job_file:
                continue
            stamp = data.get("finished_at") or data.get("failed_at")
            try:
                when = datetime.fromisoformat(str(stamp))
            except ValueError:
                continue
            if when >= since:
                found.append((when, path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda item: item[0])
    return path, data


def _progress(job_path: Path, config: Config, sidecar: tuple[Path, dict[str, Any]] | None) -> str:
    if sidecar is not None:
        return f"will retry: {sidecar[1].get('message')}"
    status = read_status(config.outbox) or {}
    if status.get("current_job") == job_path.name:
        return "working…"
    if status.get("state") == "paused" and status.get("paused"):
        return f"waiting: the queue is paused ({status['paused'].get('message')})"
    if job_path.exists():
        return f"queued ({status.get('queue_length', '?')} in the queue)"
    return "waiting for the daemon…"
