"""`transparent` and `aspect` through the REAL codex CLI against the mock OpenAI server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daemon.images import sniff_format
from daemon.job.look import TRANSPARENT_INSTRUCTION
from tests.support.mock_openai import MockOpenAI, request_between_markers
from tests.support.pixels import lowest_alpha
from tests.support.world import RealWorld

pytestmark = pytest.mark.real_codex

LANDSCAPE_LINE = "Aspect ratio 3:2, landscape (wider than tall)."


@pytest.fixture
def world(tmp_path: Path, codex_bin: Path, codex_home: Path, mock_openai: MockOpenAI) -> RealWorld:
    return RealWorld(tmp_path, codex_bin, codex_home, mock_openai)


def sent_text(world: RealWorld) -> str:
    """The one text codex sent the model as the user's message."""
    prompts = world.mock.user_prompts()
    assert prompts, "codex sent no user message"
    return prompts[0]


def test_a_transparent_job_asks_for_a_transparent_background_and_keeps_alpha_in_webp(
    world: RealWorld,
) -> None:
    """`transparent: true`: codex sends `background: "transparent"` to the images endpoint, and
    the transparent pixels survive `format: webp`; the sidecar says `has_alpha: true`."""
    prompt = "A red fox sticker, die-cut\n"
    job = {"prompt": prompt, "transparent": True, "format": "webp"}
    (world.inbox / "fox.prompt.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    assert [body.get("background") for body in world.mock.image_bodies()] == ["transparent"]
    text = sent_text(world)
    assert f"{TRANSPARENT_INSTRUCTION}\n<<<REQUEST\n{prompt}\nREQUEST>>>" in text
    data = (world.outbox / "fox.webp").read_bytes()
    assert sniff_format(data[:16]) is not None
    assert sniff_format(data[:16]).value == "webp"
    assert lowest_alpha(data) == 0
    result = world.sidecar("fox.result.yaml")
    assert result["transparent"] is True
    assert result["images"][0]["has_alpha"] is True
    assert result["images"][0]["format"] == "webp"
    assert result["prompt"] == prompt


def test_a_job_without_transparent_asks_for_no_transparent_background(world: RealWorld) -> None:
    """Without the key no transparency instruction is sent, nor `background: "transparent"`,
    and the opaque image's sidecar says `has_alpha: false`."""
    (world.inbox / "plain.prompt.yaml").write_text("prompt: a red fox\n")
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    assert "transparent_background" not in sent_text(world)
    assert [body.get("background") for body in world.mock.image_bodies()] != ["transparent"]
    result = world.sidecar("plain.result.yaml")
    assert (result["transparent"], result["images"][0]["has_alpha"]) == (False, False)


def test_an_aspect_job_carries_the_instruction_and_the_prompt_unchanged(
    world: RealWorld,
) -> None:
    """`aspect: landscape`: the shape travels as an instruction line before the request, the
    request between the markers is the prompt byte for byte, and the sidecar records the
    asked aspect beside the image's real size."""
    prompt = '  A harbour at dawn, "wide"  \n'
    job = {"prompt": prompt, "aspect": "landscape"}
    (world.inbox / "harbour.prompt.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
    done = world.cli("once")
    assert done.returncode == 0, done.stderr
    text = sent_text(world)
    head, marker, _ = text.partition("<<<REQUEST\n")
    assert marker
    assert "landscape (wider than tall), 3:2 (width:height)" in head
    assert request_between_markers(text) == prompt
    # The model added the asked line of its own after the request; the request is untouched.
    assert [body["prompt"] for body in world.mock.image_bodies()] == [f"{prompt}\n{LANDSCAPE_LINE}"]
    result = world.sidecar("harbour.result.yaml")
    assert result["aspect"] == "landscape"
    assert result["prompt"] == prompt
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (64, 64)


def test_gen_transparent_writes_a_webp_with_alpha(world: RealWorld, tmp_path: Path) -> None:
    """`gen --transparent --out x.webp`: codex asks for a transparent background and the file
    keeps its transparent pixels."""
    out = tmp_path / "sticker.webp"
    done = world.cli("gen", "--prompt", "a sticker", "--transparent", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n"
    assert [body.get("background") for body in world.mock.image_bodies()] == ["transparent"]
    data = out.read_bytes()
    assert sniff_format(data[:16]) is not None
    assert sniff_format(data[:16]).value == "webp"
    assert lowest_alpha(data) == 0


def test_gen_aspect_sends_the_shape_beside_the_unchanged_prompt(
    world: RealWorld, tmp_path: Path
) -> None:
    """`gen --aspect 16:9`: the instruction names the shape in words and as 16:9, and the
    prompt reaches codex unchanged between the markers."""
    out = tmp_path / "wide.png"
    done = world.cli("gen", "--prompt", "a wide valley", "--aspect", "16:9", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = sent_text(world)
    head, _, _ = text.partition("<<<REQUEST\n")
    assert "landscape (wider than tall), 16:9 (width:height)" in head
    assert request_between_markers(text) == "a wide valley"
    assert [body["prompt"] for body in world.mock.image_bodies()] == [
        "a wide valley\nAspect ratio 16:9, landscape (wider than tall)."
    ]
    assert out.exists()
