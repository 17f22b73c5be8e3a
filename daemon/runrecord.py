"""`processing/.<job>.run.json`: what a crash must not forget about a running job.

The codex process group and the thread id are saved the moment they are known, so the next
start waits for a codex that is still running and takes its image from the session log instead
of running the job again: a crash never spends the user's quota twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon import outbox as disk


@dataclass
class RunRecord:
    """`processing/.<job>.run.json`: the job's codex thread id, saved the moment it is known."""

    job_path: Path
    job: str
    refs: list[str]
    prompt: str = ""
    wanted: str = ""
    format: str | None = None
    timeout_sec: float | None = None
    pgid: int | None = None
    thread_id: str | None = None
    started_at: str | None = None

    @property
    def path(self) -> Path:
        return self.job_path.with_name(f".{self.job_path.name}.run.json")

    def save(self) -> None:
        fields = {name: getattr(self, name) for name in _RECORD_FIELDS}
        disk.replace_file(self.path, json.dumps(fields).encode(), durable=False)

    def set_process(self, pgid: int) -> None:
        self.pgid = pgid
        self.started_at = datetime.now().astimezone().isoformat()
        self.save()

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


_RECORD_FIELDS = (
    "job",
    "refs",
    "prompt",
    "wanted",
    "format",
    "timeout_sec",
    "pgid",
    "thread_id",
    "started_at",
)
