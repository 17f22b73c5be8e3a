"""A crash at any point of a delivery, then a restart: every image once, no orphan, no rerun.

The crash is a BaseException raised from the outbox's write or move (nothing in the pipeline
catches it, as nothing survives a kill -9); the restart is a second `once`, which recovers
what the first left in processing/. The daemon's random kill -9 test covers real signals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from daemon import files
from tests.support.world import World


class Crash(BaseException):
    """The process dies here."""


@contextlib.contextmanager
def crash_on_call(name: str, number: int) -> Iterator[None]:
    """Make the `number`-th call of files.<name> crash the process before it does anything;
    the real function is back once the block ends (the crash is expected inside it)."""
    real = getattr(files, name)
    calls = 0

    def crashing(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == number:
            raise Crash(f"{name} call {number}")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, name, crashing)
        with pytest.raises(Crash):
            yield


def assert_delivered_once(world: World) -> None:
    assert world.files(world.outbox) == ["pair.2.png", "pair.png", "pair.result.yaml"]
    result = world.sidecar("pair.result.yaml")
    assert [i["file"] for i in result["images"]] == ["pair.png", "pair.2.png"]
    assert result["thread_id"] == world.calls()[0]["thread_id"]
    assert len(world.calls()) == 1, "codex ran again for a run whose images were in its log"
    assert world.files(world.inbox / "done") == ["pair.prompt.yaml"]
    assert world.files(world.inbox / "processing") == []
    assert [n for n in world.files(world.inbox) if n.endswith(".prompt.yaml")] == []


# Writes of a two-image delivery: the first image, the second, the result sidecar.
@pytest.mark.parametrize("write", [1, 2, 3])
def test_a_crash_before_any_write_of_the_delivery_is_finished_by_the_restart(
    world: World, write: int
) -> None:
    world.set_script(scenario="two_images")
    world.write_job("pair", "prompt: two of them\n")
    with crash_on_call("write_new", write):
        world.once()
    assert world.once() == 0
    assert_delivered_once(world)


def test_a_crash_after_the_sidecar_before_the_move_to_done(
    world: World,
) -> None:
    """The claim is move 1, the move to done/ move 2."""
    world.set_script(scenario="two_images")
    world.write_job("pair", "prompt: two of them\n")
    with crash_on_call("move_group", 2):
        world.once()
    assert world.files(world.outbox) == ["pair.2.png", "pair.png", "pair.result.yaml"]
    assert world.once() == 0
    assert_delivered_once(world)


def test_a_crash_during_the_recovery_of_a_crashed_delivery(
    world: World,
) -> None:
    """The first run dies after the first image, its recovery dies after the second one: the
    third start still ends with each image once."""
    world.set_script(scenario="two_images")
    world.write_job("pair", "prompt: two of them\n")
    with crash_on_call("write_new", 2):
        world.once()
    with crash_on_call("write_new", 2):  # the recovery writes image 2, then the sidecar
        world.once()
    assert world.once() == 0
    assert_delivered_once(world)


def test_a_file_of_someone_else_under_a_planned_name_is_left_alone(
    world: World,
) -> None:
    """A crash after the plan was saved; meanwhile another writer took `pair.2.png`. The restart
    neither adopts nor overwrites that file: it delivers under a new name."""
    world.set_script(scenario="two_images")
    world.write_job("pair", "prompt: two of them\n")
    with crash_on_call("write_new", 1):
        world.once()
    (world.outbox / "pair.2.png").write_bytes(b"another program's file")
    assert world.once() == 0
    assert (world.outbox / "pair.2.png").read_bytes() == b"another program's file"
    assert world.files(world.outbox) == [
        "pair-2.2.png",
        "pair-2.png",
        "pair-2.result.yaml",
        "pair.2.png",
    ]
    assert len(world.calls()) == 1
