"""Install, remove and inspect the login service: a systemd user unit or a macOS LaunchAgent.

Every path written into the service is absolute and every side effect (files, commands, output) is a
parameter, so `--dry-run` and the tests run the same code as a real install. The backend for the
platform (systemd.py, launchd.py) does what differs; this module holds the commands' entry points.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from daemon.config import Config, load_config
from daemon.errors import ConfigError
from daemon.service.base import (
    Backend,
    Host,
    Out,
    Run,
    ServiceState,
    Settings,
    System,
    Tools,
    Which,
    find_tools,
    log_file,
    own_command,
    service_path,
    system_for,
)
from daemon.service.launchd import LaunchdBackend
from daemon.service.systemd import SystemdBackend

STOP_MARGIN_SEC = 30  # on top of shutdown_grace_sec: time to put a stopped job back in the inbox

BACKENDS: dict[System, type[Backend]] = {
    System.SYSTEMD: SystemdBackend,
    System.LAUNCHD: LaunchdBackend,
}


def backend_for(host: Host) -> Backend:
    """The backend of the host's service manager."""
    return BACKENDS[host.system](host)


def service_file(system: System, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the unit (Linux) or the LaunchAgent plist (macOS) is installed."""
    return BACKENDS[system].file_for(home, environ)


def install(
    config_path: Path | None,
    *,
    dry_run: bool = False,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    run: Run = subprocess.run,
    executable: Sequence[str] | None = None,
    out: Out = print,
    getuid: Callable[[], int] = os.getuid,
) -> int:
    """Write the service for this installation, enable and start it; 0 on success."""
    host = _host(platform, home, environ, run, out, getuid)
    if host is None:
        return _unsupported(platform, out)
    try:
        config = load_config(config_path, environ=host.environ)
    except ConfigError as exc:
        out(f"Not installing: the configuration has problems.\n{exc}")
        out("Fix them (`gpt-image-inbox doctor` checks again), then run `service install` again.")
        return exc.exit_code
    backend = backend_for(host)
    command = tuple(executable) if executable is not None else own_command()
    tools = find_tools(config.codex.command, which, host.environ.get("PATH"))
    settings = _settings(config, config_path, command, tools, backend)
    _report_tools(tools, config, host)
    backend.before_install(config, command)
    return backend.install(settings, dry_run=dry_run)


def _host(
    platform: str,
    home: Path | None,
    environ: Mapping[str, str] | None,
    run: Run,
    out: Out,
    getuid: Callable[[], int],
) -> Host | None:
    system = system_for(platform)
    if system is None:
        return None
    return Host(
        system=system,
        home=Path.home() if home is None else home,
        environ=os.environ if environ is None else environ,
        run=run,
        out=out,
        getuid=getuid,
    )


def _unsupported(platform: str, out: Out) -> int:
    out(
        f"Login services work on Linux (systemd) and macOS (launchd), not on {platform!r}.\n"
        "Start `gpt-image-inbox run` from your system's own startup mechanism instead."
    )
    return 2


def _settings(
    config: Config,
    config_path: Path | None,
    command: tuple[str, ...],
    tools: Tools,
    backend: Backend,
) -> Settings:
    source = config.source or config_path
    config_args = ("--config", os.path.abspath(source)) if source is not None else ()
    return Settings(
        program=(*command, "run", *config_args),
        path=service_path(tools, backend.base_path),
        stop_timeout_sec=math.ceil(config.shutdown_grace_sec) + STOP_MARGIN_SEC,
        log_file=log_file(backend.host.home),
        codex_home=service_codex_home(config, backend.host.environ),
    )


def service_codex_home(config: Config, environ: Mapping[str, str]) -> str | None:
    """The CODEX_HOME the service needs: the shell's, unless the config names codex.home
    (then the daemon sets it for codex itself)."""
    value = environ.get("CODEX_HOME")
    if config.codex.home is not None or not value:
        return None
    return os.path.abspath(os.path.expanduser(value))


def _report_tools(tools: Tools, config: Config, host: Host) -> None:
    name = config.codex.command[0] if config.codex.command else "codex"
    if tools.codex is None:
        host.out(
            f"WARNING: `{name}` is not on your PATH now, so the service would not find it either.\n"
            "  Install the Codex CLI (`npm install -g @openai/codex`) or set codex.command to its\n"
            "  absolute path, then run `gpt-image-inbox service install` again. Installing anyway."
        )
        return
    host.out(f"codex: {tools.codex}")
    home = service_codex_home(config, host.environ)
    if home is not None:
        host.out(f"CODEX_HOME: {home} (as in this shell; the service uses the same login)")
    if tools.codex_needs_node and tools.node is None:
        host.out(
            f"WARNING: {tools.codex} is started by node, which is not on your PATH now;\n"
            "  the service could not start codex. Put node on PATH and install again."
        )
    elif tools.node is not None:
        host.out(f"node:  {tools.node}")


def uninstall(
    *,
    dry_run: bool = False,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run: Run = subprocess.run,
    out: Out = print,
    getuid: Callable[[], int] = os.getuid,
) -> int:
    """Stop and disable the service and remove its file; 0 also when it was not installed."""
    host = _host(platform, home, environ, run, out, getuid)
    if host is None:
        return _unsupported(platform, out)
    return backend_for(host).uninstall(dry_run=dry_run)


def query(
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run: Run = subprocess.run,
    getuid: Callable[[], int] = os.getuid,
) -> ServiceState | None:
    """The service's state without printing anything; None on an unsupported platform."""
    host = _host(platform, home, environ, run, lambda _: None, getuid)
    return None if host is None else backend_for(host).query()


def status(
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run: Run = subprocess.run,
    out: Out = print,
    getuid: Callable[[], int] = os.getuid,
) -> int:
    """Print whether the service is installed and running, since when, and its last log lines.

    Exit code: 0 running, 3 not running or not installed (the LSB convention), 2 unsupported.
    """
    host = _host(platform, home, environ, run, out, getuid)
    if host is None:
        return _unsupported(platform, out)
    backend = backend_for(host)
    state = backend.query()
    out(f"gpt-image-inbox service ({backend.kind})")
    out(f"  file:    {state.file}" + ("" if state.installed else "  (not installed)"))
    out(f"  state:   {state.state}" + (f" since {state.since}" if state.since else ""))
    if state.status_text:
        out(f"  status:  {state.status_text}")
    if not state.installed:
        out("  Install it with: gpt-image-inbox service install")
    lines = backend.last_log_lines(10)
    if lines:
        out("  last log lines:")
        for line in lines:
            out(f"    {line}")
    return 0 if state.running else 3


# --- what the installed service sees -----------------------------------------------------------


def installed_path(
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The PATH inside the installed unit or plist; None when not installed or it sets none."""
    found = installed_environment(platform=platform, home=home, environ=environ)
    return (found or {}).get("PATH")


def installed_environment(
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str] | None:
    """The variables the installed unit or plist sets; None when no service is installed."""
    host = _host(platform, home, environ, subprocess.run, lambda _: None, os.getuid)
    if host is None:
        return None
    backend = backend_for(host)
    try:
        data = backend.file.read_bytes()
    except OSError:
        return None
    return backend.environment(data)


def would_be_path(
    codex_command: Sequence[str], *, platform: str, which: Which, path: str | None
) -> str | None:
    """The PATH `install` would write now, with the tools looked up on `path`."""
    system = system_for(platform)
    if system is None:
        return None
    return service_path(find_tools(codex_command, which, path), BACKENDS[system].base_path)
