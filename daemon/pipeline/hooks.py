"""Programs the person runs when a job ends (`hooks.on_done`, `hooks.on_failed`, `hooks.notify`).

A hook runs after the job's files are in place, without a shell, in a process group of its own
that is killed at the time limit; its output goes to the log. Whatever a hook does (fails, hangs,
is missing) is logged as a warning and never reaches the job or the queue.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from daemon.config import HooksConfig
from daemon.pipeline.flow import Outcome, Status
from daemon.processes import group_alive, stop_group

# How much of each output stream reaches the log: the end, where errors usually are.
OUTPUT_TAIL_BYTES = 4096
# SIGTERM to SIGKILL when a hook outlives its time limit (or the daemon stops).
TERM_GRACE_SEC = 2.0
APP_NAME = "gpt-image-inbox"
_OSASCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


@dataclass(frozen=True, slots=True)
class JobEnd:
    """What a hook learns about the job that ended."""

    job: str  # the job file's name, e.g. fox.prompt.yaml
    status: str  # "done" or "failed"
    sidecar: Path | None
    images: tuple[Path, ...]
    message: str  # one line for a person: the images written, or what went wrong

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update(
            GPT_IMAGE_INBOX_JOB=self.job,
            GPT_IMAGE_INBOX_STATUS=self.status,
            GPT_IMAGE_INBOX_SIDECAR=str(self.sidecar) if self.sidecar else "",
            GPT_IMAGE_INBOX_IMAGES="\n".join(str(p) for p in self.images),
        )
        return env


@dataclass(frozen=True, slots=True)
class HookRun:
    """How one hook ended: its exit code, or None when it could not start or was killed."""

    returncode: int | None
    timed_out: bool = False
    started: bool = True

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def job_end(outcome: Outcome) -> JobEnd | None:
    """The hook's view of an outcome; None for outcomes that are not the end of a job (retries,
    pauses, cancels, crash leftovers put back, removed files)."""
    # The outputs hold the images and one sidecar: the result's, or the error's.
    sidecar = next((p for p in outcome.outputs if p.name.endswith(".yaml")), None)
    if outcome.status is Status.DONE:
        images = tuple(p for p in outcome.outputs if p != sidecar)
        names = ", ".join(p.name for p in images)
        return JobEnd(outcome.job, "done", sidecar, images, names or "done")
    if outcome.status is Status.FAILED:
        message = outcome.error.message if outcome.error else "failed"
        return JobEnd(outcome.job, "failed", sidecar, (), message)
    return None


def run_job_hooks(
    outcome: Outcome,
    hooks: HooksConfig,
    *,
    environ: Mapping[str, str],
    log: Any,
    stop: threading.Event | None = None,
    run: Callable[..., HookRun] | None = None,
) -> None:
    """Run the hook for this outcome, then the desktop notification, one after the other."""
    end = job_end(outcome)
    if end is None:
        return
    run = run or run_hook
    env = end.environment(environ)
    bound = log.bind(job=end.job, status=end.status)
    argv = hooks.on_done if end.status == "done" else hooks.on_failed
    if argv:
        run(argv, env, hooks.timeout_sec, log=bound, stop=stop)
    if hooks.notifier is not None:
        run(notification_argv(hooks.notifier, end), env, hooks.timeout_sec, log=bound, stop=stop)


def run_hook(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    *,
    log: Any,
    stop: threading.Event | None = None,
    popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
) -> HookRun:
    """Run one hook to its end or its time limit; never raises for the hook's own failures.

    The hook has ended when its program has exited and its output pipes are closed (a child it
    left running in the background with the pipes open still counts). At `timeout`, or when
    `stop` is set, its whole process group gets SIGTERM, a short grace, then SIGKILL.
    """
    hook = argv[0]
    try:
        proc = popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:  # missing, not executable, not a folder on the way
        log.warning("hook cannot be started", hook=hook, message=str(exc))
        return HookRun(None, started=False)
    tails = {"stdout": _Tail(), "stderr": _Tail()}
    readers = [
        threading.Thread(target=tails[name].read, args=(pipe,), daemon=True, name=f"hook-{name}")
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    finished = _wait(proc, readers, time.monotonic() + timeout, stop)
    if not finished:
        stop_group(proc.pid, grace_sec=TERM_GRACE_SEC, ended=lambda: _group_gone(proc))
        for reader in readers:
            reader.join(timeout=TERM_GRACE_SEC)
    proc.wait()
    for name, tail in tails.items():
        tail.log(log, hook=hook, stream=name)
    result = HookRun(proc.returncode if finished else None, timed_out=not finished)
    _log_end(result, log, hook=hook, timeout=timeout, stopping=stop is not None and stop.is_set())
    return result


def _log_end(result: HookRun, log: Any, *, hook: str, timeout: float, stopping: bool) -> None:
    if result.timed_out:
        why = "the daemon is stopping" if stopping else "time limit"
        log.warning("hook stopped", hook=hook, reason=why, timeout_sec=timeout)
    elif not result.ok:
        log.warning("hook failed", hook=hook, exit_code=result.returncode)
    else:
        log.info("hook finished", hook=hook)


def _wait(
    proc: subprocess.Popen[bytes],
    readers: Sequence[threading.Thread],
    deadline: float,
    stop: threading.Event | None,
) -> bool:
    """True once the program has exited and closed its output; False at the deadline or stop."""
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return False
        step = min(0.1, max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=step)
            continue
        open_pipes = [r for r in readers if r.is_alive()]
        if not open_pipes:
            return True
        open_pipes[0].join(timeout=step)
    return False


def _group_gone(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # a leader that exited is reaped, or it would count as a member forever
    return not group_alive(proc.pid)


class _Tail:
    """The last OUTPUT_TAIL_BYTES of one output stream, read until it closes."""

    def __init__(self) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.total = 0

    def read(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        with pipe:
            for chunk in iter(lambda: os.read(pipe.fileno(), 8192), b""):
                self.chunks.append(chunk)
                self.size += len(chunk)
                self.total += len(chunk)
                while len(self.chunks) > 1 and self.size - len(self.chunks[0]) >= OUTPUT_TAIL_BYTES:
                    self.size -= len(self.chunks.popleft())

    def log(self, log: Any, **fields: Any) -> None:
        data = b"".join(self.chunks)[-OUTPUT_TAIL_BYTES:]
        if not data.strip():
            return
        text = data.decode("utf-8", "replace").rstrip("\n")
        log.info("hook output", output=text, truncated=self.total > len(data), **fields)


# --- desktop notifications --------------------------------------------------------------------


def notification_argv(program: Path, end: JobEnd) -> list[str]:
    """The notification's command: title `<job> done|failed`, body the images or the error."""
    title = f"{APP_NAME}: {end.job} {end.status}"
    body = end.message.strip().splitlines()[0] if end.message.strip() else end.status
    if program.name == "osascript":
        # Title and body are arguments of the script, so no text needs AppleScript quoting.
        return [str(program), *(a for line in _OSASCRIPT for a in ("-e", line)), title, body]
    urgency = "critical" if end.status == "failed" else "normal"
    return [str(program), f"--app-name={APP_NAME}", f"--urgency={urgency}", "--", title, body]
