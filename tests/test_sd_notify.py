"""sd_notify messages on real unix datagram sockets, and the watchdog interval."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.loop.sd_notify import SystemdNotifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield sock, str(path)
    sock.close()


def test_messages_arrive_as_single_datagrams(listener: tuple[socket.socket, str]) -> None:
    """Each call sends exactly one datagram holding the protocol's KEY=value text."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.ready()
    notifier.status("idle, 0 queued")
    notifier.watchdog()
    notifier.stopping()
    received = [sock.recv(4096) for _ in range(4)]
    assert received == [b"READY=1", b"STATUS=idle, 0 queued", b"WATCHDOG=1", b"STOPPING=1"]


def test_status_with_newlines_stays_one_line(listener: tuple[socket.socket, str]) -> None:
    """A multi-line status is flattened so it cannot smuggle another KEY=value into the message."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).status("paused\nREADY=1")
    assert sock.recv(4096) == b"STATUS=paused READY=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with @ reaches a socket in the abstract namespace."""
    name = f"gpt-image-inbox-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(10)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def _no_socket(*args: object, **kwargs: object) -> socket.socket:
    raise AssertionError("a socket was opened without NOTIFY_SOCKET")


def test_without_notify_socket_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd the notifier's calls are silent no-ops: no socket is even created."""
    notifier = SystemdNotifier({})
    monkeypatch.setattr(socket, "socket", _no_socket)
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_vanished_socket_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A socket path that no longer exists does not raise; the failure is only a debug log line."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.DEBUG, logger="daemon.loop.sd_notify"):
        notifier.ready()
    assert "READY=1" in caplog.text


def test_reads_process_environment_by_default(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built without arguments, the notifier uses the real NOTIFY_SOCKET."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    SystemdNotifier().ready()
    assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """The ping interval is half of WatchdogSec=, and only for the process the watchdog targets."""
    assert watchdog_interval(environ) == expected
