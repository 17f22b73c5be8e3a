"""A real `gpt-image-inbox run` subprocess on real folders, for daemon tests and benchmarks.

`DaemonWorld` lays out inbox, outbox, CODEX_HOME, the config and the fake codex's script;
`DaemonProcess` starts the daemon, sends it signals and polls for conditions with a deadline.
No pytest here: bench/ starts its daemons with `DaemonProcess` too.
"""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.procs import TIMEOUT, Timeout, kill_alive, wait_for

REPO = Path(__file__).resolve().parents[2]
FAKE_CODEX = REPO / "tests" / "support" / "fake_codex.py"
JOB_SUFFIX = ".prompt.yaml"

T = TypeVar("T")


@dataclass
class DaemonWorld:
    """Folders, config file and fake codex script of one daemon under test."""

    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    python: str = sys.executable  # runs the daemon and the fake codex

    def __post_init__(self) -> None:
        for folder in (self.inbox, self.outbox, self.codex_home):
            folder.mkdir(parents=True, exist_ok=True)
        self.set_script()
        self.write_config()

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def codex_home(self) -> Path:
        return self.root / "codex-home"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def script_path(self) -> Path:
        return self.root / "fake-codex.json"

    @property
    def record_path(self) -> Path:
        return self.root / "codex-calls.jsonl"

    def write_config(self, **overrides: Any) -> None:
        """The config: fast settle and backoff, the fake codex; `overrides` merge per section."""
        config: dict[str, Any] = {
            "inbox": str(self.inbox),
            "outbox": str(self.outbox),
            "gallery": False,
            "shutdown_grace_sec": 5,
            "codex": {
                "command": [self.python, str(FAKE_CODEX)],
                "home": str(self.codex_home),
                "timeout_sec": 60,
            },
            "watch": {"settle_sec": 0.3, "rescan_sec": 3},
            "retry": {"attempts": 3, "backoff_sec": 0.2, "max_backoff_sec": 1},
        }
        for key, value in {**self.settings, **overrides}.items():
            if isinstance(value, dict):
                config[key] = {**config.get(key, {}), **value}
            else:
                config[key] = value
        self.settings = {**self.settings, **overrides}
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def set_script(self, **conf: Any) -> None:
        """What the fake codex does from its next call on (it records every `exec`)."""
        conf.setdefault("record", str(self.record_path))
        tmp = self.script_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(conf), encoding="utf-8")
        os.replace(tmp, self.script_path)

    def daemon(
        self,
        *,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        log_name: str = "daemon.log",
    ) -> DaemonProcess:
        """A daemon on this world, not started yet (`env` defaults to `self.env()`)."""
        return DaemonProcess(
            self.config_path,
            env=env if env is not None else self.env(),
            command=[self.python, "-m", "daemon"],
            prefix=prefix,
            log_path=self.root / log_name,
        )

    def kill_codex_leftovers(self) -> None:
        """SIGKILL every fake codex (and its child) this world's calls record still running."""
        kill_alive(pid for call in self.calls() for pid in (call.get("pid"), call.get("child_pid")))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        path = os.pathsep.join([str(REPO), *site.getsitepackages()])
        env.update(
            FAKE_CODEX_SCRIPT=str(self.script_path),
            CODEX_HOME=str(self.codex_home),
            PYTHONPATH=path,
            PYTHONUNBUFFERED="1",
            **extra,
        )
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            if name not in extra:
                env.pop(name, None)
        return env

    # --- what the user sees ---------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """One entry per `codex exec` the fake codex played."""
        try:
            text = self.record_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # The last piece is a line the fake codex may still be writing: only whole lines count.
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def sidecars(self, suffix: str) -> dict[str, dict[str, Any]]:
        """Sidecar file name -> content, for `.result.yaml` or `.error.yaml`."""
        found = {}
        for path in sorted(self.outbox.glob(f"*{suffix}")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                found[path.name] = data
        return found

    def results(self) -> dict[str, dict[str, Any]]:
        return self.sidecars(".result.yaml")

    def errors(self) -> dict[str, dict[str, Any]]:
        return self.sidecars(".error.yaml")

    def results_for(self, job_file: str) -> list[dict[str, Any]]:
        return [d for d in self.results().values() if d.get("job") == job_file]

    def jobs_in(self, state: str = "") -> list[str]:
        """Job file names in the inbox root ("") or one of its state folders."""
        folder = self.inbox / state if state else self.inbox
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(JOB_SUFFIX))

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.outbox / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_job(self, name: str, text: str = "prompt: a red fox\n") -> Path:
        """A job file written in one go under its final name."""
        path = self.inbox / f"{name}{JOB_SUFFIX}"
        path.write_text(text, encoding="utf-8")
        return path


class DaemonProcess:
    """`gpt-image-inbox run --config PATH` as a child process in the config's folder; its
    stdout and stderr (JSON log lines) go to a file."""

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "daemon"),
        prefix: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.config = config
        self.env = dict(env if env is not None else os.environ)
        self.argv = [*prefix, *command, "run", "--config", str(config)]
        self.log_path = log_path or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, *, ready: bool = True) -> DaemonProcess:
        """Start the daemon; with `ready`, wait until it logs that it is watching."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.config.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if ready:
            self.wait_for(lambda: self.logged("watching"), what="daemon watching")
        return self

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill_if_running()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log's tail when the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_for(
        self,
        condition: Callable[[], T],
        *,
        timeout: float = TIMEOUT,
        what: str = "condition",
        interval: float = 0.05,
    ) -> T:
        """`procs.wait_for`, failing at once if the daemon exits, with its log's tail."""
        try:
            return wait_for(
                condition, timeout=timeout, what=what, interval=interval, alive=self.check_alive
            )
        except Timeout as exc:
            raise Timeout(f"{exc}\n--- daemon log ---\n{self.log_tail()}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL the daemon alone (its codex child lives on, as after a real crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"daemon still running after {timeout:g} s\n{self.log_tail()}") from None

    def stop(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.running():
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    # --- its log ------------------------------------------------------------------------

    def log_lines(self) -> list[dict[str, Any]]:
        """This run's JSON log lines (other output, such as a traceback, as {"raw": line})."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        lines = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            lines.append(entry if isinstance(entry, dict) else {"raw": line})
        return lines

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Log lines with this event and these field values."""
        return [
            e
            for e in self.log_lines()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill_if_running(self) -> None:
        if self.running():
            self.kill9()
