"""Ctrl-C and SIGTERM, as real signals to real process groups, for `gen`, `once`, `submit --wait`
and `run`.

Each command runs in a session of its own, as a shell runs a foreground job: `os.killpg` on it is
what a terminal's Ctrl-C does, `send_signal` to the command alone is what a parent tool does.
codex (fake, or the real 0.171 against the mock) runs in its own session below it, so only the
command can stop it. The checks are what a user would see: no codex process left, no temp
folder left, the job back in the inbox unchanged, the exit code and the one-line message.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import world as shared
from tests.support.codex_home import codex_env
from tests.support.daemon_proc import DaemonProcess
from tests.support.mock_openai import MockOpenAI
from tests.support.procs import pid_alive, wait_for
from tests.support.rollout_shapes import tiny_png

# Long enough that "gone before the grace ran out" cannot be luck on a busy machine.
LONG_GRACE_SEC = 60
# "Within a few seconds", measured generously: far below LONG_GRACE_SEC.
PROMPT_EXIT_SEC = 20
EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Command:
    """A `gpt-image-inbox` command running in its own session; stderr goes to a file."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path
    started: float

    def interrupt(self, sig: signal.Signals, *, to_group: bool) -> None:
        if to_group:
            os.killpg(self.proc.pid, sig)  # as a terminal sends it
        else:
            self.proc.send_signal(sig)  # as a parent tool sends it

    def wait(self, timeout: float = PROMPT_EXIT_SEC) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout:g} s later; stderr:\n{self.stderr()}"
            ) from None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stopped_line(self) -> str:
        lines = [ln for ln in self.stderr().splitlines() if ln.startswith("gpt-image-inbox: ")]
        assert lines, self.stderr()
        return lines[-1]


class World(shared.World):
    """A shared World whose commands get a TMPDIR of their own, to see temp folders left."""

    @property
    def tmp(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(exist_ok=True)
        return path

    def run_temp_folders(self) -> list[Path]:
        return sorted(self.tmp.glob("gpt-image-inbox-*"))

    def command(self, *args: str, env: dict[str, str] | None = None) -> Command:
        stderr_path = self.root / f"stderr-{time.monotonic_ns()}.txt"
        base = env if env is not None else self.env()
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daemon",
                    *args[:1],
                    "--config",
                    str(self.config_path),
                    *args[1:],
                ],
                cwd=self.root,
                env={**base, "TMPDIR": str(self.tmp)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        return Command(proc, stderr_path, time.monotonic())

    def daemon(self) -> DaemonProcess:
        return super().daemon(env={**self.env(), "TMPDIR": str(self.tmp)})

    def codex_started(self, count: int = 1) -> dict[str, Any]:
        """The `count`-th codex call, once it runs and its run folder exists."""
        wait_for(lambda: len(self.calls()) >= count, what=f"codex call {count}")
        call = self.calls()[count - 1]
        assert Path(call["cwd"]).parent == self.tmp
        return call


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path / "world")
    made.write_config(codex={"term_grace_sec": LONG_GRACE_SEC})
    yield made
    for call in made.calls():  # never leave a codex behind, whatever the test saw
        for pid in group_members(call["pid"]):
            os.kill(pid, signal.SIGKILL)


def assert_codex_gone(call: dict[str, Any]) -> None:
    """codex, its child and anything else of its process group have ended."""
    wait_for(lambda: not group_members(call["pid"]), timeout=10, what="codex's process group gone")
    assert not pid_alive(call["pid"])
    assert not pid_alive(call["child_pid"])


SIGNALS = [
    pytest.param(signal.SIGINT, True, id="sigint-to-group"),
    pytest.param(signal.SIGTERM, False, id="sigterm-to-command"),
]


# --- gen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "to_group"), SIGNALS)
def test_gen_stop_signal_stops_codex_and_removes_the_run_folder(
    world: World, sig: signal.Signals, to_group: bool
) -> None:
    """A stop signal during `gen` stops codex's whole group, removes the run's temp folder,
    writes no image and exits 128+n saying codex was stopped."""
    world.set_script(scenario="hang")
    world.write_config(codex={"term_grace_sec": 5})
    out = world.root / "out.png"
    gen = world.command("gen", "--prompt", "a fox", "--out", str(out))
    call = world.codex_started()
    assert world.run_temp_folders() == [Path(call["cwd"])]
    gen.interrupt(sig, to_group=to_group)
    assert gen.wait() == EXIT_CODE[sig]
    assert_codex_gone(call)
    assert world.run_temp_folders() == []
    assert not out.exists()
    assert gen.stopped_line() == (
        "gpt-image-inbox: stopped: codex was stopped, no image was written"
    )


def test_gen_second_ctrl_c_kills_a_codex_that_ignores_sigterm_at_once(world: World) -> None:
    """codex ignoring SIGTERM outlives the first Ctrl-C (its grace is 60 s); the second one
    kills its group at once and `gen` exits 130."""
    world.set_script(scenario="hang_ignoring_sigterm")
    gen = world.command("gen", "--prompt", "a fox", "--out", str(world.root / "o.png"))
    call = world.codex_started()
    gen.interrupt(signal.SIGINT, to_group=True)
    time.sleep(1.5)  # the first signal is being handled: codex got SIGTERM and ignores it
    assert pid_alive(call["pid"])
    assert gen.proc.poll() is None
    gen.interrupt(signal.SIGINT, to_group=True)
    assert gen.wait() == 130
    assert time.monotonic() - gen.started < LONG_GRACE_SEC
    assert_codex_gone(call)
    assert world.run_temp_folders() == []


def test_gen_one_signal_kills_a_codex_that_ignores_sigterm_after_the_grace(world: World) -> None:
    """With one SIGTERM, codex ignoring SIGTERM is killed once codex.term_grace_sec ran out."""
    world.set_script(scenario="hang_ignoring_sigterm")
    world.write_config(codex={"term_grace_sec": 3})
    gen = world.command("gen", "--prompt", "a fox", "--out", str(world.root / "o.png"))
    call = world.codex_started()
    signalled = time.monotonic()
    gen.interrupt(signal.SIGTERM, to_group=False)
    assert gen.wait() == 143
    assert time.monotonic() - signalled >= 3  # it was given the whole grace
    assert_codex_gone(call)


def test_gen_ctrl_c_typed_at_a_terminal(world: World) -> None:
    """^C typed into the terminal of `gen` (a pty as its controlling terminal): codex stops and
    the person reads the stop message on that terminal."""
    world.set_script(scenario="hang")
    world.write_config(codex={"term_grace_sec": 5})
    master, slave = pty.openpty()

    def take_terminal() -> None:  # runs after setsid(): the pty becomes our controlling tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "gen",
            "--config",
            str(world.config_path),
            "--prompt",
            "a fox",
            "--out",
            str(world.root / "o.png"),
        ],
        cwd=world.root,
        env={**world.env(), "TMPDIR": str(world.tmp)},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    try:
        call = world.codex_started()
        os.write(master, b"\x03")
        screen = read_until_closed(master)
        assert proc.wait(timeout=PROMPT_EXIT_SEC) == 130
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert "gpt-image-inbox: stopped: codex was stopped, no image was written" in screen
    assert_codex_gone(call)
    assert world.run_temp_folders() == []


def read_until_closed(master: int, deadline: float = PROMPT_EXIT_SEC) -> str:
    """Everything the terminal shows until the last process holding it has gone."""
    chunks = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


# --- once ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "to_group"), SIGNALS)
def test_once_stop_signal_puts_the_job_back_and_starts_no_other(
    world: World, sig: signal.Signals, to_group: bool
) -> None:
    """A stop signal during `once`: codex's group is stopped, the job and its sibling reference
    are back in the inbox root byte for byte, processing/ is empty, the next job never starts."""
    world.set_script(scenario="hang")
    world.write_config(codex={"term_grace_sec": 5})
    job = world.write_job("fox", "prompt: a red fox\n# the person's own comment\n")
    ref = world.inbox / "fox.png"
    ref.write_bytes(tiny_png(4))
    before = {p.name: p.read_bytes() for p in (job, ref)}
    os.utime(job, ns=(1, 1))  # the oldest: fox runs first
    later = world.write_job("later")
    once = world.command("once")
    call = world.codex_started()
    assert world.jobs_in("processing") == ["fox.prompt.yaml"]
    once.interrupt(sig, to_group=to_group)
    assert once.wait() == EXIT_CODE[sig]
    assert_codex_gone(call)
    assert world.run_temp_folders() == []
    assert {n: (world.inbox / n).read_bytes() for n in before} == before
    assert list((world.inbox / "processing").iterdir()) == []
    assert later.read_text() == "prompt: a red fox\n"
    assert len(world.calls()) == 1
    assert world.results() == {}
    assert once.stopped_line() == (
        "gpt-image-inbox: stopped: codex was stopped, fox.prompt.yaml is back in the inbox"
    )


def test_once_second_signal_kills_a_codex_that_ignores_sigterm_at_once(world: World) -> None:
    """SIGTERM, then SIGTERM again, to `once` whose codex ignores SIGTERM: its group dies long
    before the 60 s grace, the job is back in the inbox, exit 143."""
    world.set_script(scenario="hang_ignoring_sigterm")
    world.write_job("fox")
    once = world.command("once")
    call = world.codex_started()
    once.interrupt(signal.SIGTERM, to_group=False)
    time.sleep(1.5)
    assert pid_alive(call["pid"])
    assert once.proc.poll() is None
    once.interrupt(signal.SIGTERM, to_group=False)
    assert once.wait() == 143
    assert time.monotonic() - once.started < LONG_GRACE_SEC
    assert_codex_gone(call)
    assert world.jobs_in() == ["fox.prompt.yaml"]
    assert list((world.inbox / "processing").iterdir()) == []


def test_once_signal_during_a_retry_backoff_starts_codex_no_more(world: World) -> None:
    """Ctrl-C while `once` waits to retry a failed job: codex is not started again, the job
    waits in the inbox, and `once` exits 130 at once rather than after the backoff."""
    world.set_script(scenario="server_error")
    world.write_config(retry={"attempts": 3, "backoff_sec": 600, "max_backoff_sec": 600})
    world.write_job("fox")
    once = world.command("once")
    wait_for(lambda: world.errors(), what="the first try's error sidecar")
    once.interrupt(signal.SIGINT, to_group=True)
    assert once.wait() == 130
    assert len(world.calls()) == 1
    assert world.jobs_in() == ["fox.prompt.yaml"]
    assert once.stopped_line() == (
        "gpt-image-inbox: stopped: no further job was started, 1 left in the inbox"
    )


# --- submit --wait ------------------------------------------------------------------------------


def test_submit_wait_interrupted_says_the_job_is_still_queued(world: World) -> None:
    """Ctrl-C during `submit --wait` with no daemon running: it stops waiting at once, exits
    130, and says the job stays queued and how to withdraw it."""
    wait = world.command("submit", "--prompt", "a fox", "--name", "fox", "--wait")
    job = world.inbox / "fox.prompt.yaml"
    wait_for(job.exists, what="the job written")
    time.sleep(0.5)  # into the waiting loop
    wait.interrupt(signal.SIGINT, to_group=True)
    assert wait.wait() == 130
    assert wait.stopped_line() == (
        "gpt-image-inbox: stopped: no longer waiting: fox.prompt.yaml is still queued in the "
        f"inbox and the daemon will run it; to withdraw it, delete {job}"
    )
    assert job.read_text() == "prompt: a fox\n"


def test_submit_wait_sigterm_says_the_daemon_finishes_the_running_job(world: World) -> None:
    """SIGTERM to `submit --wait` while the daemon runs its job: exit 143, the message says the
    daemon will finish it, and the daemon's codex is left running."""
    world.set_script(scenario="hang")
    daemon = world.daemon().start()
    try:
        wait = world.command("submit", "--prompt", "a fox", "--name", "fox", "--wait")
        call = world.codex_started()
        wait.interrupt(signal.SIGTERM, to_group=False)
        assert wait.wait() == 143
        assert wait.stopped_line().startswith(
            "gpt-image-inbox: stopped: no longer waiting: the daemon is running fox.prompt.yaml "
            "and will finish it"
        )
        assert pid_alive(call["pid"])
        assert world.jobs_in("processing") == ["fox.prompt.yaml"]
    finally:
        daemon.kill_if_running()


# --- run (the daemon) ---------------------------------------------------------------------------


def test_daemon_second_ctrl_c_stops_the_running_codex_at_once(world: World) -> None:
    """The first SIGINT says at once how long the daemon waits for the job and that Ctrl-C again
    stops it; the second kills a codex that ignores SIGTERM at once, and the job is back."""
    world.write_config(shutdown_grace_sec=LONG_GRACE_SEC)
    world.set_script(scenario="hang_ignoring_sigterm")
    daemon = world.daemon().start()
    try:
        world.write_job("fox")
        call = world.codex_started()
        daemon.signal(signal.SIGINT)
        (said,) = daemon.wait_for(lambda: daemon.logged("stopping"), what="the stop message")
        assert said["message"] == (
            f"waiting up to {LONG_GRACE_SEC} s for fox.prompt.yaml, Ctrl-C again to stop it now"
        )
        assert pid_alive(call["pid"])
        assert daemon.running()
        signalled = time.monotonic()
        daemon.signal(signal.SIGINT)
        assert daemon.wait_exit(timeout=PROMPT_EXIT_SEC) == 0
        assert time.monotonic() - signalled < LONG_GRACE_SEC
    finally:
        daemon.kill_if_running()
    assert_codex_gone(call)
    assert world.jobs_in() == ["fox.prompt.yaml"]
    assert list((world.inbox / "processing").iterdir()) == []
    assert world.run_temp_folders() == []


# --- the real codex 0.171 -----------------------------------------------------------------------


@pytest.mark.real_codex
def test_real_codex_launcher_and_native_binary_die_on_ctrl_c(
    world: World, codex_bin: Path, mock_openai: MockOpenAI, codex_home: Path
) -> None:
    """The real codex (node launcher and native binary) waiting on a mock that never answers:
    Ctrl-C to `gen`'s process group ends both, removes the run folder, exit 130."""
    mock_openai.scenario = "hang"
    world.write_config(
        codex={"command": [str(codex_bin)], "home": str(codex_home), "timeout_sec": 300}
    )
    env = codex_env(mock_openai.port, codex_home=codex_home, base=world.env())
    gen = world.command("gen", "--prompt", "a fox", "--out", str(world.root / "o.png"), env=env)
    wait_for(lambda: mock_openai.requests_to("/v1/responses"), timeout=120, what="codex asks")
    (launcher,) = children_of(gen.proc.pid)
    members = group_members(launcher)
    assert len(members) >= 2, members  # node and the native binary, in codex's own group
    assert world.run_temp_folders()
    try:
        gen.interrupt(signal.SIGINT, to_group=True)
        assert gen.wait() == 130
        wait_for(lambda: not group_members(launcher), timeout=10, what="real codex gone")
        assert "stopped: codex was stopped, no image was written" in gen.stopped_line()
    finally:
        for pid in group_members(launcher):
            os.kill(pid, signal.SIGKILL)
    assert not any(pid_alive(pid) for pid in members)
    assert world.run_temp_folders() == []


# --- the stop request itself --------------------------------------------------------------------


def test_stop_request_first_signal_cancels_second_kills_and_the_first_names_the_code() -> None:
    """SIGTERM then SIGINT: cancel on the first, kill-now on the second, exit code 143."""
    from daemon.commands.interrupt import StopRequest

    stop = StopRequest()
    stop.handle(signal.SIGTERM, None)
    assert stop.cancel.is_set()
    assert not stop.now.is_set()
    stop.handle(signal.SIGINT, None)
    assert stop.now.is_set()
    assert stop.exit_code == 143
    stop.sleep(3600)  # returns at once once a stop was asked for
