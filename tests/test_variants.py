"""`variants: N` with the fake codex: N images over as many runs as it takes, none made twice.

The fake codex makes the number of images its script says for each call, whatever it is asked;
the daemon must ask honestly (the same prompt, a line with the count) and keep what it got.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from daemon.cli import main
from daemon.codex import run as codex
from tests.support.world import World
from tests.test_delivery_crash import Crash

PROMPT = "A fox in the snow.\nMake 7 images of it, or none:  keep this line as written  \n"


def variants_job(world: World, variants: int, name: str = "fox") -> Path:
    text = yaml.safe_dump({"prompt": PROMPT, "variants": variants}, allow_unicode=True)
    return world.write_job(name, text)


def asked(count: int, prompt: str = PROMPT) -> str:
    """codex's whole stdin for a run asked for `count` images."""
    return codex.wrap_prompt(prompt, has_refs=False, options=[codex.count_option(count)])


def digests(folder: Path, names: list[str]) -> list[str]:
    return [hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names]


# --- N guaranteed over several runs -----------------------------------------------------------


def test_runs_that_make_fewer_are_followed_by_runs_for_the_rest(world: World) -> None:
    """variants: 3 from a codex that makes 2, then 1: two runs, three images, one sidecar
    counting each run; the second run is asked for the one missing, the prompt unchanged."""
    world.set_script(images_by_call=[2, 1])
    variants_job(world, 3)
    assert world.once() == 0
    assert world.files(world.outbox) == ["fox.2.png", "fox.3.png", "fox.png", "fox.result.yaml"]
    result = world.sidecar("fox.result.yaml")
    assert [i["file"] for i in result["images"]] == ["fox.png", "fox.2.png", "fox.3.png"]
    calls = world.calls()
    assert [c["stdin"] for c in calls] == [asked(3), asked(1)]
    assert result["runs"] == [
        {"thread_id": calls[0]["thread_id"], "images": 2},
        {"thread_id": calls[1]["thread_id"], "images": 1},
    ]
    assert (result["variants"], result["missing"], result["complete"]) == (3, 0, True)
    assert result["thread_id"] == calls[0]["thread_id"]
    assert result["prompt"] == PROMPT
    assert len(set(digests(world.outbox, ["fox.png", "fox.2.png", "fox.3.png"]))) == 3
    assert world.files(world.inbox / "done") == ["fox.prompt.yaml"]
    assert world.files(world.inbox / "processing") == []


def test_the_prompt_is_byte_for_byte_between_the_markers_of_every_run(world: World) -> None:
    """The count travels on its own line before the marker; the request itself is untouched."""
    world.set_script(images_by_call=[1])
    variants_job(world, 2)
    assert world.once() == 0
    for call in world.calls():
        head, marker, rest = call["stdin"].partition("<<<REQUEST\n")
        assert marker
        assert rest == PROMPT + "\nREQUEST>>>\n"
        assert head.splitlines()[-1].startswith("Make ")


def test_a_run_that_makes_more_than_asked_keeps_them_all(world: World) -> None:
    """Images codex made are the person's: variants: 2 and a run of 3 keeps 3, in one run."""
    world.set_script(images_by_call=[3])
    variants_job(world, 2)
    assert world.once() == 0
    result = world.sidecar("fox.result.yaml")
    assert [i["file"] for i in result["images"]] == ["fox.png", "fox.2.png", "fox.3.png"]
    assert (result["variants"], result["missing"], result["complete"]) == (2, 0, True)
    assert len(world.calls()) == 1


def test_one_variant_sends_no_count_line(world: World) -> None:
    """Without `variants` the instruction is exactly what it always was."""
    world.write_job("one", yaml.safe_dump({"prompt": PROMPT}))
    assert world.once() == 0
    assert world.calls()[0]["stdin"] == codex.wrap_prompt(PROMPT, has_refs=False)
    result = world.sidecar("one.result.yaml")
    assert (result["variants"], result["missing"], result["complete"]) == (1, 0, True)


def test_a_follow_up_run_without_an_image_is_retried_for_the_missing_only(world: World) -> None:
    """Run 2 answers with text only: the retry asks for the one still missing, not for all."""
    world.set_script(images_by_call=[2, 0, 1])
    variants_job(world, 3)
    assert world.once() == 0
    assert [c["stdin"] for c in world.calls()] == [asked(3), asked(1), asked(1)]
    result = world.sidecar("fox.result.yaml")
    assert [r["images"] for r in result["runs"]] == [2, 1]
    assert len(result["images"]) == 3
    assert result["complete"] is True
    assert not (world.outbox / "fox.error.yaml").exists()


# --- the image limit part-way -----------------------------------------------------------------


def test_an_image_limit_part_way_delivers_what_was_made_and_waits_for_the_rest(
    world: World,
) -> None:
    """Run 1 makes 1 of 3 and meets the image limit: that image and an incomplete sidecar are
    delivered, the error says what is missing, the queue pauses with the job in the inbox.
    After the reset only the 2 missing are asked for, and the sidecar is completed."""
    world.set_script(images_by_call=[1, 2], image_limit_calls=[1])
    job = variants_job(world, 3)
    assert world.once() == 5
    assert world.files(world.outbox) == ["fox.error.yaml", "fox.png", "fox.result.yaml"]
    partial = world.sidecar("fox.result.yaml")
    assert (partial["complete"], partial["missing"], len(partial["images"])) == (False, 2, 1)
    error = world.sidecar("fox.error.yaml")
    assert (error["error"], error["retrying"]) == ("image-limit", True)
    assert error["retry_at"]
    assert "1 of 3 images were made" in error["message"]
    assert job.exists()
    first = digests(world.outbox, ["fox.png"])

    world.set_script(images_by_call=[1, 2])  # the limit has reset
    assert world.once() == 0
    calls = world.calls()
    assert [c["stdin"] for c in calls] == [asked(3), asked(2)]
    assert world.files(world.outbox) == ["fox.2.png", "fox.3.png", "fox.png", "fox.result.yaml"]
    result = world.sidecar("fox.result.yaml")
    assert [i["file"] for i in result["images"]] == ["fox.png", "fox.2.png", "fox.3.png"]
    assert [r["images"] for r in result["runs"]] == [1, 2]
    assert [r["thread_id"] for r in result["runs"]] == [c["thread_id"] for c in calls]
    assert (result["complete"], result["missing"]) == (True, 0)
    assert result["images"][0] == partial["images"][0]
    assert digests(world.outbox, ["fox.png"]) == first
    assert world.files(world.inbox / "done") == ["fox.prompt.yaml"]


def test_a_job_edited_while_it_waited_starts_afresh(world: World) -> None:
    """The incomplete sidecar belongs to the prompt it was made for: a new prompt asks for all."""
    world.set_script(images_by_call=[1, 2], image_limit_calls=[1])
    variants_job(world, 2)
    assert world.once() == 5
    world.write_job("fox", yaml.safe_dump({"prompt": "a hare", "variants": 2}))
    world.set_script(images_by_call=[1, 2])
    assert world.once() == 0
    assert world.calls()[1]["stdin"] == asked(2, "a hare")
    assert world.sidecar("fox.result.yaml")["complete"] is False  # the fox's, left as it was
    assert world.sidecar("fox-2.result.yaml")["complete"] is True


# --- crashes between and after runs -------------------------------------------------------------


def crash_on_run(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """The process dies as it is about to start codex for the `number`-th time."""
    real = codex.run_codex
    runs = 0

    def crashing(*args: object, **kwargs: object) -> codex.CodexRun:
        nonlocal runs
        runs += 1
        if runs == number:
            raise Crash(f"codex run {number}")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(codex, "run_codex", crashing)


def test_a_crash_between_two_runs_neither_loses_nor_remakes_an_image(world: World) -> None:
    """Run 1 made 1 of 3, then the process died: the restart delivers that image from its
    session log and asks codex only for the 2 missing."""
    world.set_script(images_by_call=[1, 2])
    variants_job(world, 3)
    # A patch of its own: undoing the test's monkeypatch would also drop the fake's script.
    with pytest.MonkeyPatch.context() as patch:
        crash_on_run(patch, 2)
        with pytest.raises(Crash):
            world.once()
    assert len(world.calls()) == 1
    assert world.once() == 0
    calls = world.calls()
    assert [c["stdin"] for c in calls] == [asked(3), asked(2)]
    result = world.sidecar("fox.result.yaml")
    assert [i["file"] for i in result["images"]] == ["fox.png", "fox.2.png", "fox.3.png"]
    assert [r["thread_id"] for r in result["runs"]] == [c["thread_id"] for c in calls]
    assert result["complete"] is True
    assert len(set(digests(world.outbox, ["fox.png", "fox.2.png", "fox.3.png"]))) == 3
    assert world.files(world.outbox) == ["fox.2.png", "fox.3.png", "fox.png", "fox.result.yaml"]
    assert world.files(world.inbox / "done") == ["fox.prompt.yaml"]


def test_a_crash_while_completing_an_incomplete_delivery(world: World) -> None:
    """After the image limit, the run for the missing two dies between writing them: the
    restart finishes that delivery from the run's log, without another codex run."""
    from tests.test_delivery_crash import crash_on_call

    world.set_script(images_by_call=[1, 2], image_limit_calls=[1])
    variants_job(world, 3)
    assert world.once() == 5
    world.set_script(images_by_call=[1, 2])
    with crash_on_call("write_new", 2):  # fox.2.png is written, fox.3.png is not
        world.once()
    assert world.files(world.outbox) == [
        "fox.2.png",
        "fox.error.yaml",
        "fox.png",
        "fox.result.yaml",
    ]
    assert world.once() == 0
    assert len(world.calls()) == 2
    assert world.files(world.outbox) == ["fox.2.png", "fox.3.png", "fox.png", "fox.result.yaml"]
    result = world.sidecar("fox.result.yaml")
    assert [r["images"] for r in result["runs"]] == [1, 2]
    assert result["complete"] is True


# --- gen and submit -----------------------------------------------------------------------------


def test_gen_variants_writes_each_image_next_to_out(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gen --variants 2 --out x.png`: x.png and x-2.png, from as many runs as it takes."""
    world.set_script(images_by_call=[1, 1])
    out = tmp_path / "x.png"
    code = main(
        [
            "gen",
            "--prompt",
            PROMPT,
            "--variants",
            "2",
            "--out",
            str(out),
            "--config",
            str(world.config_path),
        ]
    )
    assert code == 0
    written = [out, tmp_path / "x-2.png"]
    assert capsys.readouterr().out.splitlines() == [str(p) for p in written]
    assert all(p.is_file() for p in written)
    assert [c["stdin"] for c in world.calls()] == [asked(2), asked(1)]


def test_gen_refuses_a_variants_count_out_of_range(world: World) -> None:
    """--variants takes 1 to 8 only (exit 2, as for every bad flag)."""
    for bad in ("0", "9", "two"):
        with pytest.raises(SystemExit) as stopped:
            main(["gen", "--prompt", "x", "--variants", bad, "--config", str(world.config_path)])
        assert stopped.value.code == 2
    assert world.calls() == []


def test_submit_variants_writes_the_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """`submit --variants 3` writes a job with `variants: 3` and the prompt unchanged."""
    code = main(
        ["submit", "--prompt", PROMPT, "--variants", "3", "--config", str(world.config_path)]
    )
    assert code == 0
    job = Path(capsys.readouterr().out.strip())
    assert yaml.safe_load(job.read_text()) == {"prompt": PROMPT, "variants": 3}


def test_submit_wait_does_not_take_an_incomplete_result_for_the_end(world: World) -> None:
    """An incomplete result sidecar of the job is progress, not its result: the wait goes on,
    and ends with the complete one."""
    import io
    import threading
    from datetime import datetime

    from daemon.commands.submit import wait_for_result
    from daemon.config import load_config

    world.set_script(images_by_call=[1, 2], image_limit_calls=[1])
    since = datetime.now().astimezone().replace(microsecond=0)
    job = variants_job(world, 3)
    assert world.once() == 5
    config = load_config(world.config_path)
    stop = threading.Event()
    sleeps = []

    def sleep(_seconds: float) -> None:
        sleeps.append(_seconds)
        if len(sleeps) == 1:  # the wait saw only the incomplete result: the job runs on
            world.set_script(images_by_call=[1, 2])
            assert world.once() == 0
        else:
            stop.set()

    found = wait_for_result(job, config, since=since, out=io.StringIO(), sleep=sleep, stop=stop)
    assert [p.name for p in found] == ["fox.png", "fox.2.png", "fox.3.png"]
    assert len(sleeps) == 1


def test_a_crash_in_the_delivery_after_two_runs_delivers_both_from_their_logs(
    world: World,
) -> None:
    """Both runs finished, the first image write died: the restart takes every image of both
    runs from their session logs under the planned names, and runs codex no more."""
    from tests.test_delivery_crash import crash_on_call

    world.set_script(images_by_call=[1, 2])
    variants_job(world, 3)
    with crash_on_call("write_new", 1):
        world.once()
    assert world.once() == 0
    calls = world.calls()
    assert len(calls) == 2
    assert world.files(world.outbox) == ["fox.2.png", "fox.3.png", "fox.png", "fox.result.yaml"]
    result = world.sidecar("fox.result.yaml")
    assert [r["thread_id"] for r in result["runs"]] == [c["thread_id"] for c in calls]
    assert result["complete"] is True


def test_gen_at_the_image_limit_part_way_writes_what_was_made_and_exits_5(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gen --variants 3` meeting the image limit after one image: that image is written, the
    message names it and the limit, exit 5 as for the image limit."""
    world.set_script(images_by_call=[1], image_limit_calls=[1])
    out = tmp_path / "x.png"
    code = main(
        [
            "gen",
            "--prompt",
            "a fox",
            "--variants",
            "3",
            "--out",
            str(out),
            "--config",
            str(world.config_path),
        ]
    )
    assert code == 5
    assert out.is_file()
    assert not (tmp_path / "x-2.png").exists()
    err = capsys.readouterr().err
    assert "image-limit" in err
    assert f"1 of 3 images were written: {out}." in err
    assert len(world.calls()) == 1


def test_the_count_line_follows_the_other_options_of_the_job(world: World) -> None:
    """With `transparent` too, each option is a line of its own and the count comes last."""
    from daemon.job import look

    world.set_script(images_by_call=[2])
    world.write_job("fox", yaml.safe_dump({"prompt": PROMPT, "variants": 2, "transparent": True}))
    assert world.once() == 0
    options = [*look.instructions(transparent=True, aspect=None), codex.count_option(2)]
    assert world.calls()[0]["stdin"] == codex.wrap_prompt(PROMPT, has_refs=False, options=options)
