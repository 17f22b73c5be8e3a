"""Messages that are true: each says what happened and what happens next, in the words of the
command that ran (gen runs once; the daemon retries; a final failure is final)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.errors import InboxError
from tests.support import rollout_shapes as shapes
from tests.support.world import World


def log_events(text: str) -> list[dict[str, object]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def every_hint() -> list[str]:
    pending: list[type[InboxError]] = [InboxError]
    hints = []
    while pending:
        cls = pending.pop()
        hints.append(cls.default_hint)
        pending.extend(cls.__subclasses__())
    return hints


def test_no_hint_promises_what_happens_next() -> None:
    """Hints say what to do; whether the job is tried again depends on who ran it."""
    for hint in every_hint():
        for promise in ("tried again", "retried", "jobs wait", "picked up once more"):
            assert promise not in hint, hint


def test_gen_without_an_image_says_nothing_of_another_try(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.set_script(scenario="text_only")
    assert world.main("gen", "--prompt", "x", "--out", str(tmp_path / "o.png")) == 7
    err = capsys.readouterr().err
    assert err.startswith("gpt-image-inbox: no-image: ")
    assert "again" not in err


def test_a_final_failure_says_it_is_final_and_a_retry_says_when(world: World) -> None:
    """The last try's sidecar says the job is in failed/; the sidecar written while tries remain
    says it is tried again."""
    world.set_script(scenario="text_only")
    world.write_job("wordy", "prompt: a fox\n")
    world.once()
    error = world.sidecar("wordy.error.yaml")
    assert error["retrying"] is False
    assert "failed/" in error["next"]
    assert "not run again" in error["next"]
    assert "again" not in error["hint"]


def test_a_waiting_job_says_the_queue_resumes(world: World) -> None:
    world.set_script(scenario="usage_limit")
    world.write_job("limited", "prompt: a fox\n")
    world.once()
    error = world.sidecar("limited.error.yaml")
    assert error["retrying"] is True
    assert error["next"].startswith("The job waits in the inbox; the queue resumes at ")


def test_a_job_put_back_after_a_crash_is_not_called_cancelled(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found half-done in processing/ with no image to take, it is requeued and then done."""
    processing = world.inbox / "processing"
    processing.mkdir()
    (processing / "half.prompt.yaml").write_text("prompt: x\n")
    (processing / "half.png").write_bytes(shapes.tiny_png(2))
    assert world.once() == 0
    events = log_events(capsys.readouterr().err)
    outcomes = [e.get("outcome") for e in events if e.get("job") == "half.prompt.yaml"]
    assert outcomes == ["requeued", "done"]
    assert "cancelled" not in outcomes
    requeued = next(e for e in events if e.get("outcome") == "requeued")
    assert "back in the inbox to run again" in str(requeued["event"])


def test_version_is_the_one_pyproject_gives() -> None:
    """`--version` prints the version pyproject.toml declares, the one place it is written."""
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    written = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert written is not None
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"gpt-image-inbox {written[1]}\n")
