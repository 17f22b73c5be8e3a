"""`doctor`: the checklist with codex missing, logged out, healthy and odd, and the real codex."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from daemon.commands.doctor import Login, parse_feature, parse_login, run_doctor
from tests.conftest import PINNED_CODEX as REAL_CODEX

FAKE_CODEX = """#!{python}
import os, sys
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(" ".join(args) + " CODEX_HOME=" + os.environ.get("CODEX_HOME", "-") + "\\n")
if args == ["--version"]:
    print({version!r})
elif args == ["login", "status"]:
    sys.stderr.write({login!r} + "\\n")
    sys.exit({login_code})
elif args == ["features", "list"]:
    sys.stdout.write({features!r})
    sys.exit({features_code})
else:
    sys.exit(2)
"""

FEATURES = (
    "apps                                     stable             true\n"
    "image_generation                         stable             true\n"
    "unbounded_connection_retries             stable             true\n"
)


def fake_codex(
    folder: Path,
    *,
    version: str = "codex-cli 0.169.0",
    login: str = "Logged in using ChatGPT",
    login_code: int = 0,
    features: str = FEATURES,
    features_code: int = 0,
) -> Path:
    """A stand-in `codex` answering --version, `login status` (on stderr) and `features list`."""
    folder.mkdir(exist_ok=True)
    program = folder / "codex"
    program.write_text(
        FAKE_CODEX.format(
            python=sys.executable,
            log=str(folder / "calls.log"),
            version=version,
            login=login,
            login_code=login_code,
            features=features,
            features_code=features_code,
        )
    )
    program.chmod(0o755)
    return program


def write_config(tmp_path: Path, command: Sequence[str], **codex: Any) -> Path:
    """A config with a fresh inbox and outbox and the given codex settings."""
    for name in ("inbox", "outbox"):
        (tmp_path / name).mkdir(exist_ok=True)
    data = {
        "inbox": str(tmp_path / "inbox"),
        "outbox": str(tmp_path / "outbox"),
        "codex": {"command": list(command), **codex},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def inotify_dir(tmp_path: Path, watches: int = 65536, instances: int = 128) -> Path:
    """A stand-in for /proc/sys/fs/inotify."""
    folder = tmp_path / f"inotify-{watches}-{instances}"
    folder.mkdir(exist_ok=True)
    (folder / "max_user_watches").write_text(f"{watches}\n")
    (folder / "max_user_instances").write_text(f"{instances}\n")
    return folder


def no_systemctl(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs codex for real; answers systemctl as a service manager that knows the unit is up."""
    if argv[0] == "systemctl":
        out = "ActiveState=active\nSubState=running\nActiveEnterTimestamp=Tue 2026-11-24 10:00\n"
        return subprocess.CompletedProcess(list(argv), 0, out, "")
    return subprocess.run(argv, **kwargs)


def doctor(tmp_path: Path, config: Path | None, *, path: str, **kwargs: Any) -> tuple[int, str]:
    """run_doctor on Linux with a temporary home; returns (exit code, printed text)."""
    lines: list[str] = []
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    params: dict[str, Any] = {
        "environ": {"PATH": path, "HOME": str(home)},
        "platform": "linux",
        "out": lines.append,
        "home": home,
        "inotify": inotify_dir(tmp_path),
        "run": no_systemctl,
    }
    params.update(kwargs)
    code = run_doctor(config, **params)
    return code, "\n".join(lines)


def line(output: str, subject: str) -> str:
    """The checklist line about `subject`."""
    found = [
        text.strip()
        for text in output.splitlines()
        if text.startswith("  ") and text.split(maxsplit=1)[1].startswith(f"{subject}: ")
    ]
    assert found, f"no line about {subject!r} in:\n{output}"
    return found[0]


def test_codex_missing(tmp_path: Path) -> None:
    """Without codex on PATH doctor fails, naming the missing command and how to install it."""
    config = write_config(tmp_path, ["codex"])
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = doctor(tmp_path, config, path=str(empty))
    assert code == 1
    assert line(output, "codex").startswith("FAIL")
    assert "npm install -g @openai/codex" in line(output, "codex")
    assert line(output, "image generation").startswith("FAIL")
    assert line(output, "inbox").startswith("ok")
    assert output.splitlines()[-1].startswith("2 problem(s) stop image generation")


def test_logged_out(tmp_path: Path) -> None:
    """A logged-out codex fails the login check with `codex login` as the fix."""
    codex = fake_codex(tmp_path / "bin", login="Not logged in", login_code=1)
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert line(output, "codex version") == "ok    codex version: codex-cli 0.169.0"
    assert line(output, "login").startswith("FAIL  login: not logged in")
    assert "run `codex login`" in line(output, "login")
    assert line(output, "image generation").startswith("FAIL")


def test_healthy(tmp_path: Path) -> None:
    """A ChatGPT login, a current codex and usable folders pass; a missing service only warns."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 0, output
    for subject in ("config", "codex", "codex for the service", "codex version", "login", "inbox"):
        assert line(output, subject).startswith("ok"), output
    assert line(output, "image generation") == (
        "ok    image generation: available (image_generation: stable, on)"
    )
    assert line(output, "filesystems").startswith("ok")
    assert line(output, "inotify").startswith("ok")
    assert line(output, "service").startswith("warn  service: not installed")
    assert output.splitlines()[-1] == "Ready to make images; 1 warning(s)."


def test_codex_home_is_passed_to_codex(tmp_path: Path) -> None:
    """codex.home from the config is the CODEX_HOME every codex call gets."""
    codex = fake_codex(tmp_path / "bin")
    home = tmp_path / "codex home"
    home.mkdir()
    config = write_config(tmp_path, [str(codex)], home=str(home))
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 0, output
    calls = (codex.parent / "calls.log").read_text().splitlines()
    assert calls
    assert all(call.endswith(f"CODEX_HOME={home}") for call in calls)
    assert f"(CODEX_HOME={home})" in line(output, "login")


def test_missing_codex_home_blocks(tmp_path: Path) -> None:
    """A codex.home that does not exist is a failure: codex refuses to start with it."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)], home=str(tmp_path / "nowhere"))
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert line(output, "codex.home").startswith("FAIL")


def test_api_key_login_blocks(tmp_path: Path) -> None:
    """An API-key login gets no image tool, and doctor says to log in with ChatGPT instead."""
    codex = fake_codex(tmp_path / "bin", login="Logged in using an API key - sk-***")
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert "API key" in line(output, "login")
    assert "ChatGPT" in line(output, "login")


def test_old_codex_blocks(tmp_path: Path) -> None:
    """A codex older than 0.111 fails the version check."""
    codex = fake_codex(tmp_path / "bin", version="codex-cli 0.98.0")
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert "0.98.0 is too old" in line(output, "codex version")


def test_release_without_features_list(tmp_path: Path) -> None:
    """A release lacking `features list` is judged by version and login alone."""
    codex = fake_codex(tmp_path / "bin", version="codex-cli 0.111.0", features_code=2)
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 0, output
    assert line(output, "image generation").startswith("ok")


def test_features_list_without_image_generation_blocks(tmp_path: Path) -> None:
    """A codex whose feature list lacks image_generation would reject --enable image_generation."""
    codex = fake_codex(tmp_path / "bin", features="apps  stable  true\n")
    config = write_config(tmp_path, [str(codex)])
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert line(output, "image generation").startswith("FAIL")


def test_invalid_config_blocks_but_codex_is_still_checked(tmp_path: Path) -> None:
    """A bad config fails with its problems listed, and the codex checks still run on defaults."""
    codex = fake_codex(tmp_path / "bin")
    config = tmp_path / "config.yaml"
    config.write_text("inbox: 12\npromt: x\n")
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert line(output, "config").startswith("FAIL")
    assert "promt" in line(output, "config")
    assert line(output, "login").startswith("ok")


def test_missing_inbox_blocks(tmp_path: Path) -> None:
    """An inbox that does not exist fails with the mkdir that fixes it."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    (tmp_path / "inbox").rmdir()
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert f"mkdir -p {tmp_path / 'inbox'}" in line(output, "inbox")


def test_outbox_that_is_a_file_blocks(tmp_path: Path) -> None:
    """An outbox path that names a file is a configuration error, and doctor says so."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    (tmp_path / "outbox").rmdir()
    (tmp_path / "outbox").write_text("")
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert "outbox: " in line(output, "config")
    assert "is not a folder" in line(output, "config")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_outbox_blocks(tmp_path: Path) -> None:
    """An outbox without write permission fails the folder check."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    (tmp_path / "outbox").chmod(0o500)
    try:
        code, output = doctor(tmp_path, config, path=str(codex.parent))
    finally:
        (tmp_path / "outbox").chmod(0o700)
    assert code == 1
    assert "cannot be written" in line(output, "outbox")


def test_installed_service_without_codex_on_its_path(tmp_path: Path) -> None:
    """An installed unit whose PATH misses codex's folder fails: the service would find no codex."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [codex.name])
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "gpt-image-inbox.service"
    unit.parent.mkdir(parents=True)
    unit.write_text('[Service]\nEnvironment="PATH=/usr/local/bin:/usr/bin:/bin"\n')
    code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert code == 1
    assert line(output, "codex").startswith("ok")
    message = line(output, "codex for the service")
    assert message.startswith("FAIL")
    assert "service install" in message
    assert line(output, "service") == "ok    service: running since Tue 2026-11-24 10:00"


def test_low_inotify_limits_warn(tmp_path: Path) -> None:
    """Low inotify limits are a warning with the sysctl that raises them."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    limits = inotify_dir(tmp_path, watches=100, instances=4)
    code, output = doctor(tmp_path, config, path=str(codex.parent), inotify=limits)
    assert code == 0
    assert "sysctl fs.inotify.max_user_watches=" in line(output, "inotify")
    assert "max_user_instances=" in line(output, "inotify")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Logged in using ChatGPT", Login.CHATGPT),
        ("WARNING: proceeding...\nLogged in using ChatGPT\n", Login.CHATGPT),
        ("Not logged in", Login.LOGGED_OUT),
        ("Logged in using an API key - sk-***", Login.API_KEY),
        (
            "API key configured - ***\nAuthentication is checked when you send a request.",
            Login.API_KEY,
        ),
        ("something else", Login.UNKNOWN),
    ],
)
def test_parse_login(text: str, expected: Login) -> None:
    """Each wording of `codex login status` across releases is classified."""
    assert parse_login(text) is expected


def test_parse_feature() -> None:
    """A feature's stage may be several words; the last column says whether it is on."""
    text = "agent  under development  false\nimage_generation  stable  true\n"
    assert parse_feature(text, "image_generation") == ("stable", True)
    assert parse_feature(text, "agent") == ("under development", False)
    assert parse_feature(text, "missing") is None


# --- the real codex ----------------------------------------------------------------------------


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A made-up, unsigned token; it never leaves this machine."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def chatgpt_codex_home(folder: Path) -> Path:
    """A private CODEX_HOME holding a ChatGPT-kind login and a config that stays offline."""
    folder.mkdir()
    token = unsigned_jwt(
        {
            "exp": int(time.time()) + 365 * 86400,
            "email": "test@example.invalid",
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": "plus",
                "chatgpt_user_id": "user-test",
                "chatgpt_account_id": "acct-test",
            },
        }
    )
    auth = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tokens": {
            "id_token": token,
            "access_token": token,
            "refresh_token": "x",
            "account_id": "acct-test",
        },
    }
    (folder / "auth.json").write_text(json.dumps(auth))
    (folder / "config.toml").write_text(
        "check_for_update_on_startup = false\n[analytics]\nenabled = false\n"
    )
    return folder


def real_codex() -> Path:
    """The pinned codex binary, or a skip (a failure under CI) when it is not installed."""
    if not REAL_CODEX.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL_CODEX} is missing")
        pytest.skip("the pinned real codex is not installed")
    return REAL_CODEX


@pytest.mark.real_codex
def test_real_codex_logged_in_with_chatgpt(tmp_path: Path) -> None:
    """The pinned real codex, ChatGPT login in a private CODEX_HOME passes the codex checks."""
    codex = real_codex()
    home = chatgpt_codex_home(tmp_path / "codex-home")
    config = write_config(tmp_path, [str(codex)], home=str(home))
    path = f"{codex.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    code, output = doctor(tmp_path, config, path=path)
    assert code == 0, output
    assert line(output, "codex version") == "ok    codex version: codex-cli 0.171.0"
    assert line(output, "login").startswith("ok    login: logged in using ChatGPT")
    assert line(output, "image generation") == (
        "ok    image generation: available (image_generation: stable, on)"
    )


@pytest.mark.real_codex
def test_real_codex_logged_out(tmp_path: Path) -> None:
    """The real pinned codex with an empty CODEX_HOME is reported as not logged in."""
    codex = real_codex()
    home = tmp_path / "empty-home"
    home.mkdir()
    config = write_config(tmp_path, [str(codex)], home=str(home))
    path = f"{codex.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    code, output = doctor(tmp_path, config, path=path)
    assert code == 1
    assert line(output, "login").startswith("FAIL  login: not logged in")


# --- checked as the service runs ---------------------------------------------------------------


def installed_unit(home: Path, *environment: str) -> Path:
    """A unit file as `service install` leaves it, with these `Environment=` lines."""
    unit = home / ".config" / "systemd" / "user" / "gpt-image-inbox.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Service]\n" + "".join(f"Environment={e}\n" for e in environment))
    return unit


def test_the_login_is_checked_in_the_services_codex_home(tmp_path: Path) -> None:
    """The shell has CODEX_HOME, the installed service does not: doctor says they differ, asks
    codex as the service will (no CODEX_HOME) and gives the fix with the user's --config."""
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    home = tmp_path / "home"
    installed_unit(home, f"PATH={codex.parent}:/usr/bin:/bin")
    shell = {"PATH": str(codex.parent), "HOME": str(home), "CODEX_HOME": str(tmp_path / "ch")}
    _code, output = doctor(tmp_path, config, path=str(codex.parent), environ=shell)
    check = line(output, "codex home for the service")
    assert check.startswith("warn")
    assert f"uses {home / '.codex'}" in check
    assert str(tmp_path / "ch") in check
    assert f"service install --config {config}" in check
    calls = (codex.parent / "calls.log").read_text().splitlines()
    assert "login status CODEX_HOME=-" in calls


def test_a_unit_with_the_shells_codex_home_agrees(tmp_path: Path) -> None:
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    home = tmp_path / "home"
    codex_home = tmp_path / "ch"
    installed_unit(home, f"PATH={codex.parent}:/usr/bin:/bin", f'"CODEX_HOME={codex_home}"')
    shell = {"PATH": str(codex.parent), "HOME": str(home), "CODEX_HOME": str(codex_home)}
    _code, output = doctor(tmp_path, config, path=str(codex.parent), environ=shell)
    assert line(output, "codex home for the service").startswith("ok")
    assert f"login status CODEX_HOME={codex_home}" in (codex.parent / "calls.log").read_text()


def test_fix_lines_keep_the_config_the_user_gave(tmp_path: Path) -> None:
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    _code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert f"Fix: gpt-image-inbox service install --config {config}" in line(output, "service")


def test_a_running_daemon_is_noticed(tmp_path: Path) -> None:
    """With the inbox's lock held (a daemon at work) doctor says so."""
    from daemon.watching.lock import InboxLock

    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    with InboxLock(tmp_path / "inbox", command="run"):
        _code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert line(output, "daemon").startswith("ok")
    assert "is working on" in line(output, "daemon")


def test_an_installed_service_with_no_daemon_running_is_a_warning(tmp_path: Path) -> None:
    codex = fake_codex(tmp_path / "bin")
    config = write_config(tmp_path, [str(codex)])
    installed_unit(tmp_path / "home", f"PATH={codex.parent}:/usr/bin:/bin")
    _code, output = doctor(tmp_path, config, path=str(codex.parent))
    assert line(output, "daemon").startswith("warn")
    assert "not running" in line(output, "daemon")
