"""`gpt-image-inbox doctor`: a checklist of everything that must hold for jobs to become images.

Each check is a small function returning `Check` values; failures that stop image generation make
the exit code non-zero, the rest are warnings.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.codex.run import child_environment
from daemon.codex.version import MIN_SUPPORTED, CodexVersion, parse_version
from daemon.config import Config, default_config, load_config
from daemon.errors import ConfigError
from daemon.service import manager
from daemon.service.base import Out, Run, System, Which, find_tools, system_for

CODEX_TIMEOUT_SEC = 60.0
INSTALL_CODEX = "install the Codex CLI (`npm install -g @openai/codex`) or set codex.command"
# Below these the inbox watcher cannot start; `watch.polling: true` avoids inotify altogether.
MIN_INOTIFY_WATCHES = 1024
MIN_INOTIFY_INSTANCES = 16


class Level(enum.Enum):
    """How a check came out."""

    OK = "ok"
    WARN = "warn"  # works, but something could bite later
    FAIL = "FAIL"  # stops image generation


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist: what was checked and what was found, or what to do."""

    level: Level
    subject: str
    message: str


class Login(enum.Enum):
    """What `codex login status` said."""

    CHATGPT = "chatgpt"
    API_KEY = "api-key"
    LOGGED_OUT = "logged-out"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Probe:
    """The outside world the checks look at; real by default, fakes in tests."""

    environ: Mapping[str, str]
    which: Which
    run: Run
    platform: str
    home: Path
    inotify: Path
    getuid: Callable[[], int]


def run_doctor(
    config_path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    which: Which = shutil.which,
    run: Run = subprocess.run,
    platform: str = sys.platform,
    out: Out = print,
    home: Path | None = None,
    inotify: Path = Path("/proc/sys/fs/inotify"),
    getuid: Callable[[], int] = os.getuid,
) -> int:
    """Print the checklist; 1 when something stops image generation, else 0 (warnings allowed)."""
    probe = Probe(
        environ=os.environ if environ is None else environ,
        which=which,
        run=run,
        platform=platform,
        home=Path.home() if home is None else home,
        inotify=inotify,
        getuid=getuid,
    )
    out("gpt-image-inbox doctor")
    checks = []
    for check in all_checks(config_path, probe):
        checks.append(check)
        out(f"  {check.level.value:<5} {check.subject}: {check.message}")
    return summarize(checks, out)


def summarize(checks: Sequence[Check], out: Out) -> int:
    """The closing line and the exit code."""
    failures = sum(c.level is Level.FAIL for c in checks)
    warnings = sum(c.level is Level.WARN for c in checks)
    if failures:
        out(f"{failures} problem(s) stop image generation; {warnings} warning(s).")
        return 1
    out(f"Ready to make images; {warnings} warning(s)." if warnings else "All checks passed.")
    return 0


def all_checks(config_path: Path | None, probe: Probe) -> Iterator[Check]:
    """Every check in the order a person would fix things."""
    config, config_check = check_config(config_path, probe)
    yield config_check
    option = f" --config {_quote(Path(os.path.abspath(config_path)))}" if config_path else ""
    service_environ, home_check = service_environment(config, probe, option)
    # codex is asked as the service will run it: with the service's CODEX_HOME.
    env = child_environment(service_environ, config.codex.home)
    codex = probe.which(config.codex.command[0], path=probe.environ.get("PATH"))
    yield check_codex_found(config, codex)
    yield from check_codex_for_service(config, codex, probe, option)
    yield from check_codex_home(config)
    if home_check is not None:
        yield home_check
    if codex is None:
        yield Check(Level.FAIL, "image generation", "not possible without codex")
    else:
        version, version_check = check_version(config, env, probe)
        yield version_check
        login, login_check = check_login(config, env, probe)
        yield login_check
        yield check_image_generation(config, env, probe, version, login)
    if config_check.level is not Level.FAIL:
        yield from check_folders(config)
    yield from check_service(probe, option)
    if config_check.level is not Level.FAIL:
        yield from check_daemon(config, config_path, probe)
    if not config.watch.polling:
        yield from check_inotify(probe)


def service_environment(
    config: Config, probe: Probe, option: str
) -> tuple[dict[str, str], Check | None]:
    """The environment codex gets under the service, and a check line when its CODEX_HOME is
    not the shell's: the service would look for the login somewhere else."""
    shell = dict(probe.environ)
    installed = manager.installed_environment(
        platform=probe.platform, home=probe.home, environ=probe.environ
    )
    if installed is None or config.codex.home is not None:
        return shell, None  # install would carry the shell's, or the config names the home
    service = {k: v for k, v in shell.items() if k != "CODEX_HOME"}
    if "CODEX_HOME" in installed:
        service["CODEX_HOME"] = installed["CODEX_HOME"]
    default = probe.home / ".codex"
    ours = Path(shell.get("CODEX_HOME") or default).expanduser()
    theirs = Path(service.get("CODEX_HOME") or default).expanduser()
    if Path(os.path.abspath(ours)) == Path(os.path.abspath(theirs)):
        return service, Check(Level.OK, "codex home for the service", f"{theirs}, as in this shell")
    return service, Check(
        Level.WARN,
        "codex home for the service",
        f"the installed service uses {theirs}, this shell {ours}: the login checked below is "
        f"the service's. Fix: run `gpt-image-inbox service install{option}` from the shell "
        "whose login the service should use",
    )


def check_daemon(config: Config, config_path: Path | None, probe: Probe) -> Iterator[Check]:
    """Whether a daemon (or `once`) works on the inbox right now. Not running is worth a line
    only when the service is installed: otherwise the service line has said it already."""
    from daemon.loop.status import not_running_notice

    running, notice = not_running_notice(config.inbox, config_path)
    if running:
        yield Check(Level.OK, "daemon", notice)
        return
    system = system_for(probe.platform)
    if system is not None and manager.service_file(system, probe.home, probe.environ).exists():
        yield Check(Level.WARN, "daemon", " ".join(s.strip() for s in notice.splitlines()))


# --- config ------------------------------------------------------------------------------------


def check_config(config_path: Path | None, probe: Probe) -> tuple[Config, Check]:
    """The config loads; on problems the defaults stand in so the codex checks can still run."""
    try:
        config = load_config(config_path, environ=probe.environ)
    except ConfigError as exc:
        problems = "; ".join(exc.problems)
        message = f"{exc.message.splitlines()[0]} {problems}. Fix: {exc.hint}"
        return default_config(environ=probe.environ), Check(Level.FAIL, "config", message)
    if config.source is None:
        return config, Check(Level.OK, "config", "no config file; the defaults apply")
    return config, Check(Level.OK, "config", f"{config.source} is valid")


# --- codex -------------------------------------------------------------------------------------


def check_codex_found(config: Config, codex: str | None) -> Check:
    """The codex command resolves on the current PATH."""
    name = config.codex.command[0]
    if codex is None:
        return Check(Level.FAIL, "codex", f"`{name}` is not on PATH. Fix: {INSTALL_CODEX}")
    return Check(Level.OK, "codex", codex)


def check_codex_for_service(
    config: Config, codex: str | None, probe: Probe, option: str = ""
) -> Iterator[Check]:
    """codex (and node for the npm codex) on the PATH the login service has or would get."""
    installed = manager.installed_path(
        platform=probe.platform, home=probe.home, environ=probe.environ
    )
    path = installed or manager.would_be_path(
        config.codex.command,
        platform=probe.platform,
        which=probe.which,
        path=probe.environ.get("PATH"),
    )
    if path is None:
        return
    whose = "the installed service's PATH" if installed else "the PATH `service install` would set"
    tools = find_tools(config.codex.command, probe.which, path)
    if tools.codex is None:
        # An installed service that cannot find codex makes no images; otherwise it is a heads-up.
        level = Level.FAIL if installed and codex else Level.WARN
        fix = f"run `gpt-image-inbox service install{option}` again" if codex else INSTALL_CODEX
        yield Check(level, "codex for the service", f"not found on {whose} ({path}). Fix: {fix}")
        return
    if tools.codex_needs_node and tools.node is None:
        yield Check(
            Level.FAIL if installed else Level.WARN,
            "codex for the service",
            f"{tools.codex} needs node, which is not on {whose} ({path}). Fix: put node on "
            f"PATH and run `gpt-image-inbox service install{option}` again",
        )
        return
    yield Check(Level.OK, "codex for the service", f"{tools.codex} on {whose}")


def check_codex_home(config: Config) -> Iterator[Check]:
    """A configured CODEX_HOME must exist, or every codex run exits 1."""
    home = config.codex.home
    if home is None:
        return
    if home.is_dir():
        yield Check(Level.OK, "codex.home", str(home))
    else:
        yield Check(
            Level.FAIL,
            "codex.home",
            f"{home} does not exist. Fix: create it and log in there "
            f"(`CODEX_HOME={home} codex login`), or remove codex.home",
        )


def codex_output(
    config: Config, env: Mapping[str, str], probe: Probe, *args: str
) -> tuple[int, str]:
    """Run codex with the config's command and CODEX_HOME; (exit code, stdout and stderr)."""
    argv = [*config.codex.command, *args]
    try:
        done = probe.run(
            argv,
            capture_output=True,
            text=True,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            timeout=CODEX_TIMEOUT_SEC,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {CODEX_TIMEOUT_SEC:.0f} s"
    except OSError as exc:
        return 127, f"cannot start {argv[0]}: {exc.strerror or exc}"
    return done.returncode, f"{done.stdout or ''}\n{done.stderr or ''}".strip()


def check_version(
    config: Config, env: Mapping[str, str], probe: Probe
) -> tuple[CodexVersion | None, Check]:
    """`codex --version` answers with a supported codex-cli release."""
    code, text = codex_output(config, env, probe, "--version")
    version = parse_version(text) if code == 0 else None
    if version is None:
        detail = _last_line(text) or f"exit code {code}"
        return None, Check(
            Level.FAIL,
            "codex version",
            f"`--version` gave no version ({detail}). Fix: {INSTALL_CODEX}",
        )
    shown = ".".join(map(str, version.number))
    if version.number < MIN_SUPPORTED:
        return version, Check(
            Level.FAIL,
            "codex version",
            f"{shown} is too old (0.111 or later needed). Fix: npm install -g @openai/codex@latest",
        )
    return version, Check(Level.OK, "codex version", f"codex-cli {shown}")


def parse_login(text: str) -> Login:
    """Classify `codex login status` output (printed on stderr by every release)."""
    if re.search(r"logged in using chatgpt", text, re.IGNORECASE):
        return Login.CHATGPT
    if re.search(r"not logged in", text, re.IGNORECASE):
        return Login.LOGGED_OUT
    if re.search(r"api key", text, re.IGNORECASE):
        return Login.API_KEY
    return Login.UNKNOWN


def check_login(config: Config, env: Mapping[str, str], probe: Probe) -> tuple[Login, Check]:
    """A ChatGPT login: only that kind of login gets the image tool."""
    code, text = codex_output(config, env, probe, "login", "status")
    login = parse_login(text)
    where = f" (CODEX_HOME={env['CODEX_HOME']})" if "CODEX_HOME" in env else ""
    if login is Login.CHATGPT:
        return login, Check(Level.OK, "login", f"logged in using ChatGPT{where}")
    if login is Login.API_KEY:
        message = (
            f"logged in with an API key{where}, which gets no image tool. Fix: `codex logout`, "
            "then `codex login` with a ChatGPT Plus or Pro account"
        )
    elif login is Login.LOGGED_OUT:
        message = f"not logged in{where}. Fix: run `codex login` with a ChatGPT Plus or Pro account"
    else:
        detail = _last_line(text) or f"exit code {code}"
        message = f"`codex login status` said: {detail}. Fix: run `codex login`"
    return login, Check(Level.FAIL, "login", message)


def parse_feature(text: str, name: str) -> tuple[str, bool] | None:
    """(stage, enabled) of one feature in `codex features list`, or None when it is not listed."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == name:
            return " ".join(words[1:-1]), words[-1] == "true"
    return None


def check_image_generation(
    config: Config,
    env: Mapping[str, str],
    probe: Probe,
    version: CodexVersion | None,
    login: Login,
) -> Check:
    """The image tool will be offered: ChatGPT login, supported version, a known feature flag."""
    subject = "image generation"
    if login is not Login.CHATGPT:
        return Check(Level.FAIL, subject, "unavailable without a ChatGPT login (see login)")
    if version is None or version.number < MIN_SUPPORTED:
        return Check(Level.FAIL, subject, "unavailable with this codex version (see above)")
    code, text = codex_output(config, env, probe, "features", "list")
    feature = parse_feature(text, "image_generation") if code == 0 else None
    if code != 0:  # releases without `features list`: the version and login decide
        return Check(Level.OK, subject, "available (ChatGPT login, supported release)")
    if feature is None:
        return Check(
            Level.FAIL,
            subject,
            "this codex does not list the image_generation feature, so "
            "`--enable image_generation` would fail. Fix: install a release that has it",
        )
    stage, enabled = feature
    if stage == "removed":
        return Check(Level.WARN, subject, "codex lists image_generation as removed")
    state = "on" if enabled else "off in codex's config, switched on per run"
    return Check(Level.OK, subject, f"available (image_generation: {stage}, {state})")


# --- folders -----------------------------------------------------------------------------------


def check_folders(config: Config) -> Iterator[Check]:
    """Inbox and outbox exist, can be written, and share a filesystem."""
    usable = True
    for role, folder in (("inbox", config.inbox), ("outbox", config.outbox)):
        problem = folder_problem(folder)
        usable = usable and problem is None
        if problem is None:
            yield Check(Level.OK, role, f"{folder} exists and is writable")
        else:
            yield Check(Level.FAIL, role, problem)
    if usable:
        yield same_filesystem(config.inbox, config.outbox)


def folder_problem(folder: Path) -> str | None:
    """Why a folder cannot take the daemon's files, or None; writes and removes a dotfile."""
    if not folder.exists():
        return f"{folder} does not exist. Fix: mkdir -p {_quote(folder)}"
    if not folder.is_dir():
        return f"{folder} is not a folder. Fix: point the config at a folder"
    try:
        # A dotfile, which the inbox watcher ignores.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", suffix=".tmp"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        return f"{folder} cannot be written ({reason}). Fix: check its permissions and free space"
    return None


def same_filesystem(inbox: Path, outbox: Path) -> Check:
    """Moves between inbox and outbox are atomic renames only on one filesystem."""
    try:
        same = inbox.stat().st_dev == outbox.stat().st_dev
    except OSError as exc:
        return Check(Level.WARN, "filesystems", f"cannot compare: {exc.strerror}")
    if same:
        return Check(Level.OK, "filesystems", "inbox and outbox are on the same filesystem")
    return Check(
        Level.WARN,
        "filesystems",
        "inbox and outbox are on different filesystems, so moving files between them is a "
        "copy rather than an atomic rename. Fix: put both on one disk",
    )


# --- service and watcher -----------------------------------------------------------------------


def check_service(probe: Probe, option: str = "") -> Iterator[Check]:
    """The login service is installed and running (a warning: `run` in a terminal works too)."""
    system = system_for(probe.platform)
    if system is None:
        return
    path = manager.service_file(system, probe.home, probe.environ)
    if not path.exists():
        yield Check(
            Level.WARN,
            "service",
            "not installed, so nothing runs jobs unless `gpt-image-inbox run` is running. "
            f"Fix: gpt-image-inbox service install{option}",
        )
        return
    state = manager.query(
        platform=probe.platform,
        home=probe.home,
        environ=probe.environ,
        run=probe.run,
        getuid=probe.getuid,
    )
    if state is not None and state.running:
        since = f" since {state.since}" if state.since else ""
        yield Check(Level.OK, "service", f"running{since}")
        return
    shown = state.state if state is not None else "unknown"
    yield Check(
        Level.WARN,
        "service",
        f"installed ({path}) but not running: {shown}. Fix: see `gpt-image-inbox service status`, "
        f"then `gpt-image-inbox service install{option}` to start it again",
    )


def check_inotify(probe: Probe) -> Iterator[Check]:
    """Linux inotify limits: the native watcher needs one instance and a watch per folder."""
    if system_for(probe.platform) is not System.SYSTEMD:
        return
    values = {}
    for name in ("max_user_watches", "max_user_instances"):
        try:
            values[name] = int((probe.inotify / name).read_text().strip())
        except (OSError, ValueError):
            return  # not Linux /proc after all, or hidden in a container: nothing to say
    low = []
    if values["max_user_watches"] < MIN_INOTIFY_WATCHES:
        low.append(f"fs.inotify.max_user_watches={MIN_INOTIFY_WATCHES * 8}")
    if values["max_user_instances"] < MIN_INOTIFY_INSTANCES:
        low.append(f"fs.inotify.max_user_instances={MIN_INOTIFY_INSTANCES * 8}")
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    if not low:
        yield Check(Level.OK, "inotify", shown)
        return
    yield Check(
        Level.WARN,
        "inotify",
        f"low limits ({shown}); the watcher may fall back to polling. "
        f"Fix: sudo sysctl {' '.join(low)}, or set watch.polling: true",
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _quote(path: Path) -> str:
    return shlex.quote(str(path))
