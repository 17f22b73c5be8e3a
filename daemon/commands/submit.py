"""`gpt-image-inbox submit`: write a job into the inbox atomically, and optionally follow it.

References are copied in first, as the job's siblings; the job file appears last, in one
rename, so the daemon never sees a job without its references, and each file arrives as a move:
complete, so the daemon takes the job at once instead of after its settle time.
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

from daemon import files, yaml_text
from daemon.config import Config
from daemon.errors import Cancelled, UsageError, class_for_layer
from daemon.images import check_reference_argument
from daemon.job.names import JOB_SUFFIX, is_job_file, sibling_references
from daemon.job.parse import parse_job
from daemon.loop.status import not_running_notice, read_status


def submit_job(
    *,
    prompt: str,
    refs: Sequence[Path],
    name: str | None,
    config: Config,
    transparent: bool = False,
    aspect: str | None = None,
    variants: int = 1,
) -> Path:
    """Write `<name>.prompt.yaml` (and its references) into the inbox; returns the job path.

    `transparent`, `aspect` and `variants` become the job's keys of those names, written only
    when they differ from the default.
    """
    if not prompt.strip():
        raise UsageError("--prompt is empty.", hint="Give the prompt text after --prompt.")
    formats = [check_reference_argument(ref) for ref in refs]
    job: dict[str, object] = {"prompt": prompt}
    if transparent:
        job["transparent"] = True
    if aspect is not None:
        job["aspect"] = aspect
    if variants != 1:
        job["variants"] = variants
    text = yaml.safe_dump(job, allow_unicode=True, sort_keys=False, width=10**6)
    if yaml_text.load(text) != job:  # the prompt must arrive exactly as given
        raise UsageError("The prompt cannot be written to a job file unchanged.")
    inbox = files.ensure_dir(config.inbox)
    stem = _free_stem(inbox, name or f"job-{datetime.now():%Y%m%d-%H%M%S}")
    for n, (ref, fmt) in enumerate(zip(refs, formats, strict=True), 1):
        files.move_new(inbox / f"{stem}.ref-{n:02d}.{fmt.extension}", ref.read_bytes())
    job_path = inbox / f"{stem}{JOB_SUFFIX}"
    files.move_new(job_path, text.encode("utf-8"))
    parse_job(job_path, inbox=inbox)  # the same checks the daemon makes, reported now
    return job_path


def _free_stem(inbox: Path, wanted: str) -> str:
    if "/" in wanted or "\\" in wanted or not wanted.strip():
        raise UsageError(f"--name {wanted!r} must be a plain file name without folders.")
    if not is_job_file(wanted + JOB_SUFFIX):
        raise UsageError(
            f"--name {wanted!r} looks like a sync tool's or an editor's temporary file,"
            " which the daemon never takes as a job.",
            hint="Choose a name that does not start with '.', '~$' or '~syncthing~'.",
        )
    places = [inbox, *(inbox / state for state in (files.PROCESSING, files.DONE, files.FAILED))]
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
    config_path: Path | None = None,
    out: TextIO = sys.stderr,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    stop: threading.Event | None = None,
) -> list[Path]:
    """Follow the job until its result or final error sidecar appears; returns the images.

    Progress goes to `out`: one line that ticks on a terminal, plain lines otherwise. Without a
    daemon it says so at once and keeps waiting for one to start. `stop` set ends the wait
    (Cancelled, saying where the job is): the daemon keeps the job.
    """
    progress = _Progress(out)
    daemon: bool | None = True
    try:
        while True:
            if stop is not None and stop.is_set():
                raise Cancelled(left_behind(job_path, config))
            sidecar = _find_sidecar(config.outbox, job_path.name, since)
            if sidecar is not None:
                path, data = sidecar
                if path.name.endswith(files.RESULT_SUFFIX):
                    return [config.outbox / img["file"] for img in data.get("images") or []]
                if not data.get("retrying"):
                    # The same error class the daemon raised: `submit --wait` exits like `gen`.
                    cls = class_for_layer(str(data.get("error")))
                    raise cls(
                        str(data.get("message")),
                        hint=str(data.get("hint") or ""),
                        detail=str(data.get("detail") or ""),
                    )
            daemon = _watch_daemon(config, config_path, daemon, progress)
            if daemon is False:
                progress.show("waiting for a daemon…", None)
            else:
                progress.show(*_progress(job_path, config, sidecar, now()))
            sleep(0.5)
    finally:
        progress.close()


def _watch_daemon(
    config: Config, config_path: Path | None, before: bool | None, progress: _Progress
) -> bool | None:
    """Say when no daemon works on the inbox (once), and when one starts."""
    running, notice = not_running_notice(config.inbox, config_path)
    if running is not before:
        if running is True:
            progress.note("A daemon has started: " + notice)
        else:
            progress.note(
                f"gpt-image-inbox: {notice}\n  Waiting for a daemon to take the job; Ctrl-C "
                "stops waiting (the job stays in the inbox)."
            )
    return running


class _Progress:
    """One status line: rewritten in place on a terminal as it ticks, else a plain line for each
    new state (and every PLAIN_EVERY_SEC while the job runs), so a log shows signs of life."""

    PLAIN_EVERY_SEC = 10

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.state = ""
        self.text = ""
        self.open = False  # a ticking line is on the terminal, not ended yet
        self.plain_at = -1

    def show(self, state: str, elapsed: int | None) -> None:
        text = state if elapsed is None else f"{state} {_elapsed(elapsed)}"
        if self.tty:
            if state != self.state:
                self._end_line()
            if text != self.text:
                self.out.write(f"\r\x1b[K{text}")  # back to the line's start, clear it, write
                self.out.flush()
                self.open = True
        else:
            due = elapsed is not None and elapsed // self.PLAIN_EVERY_SEC > self.plain_at
            if state != self.state or due:
                self.plain_at = -1 if elapsed is None else elapsed // self.PLAIN_EVERY_SEC
                print(text, file=self.out, flush=True)
        self.state, self.text = state, text

    def note(self, message: str) -> None:
        self._end_line()
        print(message, file=self.out, flush=True)
        self.state = self.text = ""  # show the current state again below the note

    def close(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self.open:
            self.out.write("\n")
            self.out.flush()
            self.open = False


def _elapsed(seconds: int) -> str:
    minutes, rest = divmod(max(seconds, 0), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def left_behind(job_path: Path, config: Config) -> str:
    """What becomes of a job whose `submit --wait` stopped waiting: the daemon owns it now."""
    name = job_path.name
    if job_path.exists():
        queued = " ".join(str(p) for p in [job_path, *sibling_references(job_path)])
        return (
            f"{name} is still queued in the inbox and the daemon will run it; "
            f"to withdraw it, delete {queued}"
        )
    if (config.inbox / files.PROCESSING / name).exists():
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
    for suffix in (files.RESULT_SUFFIX, files.ERROR_SUFFIX):
        for path in outbox.glob(f"*{suffix}"):
            data = files.read_yaml(path)
            if data is None or data.get("job") != job_file or data.get("complete") is False:
                continue  # an incomplete result: the job still makes the images missing
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


def _progress(
    job_path: Path,
    config: Config,
    sidecar: tuple[Path, dict[str, Any]] | None,
    now: datetime,
) -> tuple[str, int | None]:
    """What the job is doing, and for how many seconds when it runs."""
    if sidecar is not None:
        return f"will retry: {sidecar[1].get('message')}", None
    status = read_status(config.outbox) or {}
    if status.get("current_job") == job_path.name:
        started = _parse_time(status.get("job_started_at"))
        elapsed = int((now - started).total_seconds()) if started else None
        return f"working on {job_path.name}…", elapsed
    if status.get("state") == "paused" and status.get("paused"):
        return f"waiting: the queue is paused ({status['paused'].get('message')})", None
    if job_path.exists():
        return f"queued ({status.get('queue_length', '?')} in the queue)", None
    return "waiting for the daemon…", None


def _parse_time(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
