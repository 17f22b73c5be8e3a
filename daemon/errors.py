"""Every failure the tool reports, one class per layer.

Each class carries what a caller needs to react without inspecting messages: the exit code
shared with the skill's `gen.sh`, the short layer name written to error sidecars, a hint for the
person, and a `Disposition` telling the queue whether to give up, retry, or pause. Hints say what
to do, never what happens to the job next: that depends on who ran it (`gen` runs once, the
daemon retries), so the error sidecar says it in a field of its own.
"""

from __future__ import annotations

import enum
from datetime import datetime
from pathlib import Path
from typing import ClassVar


class Disposition(enum.Enum):
    """What the queue does with a job after this failure."""

    FINAL = "final"
    """The job itself is at fault or was refused: it moves to `failed/` with its sidecar."""

    RETRY = "retry"
    """A transient failure: run the same job again after a backoff, up to `retry.attempts`."""

    PAUSE = "pause"
    """The environment is at fault (login, limits, network): the job stays, the queue waits."""


class InboxError(Exception):
    """Base of every expected failure; the orchestrators catch only this."""

    exit_code: ClassVar[int] = 1
    layer: ClassVar[str] = "internal"
    default_hint: ClassVar[str] = ""
    disposition: ClassVar[Disposition] = Disposition.FINAL

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        detail: str = "",
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.detail = detail[-4096:]
        self.retry_at = retry_at


class ConfigError(InboxError):
    """The configuration file is missing, unreadable or has invalid keys; lists every problem."""

    exit_code = 2
    layer = "config"
    default_hint = "Fix the listed keys; config.example.yaml documents each one."

    def __init__(self, path: object, problems: list[str]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{path}: {len(self.problems)} problem(s) in the configuration:\n{listing}"
        )


class UsageError(InboxError):
    """Bad command-line arguments."""

    exit_code = 2
    layer = "arguments"


class JobError(InboxError):
    """A job file that cannot run as written: syntax, keys, types, references outside the inbox."""

    exit_code = 2
    layer = "job"
    default_hint = "Fix what the message names in the job file."


class ReferenceMissing(InboxError):
    """A reference image named by the job or the command line does not exist or is not an image."""

    exit_code = 4
    layer = "reference"
    default_hint = "Put the reference image next to the job file, or fix its name under `refs`."

    prompt: str | None = None
    """The prompt of the job file whose reference is missing (its error sidecar shows it)."""
    references: tuple[Path, ...] = ()
    """That job's references, absolute, the missing ones included."""


class CodexMissing(InboxError):
    """The codex command cannot be started (not installed, not on PATH, not executable)."""

    exit_code = 3
    layer = "codex-missing"
    default_hint = "Install the Codex CLI (`npm install -g @openai/codex`) or set codex.command."
    disposition = Disposition.PAUSE


class CodexFailed(InboxError):
    """codex ran but the turn failed for a reason worth another try (server error, lost stream)."""

    exit_code = 5
    layer = "codex"
    default_hint = "This is usually temporary."
    disposition = Disposition.RETRY


class CodexRejected(CodexFailed):
    """codex refused its arguments or configuration: another try would fail the same way."""

    layer = "codex-arguments"
    default_hint = "Check codex.extra_args, the job's model and your codex configuration."
    disposition = Disposition.FINAL


class CodexTimeout(CodexFailed):
    """codex did not finish within the job's wall-clock timeout and was stopped."""

    layer = "timeout"
    default_hint = "Raise timeout_sec for this job or codex.timeout_sec in the config."


class NotLoggedIn(CodexFailed):
    """codex has no usable ChatGPT login (logged out, expired, API-key login, plan lacks Codex)."""

    layer = "login"
    default_hint = "Run `codex login` with a ChatGPT Plus or Pro account."
    disposition = Disposition.PAUSE


class UsageLimit(CodexFailed):
    """The ChatGPT plan's usage limit or quota is reached; `retry_at` holds codex's time, if any."""

    layer = "usage-limit"
    default_hint = "Wait until the limit resets."
    disposition = Disposition.PAUSE


class ImageLimit(UsageLimit):
    """The plan's image-generation limit is reached: the images endpoint answered 429
    `usage_limit_reached` and codex ended the turn normally; `retry_at` is its reset time."""

    layer = "image-limit"
    default_hint = "Wait until the image limit resets."


class NetworkDown(CodexFailed):
    """codex could not reach the server at all."""

    layer = "network"
    default_hint = "Check the network connection."
    disposition = Disposition.PAUSE


class NoSessionLog(InboxError):
    """codex finished but this run's session log cannot be found."""

    exit_code = 6
    layer = "session-log"
    default_hint = "Check that CODEX_HOME is writable and that codex runs without --ephemeral."


class NoImage(InboxError):
    """The run finished without producing an image (the model answered with text only)."""

    exit_code = 7
    layer = "no-image"
    default_hint = "Check that your ChatGPT plan includes image generation."
    disposition = Disposition.RETRY


class Refused(NoImage):
    """The image tool was called but the generation failed or was refused (e.g. moderation)."""

    layer = "refused"
    default_hint = "Rephrase the prompt; codex's full answer is in the error's detail."
    disposition = Disposition.FINAL


class OutboxUnwritable(InboxError):
    """The outbox (or an inbox state folder) cannot be written: full disk, permissions."""

    layer = "outbox"
    default_hint = "Free disk space or fix the folder's permissions."
    disposition = Disposition.PAUSE


class RecoveryFailed(InboxError):
    """Finishing a job after a crash failed again and again; the job is given up."""

    layer = "recovery"
    default_hint = (
        "The job is in failed/; move it back into the inbox to run it again. The daemon's log "
        "has the error that stopped the recovery."
    )


class Cancelled(InboxError):
    """A run stopped on purpose (shutdown); the job goes back to the inbox untouched."""

    layer = "cancelled"
    disposition = Disposition.PAUSE


class InboxBusy(InboxError):
    """Another gpt-image-inbox process is already working on this inbox."""

    layer = "lock"
    default_hint = "Stop the other process first, or give this one another inbox."


def class_for_layer(layer: str) -> type[InboxError]:
    """The error class whose sidecars say `error: <layer>` (InboxError when unknown)."""
    pending: list[type[InboxError]] = [InboxError]
    while pending:
        cls = pending.pop()
        if cls.layer == layer:
            return cls
        pending.extend(cls.__subclasses__())
    return InboxError
