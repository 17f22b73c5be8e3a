"""Run `codex exec` for one image request: the argv, the prompt, the wall-clock timeout.

The prompt goes in on stdin, never through a shell; codex runs in its own process group so a
timeout or a shutdown stops the node launcher and the native binary together.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from daemon.codex.version import CodexVersion
from daemon.errors import Cancelled, CodexMissing, CodexTimeout
from daemon.processes import group_alive, stop_group

# The user's request goes between the markers byte for byte; the words around it only ask the
# agent to use its image tool and nothing else (no SVG, HTML or code drawings). A job's options
# (transparency, aspect, ...) are lines of their own between this text and the marker: they are
# never written into the request itself.
INSTRUCTION_HEAD = (
    "Generate an image with your image generation tool for the request between the markers "
    "below. Give the tool the request exactly as written: do not translate, shorten, extend or "
    "improve it.{refs} Call the image tool once per image the request asks for. Do not draw with "
    "SVG, HTML, code or text, do not write files, and do not answer with anything else.\n"
)
INSTRUCTION_REFS = " The attached images are the reference images of the request."
REQUEST_START = "<<<REQUEST\n"
INSTRUCTION_TAIL = "\nREQUEST>>>\n"

TERM_GRACE_SEC = 5.0
CANCELLED_MESSAGE = "The run was stopped on request."
STDERR_TAIL_BYTES = 4096
_NETWORK_WAIT = re.compile(r"waiting for network", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CodexRun:
    """What a finished `codex exec` said about itself; the image is read from its session log."""

    returncode: int
    thread_id: str | None
    error_message: str | None
    agent_message: str | None
    stderr_tail: str
    started_at: datetime
    finished_at: datetime
    network_down: bool = False

    @property
    def detail(self) -> str:
        """codex's own words for a failure, at most 4 KB, for the error sidecar."""
        parts = [p for p in (self.error_message, self.stderr_tail.strip()) if p]
        return "\n".join(parts)[-STDERR_TAIL_BYTES:]


def wrap_prompt(prompt: str, *, has_refs: bool, options: Sequence[str] = ()) -> str:
    """The text codex receives on stdin: the fixed instruction around the untouched prompt.

    Each of `options` is one instruction sentence, on a line of its own before the request's
    start marker, in the order given.
    """
    head = INSTRUCTION_HEAD.format(refs=INSTRUCTION_REFS if has_refs else "")
    lines = "".join(f"{option}\n" for option in options)
    return head + lines + REQUEST_START + prompt + INSTRUCTION_TAIL


def count_option(count: int) -> str:
    """The instruction line saying how many images this run is to make."""
    if count == 1:
        return "Make 1 image for this request: call the image tool once."
    return (
        f"Make {count} separate images for this request: call the image tool {count} times, "
        "once per image."
    )


def build_argv(
    command: Sequence[str],
    *,
    version: CodexVersion,
    workdir: Path,
    refs: Sequence[Path] = (),
    model: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The full argv of one `codex exec` run (pure)."""
    argv = [
        *command,
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "read-only",
        "--color",
        "never",
        "--enable",
        "image_generation",
        "--json",
        "-C",
        str(workdir),
    ]
    if version.bounded_retries:
        argv += ["--disable", "unbounded_connection_retries"]
    if model:
        argv += ["-m", model]
    for ref in refs:
        argv += ["-i", str(ref)]
    argv += list(extra_args)
    return argv


def child_environment(base: Mapping[str, str], codex_home: Path | None) -> dict[str, str]:
    """The daemon's environment, with CODEX_HOME set when the config names one."""
    env = dict(base)
    if codex_home is not None:
        env["CODEX_HOME"] = str(codex_home)
    return env


def codex_home_of(env: Mapping[str, str]) -> Path:
    return Path(env.get("CODEX_HOME") or Path.home() / ".codex").expanduser()


class _EventReader:
    """Reads codex's `--json` events as they come; tells the caller the thread id at once."""

    def __init__(self, on_thread_id: Callable[[str], None], on_network_wait: Callable[[], None]):
        self.thread_id: str | None = None
        self.error_message: str | None = None
        self.agent_message: str | None = None
        self.network_down = False
        self._on_thread_id = on_thread_id
        self._on_network_wait = on_network_wait

    def feed(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            self.thread_id = event["thread_id"]
            self._on_thread_id(self.thread_id)
        elif kind == "turn.failed":
            error = event.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                self.error_message = error["message"]
        elif kind == "error" and isinstance(event.get("message"), str):
            self._on_error(event["message"])
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                text = item.get("text")
                self.agent_message = text if isinstance(text, str) else None

    def _on_error(self, message: str) -> None:
        # "Reconnecting..." errors are not terminal, except the endless wait for a network
        # that older releases do instead of failing: that one stops the run early.
        if _NETWORK_WAIT.search(message):
            self.network_down = True
            self._on_network_wait()
        elif not message.startswith("Reconnecting"):
            self.error_message = message


class _Ending(enum.Enum):
    EXITED = "exited"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NETWORK = "network"  # an endless wait for the network, stopped early


def run_codex(
    argv: Sequence[str],
    *,
    prompt_text: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout_sec: float,
    on_thread_id: Callable[[str], None] = lambda _id: None,
    on_start: Callable[[int], None] = lambda _pid: None,
    cancel: threading.Event | None = None,
    kill_now: threading.Event | None = None,
    term_grace_sec: float = TERM_GRACE_SEC,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> CodexRun:
    """Run codex to completion, or stop its whole process group at the timeout or on `cancel`.

    `on_start` gets codex's process-group id: codex runs in a session of its own, so it
    outlives a daemon killed with -9, and the next start must wait for it rather than run the
    job again. Raises CodexMissing when it cannot start, CodexTimeout when the clock ran out, and
    `Cancelled` when `cancel` was set (before the start too: a stopped command starts nothing).
    `kill_now` cuts the SIGTERM grace short (a second Ctrl-C).
    """
    if cancel is not None and cancel.is_set():
        raise Cancelled(CANCELLED_MESSAGE)
    started_at = now()
    proc = _start(argv, cwd=cwd, env=env)
    on_start(proc.pid)
    stop_early = threading.Event()
    events = _EventReader(on_thread_id, stop_early.set)
    stderr_tail: collections.deque[bytes] = collections.deque()
    exited = threading.Event()
    threads = [
        threading.Thread(target=_write_stdin, args=(proc, prompt_text), daemon=True),
        threading.Thread(target=_read_events, args=(proc, events), daemon=True),
        threading.Thread(target=_read_tail, args=(proc, stderr_tail), daemon=True),
        # A thread blocked in wait() learns of codex's exit at once; polling wait() with a
        # timeout sleeps in growing steps and would notice it up to 50 ms late.
        threading.Thread(target=_reap, args=(proc, exited), daemon=True),
    ]
    for t in threads:
        t.start()
    ending = _wait(exited, timeout_sec, cancel, stop_early)
    if ending is not _Ending.EXITED:
        stop_group(proc.pid, grace_sec=term_grace_sec, ended=exited.is_set, cut_short=kill_now)
        exited.wait()
    for t in threads:
        t.join(timeout=10)
    tail = b"".join(stderr_tail).decode("utf-8", "replace")[-STDERR_TAIL_BYTES:]
    return _result(ending, proc, events, tail, timeout_sec, started_at, now())


def _start(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise CodexMissing(
            f"The codex command {argv[0]!r} cannot be started.", detail=str(exc)
        ) from exc


def _result(
    ending: _Ending,
    proc: subprocess.Popen[bytes],
    events: _EventReader,
    tail: str,
    timeout_sec: float,
    started_at: datetime,
    finished_at: datetime,
) -> CodexRun:
    if ending is _Ending.TIMEOUT:
        raise CodexTimeout(
            f"codex did not finish within {timeout_sec:g} seconds and was stopped.",
            detail=tail,
        )
    if ending is _Ending.CANCELLED:
        raise Cancelled(CANCELLED_MESSAGE)
    return CodexRun(
        returncode=proc.returncode if ending is _Ending.EXITED else 1,
        thread_id=events.thread_id,
        error_message=events.error_message,
        agent_message=events.agent_message,
        stderr_tail=tail,
        started_at=started_at,
        finished_at=finished_at,
        network_down=events.network_down,
    )


def _reap(proc: subprocess.Popen[bytes], exited: threading.Event) -> None:
    proc.wait()
    exited.set()


def _wait(
    exited: threading.Event,
    timeout_sec: float,
    cancel: threading.Event | None,
    stop_early: threading.Event,
) -> _Ending:
    """Wait in short steps so that a cancel or a network wait is noticed within a second."""
    deadline = time.monotonic() + timeout_sec
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _Ending.TIMEOUT
        if exited.wait(min(0.25, remaining)):
            return _Ending.EXITED
        if cancel is not None and cancel.is_set():
            return _Ending.CANCELLED
        if stop_early.is_set():
            return _Ending.NETWORK


def wait_for_group(
    pgid: int,
    *,
    deadline: float,
    stop: threading.Event | None = None,
    poll_sec: float = 0.2,
) -> None:
    """Wait for a codex left over from an earlier daemon to end; stop it at `deadline`
    (a monotonic time), or as soon as `stop` is set, the same way a timeout does: SIGTERM,
    a grace period, SIGKILL."""
    stop = stop or threading.Event()
    while group_alive(pgid) and time.monotonic() < deadline and not stop.is_set():
        stop.wait(poll_sec)
    if group_alive(pgid):
        stop_group(
            pgid, grace_sec=TERM_GRACE_SEC, ended=lambda: not group_alive(pgid), poll_sec=poll_sec
        )


def _write_stdin(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    # codex may exit without reading (bad arguments): a broken pipe is not our failure.
    with contextlib.suppress(OSError):
        proc.stdin.write(text.encode("utf-8"))
    with contextlib.suppress(OSError):
        proc.stdin.close()


def _read_events(proc: subprocess.Popen[bytes], events: _EventReader) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        events.feed(line)


def _read_tail(proc: subprocess.Popen[bytes], tail: collections.deque[bytes]) -> None:
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    size = 0
    for chunk in iter(lambda: os.read(fd, 8192), b""):
        tail.append(chunk)
        size += len(chunk)
        while size - len(tail[0]) >= STDERR_TAIL_BYTES and len(tail) > 1:
            size -= len(tail.popleft())
