"""The login service: templates, rendering, and install/uninstall/status against a temporary HOME.

systemctl, loginctl, launchctl, journalctl and ps are replaced by small recording programs on PATH,
so the real subprocess calls run and the tests see exactly the argv a real tool would get.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.service.base import LABEL, Settings, own_command
from daemon.service.launchd import render_plist, tail
from daemon.service.manager import (
    install,
    installed_environment,
    installed_path,
    status,
    uninstall,
)
from daemon.service.systemd import render_unit, systemd_quote

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "daemon" / "service" / "templates"
UID = 4242

FAKE_TOOL = """#!{python}
import json, os, sys
from pathlib import Path
here = Path(__file__).resolve().parent
name = Path(sys.argv[0]).name
with open(here / "calls.jsonl", "a") as fh:
    fh.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
answers_file = here / "answers.json"
answers = json.loads(answers_file.read_text()) if answers_file.exists() else {{}}
joined = " ".join([name, *sys.argv[1:]])
for prefix, (code, stdout) in answers.items():
    if joined.startswith(prefix):
        sys.stdout.write(stdout)
        sys.exit(code)
"""


class FakeTools:
    """A folder of recording stand-ins for the service managers' command-line tools."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        for name in ("systemctl", "loginctl", "launchctl", "journalctl", "ps"):
            tool = folder / name
            tool.write_text(FAKE_TOOL.format(python=sys.executable))
            tool.chmod(0o755)

    def answer(self, prefix: str, stdout: str = "", code: int = 0) -> None:
        """Make every call whose argv starts with `prefix` print `stdout` and exit with `code`."""
        path = self.folder / "answers.json"
        answers = json.loads(path.read_text()) if path.exists() else {}
        answers[prefix] = [code, stdout]
        path.write_text(json.dumps(answers))

    @property
    def calls(self) -> list[list[str]]:
        path = self.folder / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """Recording tools first on PATH, for this test only."""
    tools = FakeTools(tmp_path / "fakebin")
    monkeypatch.setenv("PATH", f"{tools.folder}{os.pathsep}{os.environ['PATH']}")
    return tools


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home folder."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def toolbin(tmp_path: Path) -> Path:
    """A folder holding an npm-style `codex` (a node script) and a `node`, as a user's PATH has."""
    folder = tmp_path / "node bin"
    folder.mkdir()
    (folder / "codex").write_text("#!/usr/bin/env node\n")
    (folder / "node").write_text("#!/bin/sh\n")
    for name in ("codex", "node"):
        (folder / name).chmod(0o755)
    return folder


def write_config(tmp_path: Path, inbox: Path, **extra: object) -> Path:
    """A config file naming the inbox and outbox (created), plus extra top-level keys."""
    inbox.mkdir(parents=True, exist_ok=True)
    outbox = inbox.parent / "outbox"
    outbox.mkdir(exist_ok=True)
    lines = [f"inbox: {json.dumps(str(inbox))}", f"outbox: {json.dumps(str(outbox))}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in extra.items()]
    path = tmp_path / "conf dir" / "config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_program(tmp_path: Path, name: str = "gpt-image-inbox") -> Path:
    """An executable standing in for the installed console script."""
    program = tmp_path / "venv bin" / name
    program.parent.mkdir(exist_ok=True)
    program.write_text(f"#!{sys.executable}\n")
    program.chmod(0o755)
    return program


def run_install(
    tmp_path: Path, home: Path, toolbin: Path | None, **kwargs: object
) -> tuple[int, str]:
    """install() for Linux with the given tool folder as the user's PATH; returns (code, output)."""
    lines: list[str] = []
    path = os.pathsep.join([str(toolbin)] if toolbin else []) or "/nonexistent"
    params: dict[str, object] = {
        "dry_run": False,
        "platform": "linux",
        "home": home,
        "environ": {"PATH": path, "USER": "alice"},
        "executable": [str(fake_program(tmp_path))],
        "out": lines.append,
        "getuid": lambda: UID,
    }
    params.update(kwargs)
    config = params.pop("config", None) or write_config(tmp_path, tmp_path / "inbox")
    code = install(Path(str(config)), **params)  # type: ignore[arg-type]
    return code, "\n".join(lines)


# --- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo_file", "package_file"),
    [
        ("systemd/gpt-image-inbox.service", "gpt-image-inbox.service"),
        (f"launchd/{LABEL}.plist", f"{LABEL}.plist"),
    ],
)
def test_the_package_ships_the_repo_templates_themselves(repo_file: str, package_file: str) -> None:
    """One copy: the package's templates are links to the files in systemd/ and launchd/."""
    shipped = TEMPLATES / package_file
    assert shipped.is_symlink()
    assert shipped.resolve() == (REPO / repo_file).resolve()


def test_every_unit_setting_is_commented() -> None:
    """Each Key=value line of the unit template has a comment line directly above it."""
    lines = (TEMPLATES / "gpt-image-inbox.service").read_text().splitlines()
    settings = [i for i, line in enumerate(lines) if line and line[0].isalpha() and "=" in line]
    assert len(settings) >= 12
    uncommented = [lines[i] for i in settings if not lines[i - 1].startswith("#")]
    assert uncommented == []


def settings(tmp_path: Path, exe: Path, **overrides: object) -> Settings:
    """Rendering settings for the executable `exe` and an awkward but legal config path."""
    values: dict[str, object] = {
        "program": (str(exe), "run", "--config", str(tmp_path / "my conf%1.yaml")),
        "path": f"{exe.parent}:/usr/local/bin:/usr/bin:/bin",
        "stop_timeout_sec": 60,
        "log_file": tmp_path / "Library" / "Logs" / "gpt-image-inbox" / "gpt-image-inbox.log",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_rendered_unit_has_the_required_settings(tmp_path: Path) -> None:
    """The unit is a notify service with watchdog, restarts, a long stop timeout, no hardening."""
    unit = render_unit(settings(tmp_path, fake_program(tmp_path)))
    lines = set(unit.splitlines())
    for wanted in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "Restart=on-failure",
        "TimeoutStopSec=60",
        "WantedBy=default.target",
    ):
        assert wanted in lines
    active = [line for line in lines if not line.startswith("#")]
    assert not any(line.startswith(("ProtectHome", "PrivateUsers")) for line in active)
    assert "${" not in unit


def test_unit_quotes_spaces_percent_and_dollar(tmp_path: Path) -> None:
    """Paths with spaces, % and $ survive: quoted and escaped the way systemd reads them."""
    assert systemd_quote("/usr/bin/x") == "/usr/bin/x"
    assert systemd_quote("/a b/x", exec_line=True) == '"/a b/x"'
    assert systemd_quote("/a%b$c", exec_line=True) == '"/a%%b$$c"'
    assert systemd_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    program = fake_program(tmp_path, "gpt-image-inbox$1")
    unit = render_unit(settings(tmp_path, program, program=(str(program), "run", "$HOME%")))
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # The program path is not subject to $ expansion, its arguments are.
    assert exec_start == f'ExecStart="{program}" run "$$HOME%%"'


def systemd_analyze() -> str | None:
    """systemd-analyze, or a skip (a failure under CI) when this machine lacks it."""
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")
    return found


def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze --user verify` accepts the rendered unit without a single warning."""
    analyze = systemd_analyze()
    odd = tmp_path / "odd $dir %x"
    odd.mkdir()
    program = odd / "gpt-image-inbox"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "units" / "gpt-image-inbox.service"
    unit.parent.mkdir()
    unit.write_text(render_unit(settings(tmp_path, program)))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    result = subprocess.run(
        [str(analyze), "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check can fail: a misspelt setting in the rendered unit produces a warning."""
    analyze = systemd_analyze()
    program = fake_program(tmp_path)
    unit = tmp_path / "gpt-image-inbox.service"
    unit.write_text(render_unit(settings(tmp_path, program)).replace("WatchdogSec", "WatchdogSecs"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [str(analyze), "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "WatchdogSecs" in result.stdout + result.stderr


def test_rendered_plist_has_the_launchd_keys(tmp_path: Path) -> None:
    """The plist parses and carries typed, absolute values for every key launchd needs."""
    program = tmp_path / "R&D <bin>" / "gpt-image-inbox"
    data = render_plist(settings(tmp_path, program, stop_timeout_sec=75))
    plist = plistlib.loads(data)
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [
        str(program),
        "run",
        "--config",
        str(tmp_path / "my conf%1.yaml"),
    ]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["AbandonProcessGroup"] is True  # a crash leaves codex to the next daemon
    assert plist["ExitTimeOut"] == 75
    assert plist["StandardOutPath"] == plist["StandardErrorPath"]
    assert plist["StandardOutPath"].endswith("Library/Logs/gpt-image-inbox/gpt-image-inbox.log")
    assert plist["EnvironmentVariables"]["PATH"].startswith(f"{program.parent}:")
    assert b"R&amp;D &lt;bin&gt;" in data


def test_plist_template_is_a_valid_plist() -> None:
    """The repo's plist template parses on its own, so editors and plutil can check it."""
    template = plistlib.loads((REPO / "launchd" / f"{LABEL}.plist").read_bytes())
    assert template["ProgramArguments"] == ["${program_arguments}"]


# --- install / uninstall on Linux --------------------------------------------------------------


def test_linux_install_writes_unit_and_starts_it(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """Install writes the unit with absolute paths, reloads, enables and starts it, hints linger."""
    fakes.answer("systemctl --user is-active", "inactive\n", 3)
    fakes.answer("loginctl show-user alice -p Linger", "Linger=no\n")
    config = write_config(tmp_path, tmp_path / "inbox", shutdown_grace_sec=45)
    code, output = run_install(tmp_path, home, toolbin, config=config)
    assert code == 0, output
    unit = home / ".config" / "systemd" / "user" / "gpt-image-inbox.service"
    text = unit.read_text()
    program = tmp_path / "venv bin" / "gpt-image-inbox"
    assert f'ExecStart="{program}" run --config "{config}"' in text
    assert f'Environment="PATH={toolbin}:/usr/local/bin:/usr/bin:/bin"' in text
    assert "TimeoutStopSec=75" in text
    assert fakes.calls == [
        ["systemctl", "--user", "is-active", "gpt-image-inbox.service"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "gpt-image-inbox.service"],
        ["loginctl", "show-user", "alice", "-p", "Linger"],
    ]
    assert "loginctl enable-linger alice" in output
    assert installed_path(platform="linux", home=home, environ={}) == (
        f"{toolbin}:/usr/local/bin:/usr/bin:/bin"
    )


def test_linux_reinstall_restarts_a_running_service(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """Installing over a running service restarts it so the new command line takes effect."""
    fakes.answer("systemctl --user is-active", "active\n")
    fakes.answer("loginctl", "Linger=yes\n")
    code, output = run_install(tmp_path, home, toolbin)
    assert code == 0, output
    assert fakes.calls[-2] == ["systemctl", "--user", "restart", "gpt-image-inbox.service"]
    assert "enable-linger" not in output


def test_linux_install_respects_xdg_config_home(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """With XDG_CONFIG_HOME set, the unit goes under it."""
    xdg = tmp_path / "xdg"
    environ = {"PATH": str(toolbin), "USER": "alice", "XDG_CONFIG_HOME": str(xdg)}
    code, output = run_install(tmp_path, home, toolbin, environ=environ)
    assert code == 0, output
    assert (xdg / "systemd" / "user" / "gpt-image-inbox.service").is_file()
    assert not (home / ".config").exists()


def test_install_without_codex_warns_but_installs(
    tmp_path: Path, home: Path, fakes: FakeTools
) -> None:
    """When codex is not on PATH the user is warned that the service cannot find it either."""
    code, output = run_install(tmp_path, home, None)
    assert code == 0
    assert "WARNING: `codex` is not on your PATH" in output
    assert (home / ".config" / "systemd" / "user" / "gpt-image-inbox.service").is_file()


def test_install_warns_when_node_is_missing(tmp_path: Path, home: Path, fakes: FakeTools) -> None:
    """An npm codex needs node on the service's PATH; its absence is reported."""
    folder = tmp_path / "only codex"
    folder.mkdir()
    (folder / "codex").write_text("#!/usr/bin/env node\n")
    (folder / "codex").chmod(0o755)
    code, output = run_install(tmp_path, home, folder)
    assert code == 0
    assert "started by node, which is not on your PATH" in output


def test_dry_run_prints_and_changes_nothing(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """--dry-run prints the unit and the commands, writes no file and changes no state."""
    code, output = run_install(tmp_path, home, toolbin, dry_run=True)
    assert code == 0
    assert "Type=notify" in output
    assert "systemctl --user enable --now gpt-image-inbox.service" in output
    assert not (home / ".config").exists()
    assert [c[2] for c in fakes.calls if c[0] == "systemctl"] == ["is-active"]


def test_invalid_config_is_not_installed(tmp_path: Path, home: Path, fakes: FakeTools) -> None:
    """A config with problems is reported and nothing is installed (it would crash-loop)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("inbox: [1, 2\n")
    code, output = run_install(tmp_path, home, None, config=bad)
    assert code == 2
    assert "Not installing" in output
    assert not (home / ".config").exists()
    assert fakes.calls == []


def test_failed_systemctl_is_reported(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """Without a user service manager, install says so and exits non-zero."""
    fakes.answer("systemctl --user daemon-reload", "Failed to connect to bus: No medium found", 1)
    code, output = run_install(tmp_path, home, toolbin)
    assert code == 1
    assert "Failed to connect to bus" in output


def test_linux_uninstall_disables_and_removes(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """Uninstall stops and disables the unit, removes the file and reloads systemd."""
    assert run_install(tmp_path, home, toolbin)[0] == 0
    unit = home / ".config" / "systemd" / "user" / "gpt-image-inbox.service"
    before = len(fakes.calls)
    lines: list[str] = []
    code = uninstall(platform="linux", home=home, environ={}, out=lines.append)
    assert code == 0
    assert not unit.exists()
    assert fakes.calls[before:] == [
        ["systemctl", "--user", "disable", "--now", "gpt-image-inbox.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    again: list[str] = []
    assert uninstall(platform="linux", home=home, environ={}, out=again.append) == 0
    assert "Not installed" in again[0]


def test_linux_status_reports_state_since_and_log(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """status shows running since when, the daemon's STATUS= line and the journal's end."""
    assert run_install(tmp_path, home, toolbin)[0] == 0
    fakes.answer(
        "systemctl --user show",
        "ActiveState=active\nSubState=running\nActiveEnterTimestamp=Tue 2026-11-24 10:00:01 UTC\n"
        "StatusText=idle, 0 queued\nUnitFileState=enabled\n",
    )
    fakes.answer("journalctl", "Nov 24 10:00:01 host gpt-image-inbox[12]: watching /inbox\n")
    lines: list[str] = []
    code = status(platform="linux", home=home, environ={}, out=lines.append)
    output = "\n".join(lines)
    assert code == 0
    assert "active (running) since Tue 2026-11-24 10:00:01 UTC" in output
    assert "idle, 0 queued" in output
    assert "watching /inbox" in output
    assert ["journalctl", "--user", "-u", "gpt-image-inbox.service", "-n", "10", "--no-pager"] in (
        fakes.calls
    )


def test_status_when_not_installed(home: Path, fakes: FakeTools) -> None:
    """status of a missing service exits 3 and says how to install it."""
    fakes.answer("systemctl --user show", "ActiveState=inactive\nSubState=dead\n")
    lines: list[str] = []
    assert status(platform="linux", home=home, environ={}, out=lines.append) == 3
    assert "not installed" in "\n".join(lines)
    assert "gpt-image-inbox service install" in "\n".join(lines)


# --- macOS -------------------------------------------------------------------------------------


def test_macos_install_writes_plist_and_bootstraps(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """On macOS install writes the LaunchAgent, creates the log folder, loads it with launchctl."""
    fakes.answer("launchctl bootout", "Boot-out failed: 3: No such process", 3)
    code, output = run_install(tmp_path, home, toolbin, platform="darwin")
    assert code == 0, output
    plist_path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"][0] == str(tmp_path / "venv bin" / "gpt-image-inbox")
    path = plist["EnvironmentVariables"]["PATH"].split(":")
    assert path[0] == str(toolbin)
    assert {"/opt/homebrew/bin", "/usr/local/bin"} <= set(path)
    assert (home / "Library" / "Logs" / "gpt-image-inbox").is_dir()
    assert plist["StandardErrorPath"] == str(
        home / "Library" / "Logs" / "gpt-image-inbox" / "gpt-image-inbox.log"
    )
    assert fakes.calls == [
        ["launchctl", "bootout", f"gui/{UID}/{LABEL}"],
        ["launchctl", "enable", f"gui/{UID}/{LABEL}"],
        ["launchctl", "bootstrap", f"gui/{UID}", str(plist_path)],
    ]
    assert "Full Disk Access" not in output


def test_macos_inbox_in_documents_gets_full_disk_access_hint(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """An inbox under ~/Documents prompts the Full Disk Access hint naming the interpreter."""
    config = write_config(tmp_path, home / "Documents" / "inbox")
    code, output = run_install(tmp_path, home, toolbin, platform="darwin", config=config)
    assert code == 0
    assert "Full Disk Access" in output
    assert str(Path(sys.executable).resolve()) in output


def test_macos_uninstall_boots_out_and_removes(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """Uninstall on macOS unloads the agent and deletes the plist."""
    assert run_install(tmp_path, home, toolbin, platform="darwin")[0] == 0
    before = len(fakes.calls)
    lines: list[str] = []
    code = uninstall(platform="darwin", home=home, environ={}, out=lines.append, getuid=lambda: UID)
    assert code == 0
    assert not (home / "Library" / "LaunchAgents" / f"{LABEL}.plist").exists()
    assert fakes.calls[before:] == [["launchctl", "bootout", f"gui/{UID}/{LABEL}"]]


def test_macos_status_reads_launchctl_print_and_log(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """status on macOS shows launchctl's state, its pid's start time and the log's last lines."""
    assert run_install(tmp_path, home, toolbin, platform="darwin")[0] == 0
    fakes.answer(
        "launchctl print",
        f"gui/{UID}/{LABEL} = {{\n\tactive count = 1\n\tstate = running\n\tpid = 777\n"
        "\tendpoint = {\n\t\tstate = active\n\t}\n}\n",
    )
    fakes.answer("ps -o lstart= -p 777", "Tue Nov 24 10:00:01 2026\n")
    log = home / "Library" / "Logs" / "gpt-image-inbox" / "gpt-image-inbox.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    lines: list[str] = []
    code = status(platform="darwin", home=home, environ={}, out=lines.append, getuid=lambda: UID)
    output = "\n".join(lines)
    assert code == 0
    assert "running since Tue Nov 24 10:00:01 2026" in output
    assert "line 29" in output
    assert "line 20" in output
    assert "line 19" not in output


def test_unsupported_platform() -> None:
    """On a platform without systemd or launchd every command explains itself and exits 2."""
    lines: list[str] = []
    assert status(platform="win32", out=lines.append) == 2
    assert "not on 'win32'" in lines[0]


# --- own command -------------------------------------------------------------------------------


def test_own_command_for_console_script_and_module(tmp_path: Path) -> None:
    """The console script is used by absolute path; `python -m daemon` becomes that, absolute."""
    script = fake_program(tmp_path)
    assert own_command(str(script), "/usr/bin/python3") == (str(script),)
    main = str(REPO / "daemon" / "__main__.py")
    assert own_command(main, "/opt/py/bin/python3") == ("/opt/py/bin/python3", "-m", "daemon")


def test_own_command_keeps_symlinks(tmp_path: Path) -> None:
    """A stable symlink (as Homebrew and pipx make) is kept, not resolved to a versioned path."""
    target = fake_program(tmp_path)
    link = tmp_path / "link-bin"
    link.symlink_to(target)
    assert own_command(str(link), sys.executable) == (str(link),)


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    """tail returns the last lines of a large file."""
    log = tmp_path / "big.log"
    log.write_text("".join(f"{i}\n" for i in range(100_000)))
    assert tail(log, 3) == ["99997", "99998", "99999"]
    assert tail(tmp_path / "missing.log", 3) == []


# --- the service and the shell agree ---------------------------------------------------------


def test_install_carries_the_shells_codex_home_into_the_unit(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """A shell with CODEX_HOME set installs a unit that gives codex the same login folder."""
    codex_home = tmp_path / "my codex"
    environ = {"PATH": str(toolbin), "USER": "alice", "CODEX_HOME": str(codex_home)}
    code, output = run_install(tmp_path, home, toolbin, environ=environ)
    assert code == 0, output
    unit = (home / ".config" / "systemd" / "user" / "gpt-image-inbox.service").read_text()
    assert f'Environment="CODEX_HOME={codex_home}"' in unit
    assert f"CODEX_HOME: {codex_home}" in output
    environment = installed_environment(platform="linux", home=home, environ={})
    assert environment is not None
    assert environment["CODEX_HOME"] == str(codex_home)


def test_install_without_codex_home_leaves_codex_its_default(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    code, output = run_install(tmp_path, home, toolbin)
    assert code == 0, output
    unit = (home / ".config" / "systemd" / "user" / "gpt-image-inbox.service").read_text()
    assert "CODEX_HOME=" not in unit.replace("# (CODEX_HOME was not set", "")
    assert "CODEX_HOME" not in installed_environment(platform="linux", home=home, environ={})


def test_the_plist_carries_codex_home_and_a_config_codex_home_needs_none(
    tmp_path: Path, home: Path, toolbin: Path, fakes: FakeTools
) -> None:
    """launchd gets CODEX_HOME as a key of its own; codex.home in the config wins anyway."""
    environ = {"PATH": str(toolbin), "USER": "alice", "CODEX_HOME": "/srv/codex"}
    code, output = run_install(tmp_path, home, toolbin, platform="darwin", environ=environ)
    assert code == 0, output
    plist = plistlib.loads((home / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes())
    assert plist["EnvironmentVariables"]["CODEX_HOME"] == "/srv/codex"
    config = write_config(tmp_path, tmp_path / "inbox2", codex={"home": "/elsewhere"})
    code, output = run_install(
        tmp_path, home, toolbin, platform="darwin", environ=environ, config=config
    )
    assert code == 0, output
    plist = plistlib.loads((home / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes())
    assert "CODEX_HOME" not in plist["EnvironmentVariables"]
