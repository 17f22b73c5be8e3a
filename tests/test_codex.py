"""The codex runner: argv, prompt wrapping, version probe, failure classification, timeouts."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from daemon.codex import run as codex
from daemon.codex.failures import classify, parse_retry_at
from daemon.codex.version import CodexVersion, probe_version
from daemon.errors import (
    Cancelled,
    CodexFailed,
    CodexMissing,
    CodexRejected,
    CodexTimeout,
    Disposition,
    NetworkDown,
    NotLoggedIn,
    UsageLimit,
)
from tests.support.procs import kill_alive, pid_alive, wait_for

V169 = CodexVersion("codex-cli 0.169.0", (0, 169, 0))
V117 = CodexVersion("codex-cli 0.117.0", (0, 117, 0))


def test_argv_has_the_fixed_flags_and_no_shell(tmp_path: Path) -> None:
    """The argv carries every flag the skill uses, references as -i, and the prompt nowhere."""
    argv = codex.build_argv(
        ("codex",),
        version=V169,
        workdir=tmp_path,
        refs=[tmp_path / "ref-1.png", tmp_path / "ref-2.jpg"],
        model="gpt-5.5",
        extra_args=("-c", "x=1"),
    )
    assert argv[:2] == ["codex", "exec"]
    for flag in ("--skip-git-repo-check", "--json", "--enable", "image_generation"):
        assert flag in argv
    assert argv[argv.index("--sandbox") + 1] == "read-only"
    assert argv[argv.index("--color") + 1] == "never"
    assert argv[argv.index("-C") + 1] == str(tmp_path)
    assert argv[argv.index("-m") + 1] == "gpt-5.5"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-i"] == [
        str(tmp_path / "ref-1.png"),
        str(tmp_path / "ref-2.jpg"),
    ]
    assert argv[-2:] == ["-c", "x=1"]
    assert "--ephemeral" not in argv


def test_bounded_retries_flag_only_for_releases_that_know_it(tmp_path: Path) -> None:
    """0.150+ gets --disable unbounded_connection_retries; older releases would exit 1 on it."""
    new = codex.build_argv(("codex",), version=V169, workdir=tmp_path)
    old = codex.build_argv(("codex",), version=V117, workdir=tmp_path)
    assert "unbounded_connection_retries" in new
    assert "unbounded_connection_retries" not in old


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat",
        "  leading and trailing  \n\n",
        "emoji 🐱 and \u2028 line sep",
        "<<<REQUEST\nREQUEST>>>",
        "multi\nline\r\nprompt\twith tabs",
    ],
)
def test_prompt_is_embedded_byte_for_byte(prompt: str) -> None:
    """The user's prompt appears unchanged between the markers of the fixed instruction."""
    text = codex.wrap_prompt(prompt, has_refs=False)
    head, _, rest = text.partition("<<<REQUEST\n")
    assert rest[: len(prompt)] == prompt
    assert rest[len(prompt) :] == "\nREQUEST>>>\n"
    assert "image" in head
    assert "SVG" in head


def test_instruction_mentions_references_only_when_there_are_some() -> None:
    """With references the instruction says the attached images are the references."""
    assert "reference" in codex.wrap_prompt("x", has_refs=True)
    assert "reference" not in codex.wrap_prompt("x", has_refs=False)


def test_options_are_lines_of_their_own_before_the_untouched_request() -> None:
    """Each option is one line of the instruction before the marker; the prompt is unchanged."""
    prompt = "Make 2 images of a fox\n"
    plain = codex.wrap_prompt(prompt, has_refs=False)
    text = codex.wrap_prompt(prompt, has_refs=False, options=["Option one.", "Option two."])
    head, _, rest = text.partition("<<<REQUEST\n")
    assert head.endswith("anything else.\nOption one.\nOption two.\n")
    assert rest == prompt + "\nREQUEST>>>\n"
    assert text.replace("Option one.\nOption two.\n", "") == plain


def test_the_count_line_says_how_many_images_to_make() -> None:
    """One sentence with the number, in the words a model follows."""
    assert codex.count_option(3) == (
        "Make 3 separate images for this request: call the image tool 3 times, once per image."
    )
    assert codex.count_option(1) == "Make 1 image for this request: call the image tool once."


def _script(tmp_path: Path, body: str, name: str = "fakecodex") -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_version_probe_parses_and_rejects_old_releases(tmp_path: Path) -> None:
    """`codex --version` is read once; releases before 0.111 are refused with a hint."""
    good = _script(tmp_path, "print('codex-cli 0.169.0')\n", "good")
    old = _script(tmp_path, "print('codex-cli 0.98.0')\n", "old")
    assert probe_version([str(good)]).number == (0, 169, 0)
    with pytest.raises(CodexMissing, match="too old"):
        probe_version([str(old)])


def test_version_is_remembered_until_the_program_changes(tmp_path: Path) -> None:
    """A cached answer skips the probe; an upgraded (rewritten) program is asked again."""
    counter = tmp_path / "asked"
    program = _script(
        tmp_path,
        f"""
        with open({str(counter)!r}, "a") as f:
            f.write("x")
        print("codex-cli 0.169.0")
    """,
    )
    cache = tmp_path / "cache" / "codex-version.json"
    for _ in range(3):
        assert probe_version([str(program)], cache_file=cache).number == (0, 169, 0)
    assert counter.read_text() == "x"
    program.write_text(program.read_text().replace("0.169.0", "0.170.0") + "\n")
    assert probe_version([str(program)], cache_file=cache).number == (0, 170, 0)
    assert counter.read_text() == "xx"


def test_version_probe_of_a_missing_program_is_codex_missing(tmp_path: Path) -> None:
    """A codex that is not installed is exit code 3, naming the command."""
    with pytest.raises(CodexMissing) as info:
        probe_version([str(tmp_path / "nope")])
    assert info.value.exit_code == 3
    assert "nope" in info.value.message


def test_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    """A hanging codex and the child it started are both gone after the timeout."""
    pidfile = tmp_path / "child.pid"
    hang = _script(
        tmp_path,
        f"""
        import subprocess, sys, time, json
        print(json.dumps({{"type": "thread.started", "thread_id": "t-1"}}), flush=True)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """,
    )
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(CodexTimeout):
        codex.run_codex(
            [str(hang)],
            prompt_text="x",
            cwd=tmp_path,
            env=dict(os.environ),
            timeout_sec=2,
            on_thread_id=seen.append,
        )
    assert time.monotonic() - started < 60
    assert seen == ["t-1"]
    child = int(pidfile.read_text())
    _assert_gone(child)


def test_sigterm_is_tried_before_sigkill(tmp_path: Path) -> None:
    """A codex that ignores SIGTERM is killed after the grace period; nothing is left running."""
    pidfile = tmp_path / "pid"
    stubborn = _script(
        tmp_path,
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        time.sleep(600)
    """,
    )
    with pytest.raises(CodexTimeout):
        codex.run_codex(
            [str(stubborn)], prompt_text="x", cwd=tmp_path, env=dict(os.environ), timeout_sec=1
        )
    _assert_gone(int(pidfile.read_text()))


def test_cancel_stops_a_run(tmp_path: Path) -> None:
    """Setting the cancel event (daemon shutdown) stops codex and raises Cancelled."""
    import threading

    hang = _script(tmp_path, "import time; time.sleep(600)\n")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(Cancelled):
        codex.run_codex(
            [str(hang)],
            prompt_text="x",
            cwd=tmp_path,
            env=dict(os.environ),
            timeout_sec=120,
            cancel=cancel,
        )


def test_prompt_arrives_on_stdin_and_stdin_is_closed(tmp_path: Path) -> None:
    """codex reads the whole prompt from stdin and sees EOF (a large prompt does not block)."""
    out = tmp_path / "stdin.bin"
    echo = _script(
        tmp_path,
        f"""
        import sys
        data = sys.stdin.buffer.read()
        open({str(out)!r}, "wb").write(data)
    """,
    )
    prompt = "ü" * 300_000
    run = codex.run_codex(
        [str(echo)], prompt_text=prompt, cwd=tmp_path, env=dict(os.environ), timeout_sec=60
    )
    assert run.returncode == 0
    assert out.read_bytes() == prompt.encode()


def test_network_wait_ends_the_run_early(tmp_path: Path) -> None:
    """An older codex that waits forever for the network is stopped within seconds."""
    waiting = _script(
        tmp_path,
        """
        import json, time
        print(json.dumps({"type": "thread.started", "thread_id": "t"}), flush=True)
        print(json.dumps({"type": "error", "message": "Reconnecting... 1/5 (waiting for network)"}),
              flush=True)
        time.sleep(600)
    """,
    )
    started = time.monotonic()
    run = codex.run_codex(
        [str(waiting)], prompt_text="x", cwd=tmp_path, env=dict(os.environ), timeout_sec=300
    )
    assert run.network_down
    assert time.monotonic() - started < 30


def _assert_gone(pid: int) -> None:
    try:
        wait_for(lambda: not pid_alive(pid), timeout=10, what=f"process {pid} gone")
    finally:
        kill_alive([pid])


# --- failure classification ------------------------------------------------------------

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize(
    ("message", "kind", "cls"),
    [
        (
            "You\u2019ve hit your usage limit. Upgrade to Pro ... try again at 5:46 PM.",
            None,
            UsageLimit,
        ),
        ("Quota exceeded. Check your plan and billing details.", None, UsageLimit),
        (
            "Your access token could not be refreshed ... Please log out and sign in again.",
            None,
            NotLoggedIn,
        ),
        ("To use Codex with your ChatGPT plan, upgrade to Plus: https://...", None, NotLoggedIn),
        (
            "We\u2019re currently experiencing high demand, which may cause temporary errors.",
            None,
            CodexFailed,
        ),
        ("stream disconnected before completion: error sending request", None, CodexFailed),
        ("Connection failed: error sending request for url", None, NetworkDown),
        ("Error: Unknown feature flag: image_generationx", None, CodexRejected),
        ("something odd", "usage_limit_exceeded", UsageLimit),
        ("something odd", "unauthorized", NotLoggedIn),
        ("something odd", "http_connection_failed", NetworkDown),
        (
            "unexpected status 401 Unauthorized: Invalid token, url: http://127.0.0.1:1/v1/responses",
            "http_connection_failed",
            NotLoggedIn,
        ),
        ("something odd", "internal_server_error", CodexFailed),
    ],
)
def test_failures_are_classified_by_kind_then_by_codexs_words(
    message: str, kind: str | None, cls: type
) -> None:
    """codex's machine-readable kind wins; otherwise its message decides; the rest is transient."""
    error = classify(message, kind=kind, now=lambda: NOW)
    assert type(error) is cls


def test_usage_limit_carries_codexs_time() -> None:
    """'try again at 5:46 PM' becomes today's 17:46 local time."""
    error = classify("You\u2019ve hit your usage limit. try again at 5:46 PM.", now=lambda: NOW)
    assert error.retry_at == NOW.replace(hour=17, minute=46)
    assert error.disposition is Disposition.PAUSE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("try again at 5:46 PM.", NOW.replace(hour=17, minute=46)),
        ("try again at 9:05 AM.", NOW.replace(hour=9, minute=5) + timedelta(days=1)),
        (
            "try again at Mar 17th, 2030 5:46 PM.",
            NOW.replace(year=2030, month=3, day=17, hour=17, minute=46),
        ),
        ("try again at 12:30 AM", NOW.replace(hour=0, minute=30) + timedelta(days=1)),
        ("try again in 3 days.", NOW + timedelta(days=3)),
        ("no time given", None),
    ],
)
def test_retry_time_parsing(text: str, expected: datetime | None) -> None:
    """Times are local wall-clock times; a bare time that already passed means tomorrow."""
    assert parse_retry_at(text, now=NOW) == expected
