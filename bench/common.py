"""What the benchmarks share: result rows, statistics, the codex binary, daemon processes.

Polling and the daemon process are the tests' own (tests/support), which need no pytest.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon_proc import DaemonProcess

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("gpt-image-inbox")
CODEX_VERSION = "0.171.0"  # the release scripts/install-codex pins
INSTANT_CODEX = Path(__file__).with_name("instant_codex.py")
FAKE_CODEX = REPO / "tests" / "support" / "fake_codex.py"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None  # None: reference figure, no target
    note: str = ""


@dataclass(slots=True)
class Report:
    """What one benchmark returns: table rows plus raw figures for the JSON file."""

    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(self.name, *args, **kwargs))


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    work: Path  # scratch folder for this run


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return float(ordered[rank - 1])


def codex_bin() -> Path | None:
    """The pinned real codex CLI, as tests/conftest.py finds it; None when not installed."""
    explicit = os.environ.get("GPT_IMAGE_INBOX_CODEX_BIN")
    if explicit:
        path = Path(explicit)
    else:
        cache = os.environ.get("GPT_IMAGE_INBOX_CACHE") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-image-inbox"
        )
        path = Path(cache) / f"codex-{CODEX_VERSION}" / "node_modules" / ".bin" / "codex"
    return path if os.access(path, os.X_OK) else None


def write_config(
    path: Path,
    *,
    inbox: Path,
    outbox: Path,
    command: Sequence[str],
    home: Path | None = None,
    settle_sec: float | None = None,
    polling: bool = False,
    gallery: bool = True,
) -> Path:
    """A daemon config file (JSON is valid YAML); unset keys keep the product defaults."""
    config: dict[str, Any] = {
        "inbox": str(inbox),
        "outbox": str(outbox),
        "gallery": gallery,
        "codex": {"command": list(command)},
        "watch": {"polling": polling},
    }
    if home is not None:
        config["codex"]["home"] = str(home)
    if settle_sec is not None:
        config["watch"]["settle_sec"] = settle_sec
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def default_settle_sec() -> float:
    from daemon.config import WatchConfig

    return float(WatchConfig().settle_sec)


def start_daemon(
    config: Path, outbox: Path, *, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> DaemonProcess:
    """`gpt-image-inbox run --config PATH`, the console script a user starts, once its status
    says idle (start-up done, nothing queued); logs to the config's name with `.log`."""
    daemon = DaemonProcess(config, env=env, command=[str(CONSOLE_SCRIPT)]).start(ready=False)
    try:
        daemon.wait_for(
            lambda: _state(outbox / "status.json") == "idle",
            timeout=timeout,
            what="daemon idle",
            interval=0.02,
        )
    except AssertionError:  # not idle in time, or exited: the message has the log's tail
        daemon.kill_if_running()
        raise
    return daemon


def _state(status: Path) -> str | None:
    try:
        return str(json.loads(status.read_text(encoding="utf-8")).get("state"))
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmRSS, or VmHWM for the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def job_text(prompt: str) -> str:
    return f"prompt: {json.dumps(prompt)}\n"


def drop_job(stage: Path, inbox: Path, name: str, prompt: str) -> float:
    """Write a job outside the inbox, rename it in; returns the wall-clock time of the rename."""
    staged = stage / f"{name}.prompt.yaml"
    staged.write_text(job_text(prompt), encoding="utf-8")
    moment = time.time()
    os.rename(staged, inbox / staged.name)
    return moment
