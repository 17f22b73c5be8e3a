"""Find one codex run's session log, and read the images that run generated from it.

The log is looked for only where this run's can be (by its thread id and start time), never
in a listing of every session; what its lines mean is daemon.codex.log_scan's part.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from daemon.codex.log_lines import DEFAULT_SIZES, BufferSizes, FileStrings, LogLines
from daemon.codex.log_scan import FoundImage, RolloutScan, Scanner
from daemon.images import sniff_format

_THREAD_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{7,79}")


def _check_thread_id(thread_id: str) -> None:
    # The id goes into a glob pattern and a folder name: no separators, no metacharacters.
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        raise ValueError(f"not a codex thread id: {thread_id!r}")


def find_session_log(codex_home: Path, thread_id: str, *, started_at: datetime) -> Path | None:
    """This run's log, looked for only in the local-date folders around `started_at`.

    Thread ids of current releases are UUIDv7s that carry their creation time, which is also
    the log's name: those logs are found by name alone, without listing any folder.
    """
    _check_thread_id(thread_id)
    for candidate in _named_candidates(codex_home, thread_id):
        if candidate.is_file():
            return candidate
    day = (started_at.astimezone() if started_at.tzinfo else started_at).date()
    for offset in (0, -1, 1):
        d = day + timedelta(days=offset)
        folder = codex_home / "sessions" / f"{d:%Y}" / f"{d:%m}" / f"{d:%d}"
        found = sorted(folder.glob(f"rollout-*-{thread_id}.jsonl"))
        if found:
            return found[-1]
    return None


def _named_candidates(codex_home: Path, thread_id: str) -> list[Path]:
    """Exact log paths for a UUIDv7 thread id: its local creation second, and one either side."""
    try:
        parsed = uuid.UUID(thread_id)
    except ValueError:
        return []
    if parsed.version != 7:
        return []
    try:
        created = datetime.fromtimestamp((parsed.int >> 80) / 1000).astimezone()
        times = [created + timedelta(seconds=delta) for delta in (0, 1, -1)]
    except (ValueError, OverflowError, OSError):
        return []  # a version-7 id whose time no calendar holds: leave it to the folder search
    paths = []
    for t in times:
        name = f"rollout-{t:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"
        paths.append(codex_home / "sessions" / f"{t:%Y}" / f"{t:%m}" / f"{t:%d}" / name)
    return paths


def generated_images(codex_home: Path, thread_id: str) -> list[FoundImage]:
    """Images codex saved under `generated_images/<thread_id>/`, oldest first, by real format."""
    _check_thread_id(thread_id)
    folder = codex_home / "generated_images" / thread_id
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file()]
    found = []
    for path in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name)):
        data = path.read_bytes()
        fmt = sniff_format(data[:16])
        if fmt is not None:
            found.append(FoundImage(data, fmt, path.stem, None))
    return found


def scan_rollout(path: Path, *, sizes: BufferSizes = DEFAULT_SIZES) -> RolloutScan:
    """Everything one session log says about its run's images, refusals and turn outcome."""
    scanner = Scanner()
    with path.open("rb", buffering=0) as lines_file, path.open("rb") as blob_file:
        for line, blobs in LogLines(lines_file, scanner.wanted, sizes):
            scanner.line(line, FileStrings(blob_file, blobs))
    return scanner.result()
