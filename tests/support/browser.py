"""Headless Chromium for tests, driven over the DevTools protocol on a pipe (fds 3 and 4).

Stdlib only: messages are JSON separated by NUL bytes. The test, not the page, runs script.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
# Flags that keep Chromium off the network and quiet on a machine with no outside access.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--allow-file-access-from-files",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium did not answer, answered with an error, or went away."""


def find_chromium() -> str | None:
    """The path of a Chromium executable, or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """Chromium's path; skips the test when it is missing, or fails it when CI is set."""
    path = find_chromium()
    if path is None:
        message = "chromium not found; run scripts/install-test-tools"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so this is an error)")
        pytest.skip(message)
    return path


def _high_fd(fd: int) -> int:
    # Move a pipe end above 9 so that placing the child's ends on 3 and 4 cannot clobber it.
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, *, timeout: float = 60.0) -> None:
        self.executable = executable
        self.timeout = timeout
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        self._session: str | None = None

    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="gallery-chromium-")
        to_child_r, self._to_child = map(_high_fd, os.pipe())
        self._from_child, from_child_w = map(_high_fd, os.pipe())
        # bash (dash takes only one-digit fds) puts the pipe ends on fds 3 and 4, where
        # --remote-debugging-pipe expects them.
        script = f'exec "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        argv = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, "bash", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=(to_child_r, from_child_w),
            start_new_session=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            self._attach()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self._send("Browser.close", {}, session=None)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, 9)
            self._proc.wait()
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------ protocol

    def _send(self, method: str, params: dict[str, Any], *, session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from chromium within {self.timeout} s")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium went away: {self.stderr_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        result: dict[str, Any] = json.loads(raw)
        return result

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Send one command to the page (or the browser with session=None); return its result."""
        session = kw.get("session", self._session)
        wanted = self._send(method, params or {}, session=session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def wait_event(self, method: str) -> dict[str, Any]:
        """Wait for (and consume) the first page event with this name."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            message = self._receive(deadline)
            if "method" in message:
                self._events.append(message)

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode("utf-8", "replace")

    def _attach(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            targets = self.call("Target.getTargets", session=None)["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise BrowserError("chromium opened no page")
            time.sleep(0.1)
        attached = self.call(
            "Target.attachToTarget",
            {"targetId": pages[0]["targetId"], "flatten": True},
            session=None,
        )
        self._session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    # ------------------------------------------------------------ what tests use

    def open(self, url: str, *, width: int = 1280, height: int = 900, dark: bool = False) -> None:
        """Load `url` at this window size and colour scheme, and wait for its load event."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        scheme = "dark" if dark else "light"
        self.call(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        self._events = [e for e in self._events if e["method"] != "Page.loadEventFired"]
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        """Poll an expression until it is truthy; its value, or BrowserError at the deadline."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {self.timeout} s: {expression}")
            time.sleep(0.1)

    def screenshot(self, path: Path, *, max_height: int = 6000) -> Path:
        """Save the whole page (not only the window, at most `max_height` CSS px) as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "scale": 1}
        clip["height"] = min(size["height"], max_height)
        data = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def dom(self) -> str:
        """The page's DOM as HTML, after parsing (what --dump-dom prints)."""
        return str(self.evaluate("document.documentElement.outerHTML"))
