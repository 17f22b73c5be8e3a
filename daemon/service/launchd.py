"""The launchd backend: a LaunchAgent plist in ~/Library/LaunchAgents, driven by `launchctl`."""

from __future__ import annotations

import os
import plistlib
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import files
from daemon.service.base import (
    LABEL,
    Backend,
    ServiceState,
    Settings,
    call,
    log_file,
    print_dry_run,
    run_all,
    template_text,
)

if TYPE_CHECKING:
    from daemon.config import Config

PLIST_TEMPLATE = f"{LABEL}.plist"
# Folders macOS privacy protection (TCC) closes to launchd programs without Full Disk Access.
MACOS_PROTECTED = ("Documents", "Desktop", "Downloads", "Library/Mobile Documents")


def render_plist(settings: Settings) -> bytes:
    """The LaunchAgent plist: the template parsed, placeholders filled with typed values."""
    values: dict[str, Any] = {
        "label": LABEL,
        "program_arguments": list(settings.program),
        "exit_timeout": settings.stop_timeout_sec,
        "path": settings.path,
        "log_file": str(settings.log_file),
    }
    template = plistlib.loads(template_text(PLIST_TEMPLATE).encode())
    filled = _fill(template, values)
    if settings.codex_home:  # a key only when set: an empty CODEX_HOME makes codex exit 1
        filled["EnvironmentVariables"]["CODEX_HOME"] = settings.codex_home
    return plistlib.dumps(filled, sort_keys=False)


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    """Fill placeholders in a parsed plist; a whole-value `${name}` takes the value's type."""
    if isinstance(node, dict):
        return {key: _fill(item, values) for key, item in node.items()}
    if isinstance(node, list):
        filled: list[Any] = []
        for item in node:
            value = _fill(item, values)
            # A list placeholder inside an array is spliced in: ProgramArguments.
            if isinstance(value, list) and isinstance(item, str):
                filled.extend(value)
            else:
                filled.append(value)
        return filled
    if isinstance(node, str):
        name = node[2:-1] if node.startswith("${") and node.endswith("}") else None
        if name is not None and name in values:
            return values[name]
        return string.Template(node).substitute({k: str(v) for k, v in values.items()})
    return node


def protected_folder(folder: Path, home: Path) -> str | None:
    """The folder of MACOS_PROTECTED that holds `folder`, or None."""
    absolute = Path(os.path.abspath(folder))
    for name in MACOS_PROTECTED:
        if absolute == home / name or (home / name) in absolute.parents:
            return name
    return None


def interpreter(command: Sequence[str]) -> str:
    """The binary macOS attributes file access to: a script's interpreter, resolved."""
    program = Path(command[0])
    try:
        with program.open("rb") as fh:
            first = fh.readline(512)
    except OSError:
        return str(program)
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words:
            return str(Path(words[0]).resolve())
    return str(program.resolve())


def tail(path: Path, count: int, *, chunk: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a file, reading only its end (logs grow without bound)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chunk))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-count:]


class LaunchdBackend(Backend):
    """A LaunchAgent in the user's GUI domain: logs go to a file under ~/Library/Logs."""

    kind = "launchd agent"
    # launchd's own PATH lacks both Homebrew prefixes (Apple silicon, then Intel).
    base_path = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")

    @staticmethod
    def file_for(home: Path, environ: Mapping[str, str]) -> Path:
        return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    @property
    def _target(self) -> str:
        return f"gui/{self.host.getuid()}/{LABEL}"

    def before_install(self, config: Config, command: Sequence[str]) -> None:
        """macOS blocks launchd programs from Documents, Desktop, Downloads and iCloud (TCC)."""
        for role, folder in (("inbox", config.inbox), ("outbox", config.outbox)):
            protected = protected_folder(Path(folder), self.host.home)
            if protected is None:
                continue
            self.host.out(
                f"NOTE: your {role} {folder} is inside ~/{protected}, which macOS keeps from "
                "programs\n  started by launchd ('Operation not permitted'). Either move it "
                "elsewhere, or open\n  System Settings > Privacy & Security > Full Disk Access, "
                "click +, and add\n"
                f"  {interpreter(command)}  (Cmd-Shift-G lets you type the path)."
            )

    def install(self, settings: Settings, *, dry_run: bool) -> int:
        host, plist, data = self.host, self.file, render_plist(settings)
        domain = f"gui/{host.getuid()}"
        commands = [
            ("launchctl", "bootout", self._target),  # unload an older copy; fails if none
            ("launchctl", "enable", self._target),  # clear an earlier `launchctl disable`
            ("launchctl", "bootstrap", domain, str(plist)),
        ]
        if dry_run:
            host.out(f"Would create the log folder {settings.log_file.parent}")
            return print_dry_run(plist, data.decode(), commands, host)
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        files.ensure_dir(plist.parent)
        files.replace_file(plist, data, mode=0o644)
        host.out(f"Wrote {plist}")
        call(host.run, commands[0])  # failure only means it was not loaded
        if run_all(commands[1:], host):
            host.out("Could not load the agent with launchctl; the plist is in place.")
            return 1
        host.out(f"Installed and started. Logs: {settings.log_file}")
        return 0

    def stop_commands(self) -> list[tuple[str, ...]]:
        return [("launchctl", "bootout", self._target)]

    def after_commands(self) -> list[tuple[str, ...]]:
        return []  # bootout has unloaded it: launchd keeps no list of files to refresh

    def farewell(self) -> None:
        self.host.out(f"The log stays in {log_file(self.host.home).parent}; delete it if you like.")

    def query(self) -> ServiceState:
        path = self.file
        result = call(self.host.run, ("launchctl", "print", self._target))
        if not result.ok:
            return ServiceState(path, path.exists(), False, "not loaded", None, None)
        fields: dict[str, str] = {}
        for line in result.output.splitlines():
            key, sep, value = line.strip().partition(" = ")
            if sep and key not in fields:  # the first (outermost) occurrence describes the job
                fields[key] = value.strip()
        state = fields.get("state", "unknown")
        pid = fields.get("pid")
        since = None
        if pid and pid.isdigit():
            started = call(self.host.run, ("ps", "-o", "lstart=", "-p", pid))
            since = (started.output.strip() or None) if started.ok else None
        return ServiceState(path, path.exists(), state == "running", state, since, None)

    def last_log_lines(self, count: int) -> list[str]:
        return tail(log_file(self.host.home), count)

    def environment(self, data: bytes) -> dict[str, str]:
        try:
            values = plistlib.loads(data).get("EnvironmentVariables", {})
        except (plistlib.InvalidFileException, ValueError, AttributeError):
            return {}
        return {k: v for k, v in values.items() if isinstance(v, str)}
