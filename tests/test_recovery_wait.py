"""Waiting for a codex an earlier daemon left: ready first, watchdog fed, a stop honoured.

The daemon is a real process killed with SIGKILL mid-job; the second one finds the first one's
codex still running. Notifications go to a datagram socket standing in for systemd's.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.codex import run as codex
from tests.support.daemon_proc import DaemonProcess
from tests.support.procs import pid_alive, wait_for
from tests.support.world import World

RECOVERING = "STATUS=recovering victim.prompt.yaml: waiting for the codex an earlier run left"


class Notifications:
    """A bound NOTIFY_SOCKET; `seen(prefix)` drains it and says whether such a message came."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="notify-"))  # sun_path is 108 bytes
        self.address = self.folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.address))
        self.sock.settimeout(0.05)
        self.got: list[str] = []

    def seen(self, prefix: str) -> bool:
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return any(m.startswith(prefix) for m in self.got)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    notes = Notifications()
    yield notes
    notes.close()


def crash_mid_job(world: World, daemons: list[DaemonProcess]) -> dict[str, object]:
    """A daemon killed with SIGKILL while codex runs the job `victim`; returns codex's call."""
    first = world.daemon()
    daemons.append(first)
    first.start()
    world.write_job("victim")
    first.wait_for(
        lambda: (
            (world.inbox / "processing" / ".victim.prompt.yaml.run.json").exists() and world.calls()
        ),
        what="codex running",
    )
    first.kill9()
    (call,) = world.calls()
    assert pid_alive(call["pid"])
    return call


def test_ready_comes_before_the_recovery_wait_and_the_watchdog_is_fed_during_it(
    world: World, daemons: list[DaemonProcess], notifications: Notifications
) -> None:
    """The restarted daemon sends READY=1 before it waits for the leftover codex, says in STATUS=
    what it waits for, pings the watchdog throughout, and takes that codex's image."""
    world.set_script(delay_sec=6)
    crash_mid_job(world, daemons)
    env = world.env(NOTIFY_SOCKET=str(notifications.address), WATCHDOG_USEC="1000000")
    second = world.daemon(env=env, log_name="second.log")
    daemons.append(second)
    second.start(ready=False)
    second.wait_for(lambda: notifications.seen(RECOVERING), what="STATUS recovering")
    second.wait_for(lambda: notifications.seen("STATUS=idle"), what="recovery over")
    got = notifications.got
    assert got.index("READY=1") < got.index(RECOVERING)
    during = got[got.index(RECOVERING) : next(i for i, m in enumerate(got) if "idle" in m)]
    assert during.count("WATCHDOG=1") >= 3  # a ping every 0.5 s over a wait of seconds
    wait_for(lambda: world.jobs_in("done") == ["victim.prompt.yaml"], what="job done")
    assert len(world.calls()) == 1
    assert second.stop() == 0


def test_sigterm_during_the_recovery_wait_stops_codex_and_keeps_the_job(
    world: World, daemons: list[DaemonProcess]
) -> None:
    """SIGTERM while the restarted daemon waits for a hanging leftover codex: after the shutdown
    grace that codex is stopped, the job is back in the inbox root, run once, and the exit is 0."""
    world.write_config(shutdown_grace_sec=1)
    world.set_script(scenario="hang_ignoring_sigterm")  # stopping it needs the SIGKILL step
    call = crash_mid_job(world, daemons)
    second = world.daemon(log_name="second.log")
    daemons.append(second)
    second.start(ready=False)
    second.wait_for(
        lambda: second.logged("waiting for the codex an earlier run left"), what="waiting"
    )
    # status.json tells the truth during the wait and after the stop too, not only once watching.
    wait_for(lambda: (world.status() or {}).get("state") == "recovering", what="status file")
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0
    assert (world.status() or {}).get("state") == "stopped"
    for pid in (call["pid"], call["child_pid"]):
        assert isinstance(pid, int)
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"codex pid {pid} gone")
    assert world.jobs_in() == ["victim.prompt.yaml"]
    assert world.jobs_in("processing") == []
    assert len(world.calls()) == 1


def test_wait_for_group_ends_when_stop_is_set() -> None:
    """wait_for_group stops waiting once `stop` is set and ends the group, long before its
    deadline."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    stop = threading.Event()
    waiter = threading.Thread(
        target=codex.wait_for_group,
        args=(proc.pid,),
        kwargs={"deadline": time.monotonic() + 600, "stop": stop, "poll_sec": 0.05},
    )
    try:
        waiter.start()
        time.sleep(0.3)  # let it wait a little: the stop must end a wait already under way
        assert waiter.is_alive()
        stop.set()
        waiter.join(timeout=60)
        assert not waiter.is_alive()
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
