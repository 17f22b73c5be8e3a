"""Tests for the fake codex program: it must behave like codex where the daemon can tell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.codex.session_log import find_session_log, generated_images, scan_rollout
from tests.support.procs import pid_alive, wait_for
from tests.support.rollout_shapes import USAGE_LIMIT_MESSAGE

FAKE = Path(__file__).parent / "support" / "fake_codex.py"
ARGV = ["exec", "--skip-git-repo-check", "--sandbox", "read-only", "--json"]


def run_fake(
    tmp_path: Path, conf: dict[str, Any], args: list[str], stdin: bytes = b"a fox\n"
) -> subprocess.CompletedProcess[bytes]:
    """Run the fake with the system python3, as codex.command would, and wait for it."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"record": str(tmp_path / "record.jsonl"), **conf}))
    env = {**os.environ, "FAKE_CODEX_SCRIPT": str(script), "CODEX_HOME": str(home)}
    return subprocess.run(
        [str(FAKE), *args], input=stdin, capture_output=True, env=env, cwd=tmp_path, timeout=60
    )


def events(done: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def records(tmp_path: Path) -> list[dict[str, Any]]:
    # split("\n"), not splitlines(): a recorded prompt may hold U+2028.
    text = (tmp_path / "record.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def test_version_and_login_status_answer_like_codex(tmp_path: Path) -> None:
    """--version prints codex-cli <version>; login status answers on stderr."""
    version = run_fake(tmp_path, {"version": "0.144.0"}, ["--version"])
    logged_in = run_fake(tmp_path, {}, ["login", "status"])
    logged_out = run_fake(tmp_path, {"logged_in": False}, ["login", "status"])

    assert version.stdout.decode().strip() == "codex-cli 0.144.0"
    assert (logged_in.returncode, logged_in.stderr.decode()) == (0, "Logged in using ChatGPT\n")
    assert logged_out.returncode == 1
    assert b"Not logged in" in logged_out.stderr


def test_image_run_records_argv_and_stdin_and_writes_a_readable_log(tmp_path: Path) -> None:
    """An image run prints thread.started first, records its input, and leaves a scannable log."""
    prompt = "  a fox\u2028in snow \u00e9\n\n".encode()
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"\x89PNG\r\n\x1a\nreference")
    started = datetime.now().astimezone()
    args = [*ARGV, "-C", str(tmp_path), "-i", str(ref), "-m", "gpt-5.5"]

    done = run_fake(tmp_path, {}, args, stdin=prompt)

    assert done.returncode == 0
    first, *rest = events(done)
    assert first["type"] == "thread.started"
    assert rest[-1]["type"] == "turn.completed"
    (rec,) = records(tmp_path)
    assert rec["argv"] == args
    assert rec["refs"] == [str(ref)]
    assert rec["cwd"] == str(tmp_path)
    assert rec["stdin"].encode() == prompt
    log = find_session_log(tmp_path / "home", first["thread_id"], started_at=started)
    assert log is not None
    scan = scan_rollout(log)
    assert len(scan.images) == 1
    assert scan.images[0].data != ref.read_bytes()
    assert generated_images(tmp_path / "home", first["thread_id"])[0].data == scan.images[0].data


@pytest.mark.parametrize("version", ["0.111.0", "0.125.0", "0.145.0", "0.169.0"])
def test_two_images_in_each_release_shape(tmp_path: Path, version: str) -> None:
    """two_images writes two distinct images in the configured release's log shape."""
    done = run_fake(tmp_path, {"version": version, "scenario": "two_images"}, ARGV)

    thread = events(done)[0]["thread_id"]
    log = find_session_log(tmp_path / "home", thread, started_at=datetime.now())
    assert log is not None
    meta = json.loads(log.read_bytes().splitlines()[0])["payload"]
    assert meta["cli_version"] == version
    assert len({i.data for i in scan_rollout(log).images}) == 2


def test_image_size_makes_a_valid_png_of_that_size(tmp_path: Path) -> None:
    """image_size pads the PNG to the asked size and Pillow still reads it."""
    from daemon.images import inspect

    done = run_fake(tmp_path, {"image_size": 50_000, "thread_id": "t-0000-0001"}, ARGV)

    assert done.returncode == 0
    log = find_session_log(tmp_path / "home", "t-0000-0001", started_at=datetime.now())
    assert log is not None
    (image,) = scan_rollout(log).images
    assert len(image.data) == 50_000
    assert inspect(image.data) is not None


@pytest.mark.parametrize(
    ("scenario", "kind", "needle"),
    [
        ("usage_limit", "usage_limit_exceeded", "You\u2019ve hit your usage limit."),
        ("unauthorized", "unauthorized", "sign in again"),
        ("server_error", "internal_server_error", "high demand"),
    ],
)
def test_turn_failures_exit_1_with_codex_words(
    tmp_path: Path, scenario: str, kind: str, needle: str
) -> None:
    """Failed turns exit 1 with error + turn.failed events and a task_complete error in the log."""
    done = run_fake(tmp_path, {"scenario": scenario}, ARGV)

    assert done.returncode == 1
    kinds = [e["type"] for e in events(done)]
    assert kinds[0] == "thread.started"
    assert kinds[-2:] == ["error", "turn.failed"]
    assert needle in events(done)[-1]["error"]["message"]
    log = find_session_log(
        tmp_path / "home", events(done)[0]["thread_id"], started_at=datetime.now()
    )
    assert log is not None
    scan = scan_rollout(log)
    assert scan.turn_error_kind == kind
    assert needle in (scan.turn_error or "")


def test_usage_limit_message_can_be_scripted(tmp_path: Path) -> None:
    """A test can choose the usage-limit sentence, e.g. one with a date."""
    message = USAGE_LIMIT_MESSAGE.replace("5:46 PM", "Mar 17th, 2030 5:46 PM")

    done = run_fake(tmp_path, {"scenario": "usage_limit", "usage_limit_message": message}, ARGV)

    assert events(done)[-1]["error"]["message"] == message


@pytest.mark.parametrize(
    ("scenario", "expect_images", "expect_refusals"),
    [("refuse", 0, 1), ("text_only", 0, 0), ("generated_dir_only", 0, 0)],
)
def test_exit_0_outcomes_without_an_image_in_the_log(
    tmp_path: Path, scenario: str, expect_images: int, expect_refusals: int
) -> None:
    """Refusals, text answers and a disk-only image all exit 0 with no image in the log."""
    done = run_fake(tmp_path, {"scenario": scenario}, ARGV)

    assert done.returncode == 0
    thread = events(done)[0]["thread_id"]
    log = find_session_log(tmp_path / "home", thread, started_at=datetime.now())
    assert log is not None
    scan = scan_rollout(log)
    assert (len(scan.images), len(scan.refusals)) == (expect_images, expect_refusals)
    on_disk = generated_images(tmp_path / "home", thread)
    assert len(on_disk) == (1 if scenario == "generated_dir_only" else 0)


def test_no_session_log_and_crash(tmp_path: Path) -> None:
    """no_session_log exits 0 without a log; crash exits 101 leaving a cut-off log."""
    quiet = run_fake(tmp_path, {"scenario": "no_session_log"}, ARGV)
    crash = run_fake(tmp_path, {"scenario": "crash"}, ARGV)

    home, now = tmp_path / "home", datetime.now()
    assert quiet.returncode == 0
    assert find_session_log(home, events(quiet)[0]["thread_id"], started_at=now) is None
    assert crash.returncode == 101
    assert b"panicked" in crash.stderr
    log = find_session_log(home, events(crash)[0]["thread_id"], started_at=now)
    assert log is not None
    assert not log.read_bytes().endswith(b"\n")
    scan = scan_rollout(log)  # the image before the cut-off line is kept; no turn outcome
    assert len(scan.images) == 1
    assert scan.turn_error is None


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    """An unknown flag, or the bad_args scenario, exits 2 with a usage message."""
    unknown = run_fake(tmp_path, {}, [*ARGV, "--bogus"])
    scripted = run_fake(tmp_path, {"scenario": "bad_args"}, ARGV)

    for done in (unknown, scripted):
        assert done.returncode == 2
        assert b"unexpected argument" in done.stderr
        assert not done.stdout


def test_feature_flag_unknown_to_the_release_exits_1(tmp_path: Path) -> None:
    """Disabling unbounded_connection_retries on a release before 0.150 fails like codex."""
    args = [*ARGV, "--disable", "unbounded_connection_retries"]

    old = run_fake(tmp_path, {"version": "0.145.0"}, args)
    new = run_fake(tmp_path, {"version": "0.150.0"}, args)

    assert old.returncode == 1
    assert b"Unknown feature flag" in old.stderr
    assert new.returncode == 0


def test_network_down_fails_only_with_bounded_retries(tmp_path: Path) -> None:
    """With retries bounded, the run exits 1 with codex's `Connection failed` message."""
    args = [*ARGV, "--disable", "unbounded_connection_retries"]

    done = run_fake(tmp_path, {"scenario": "network_down"}, args)

    assert done.returncode == 1
    assert events(done)[-1]["error"]["message"].startswith("Connection failed")


def test_missing_codex_home_and_empty_prompt_exit_1(tmp_path: Path) -> None:
    """A CODEX_HOME that does not exist, or a whitespace-only prompt, exits 1."""
    env = {**os.environ, "CODEX_HOME": str(tmp_path / "nope")}
    env.pop("FAKE_CODEX_SCRIPT", None)
    missing = subprocess.run([str(FAKE), *ARGV], input=b"x", capture_output=True, env=env)
    empty = run_fake(tmp_path, {}, ARGV, stdin=b"  \n")

    assert missing.returncode == 1
    assert b"CODEX_HOME" in missing.stderr
    assert empty.returncode == 1
    assert b"No prompt provided" in empty.stderr


def _start_hang(
    tmp_path: Path, scenario: str, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"scenario": scenario, "record": str(tmp_path / "record.jsonl")}))
    env = {**os.environ, "FAKE_CODEX_SCRIPT": str(script), "CODEX_HOME": str(home)}
    proc = subprocess.Popen(
        [str(FAKE), *ARGV, *(extra or [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"a fox\n")
    proc.stdin.close()
    assert json.loads(proc.stdout.readline())["type"] == "thread.started"
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_hang_dies_with_its_child_on_sigterm_to_the_group(tmp_path: Path) -> None:
    """hang keeps running until SIGTERM to its process group ends it and its child."""
    proc = _start_hang(tmp_path, "hang")
    child = records(tmp_path)[0]["child_pid"]

    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGTERM)

    assert proc.wait(timeout=30) != 0
    wait_for(lambda: not pid_alive(child), timeout=30, what=f"child {child} gone")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_hang_ignoring_sigterm_needs_sigkill(tmp_path: Path) -> None:
    """hang_ignoring_sigterm survives SIGTERM; SIGKILL to the group ends it and its child."""
    proc = _start_hang(tmp_path, "hang_ignoring_sigterm")
    child = records(tmp_path)[0]["child_pid"]

    os.killpg(proc.pid, signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)
    os.killpg(proc.pid, signal.SIGKILL)

    assert proc.wait(timeout=30) == -signal.SIGKILL
    wait_for(lambda: not pid_alive(child), timeout=30, what=f"child {child} gone")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_network_down_with_unbounded_retries_waits_forever(tmp_path: Path) -> None:
    """Without bounded retries the fake reports it is waiting for network and never exits."""
    proc = _start_hang(tmp_path, "network_down")
    assert proc.stdout is not None

    assert json.loads(proc.stdout.readline()) == {"type": "turn.started"}
    line = json.loads(proc.stdout.readline())

    assert line == {"type": "error", "message": "Reconnecting... 1/5 (waiting for network)"}
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
