"""Install, remove and inspect the login service: a systemd user unit or a macOS LaunchAgent.

Every path written into the service is absolute and every side effect (files, commands, output) is a
parameter, so `--dry-run` and the tests run the same code as a real install.
"""

from __future__ import annotations

import enum
import math
import os
import plistlib
import shlex
import shutil
import string
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from daemon.config import Config, load_config
from daemon.errors import ConfigError

LABEL = "io.github.gpt-image-inbox"
UNIT_NAME = "gpt-image-inbox.service"
UNIT_TEMPLATE = "gpt-image-inbox.service"
PLIST_TEMPLATE = f"{LABEL}.plist"
STOP_MARGIN_SEC = 30  # on top of shutdown_grace_sec: time to put a stopped job back in the inbox
LINUX_BASE_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
# launchd's own PATH lacks both Homebrew prefixes (Apple silicon, then Intel).
MACOS_BASE_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
# Folders macOS privacy protection (TCC) closes to launchd programs without Full Disk Access.
MACOS_PROTECTED = ("Documents", "Desktop", "Downloads", "Library/Mobile Documents")

Run = Callable[..., "subprocess.CompletedProcess[str]"]
Which = Callable[..., "str | None"]
Out = Callable[[str], None]


class System(enum.Enum):
    """The service managers this module knows, by `sys.platform`."""

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
    """The outside world as this module sees it; real by default, fakes in tests."""

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
class Outcome:
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


# --- locations ---------------------------------------------------------------------------------


def config_home(home: Path, environ: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME when set to an absolute path (as the spec requires), else ~/.config."""
    value = environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and os.path.isabs(value) else home / ".config"


def service_file(system: System, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the unit (Linux) or the LaunchAgent plist (macOS) is installed."""
    if system is System.SYSTEMD:
        return config_home(home, environ) / "systemd" / "user" / UNIT_NAME
    return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"


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


def service_path(tools: Tools, system: System) -> str:
    """The PATH written into the service: the tools' folders first, then the system's."""
    found = [str(p.parent) for p in (tools.codex, tools.node) if p is not None]
    base = LINUX_BASE_PATH if system is System.SYSTEMD else MACOS_BASE_PATH
    # A ':' inside a folder name cannot be expressed in PATH; such a folder is left out.
    return ":".join(dict.fromkeys(d for d in [*found, *base] if ":" not in d))


# --- rendering ---------------------------------------------------------------------------------


def template_text(name: str) -> str:
    """A template shipped in the package: daemon/service/templates/ links to systemd/, launchd/."""
    return resources.files("daemon.service").joinpath("templates", name).read_text(encoding="utf-8")


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


# --- running commands --------------------------------------------------------------------------


def call(run: Run, argv: Sequence[str], *, timeout: float = 60) -> Outcome:
    """Run one command, never raising for a missing program or a timeout."""
    try:
        done = run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return Outcome(tuple(argv), 127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Outcome(tuple(argv), 124, f"{argv[0]}: no answer within {timeout:.0f} s")
    except OSError as exc:
        return Outcome(tuple(argv), 126, f"{argv[0]}: {exc.strerror or exc}")
    text = "\n".join(s.strip() for s in (done.stdout or "", done.stderr or "") if s and s.strip())
    return Outcome(tuple(argv), done.returncode, text)


def show(argv: Sequence[str]) -> str:
    """A command as the user would type it."""
    return " ".join(shlex.quote(w) for w in argv)


def write_atomically(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --- install -----------------------------------------------------------------------------------


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
    command = tuple(executable) if executable is not None else own_command()
    tools = find_tools(config.codex.command, which, host.environ.get("PATH"))
    settings = _settings(config, config_path, command, tools, host)
    _report_tools(tools, config, host)
    if host.system is System.SYSTEMD:
        return _install_systemd(settings, host, dry_run=dry_run)
    _hint_privacy(config, command, host)
    return _install_launchd(settings, host, dry_run=dry_run)


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
    config: Config, config_path: Path | None, command: tuple[str, ...], tools: Tools, host: Host
) -> Settings:
    source = config.source or config_path
    config_args = ("--config", os.path.abspath(source)) if source is not None else ()
    return Settings(
        program=(*command, "run", *config_args),
        path=service_path(tools, host.system),
        stop_timeout_sec=math.ceil(config.shutdown_grace_sec) + STOP_MARGIN_SEC,
        log_file=log_file(host.home),
        codex_home=service_codex_home(config, host.environ),
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


def _hint_privacy(config: Config, command: tuple[str, ...], host: Host) -> None:
    """macOS blocks launchd programs from Documents, Desktop, Downloads and iCloud Drive (TCC)."""
    for role, folder in (("inbox", config.inbox), ("outbox", config.outbox)):
        protected = _protected_folder(Path(folder), host.home)
        if protected is None:
            continue
        host.out(
            f"NOTE: your {role} {folder} is inside ~/{protected}, which macOS keeps from programs\n"
            "  started by launchd ('Operation not permitted'). Either move it elsewhere, or open\n"
            "  System Settings > Privacy & Security > Full Disk Access, click +, and add\n"
            f"  {_interpreter(command)}  (Cmd-Shift-G lets you type the path)."
        )


def _protected_folder(folder: Path, home: Path) -> str | None:
    absolute = Path(os.path.abspath(folder))
    for name in MACOS_PROTECTED:
        if absolute == home / name or (home / name) in absolute.parents:
            return name
    return None


def _interpreter(command: Sequence[str]) -> str:
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


def _install_systemd(settings: Settings, host: Host, *, dry_run: bool) -> int:
    unit = service_file(System.SYSTEMD, host.home, host.environ)
    text = render_unit(settings)
    was_running = call(host.run, _systemctl("is-active", UNIT_NAME)).output.strip() == "active"
    commands = [_systemctl("daemon-reload"), _systemctl("enable", "--now", UNIT_NAME)]
    if was_running:  # enable --now leaves a running daemon on its old command line
        commands.append(_systemctl("restart", UNIT_NAME))
    if dry_run:
        return _dry_run(unit, text, commands, host)
    write_atomically(unit, text.encode())
    host.out(f"Wrote {unit}")
    failed = _run_all(commands, host)
    if failed:
        host.out(
            "Could not start the service through `systemctl --user`. Is this a desktop or SSH\n"
            "  login with a user service manager (XDG_RUNTIME_DIR set)? The unit file is in place."
        )
        return 1
    _hint_linger(host)
    host.out(f"Installed and started. Logs: journalctl --user -u {UNIT_NAME} -f")
    return 0


def _systemctl(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


def _hint_linger(host: Host) -> None:
    user = host.environ.get("USER") or host.environ.get("LOGNAME") or str(host.getuid())
    answer = call(host.run, ("loginctl", "show-user", user, "-p", "Linger"))
    if answer.ok and answer.output.strip() == "Linger=no":
        host.out(
            "HINT: the service stops when you log out and starts at your next login. To keep it\n"
            f"  running without a session (and start it at boot): loginctl enable-linger {user}"
        )


def _install_launchd(settings: Settings, host: Host, *, dry_run: bool) -> int:
    plist = service_file(System.LAUNCHD, host.home, host.environ)
    data = render_plist(settings)
    domain = f"gui/{host.getuid()}"
    commands = [
        ("launchctl", "bootout", f"{domain}/{LABEL}"),  # unload an older copy; fails if none
        ("launchctl", "enable", f"{domain}/{LABEL}"),  # clear an earlier `launchctl disable`
        ("launchctl", "bootstrap", domain, str(plist)),
    ]
    if dry_run:
        host.out(f"Would create the log folder {settings.log_file.parent}")
        return _dry_run(plist, data.decode(), commands, host)
    settings.log_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(plist, data)
    host.out(f"Wrote {plist}")
    call(host.run, commands[0])  # failure only means it was not loaded
    if _run_all(commands[1:], host):
        host.out("Could not load the agent with launchctl; the plist is in place.")
        return 1
    host.out(f"Installed and started. Logs: {settings.log_file}")
    return 0


def _dry_run(path: Path, text: str, commands: Iterable[Sequence[str]], host: Host) -> int:
    host.out(f"Would write {path}:")
    host.out(text.rstrip("\n"))
    host.out("Would run:")
    for argv in commands:
        host.out(f"  {show(argv)}")
    return 0


def _run_all(commands: Iterable[Sequence[str]], host: Host) -> bool:
    """Run commands in order, stopping at the first failure; True when one failed."""
    for argv in commands:
        outcome = call(host.run, argv)
        host.out(f"$ {show(argv)}")
        if not outcome.ok:
            host.out(f"  failed ({outcome.returncode}): {outcome.output or 'no output'}")
            return True
    return False


# --- uninstall ---------------------------------------------------------------------------------


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
    path = service_file(host.system, host.home, host.environ)
    if host.system is System.SYSTEMD:
        stop = [_systemctl("disable", "--now", UNIT_NAME)]
        after = [_systemctl("daemon-reload")]
    else:
        stop = [("launchctl", "bootout", f"gui/{host.getuid()}/{LABEL}")]
        after = []
    if not path.exists():
        out(f"Not installed: {path} does not exist.")
        return 0
    if dry_run:
        out(f"Would run: {'; '.join(show(a) for a in stop)}")
        out(f"Would remove {path}")
        for argv in after:
            out(f"Would run: {show(argv)}")
        return 0
    for argv in stop:  # a service that is not running or not loaded is fine to remove
        outcome = call(host.run, argv)
        out(f"$ {show(argv)}" + ("" if outcome.ok else f"  ({outcome.output or 'failed'})"))
    path.unlink(missing_ok=True)
    out(f"Removed {path}")
    failed = _run_all(after, host)
    if host.system is System.LAUNCHD:
        out(f"The log stays in {log_file(host.home).parent}; delete it if you like.")
    return 1 if failed else 0


# --- status ------------------------------------------------------------------------------------


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
    if host is None:
        return None
    if host.system is System.SYSTEMD:
        return _query_systemd(host)
    return _query_launchd(host)


def _query_systemd(host: Host) -> ServiceState:
    path = service_file(System.SYSTEMD, host.home, host.environ)
    props = "ActiveState,SubState,ActiveEnterTimestamp,StatusText,UnitFileState"
    outcome = call(host.run, _systemctl("show", UNIT_NAME, "-p", props))
    if not outcome.ok:
        state = f"unknown ({outcome.output or 'systemctl failed'})"
        return ServiceState(path, path.exists(), False, state, None, None)
    fields = dict(line.split("=", 1) for line in outcome.output.splitlines() if "=" in line)
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


def _query_launchd(host: Host) -> ServiceState:
    path = service_file(System.LAUNCHD, host.home, host.environ)
    outcome = call(host.run, ("launchctl", "print", f"gui/{host.getuid()}/{LABEL}"))
    if not outcome.ok:
        return ServiceState(path, path.exists(), False, "not loaded", None, None)
    fields: dict[str, str] = {}
    for line in outcome.output.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key not in fields:  # the first (outermost) occurrence describes the job
            fields[key] = value.strip()
    state = fields.get("state", "unknown")
    pid = fields.get("pid")
    since = None
    if pid and pid.isdigit():
        started = call(host.run, ("ps", "-o", "lstart=", "-p", pid))
        since = (started.output.strip() or None) if started.ok else None
    return ServiceState(path, path.exists(), state == "running", state, since, None)


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
    state = _query_systemd(host) if host.system is System.SYSTEMD else _query_launchd(host)
    kind = "systemd user unit" if host.system is System.SYSTEMD else "launchd agent"
    out(f"gpt-image-inbox service ({kind})")
    out(f"  file:    {state.file}" + ("" if state.installed else "  (not installed)"))
    out(f"  state:   {state.state}" + (f" since {state.since}" if state.since else ""))
    if state.status_text:
        out(f"  status:  {state.status_text}")
    if not state.installed:
        out("  Install it with: gpt-image-inbox service install")
    lines = _last_log_lines(host)
    if lines:
        out("  last log lines:")
        for line in lines:
            out(f"    {line}")
    return 0 if state.running else 3


def _last_log_lines(host: Host, count: int = 10) -> list[str]:
    if host.system is System.SYSTEMD:
        argv = ("journalctl", "--user", "-u", UNIT_NAME, "-n", str(count), "--no-pager")
        outcome = call(host.run, argv)
        return outcome.output.splitlines()[-count:] if outcome.ok else []
    return tail(log_file(host.home), count)


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
    try:
        data = service_file(host.system, host.home, host.environ).read_bytes()
    except OSError:
        return None
    if host.system is System.LAUNCHD:
        try:
            values = plistlib.loads(data).get("EnvironmentVariables", {})
        except (plistlib.InvalidFileException, ValueError, AttributeError):
            return {}
        return {k: v for k, v in values.items() if isinstance(v, str)}
    return _unit_environment(data.decode("utf-8", errors="replace"))


def _unit_environment(text: str) -> dict[str, str]:
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


def would_be_path(
    codex_command: Sequence[str], *, platform: str, which: Which, path: str | None
) -> str | None:
    """The PATH `install` would write now, with the tools looked up on `path`."""
    system = system_for(platform)
    if system is None:
        return None
    return service_path(find_tools(codex_command, which, path), system)
