"""One daemon's world under test: inbox, outbox, CODEX_HOME, the config and the fake codex's
script in one folder, and what a user sees there afterwards (sidecars, job files, calls).

Tests of the long-running daemon start it with `World.daemon()`; tests of `once` run it in this
process with `World.once()`; `settings` holds what a test's config says differently. A
`RealWorld` has the real codex CLI, logged in to the mock OpenAI server, in place of the fake.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon import cli
from tests.support.codex_home import codex_env
from tests.support.daemon_proc import DaemonProcess
from tests.support.mock_openai import MockOpenAI
from tests.support.procs import kill_alive

REPO = Path(__file__).resolve().parents[2]
FAKE_CODEX = REPO / "tests" / "support" / "fake_codex.py"
JOB_SUFFIX = ".prompt.yaml"


@dataclass
class World:
    """Folders, config file and fake codex script of one daemon (or `once`) under test."""

    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    python: str = sys.executable  # runs the daemon and the fake codex
    inbox: Path = field(init=False, repr=False)
    outbox: Path = field(init=False, repr=False)
    codex_home: Path = field(init=False, repr=False)
    config_path: Path = field(init=False, repr=False)
    script_path: Path = field(init=False, repr=False)  # what the fake codex does
    record_path: Path = field(init=False, repr=False)  # what it was asked, one line a call

    def __post_init__(self) -> None:
        self.inbox = self.root / "inbox"
        self.outbox = self.root / "outbox"
        self.codex_home = self.root / "codex-home"
        self.config_path = self.root / "config.yaml"
        self.script_path = self.root / "fake-codex.json"
        self.record_path = self.root / "codex-calls.jsonl"
        for folder in (self.inbox, self.outbox, self.codex_home):
            folder.mkdir(parents=True, exist_ok=True)
        self.set_script()
        self.write_config()

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

    def sidecar(self, name: str) -> dict[str, Any]:
        """The sidecar `name` in the outbox, which must be there."""
        data = yaml.safe_load((self.outbox / name).read_text(encoding="utf-8"))
        assert isinstance(data, dict), data
        return data

    def files(self, folder: Path) -> list[str]:
        """Names in `folder`, sorted; none when it does not exist."""
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def jobs_in(self, state: str = "") -> list[str]:
        """Job file names in the inbox root ("") or one of its state folders."""
        folder = self.inbox / state if state else self.inbox
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(JOB_SUFFIX))

    def status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.outbox / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_job(self, name: str, text: str = "prompt: a red fox\n") -> Path:
        """A job file written in one go under its final name."""
        path = self.inbox / f"{name}{JOB_SUFFIX}"
        path.write_text(text, encoding="utf-8")
        return path

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`gpt-image-inbox ARGS --config <this config>` as a child process, to its end
        (`env` defaults to `self.env()`)."""
        return subprocess.run(
            [self.python, "-m", "daemon", *args, "--config", str(self.config_path)],
            env=env if env is not None else self.env(),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def crash_after_delivery(self, job_file: str, result: Mapping[str, Any]) -> None:
        """Put the disk back as a crash right after `result` was delivered leaves it: the job
        file (now in done/) back in processing/ with its run record."""
        processing = self.inbox / "processing"
        processing.mkdir(exist_ok=True)
        os.replace(self.inbox / "done" / job_file, processing / job_file)
        record = {
            "job": job_file,
            "refs": [],
            "prompt": result["prompt"],
            "wanted": job_file.removesuffix(JOB_SUFFIX),
            "format": None,
            "thread_id": result["thread_id"],
            "started_at": result["started_at"],
        }
        (processing / f".{job_file}.run.json").write_text(json.dumps(record), encoding="utf-8")

    def main(self, command: str, *args: str) -> int:
        """`gpt-image-inbox COMMAND --config <this config> ARGS` in this process; its exit code.
        The fake codex finds its script through os.environ (the `world` fixture sets it)."""
        return cli.main([command, "--config", str(self.config_path), *args])

    def once(self) -> int:
        return self.main("once")


class RealWorld(World):
    """A World whose codex is the real CLI, logged in to the mock OpenAI server."""

    def __init__(self, root: Path, codex_bin: Path, home: Path, mock: MockOpenAI) -> None:
        self.mock = mock
        codex = {"command": [str(codex_bin)], "home": str(home), "timeout_sec": 120}
        settings = {"gallery": True, "retry": {"attempts": 2, "backoff_sec": 0.1}, "codex": codex}
        super().__init__(root, settings=settings)

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`World.cli`, in an environment for the real codex (none of the fake's variables)."""
        return super().cli(*args, env=env or codex_env(self.mock.port), cwd=cwd)
