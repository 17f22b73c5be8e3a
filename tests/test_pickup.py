"""Instant pick-up on real observers and folders: a job that arrives complete is taken at once,
never a half-written one.

The settle time is 30 s and every "at once" is a hand-over within 15 s: nothing here times a
short duration, and a job that had to wait for its settle time could not have been handed over.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from daemon.commands.submit import submit_job
from daemon.config import default_config
from daemon.watching.watcher import InboxWatcher
from tests.support.rollout_shapes import tiny_png
from tests.support.world import World

LONG_SETTLE = 30.0
AT_ONCE = 15.0  # a generous deadline, still well short of the settle time
DEADLINE = 60.0

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="arrival facts come from inotify"
)


@pytest.fixture
def native(inbox: Path) -> Iterator[InboxWatcher]:
    """A running watcher with the native observer and a settle time of 30 s."""
    with InboxWatcher(inbox, settle_sec=LONG_SETTLE, rescan_sec=5.0) as watcher:
        assert watcher.observer_kind == "native"
        yield watcher


def take(watcher: InboxWatcher, timeout: float) -> tuple[Path, str] | None:
    """The next job handed over, read and moved out like the pipeline does, or None."""
    path = watcher.get(timeout=timeout)
    if path is None:
        return None
    processing = watcher.inbox / "processing"
    processing.mkdir(exist_ok=True)
    text = path.read_text()
    os.replace(path, processing / path.name)
    watcher.done(path)
    return path, text


# --- taken at once ----------------------------------------------------------------------------


@linux_only
def test_job_renamed_in_from_outside_is_taken_at_once(native: InboxWatcher, tmp_path: Path) -> None:
    """`mv` of a complete job from another folder: handed over long before the settle time."""
    outside = tmp_path / "moved.prompt.yaml"
    outside.write_text("prompt: moved in\n")
    os.rename(outside, native.inbox / outside.name)
    assert take(native, AT_ONCE) == (native.inbox / outside.name, "prompt: moved in\n")


@linux_only
def test_job_written_and_closed_is_taken_at_once(native: InboxWatcher) -> None:
    """A job written under its own name and closed is handed over without the settle time."""
    path = native.inbox / "closed.prompt.yaml"
    path.write_text("prompt: written and closed\n")
    assert take(native, AT_ONCE) == (path, "prompt: written and closed\n")


@linux_only
def test_sync_tool_temp_then_rename_is_taken_at_once(native: InboxWatcher) -> None:
    """A sync tool writes a temp file slowly, then renames it: the job is whole, taken at once."""
    temp = native.inbox / ".syncthing.synced.prompt.yaml.tmp"
    chunks = ["prompt: >\n", "  synced from\n", "  a phone\n"]
    with temp.open("w") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.1)
    os.rename(temp, native.inbox / "synced.prompt.yaml")
    assert take(native, AT_ONCE) == (native.inbox / "synced.prompt.yaml", "".join(chunks))


@linux_only
def test_job_copied_with_a_sibling_image_is_taken_at_once(
    native: InboxWatcher, tmp_path: Path
) -> None:
    """A sibling image copied in, then the job: both closed after writing, taken at once."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "cat.png").write_bytes(b"\x89PNG" * 1000)
    (source / "cat.prompt.yaml").write_text("prompt: a cat\n")
    shutil.copy(source / "cat.png", native.inbox / "cat.png")
    shutil.copy(source / "cat.prompt.yaml", native.inbox / "cat.prompt.yaml")
    assert take(native, AT_ONCE) == (native.inbox / "cat.prompt.yaml", "prompt: a cat\n")


@linux_only
def test_job_written_by_submit_is_taken_at_once(native: InboxWatcher, tmp_path: Path) -> None:
    """`submit` copies the reference in and renames the job in last: taken at once, with it."""
    reference = tmp_path / "photo.png"
    reference.write_bytes(tiny_png(2))
    config = dataclasses.replace(
        default_config(environ={"HOME": str(tmp_path)}), inbox=native.inbox, outbox=tmp_path / "o"
    )
    path = submit_job(prompt="a submitted fox", refs=[reference], name="sub", config=config)
    taken = take(native, AT_ONCE)
    assert taken is not None
    assert taken[0] == path
    assert yaml.safe_load(taken[1]) == {"prompt": "a submitted fox"}
    assert (native.inbox / "sub.ref-01.png").read_bytes() == tiny_png(2)


# --- never a half-written file ----------------------------------------------------------------


def test_slow_writer_through_one_open_handle_waits_until_settled(inbox: Path) -> None:
    """Writes with pauses through one handle that stays open: nothing is taken while it writes,
    nor before its settle time has passed since the last write."""
    settle = 3.0
    with InboxWatcher(inbox, settle_sec=settle) as watcher:
        assert watcher.observer_kind == "native"
        path = inbox / "slow.prompt.yaml"
        chunks = ["prompt: >\n  slow\n"] + [f"  line {i}\n" for i in range(6)]
        with path.open("w") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                assert watcher.get(timeout=0.3) is None
            assert watcher.get(timeout=settle / 3) is None  # a third of the settle time
            assert take(watcher, DEADLINE) == (path, "".join(chunks))


@linux_only
def test_editor_truncate_and_write_never_hands_over_a_half_written_job(
    inbox: Path, tmp_path: Path
) -> None:
    """An editor rewrites jobs in place (open with O_TRUNC, write, close) and writes once more
    right after the close: each job handed over is the final content, read at hand-over."""
    finals = {}
    for n in range(5):
        path = inbox / f"edited-{n}.prompt.yaml"
        path.write_text("prompt: the old text, there before the watch began\n")
        finals[path] = f"prompt: a red fox\n  in the snow, take {n}\n"
    with InboxWatcher(inbox, settle_sec=LONG_SETTLE) as watcher:
        assert watcher.get(timeout=0) is None  # seen at start-up, each settles first
        for path, final in finals.items():
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"prompt: a red fox\n")  # parses on its own: half a job
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, final.encode()[len("prompt: a red fox\n") :])
            os.close(fd)
        taken = [take(watcher, AT_ONCE) for _ in finals]
    assert None not in taken
    assert dict(t for t in taken if t is not None) == finals


@linux_only
def test_job_whose_sibling_image_is_still_written_waits(native: InboxWatcher) -> None:
    """A job moved in while its sibling image is still being written is not taken until the
    image is complete; the image closed, the job goes at once."""
    inbox = native.inbox
    image = inbox / "fox.png"
    with image.open("wb") as handle:
        handle.write(b"\x89PNG")
        handle.flush()
        (inbox / ".fox.prompt.yaml.tmp").write_text("prompt: a fox like this one\n")
        os.rename(inbox / ".fox.prompt.yaml.tmp", inbox / "fox.prompt.yaml")
        for _ in range(6):
            assert native.get(timeout=0.3) is None
            handle.write(b"\x00" * 1000)
            handle.flush()
        assert native.get(timeout=1.0) is None
        handle.write(b"\x00" * 1000)
    assert take(native, AT_ONCE) == (inbox / "fox.prompt.yaml", "prompt: a fox like this one\n")
    assert image.stat().st_size == 4 + 7000


def test_polling_observer_keeps_the_settle_time(inbox: Path, tmp_path: Path) -> None:
    """Polling sees only snapshots: a job renamed in still waits for its settle time."""
    settle = 3.0
    with InboxWatcher(inbox, settle_sec=settle, polling=True) as watcher:
        assert watcher.observer_kind == "polling"
        outside = tmp_path / "polled.prompt.yaml"
        outside.write_text("prompt: polled\n")
        os.rename(outside, inbox / outside.name)
        assert watcher.get(timeout=settle / 2) is None
        assert take(watcher, DEADLINE) == (inbox / outside.name, "prompt: polled\n")


# --- the daemon -------------------------------------------------------------------------------


@linux_only
def test_daemon_runs_a_job_renamed_in_without_waiting_for_the_settle_time(tmp_path: Path) -> None:
    """`gpt-image-inbox run` with settle_sec 30 starts codex for a job renamed in within 15 s."""
    world = World(tmp_path / "world")
    world.write_config(watch={"settle_sec": LONG_SETTLE})
    daemon = world.daemon().start()
    try:
        staged = world.root / "quick.prompt.yaml"
        staged.write_text("prompt: a quick fox\n", encoding="utf-8")
        os.rename(staged, world.inbox / staged.name)
        daemon.wait_for(lambda: world.calls(), timeout=AT_ONCE, what="codex started")
        daemon.wait_for(
            lambda: world.results_for("quick.prompt.yaml"), timeout=DEADLINE, what="result"
        )
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()
