"""`once` and `gen` through the REAL codex CLI against the mock OpenAI server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.support.mock_openai import MockOpenAI, make_png
from tests.support.world import RealWorld

pytestmark = pytest.mark.real_codex


@pytest.fixture
def world(tmp_path: Path, codex_bin: Path, codex_home: Path, mock_openai: MockOpenAI) -> RealWorld:
    return RealWorld(tmp_path, codex_bin, codex_home, mock_openai)


def test_text_to_image(world: RealWorld) -> None:
    """A job file becomes the mock's image; the prompt reached the server byte for byte."""
    prompt = 'A lighthouse at dusk,\n  with "quotes" and 🐱  '
    (world.inbox / "light.prompt.yaml").write_text(
        yaml.safe_dump({"prompt": prompt}, allow_unicode=True), encoding="utf-8"
    )
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    assert (world.outbox / "light.png").read_bytes() == make_png()
    result = world.sidecar("light.result.yaml")
    assert result["prompt"] == prompt
    assert result["revised_prompt"] == prompt  # the mock model passed the request on as is
    assert result["codex_version"] == "codex-cli 0.171.0"
    sent = world.mock.user_prompts()
    assert any(f"<<<REQUEST\n{prompt}\nREQUEST>>>" in text for text in sent)
    assert [r.path for r in world.mock.image_requests()] == ["/v1/images/generations"]
    assert (world.inbox / "done" / "light.prompt.yaml").exists()


def test_image_to_image_with_a_sibling_reference(world: RealWorld) -> None:
    """A sibling reference goes to codex with -i and reaches the Images edits endpoint."""
    reference = make_png(size=(32, 32), color=(10, 200, 10))
    (world.inbox / "leaf.png").write_bytes(reference)
    (world.inbox / "leaf.prompt.yaml").write_text("prompt: repaint in watercolor\n")
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    edits = world.mock.image_requests()
    assert [r.path for r in edits] == ["/v1/images/edits"]
    sent = edits[0].json["images"][0]["image_url"]
    assert base64.b64decode(sent.split(",", 1)[1]) == reference
    # The output is the mock's image, never the reference echoed back in the log.
    assert (world.outbox / "leaf.png").read_bytes() == make_png()
    assert world.sidecar("leaf.result.yaml")["refs"] == ["leaf.png"]
    assert sorted(p.name for p in (world.inbox / "done").iterdir()) == [
        "leaf.png",
        "leaf.prompt.yaml",
    ]


def test_refusal(world: RealWorld) -> None:
    """A moderation refusal is code 7 with codex's reason; the job is in failed/."""
    world.mock.scenario = "refuse"
    (world.inbox / "no.prompt.yaml").write_text("prompt: something refused\n")
    done = world.cli("once")
    assert done.returncode == 7
    error = world.sidecar("no.error.yaml")
    assert (error["error"], error["retrying"]) == ("refused", False)
    assert "moderation_blocked" in error["detail"]
    assert error["message"] == "The image was refused or failed: moderation_blocked"
    assert (world.inbox / "failed" / "no.prompt.yaml").exists()


def test_usage_limit_keeps_the_job_and_says_when(world: RealWorld) -> None:
    """A usage limit: exit 5, the job stays in the inbox, the sidecar has retrying and retry_at."""
    world.mock.scenario = "usage_limit"
    (world.inbox / "later.prompt.yaml").write_text("prompt: a fox\n")
    done = world.cli("once")
    assert done.returncode == 5
    error = world.sidecar("later.error.yaml")
    assert (error["error"], error["retrying"]) == ("usage-limit", True)
    assert error["retry_at"]
    assert (world.inbox / "later.prompt.yaml").exists()


def test_the_image_limit_keeps_the_queue_and_says_when(world: RealWorld) -> None:
    """The images endpoint's 429 usage_limit_reached: `once` stops at the first job with exit 5;
    that job stays in the inbox with retrying and the reset time, the next one is untouched."""
    world.mock.scenario = "image_limit"
    first = world.inbox / "first.prompt.yaml"
    first.write_text("prompt: a fox\n")
    second = world.inbox / "second.prompt.yaml"
    second.write_text("prompt: a hare\n")
    os.utime(second, ns=(first.stat().st_mtime_ns + 10**9,) * 2)  # queued after the first
    before = second.stat()
    done = world.cli("once")
    assert done.returncode == 5, done.stderr
    error = world.sidecar("first.error.yaml")
    assert (error["error"], error["code"], error["retrying"]) == ("image-limit", 5, True)
    resets_at = world.mock.image_limit_resets_at()
    retry_at = datetime.fromisoformat(error["retry_at"])
    assert retry_at.utcoffset() is not None
    assert retry_at.timestamp() == resets_at
    assert "image limit" in error["message"]
    assert first.exists()
    assert not (world.inbox / "failed").exists()
    assert (second.stat().st_mtime_ns, second.stat().st_ino) == (before.st_mtime_ns, before.st_ino)
    assert not (world.outbox / "second.error.yaml").exists()
    assert len(world.mock.image_requests()) == 1  # the second job spent no try
    page = (world.outbox / "index.html").read_text(encoding="utf-8")
    assert f"Queue paused: image limit until {clock_text(retry_at)}." in page


def test_gen_at_the_image_limit_exits_5_naming_it_and_the_reset(
    world: RealWorld, tmp_path: Path
) -> None:
    """`gen` at the image limit exits 5 with one sentence naming the limit and its reset time."""
    world.mock.scenario = "image_limit"
    out = tmp_path / "o.png"
    done = world.cli("gen", "--prompt", "a fox", "--out", str(out))
    assert done.returncode == 5
    resets = datetime.fromtimestamp(world.mock.image_limit_resets_at()).astimezone()
    first_line = done.stderr.splitlines()[0]
    assert first_line == (
        "gpt-image-inbox: image-limit: The ChatGPT plan's image limit is reached; "
        f"it resets at {clock_text(resets)}."
    ), done.stderr
    assert done.stdout == ""
    assert not out.exists()


def clock_text(moment: datetime) -> str:
    """How the messages write a local time: HH:MM today, with the date on another day."""
    local = moment.astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return f"{local:%H:%M}" if same_day else f"{local:%Y-%m-%d %H:%M}"


def test_text_only_answer_is_retried_then_fails(world: RealWorld) -> None:
    """The model answering with text only is code 7 after retry.attempts tries."""
    world.mock.scenario = "text_only"
    (world.inbox / "words.prompt.yaml").write_text("prompt: a fox\n")
    done = world.cli("once")
    assert done.returncode == 7
    assert world.sidecar("words.error.yaml")["error"] == "no-image"
    responses = [r for r in world.mock.requests if r.path == "/v1/responses"]
    assert len(responses) == 2


def test_a_hang_is_ended_by_the_timeout(world: RealWorld) -> None:
    """A server that never answers: the job timeout stops codex; code 5, layer timeout."""
    world.mock.scenario = "hang"
    (world.inbox / "stuck.prompt.yaml").write_text("prompt: a fox\ntimeout_sec: 5\n")
    done = world.cli("once")
    assert done.returncode == 5
    assert world.sidecar("stuck.error.yaml")["error"] == "timeout"
    assert (world.inbox / "failed" / "stuck.prompt.yaml").exists()


def test_gen_is_a_drop_in_for_the_skill_script(world: RealWorld, tmp_path: Path) -> None:
    """gen --prompt --ref --out prints the path and writes the image, exit 0."""
    ref = tmp_path / "my ref, with comma.png"
    ref.write_bytes(make_png(size=(16, 16)))
    out = tmp_path / "out.png"
    done = world.cli("gen", "--prompt", "make it blue", "--ref", str(ref), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n"
    assert out.read_bytes() == make_png()
    # The comma in the name did not split the reference in two.
    assert [r.path for r in world.mock.image_requests()] == ["/v1/images/edits"]
    assert len(world.mock.image_requests()[0].json["images"]) == 1


def test_gen_logged_out_says_so(world: RealWorld, tmp_path: Path, codex_home: Path) -> None:
    """Without a login codex fails; gen exits 5 and names the login layer."""
    (codex_home / "auth.json").unlink()
    done = world.cli("gen", "--prompt", "x", "--out", str(tmp_path / "o.png"))
    assert done.returncode == 5
    assert done.stderr.startswith("gpt-image-inbox: login: "), done.stderr
    assert json.dumps(done.stdout) == '""'


def test_a_variants_job_yields_every_image_in_one_sidecar(world: RealWorld) -> None:
    """`variants: 3`: the model reads the count line and calls the tool three times in the
    one run; the three images are listed in one result sidecar, the prompt sent unchanged."""
    prompt = "Three foxes,\n  each in its own  picture  "
    (world.inbox / "foxes.prompt.yaml").write_text(
        yaml.safe_dump({"prompt": prompt, "variants": 3}), encoding="utf-8"
    )
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    result = world.sidecar("foxes.result.yaml")
    assert [i["file"] for i in result["images"]] == ["foxes.png", "foxes.2.png", "foxes.3.png"]
    served = [world.mock.served_image(n) for n in range(3)]
    assert [(world.outbox / i["file"]).read_bytes() for i in result["images"]] == served
    assert [r["images"] for r in result["runs"]] == [3]
    assert (result["variants"], result["complete"], result["missing"]) == (3, True, 0)
    assert len(world.mock.image_requests()) == 3
    sent = world.mock.user_prompts()
    assert any(
        "Make 3 separate images for this request" in text
        and f"<<<REQUEST\n{prompt}\nREQUEST>>>" in text
        for text in sent
    )
    assert all(r.json["prompt"] == prompt for r in world.mock.image_requests())


def test_an_image_limit_part_way_then_only_the_missing_images(world: RealWorld) -> None:
    """The images endpoint serves one image, then the plan's image limit: `once` delivers that
    image in an incomplete sidecar and exits 5; after the reset the next `once` asks the model
    for the 2 missing, and the sidecar lists all three."""
    world.mock.image_limit_after = 1
    (world.inbox / "foxes.prompt.yaml").write_text("prompt: a fox\nvariants: 3\n")
    done = world.cli("once")
    assert done.returncode == 5, done.stderr
    partial = world.sidecar("foxes.result.yaml")
    assert (partial["complete"], partial["missing"], len(partial["images"])) == (False, 2, 1)
    error = world.sidecar("foxes.error.yaml")
    assert (error["error"], error["retrying"]) == ("image-limit", True)
    assert "1 of 3 images were made" in error["message"]
    assert (world.inbox / "foxes.prompt.yaml").exists()

    world.mock.image_limit_after = None  # the limit has reset
    world.mock.clear()
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    assert any("Make 2 separate images" in text for text in world.mock.user_prompts())
    assert len(world.mock.image_requests()) == 2
    result = world.sidecar("foxes.result.yaml")
    assert [i["file"] for i in result["images"]] == ["foxes.png", "foxes.2.png", "foxes.3.png"]
    assert [r["images"] for r in result["runs"]] == [1, 2]
    assert result["complete"] is True
    assert not (world.outbox / "foxes.error.yaml").exists()


def test_gen_variants_writes_numbered_files(world: RealWorld, tmp_path: Path) -> None:
    """`gen --variants 2 --out x.png` prints and writes x.png and x-2.png."""
    out = tmp_path / "x.png"
    done = world.cli("gen", "--prompt", "two foxes", "--variants", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n{tmp_path / 'x-2.png'}\n"
    assert out.read_bytes() == make_png()
    assert (tmp_path / "x-2.png").read_bytes() == world.mock.served_image(1)
    assert len(world.mock.image_requests()) == 2
