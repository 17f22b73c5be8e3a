"""`processing/.<job>.run.json`: what a crash must not forget about a running job.

The codex process group and the thread id are saved the moment they are known, so the next
start waits for a codex that is still running and takes its image from the session log instead
of running the job again: a crash never spends the user's quota twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import files
from daemon.errors import InboxError
from daemon.logs import get_logger


@dataclass
class RunRecord:
    """`processing/.<job>.run.json`: the job's codex thread id, saved the moment it is known."""

    job_path: Path
    job: str
    refs: list[str]
    prompt: str = ""
    prompt_source: str | None = None
    wanted: str = ""
    format: str | None = None
    timeout_sec: float | None = None
    pgid: int | None = None
    thread_id: str | None = None
    started_at: str | None = None
    delivery: dict[str, Any] | None = None  # the DeliveryPlan, saved before the first write
    failed_recoveries: int = 0
    transparent: bool = False  # as the job asked: the sidecar of a recovered delivery says it too
    aspect: str | None = None
    variants: int = 1
    # Finished runs of this claim ({thread_id, started_at}), so that a crash between two runs
    # of a job of several variants neither loses their images nor runs codex for them again.
    runs: list[dict[str, Any]] = field(default_factory=list)
    progress: str | None = None  # the incomplete result sidecar of earlier claims, continued

    @property
    def path(self) -> Path:
        return record_path(self.job_path)

    def save(self) -> None:
        fields = {name: getattr(self, name) for name in _RECORD_FIELDS}
        files.replace_file(self.path, json.dumps(fields).encode(), durable=False)

    def set_process(self, pgid: int) -> None:
        """codex started (its process group id): called the moment it is known."""
        self.pgid = pgid
        self.started_at = datetime.now().astimezone().isoformat()
        self._save_during_run()

    def set_thread(self, thread_id: str) -> None:
        """codex announced its thread: called from the thread that reads codex's events."""
        self.thread_id = thread_id
        self.started_at = self.started_at or datetime.now().astimezone().isoformat()
        self._save_during_run()

    def _save_during_run(self) -> None:
        # The record only serves a later crash recovery: a disk that cannot take it now must
        # not break the running job (nor the thread reading codex's events).
        try:
            self.save()
        except InboxError as error:
            get_logger().warning("run record not saved", job=self.job, message=error.message)

    def set_delivery(self, plan: dict[str, Any]) -> None:
        """The names the delivery is about to write. Unlike the other notes this one must be
        on disk before the first write, or a crash would leave files no restart knows of."""
        self.delivery = plan
        try:
            self.save()
        except InboxError:
            if self.job_path.parent.is_dir():
                raise
            # processing/ itself was removed (the inbox deleted mid-run): no restart could find
            # this job again, so the images are delivered without the note.
            get_logger().warning("job folder removed while the job ran", job=self.job)

    def add_run(self, thread_id: str) -> None:
        """A run finished: its images count from now on, also after a crash."""
        self.runs.append({"thread_id": thread_id, "started_at": self.started_at})
        self._save_during_run()

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


def record_path(job_path: Path) -> Path:
    """`.<job file name>.run.json` beside the job, shortened to fit a file name if need be."""
    # The leading dot counts too: fitted as if it were part of the tail.
    return job_path.with_name(f".{files.fit_stem(job_path.name, ['.' + RECORD_SUFFIX])}.run.json")


RECORD_SUFFIX = ".run.json"
_RECORD_FIELDS = (
    "job",
    "refs",
    "prompt",
    "prompt_source",
    "wanted",
    "format",
    "timeout_sec",
    "pgid",
    "thread_id",
    "started_at",
    "delivery",
    "failed_recoveries",
    "transparent",
    "aspect",
    "variants",
    "runs",
    "progress",
)
