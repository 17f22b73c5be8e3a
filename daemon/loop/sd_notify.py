"""Tell systemd how the daemon is doing (sd_notify protocol) without a library.

Outside systemd (no NOTIFY_SOCKET) every call does nothing, so the daemon calls it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends `KEY=value` datagrams to the socket systemd named in NOTIFY_SOCKET."""

    __slots__ = ("_address",)

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))

    def ready(self) -> None:
        """The daemon is up and watching: systemd ends `start` and counts the unit as active."""
        self.send("READY=1")

    def status(self, text: str) -> None:
        """One line shown by `systemctl status`; newlines would end the message: flattened."""
        self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Proof of life: without one every WatchdogSec=, systemd kills and restarts the daemon."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon began its graceful shutdown."""
        self.send("STOPPING=1")

    def send(self, message: str) -> None:
        """Send one datagram; errors are only logged, as a vanished systemd must not stop us."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.debug("sd_notify %r to %r failed: %s", message, self._address, exc)


def _socket_address(value: str) -> str | bytes | None:
    """NOTIFY_SOCKET as a sendto() address: `@name` is Linux's abstract namespace (leading NUL)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # vsock:... and other transports are not used for user services; ignore rather than fail.
    log.debug("NOTIFY_SOCKET %r is not a unix socket path; notifications disabled", value)
    return None


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when no watchdog is armed.

    WATCHDOG_PID, when set, names the process the watchdog is meant for; a child that inherited the
    variables must not ping on the parent's behalf.
    """
    env = os.environ if environ is None else environ
    own_pid = os.getpid() if pid is None else pid
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != own_pid:
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2
