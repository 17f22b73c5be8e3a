"""What every login-service backend shares: the host it acts on, the settings it writes, this
program's own command, the tools the service needs on its PATH, and running external commands.

`Backend` is the interface one service manager implements (systemd.py, launchd.py); manager.py
picks the backend for the platform and holds the commands' entry points.
"""

from __future__ import annotations

import abc
import enum
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from daemon.config import Config

LABEL = "io.github.gpt-image-inbox"

Run = Callable[..., "subprocess.CompletedProcess[str]"]
Which = Callable[..., "str | None"]
Out = Callable[[str], None]


class System(enum.Enum):
    """The service managers this package knows, by `sys.platform`."""

    SYSTEMD = "linux"
    LAUNCHD = "darwin"


def system_for(platform: str) -> System | None:
    """The service manager of a `sys.platform` value, or None where none is supported."""
    if platform.startswith("linux"):
        return System.SYSTEMD
    if platform == "darwin":
        return System.LAUNCHD
    return None


@dataclass(frozen=True, slots=True)
class Host:
    """The outside world as the service commands see it; real by default, fakes in tests."""

    system: System
    home: Path
    environ: Mapping[str, str]
    run: Run
    out: Out
    getuid: Callable[[], int]


@dataclass(frozen=True, slots=True)
class Settings:
    """What goes into the unit or plist: all absolute."""

    program: tuple[str, ...]  # the full command: executable, `run`, `--config`, file
    path: str  # PATH the service gets
    stop_timeout_sec: int
    log_file: Path  # launchd only; systemd logs to the journal
    codex_home: str | None = None  # the installing shell's CODEX_HOME, carried into the service


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One external command's result, with stdout and stderr together."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What `status` and `doctor` report about the installed service."""

    file: Path | None  # where the service file is (or would be)
    installed: bool
    running: bool
    state: str  # the manager's own words: "active (running)", "running", "not loaded", ...
    since: str | None
    status_text: str | None  # the daemon's last STATUS= line (systemd)


def log_file(home: Path) -> Path:
    """The LaunchAgent's log; systemd services log to the journal instead."""
    return home / "Library" / "Logs" / "gpt-image-inbox" / "gpt-image-inbox.log"


def own_command(argv0: str | None = None, python: str | None = None) -> tuple[str, ...]:
    """The absolute command that started this program: its script, or `python -m daemon`.

    Symlinks are kept, not resolved: a stable link such as /opt/homebrew/bin/x or ~/.local/bin/x
    survives upgrades, while the versioned file behind it does not.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    python = sys.executable if python is None else python
    name = Path(argv0).name
    if not argv0 or name.endswith(".py") or argv0 in ("-m", "-c"):
        return (os.path.abspath(python), "-m", "daemon")
    if os.sep not in argv0:
        argv0 = shutil.which(argv0) or argv0
    return (os.path.abspath(argv0),)


# --- what the service needs on its PATH --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tools:
    """Where codex (the configured command) and node are found on a PATH."""

    codex: Path | None
    node: Path | None
    codex_needs_node: bool


def find_tools(codex_command: Sequence[str], which: Which, path: str | None = None) -> Tools:
    """Look up the codex command and node as a shell would on `path` (None: the current PATH)."""
    codex = which(codex_command[0], path=path) if codex_command else None
    node = which("node", path=path)
    codex_path = Path(codex).absolute() if codex else None
    return Tools(
        codex=codex_path,
        node=Path(node).absolute() if node else None,
        codex_needs_node=codex_path is not None and needs_node(codex_path),
    )


def needs_node(program: Path) -> bool:
    """True for a script started through node, like the npm codex (`#!/usr/bin/env node`)."""
    try:
        with program.open("rb") as fh:
            first = fh.readline(256)
    except OSError:
        return False
    return first.startswith(b"#!") and b"node" in first


def service_path(tools: Tools, base: Sequence[str]) -> str:
    """The PATH written into the service: the tools' folders first, then the system's `base`."""
    found = [str(p.parent) for p in (tools.codex, tools.node) if p is not None]
    # A ':' inside a folder name cannot be expressed in PATH; such a folder is left out.
    return ":".join(dict.fromkeys(d for d in [*found, *base] if ":" not in d))


def template_text(name: str) -> str:
    """A template shipped in the package: daemon/service/templates/ links to systemd/, launchd/."""
    return resources.files("daemon.service").joinpath("templates", name).read_text(encoding="utf-8")


# --- running commands --------------------------------------------------------------------------


def call(run: Run, argv: Sequence[str], *, timeout: float = 60) -> CommandResult:
    """Run one command, never raising for a missing program or a timeout."""
    try:
        done = run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return CommandResult(tuple(argv), 127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(tuple(argv), 124, f"{argv[0]}: no answer within {timeout:.0f} s")
    except OSError as exc:
        return CommandResult(tuple(argv), 126, f"{argv[0]}: {exc.strerror or exc}")
    text = "\n".join(s.strip() for s in (done.stdout or "", done.stderr or "") if s and s.strip())
    return CommandResult(tuple(argv), done.returncode, text)


def show(argv: Sequence[str]) -> str:
    """A command as the user would type it."""
    return " ".join(shlex.quote(w) for w in argv)


def run_all(commands: Iterable[Sequence[str]], host: Host) -> bool:
    """Run commands in order, stopping at the first failure; True when one failed."""
    for argv in commands:
        result = call(host.run, argv)
        host.out(f"$ {show(argv)}")
        if not result.ok:
            host.out(f"  failed ({result.returncode}): {result.output or 'no output'}")
            return True
    return False


def print_dry_run(path: Path, text: str, commands: Iterable[Sequence[str]], host: Host) -> int:
    """What an install would write and run, printed instead of done."""
    host.out(f"Would write {path}:")
    host.out(text.rstrip("\n"))
    host.out("Would run:")
    for argv in commands:
        host.out(f"  {show(argv)}")
    return 0


# --- one service manager -----------------------------------------------------------------------


class Backend(abc.ABC):
    """One service manager: where its file goes, what it holds, how it is loaded and asked."""

    kind: ClassVar[str]  # how `status` names the service: "systemd user unit"
    base_path: ClassVar[tuple[str, ...]]  # the system's folders, after the tools' own

    def __init__(self, host: Host) -> None:
        self.host = host

    @staticmethod
    @abc.abstractmethod
    def file_for(home: Path, environ: Mapping[str, str]) -> Path:
        """Where the service file is installed for this home and environment."""

    @property
    def file(self) -> Path:
        return self.file_for(self.host.home, self.host.environ)

    @abc.abstractmethod
    def before_install(self, config: Config, command: Sequence[str]) -> None:
        """Warn about what would keep the installed service from working."""

    @abc.abstractmethod
    def install(self, settings: Settings, *, dry_run: bool) -> int:
        """Write the service file, load and start it; 0 on success."""

    @abc.abstractmethod
    def stop_commands(self) -> list[tuple[str, ...]]:
        """What stops and unloads the service before its file is removed."""

    @abc.abstractmethod
    def after_commands(self) -> list[tuple[str, ...]]:
        """What tells the manager the file is gone."""

    @abc.abstractmethod
    def farewell(self) -> None:
        """A last word once the service is removed."""

    @abc.abstractmethod
    def query(self) -> ServiceState:
        """The service's state, asked of the manager."""

    @abc.abstractmethod
    def last_log_lines(self, count: int) -> list[str]:
        """The service's last `count` log lines."""

    @abc.abstractmethod
    def environment(self, data: bytes) -> dict[str, str]:
        """The variables the installed service file `data` sets."""

    def uninstall(self, *, dry_run: bool) -> int:
        """Stop the service and remove its file; 0 also when it was not installed."""
        out, path = self.host.out, self.file
        if not path.exists():
            out(f"Not installed: {path} does not exist.")
            return 0
        if dry_run:
            out(f"Would run: {'; '.join(show(a) for a in self.stop_commands())}")
            out(f"Would remove {path}")
            for argv in self.after_commands():
                out(f"Would run: {show(argv)}")
            return 0
        for argv in self.stop_commands():  # a service not running or not loaded is fine to remove
            result = call(self.host.run, argv)
            out(f"$ {show(argv)}" + ("" if result.ok else f"  ({result.output or 'failed'})"))
        path.unlink(missing_ok=True)
        out(f"Removed {path}")
        failed = run_all(self.after_commands(), self.host)
        self.farewell()
        return 1 if failed else 0
