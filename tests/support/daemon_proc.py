"""A real `gpt-image-inbox run` subprocess, for daemon tests and benchmarks: started on a config
file, sent signals, polled for conditions with a deadline, its JSON log read back.

No pytest here: bench/ starts its daemons with `DaemonProcess` too (tests through World.daemon).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.support.procs import TIMEOUT, Timeout, wait_for

T = TypeVar("T")


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
