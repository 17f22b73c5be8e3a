"""Tests for daemon.codex.generation.collect: what a finished run's session log makes of the run."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.codex.failures import image_limit
from daemon.codex.generation import CodexSetup, collect
from daemon.codex.run import CodexRun
from daemon.codex.version import CodexVersion
from daemon.errors import Disposition, ImageLimit, Refused, UsageLimit, class_for_layer
from tests.support.rollout_shapes import session_log_path

REAL = Path(__file__).parent / "fixtures" / "rollouts"
SETUP_VERSION = CodexVersion("codex-cli 0.171.0", (0, 171, 0))


def place_log(home: Path, fixture: str, *, resets_at: int | None = None) -> CodexRun:
    """Put a captured log into `home` as this run's log; `resets_at` moves the limit's reset
    (typed failure and codex's words alike) to a time the test chooses."""
    text = (REAL / fixture).read_text(encoding="utf-8")
    thread_id = json.loads(text.split("\n", 1)[0])["payload"]["id"]
    if resets_at is not None:
        text = re.sub(r'("resetsAt": ?)\d+', rf"\g<1>{resets_at}", text)
        text = re.sub(r'(resets_at\\*"?: ?)\d+', rf"\g<1>{resets_at}", text)
    started = datetime.now().astimezone()
    path = session_log_path(home, thread_id, started)
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return CodexRun(
        returncode=0,
        thread_id=thread_id,
        error_message=None,
        agent_message="The image could not be generated.",
        stderr_tail="",
        started_at=started,
        finished_at=started,
    )


def setup_for(home: Path) -> CodexSetup:
    return CodexSetup(("codex",), (), {"CODEX_HOME": str(home)}, SETUP_VERSION)


def test_the_real_image_limit_is_an_image_limit_with_codexs_reset_time(tmp_path: Path) -> None:
    """codex 0.171's image-limit log (exit 0, a failed item) is ImageLimit at resetsAt."""
    resets = int((datetime.now() + timedelta(hours=2)).timestamp())
    run = place_log(tmp_path, "real-0.171-image_limit.jsonl", resets_at=resets)

    with pytest.raises(ImageLimit) as raised:
        collect(run, setup_for(tmp_path))

    error = raised.value
    assert isinstance(error, UsageLimit)
    assert not isinstance(error, Refused)
    assert (error.exit_code, error.layer, error.disposition) == (
        5,
        "image-limit",
        Disposition.PAUSE,
    )
    assert error.retry_at == datetime.fromtimestamp(resets).astimezone()
    assert error.retry_at is not None
    assert error.retry_at.utcoffset() is not None
    assert error.message.startswith("The ChatGPT plan's image limit is reached; it resets at ")
    assert "usage_limit_reached" in error.detail


def test_the_real_moderation_refusal_is_still_refused(tmp_path: Path) -> None:
    """The captured 0.171 moderation failure stays a final refusal (code 7)."""
    run = place_log(tmp_path, "real-0.171-refuse.jsonl")

    with pytest.raises(Refused) as raised:
        collect(run, setup_for(tmp_path))

    assert raised.value.message == "The image was refused or failed: moderation_blocked"


def test_the_reset_time_says_the_date_when_it_is_not_today() -> None:
    """A reset later today reads "HH:MM"; one on another day carries its date."""
    now = datetime(2030, 3, 17, 22, 0).astimezone()

    today = image_limit("r", resets_at=now + timedelta(minutes=65), now=lambda: now)
    tomorrow = image_limit("r", resets_at=now + timedelta(hours=3), now=lambda: now)

    assert today.message == "The ChatGPT plan's image limit is reached; it resets at 23:05."
    assert tomorrow.message == (
        "The ChatGPT plan's image limit is reached; it resets at 2030-03-18 01:00."
    )


def test_a_reset_time_already_past_is_not_used() -> None:
    """A resetsAt in the past (a skewed clock) leaves retry_at empty, so the pause backs off."""
    now = datetime(2030, 3, 17, 12, 0).astimezone()

    error = image_limit("r", resets_at=now - timedelta(minutes=1), now=lambda: now)

    assert error.retry_at is None
    assert error.message == "The ChatGPT plan's image limit is reached."


def test_an_image_limit_sidecar_gives_back_its_class() -> None:
    """`submit --wait` rebuilds the error from the sidecar's layer: image-limit is ImageLimit."""
    assert class_for_layer("image-limit") is ImageLimit
    assert class_for_layer("usage-limit") is UsageLimit
