"""Signs of life while a job waits or runs: `submit --wait` on a terminal and off one, the
daemon's `job started` line, and `status` / `submit --wait` when no daemon runs."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
from datetime import datetime, timedelta

import yaml

from daemon.watching.lock import InboxLock
from tests.support.daemon_proc import DaemonProcess
from tests.support.procs import wait_for
from tests.support.rollout_shapes import tiny_png
from tests.support.world import World


class Output:
    """Everything a child writes to one file descriptor, collected by a thread as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the pty's other side is closed
                return
            if not chunk:
                return
            self.data += chunk

    @property
    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")

    def wait_for(self, what: str | re.Pattern[str]) -> str:
        def seen() -> bool:
            if isinstance(what, str):
                return what in self.text
            return what.search(self.text) is not None

        wait_for(seen, what=f"{what!r} in the output; so far:\n{self.text}")
        return self.text


def submit_wait(world: World, name: str, *, tty: bool) -> tuple[subprocess.Popen[bytes], Output]:
    """`submit --wait` as a child: its stderr on a pseudo-terminal or on a pipe."""
    argv = [world.python, "-m", "daemon", "submit", "--config", str(world.config_path)]
    argv += ["--prompt", "a fox in the snow", "--name", name, "--wait"]
    if tty:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            argv, env=world.env(), stdin=follower, stdout=follower, stderr=follower
        )
        os.close(follower)
    else:
        read_end, write_end = os.pipe()
        proc = subprocess.Popen(
            argv, env=world.env(), stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end
        )
        os.close(write_end)
        leader = read_end
    return proc, Output(leader)


def now_iso(delta: float = 0.0) -> str:
    return (datetime.now().astimezone() + timedelta(seconds=delta)).isoformat(timespec="seconds")


def write_status(world: World, **fields: object) -> None:
    data = {"state": "working", "pid": os.getpid(), "since": now_iso(), "queue_length": 0}
    tmp = world.outbox / ".status.json.tmp"
    tmp.write_text(json.dumps({**data, **fields, "updated_at": now_iso()}))
    os.replace(tmp, world.outbox / "status.json")


def write_result(world: World, job_file: str, image: str) -> None:
    (world.outbox / image).write_bytes(tiny_png(1))
    sidecar = {"job": job_file, "images": [{"file": image}], "finished_at": now_iso(1)}
    tmp = world.outbox / ".r.tmp"
    tmp.write_text(yaml.safe_dump(sidecar))
    os.replace(tmp, world.outbox / f"{image}.result.yaml")


def test_submit_wait_ticks_the_elapsed_time_on_a_terminal(world: World) -> None:
    """On a terminal the working line is rewritten in place as the seconds go by, and the
    image path follows on a line of its own."""
    with InboxLock(world.inbox, command="run"):  # a daemon holds the inbox
        write_status(world, current_job="fox.prompt.yaml", job_started_at=now_iso(-3))
        proc, out = submit_wait(world, "fox", tty=True)
        ticks = re.compile(r"\r\x1b\[Kworking on fox\.prompt\.yaml… (\d+) s")
        wait_for(
            lambda: len(set(ticks.findall(out.text))) >= 2,
            what=f"two different elapsed times; so far:\n{out.text!r}",
        )
        write_result(world, "fox.prompt.yaml", "fox.png")
        assert proc.wait(timeout=60) == 0
    text = out.wait_for("fox.png")
    assert f"\n{world.outbox / 'fox.png'}" in text.replace("\r\n", "\n")
    assert "not running" not in text


def test_submit_wait_without_a_daemon_says_so_at_once_and_waits_for_one(
    world: World, daemons: list[DaemonProcess]
) -> None:
    """No daemon: `submit --wait` says so, how to start one or run `once`, and how to stop
    waiting; when a daemon starts it says that too and follows the job to its image. Off a
    terminal its progress is plain lines."""
    proc, out = submit_wait(world, "pond", tty=False)
    try:
        out.wait_for("The daemon is not running")
        text = out.wait_for("Ctrl-C stops waiting")
        assert f"gpt-image-inbox once --config {world.config_path}" in text
        assert f"gpt-image-inbox run --config {world.config_path}" in text
        assert proc.poll() is None  # still waiting
        daemon = world.daemon()
        daemons.append(daemon)
        daemon.start()
        out.wait_for("A daemon has started: gpt-image-inbox run (pid ")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.wait_for(str(world.outbox / "pond.png"))
    assert "\r" not in text
    assert "\x1b" not in text


def test_plain_progress_lines_show_the_running_job(world: World) -> None:
    """Off a terminal the running job gets a plain line with its elapsed time."""
    with InboxLock(world.inbox, command="run"):
        write_status(world, current_job="owl.prompt.yaml", job_started_at=now_iso(-4))
        proc, out = submit_wait(world, "owl", tty=False)
        out.wait_for(re.compile(r"^working on owl\.prompt\.yaml… \d+ s$", re.MULTILINE))
        write_result(world, "owl.prompt.yaml", "owl.png")
        assert proc.wait(timeout=60) == 0
    assert "\r" not in out.text


def run_status(world: World) -> subprocess.CompletedProcess[str]:
    return world.cli("status")


def test_status_after_the_daemon_was_killed_says_it_is_not_running(
    world: World, daemons: list[DaemonProcess]
) -> None:
    """While the daemon runs, `status` shows its state; after `kill -9` (status.json still
    says idle) it says the daemon is not running and how to start it, and exits 1."""
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.start()
    wait_for(lambda: (world.status() or {}).get("state") == "idle", what="status idle")
    alive = run_status(world)
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.startswith(f"state: idle (pid {daemon.pid}")
    assert "not running" not in alive.stdout
    daemon.kill9()
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == -signal.SIGKILL
    assert (world.status() or {}).get("state") == "idle"
    dead = run_status(world)
    assert dead.returncode == 1
    assert dead.stdout.startswith(f"state: not running (pid {daemon.pid} wrote this file")
    assert "The daemon is not running" in dead.stdout
    assert f"gpt-image-inbox run --config {world.config_path}" in dead.stdout
    assert f"gpt-image-inbox once --config {world.config_path}" in dead.stdout


def test_the_daemon_logs_job_started_with_its_references(
    world: World, daemons: list[DaemonProcess]
) -> None:
    """A `job started` line names the job and its references before its `job finished`."""
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.start()
    (world.inbox / "pet.png").write_bytes(tiny_png(2))
    world.write_job("pet", "prompt: repaint in ink\n")
    daemon.wait_for(lambda: daemon.logged("job finished", job="pet.prompt.yaml"), what="done")
    events = [e.get("event") for e in daemon.log_lines()]
    started = daemon.logged("job started", job="pet.prompt.yaml", refs=["pet.png"])
    assert len(started) == 1, daemon.log_tail()
    assert events.index("job started") < events.index("job finished")
