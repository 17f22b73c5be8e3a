"""The systemd backend: a user unit in ~/.config/systemd/user, driven by `systemctl --user`."""

from __future__ import annotations

import os
import shlex
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import files
from daemon.service.base import (
    Backend,
    ServiceState,
    Settings,
    call,
    print_dry_run,
    run_all,
    template_text,
)

if TYPE_CHECKING:
    from daemon.config import Config

UNIT_NAME = "gpt-image-inbox.service"
UNIT_TEMPLATE = "gpt-image-inbox.service"


def config_home(home: Path, environ: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME when set to an absolute path (as the spec requires), else ~/.config."""
    value = environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and os.path.isabs(value) else home / ".config"


def systemd_quote(word: str, *, exec_line: bool = False) -> str:
    """One word for a unit file: C-escaped, `%` doubled, `$` doubled on Exec lines, quoted."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    if exec_line:
        escaped = escaped.replace("$", "$$")
    if escaped == word and word and not any(c in word for c in " ';"):
        return word
    return f'"{escaped}"'


def render_unit(settings: Settings) -> str:
    """The systemd user unit for these settings."""
    return string.Template(template_text(UNIT_TEMPLATE)).substitute(
        exec_start=_exec_line(settings.program),
        timeout_stop_sec=str(settings.stop_timeout_sec),
        environment_path=systemd_quote(f"PATH={settings.path}"),
        environment_codex_home=(
            "Environment=" + systemd_quote(f"CODEX_HOME={settings.codex_home}")
            if settings.codex_home
            else "# (CODEX_HOME was not set: codex uses ~/.codex)"
        ),
    )


def _exec_line(argv: Sequence[str]) -> str:
    """ExecStart's value: systemd expands $VARS in the arguments but not in the program's path."""
    program, *args = argv
    return " ".join([systemd_quote(program), *(systemd_quote(a, exec_line=True) for a in args)])


def unit_environment(text: str) -> dict[str, str]:
    """`Environment=` assignments (quoted or not; the last one wins, as in systemd)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("Environment="):
            continue
        try:
            words = shlex.split(line[len("Environment=") :])
        except ValueError:
            continue
        for word in words:
            name, eq, value = word.partition("=")
            if eq:
                found[name] = value.replace("%%", "%")
    return found


def _systemctl(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


class SystemdBackend(Backend):
    """A systemd user unit: logs go to the journal, STATUS= lines show in `status`."""

    kind = "systemd user unit"
    base_path = ("/usr/local/bin", "/usr/bin", "/bin")

    @staticmethod
    def file_for(home: Path, environ: Mapping[str, str]) -> Path:
        return config_home(home, environ) / "systemd" / "user" / UNIT_NAME

    def before_install(self, config: Config, command: Sequence[str]) -> None:
        """Nothing to warn about: a user unit reaches every folder its user can."""

    def install(self, settings: Settings, *, dry_run: bool) -> int:
        host, unit, text = self.host, self.file, render_unit(settings)
        was_running = call(host.run, _systemctl("is-active", UNIT_NAME)).output.strip() == "active"
        commands = [_systemctl("daemon-reload"), _systemctl("enable", "--now", UNIT_NAME)]
        if was_running:  # enable --now leaves a running daemon on its old command line
            commands.append(_systemctl("restart", UNIT_NAME))
        if dry_run:
            return print_dry_run(unit, text, commands, host)
        files.ensure_dir(unit.parent)
        files.replace_file(unit, text.encode(), mode=0o644)
        host.out(f"Wrote {unit}")
        if run_all(commands, host):
            host.out(
                "Could not start the service through `systemctl --user`. Is this a desktop or SSH\n"
                "  login with a user service manager (XDG_RUNTIME_DIR set)? The unit file is in "
                "place."
            )
            return 1
        self._hint_linger()
        host.out(f"Installed and started. Logs: journalctl --user -u {UNIT_NAME} -f")
        return 0

    def _hint_linger(self) -> None:
        host = self.host
        user = host.environ.get("USER") or host.environ.get("LOGNAME") or str(host.getuid())
        answer = call(host.run, ("loginctl", "show-user", user, "-p", "Linger"))
        if answer.ok and answer.output.strip() == "Linger=no":
            host.out(
                "HINT: the service stops when you log out and starts at your next login. To keep "
                "it\n  running without a session (and start it at boot): "
                f"loginctl enable-linger {user}"
            )

    def stop_commands(self) -> list[tuple[str, ...]]:
        return [_systemctl("disable", "--now", UNIT_NAME)]

    def after_commands(self) -> list[tuple[str, ...]]:
        return [_systemctl("daemon-reload")]

    def farewell(self) -> None:
        """Nothing is left behind: the journal keeps the logs."""

    def query(self) -> ServiceState:
        path = self.file
        props = "ActiveState,SubState,ActiveEnterTimestamp,StatusText,UnitFileState"
        result = call(self.host.run, _systemctl("show", UNIT_NAME, "-p", props))
        if not result.ok:
            state = f"unknown ({result.output or 'systemctl failed'})"
            return ServiceState(path, path.exists(), False, state, None, None)
        fields = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
        active = fields.get("ActiveState", "unknown")
        sub = fields.get("SubState", "")
        since = fields.get("ActiveEnterTimestamp") or None
        return ServiceState(
            file=path,
            installed=path.exists(),
            running=active == "active",
            state=f"{active} ({sub})" if sub else active,
            since=since if active == "active" else None,
            status_text=fields.get("StatusText") or None,
        )

    def last_log_lines(self, count: int) -> list[str]:
        argv = ("journalctl", "--user", "-u", UNIT_NAME, "-n", str(count), "--no-pager")
        result = call(self.host.run, argv)
        return result.output.splitlines()[-count:] if result.ok else []

    def environment(self, data: bytes) -> dict[str, str]:
        return unit_environment(data.decode("utf-8", errors="replace"))
