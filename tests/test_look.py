"""`transparent` and `aspect`: checked job keys, instruction lines beside the untouched prompt,
alpha kept through conversion, and what the result sidecar says (with the fake codex)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import yaml
from PIL import Image

from daemon.cli import main
from daemon.codex.run import wrap_prompt
from daemon.errors import JobError
from daemon.images import ImageFormat, convert, has_alpha, sniff_format
from daemon.job.look import RATIO_PATTERN, TRANSPARENT_INSTRUCTION, BadAspect, parse_aspect
from daemon.job.parse import parse_job
from daemon.job.schema import load_job_schema
from tests.support.pixels import lowest_alpha
from tests.support.world import World


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def transparent_png() -> bytes:
    """8x8 RGBA: a fully transparent background with one opaque pixel."""
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((3, 3), (10, 20, 200, 255))
    return png(image)


def before_marker(stdin: str) -> list[str]:
    """The instruction's lines before `<<<REQUEST`."""
    head, marker, _ = stdin.partition("<<<REQUEST\n")
    assert marker, stdin
    return head.splitlines()


# --- the job keys ------------------------------------------------------------------------------


class TestJobKeys:
    def parse(self, tmp_path: Path, text: str) -> object:
        (tmp_path / "cat.prompt.yaml").write_text(text, encoding="utf-8")
        return parse_job(tmp_path / "cat.prompt.yaml", inbox=tmp_path)

    def error(self, tmp_path: Path, text: str) -> JobError:
        with pytest.raises(JobError) as caught:
            self.parse(tmp_path, text)
        return caught.value

    def test_transparent_with_jpeg_names_both_keys_and_the_fix(self, tmp_path: Path) -> None:
        """`transparent: true` with `format: jpeg` is a job error saying why and what to write."""
        error = self.error(tmp_path, "prompt: a fox\ntransparent: true\nformat: jpg\n")
        assert str(error) == (
            "cat.prompt.yaml: `transparent: true` cannot be kept with `format: jpeg`: JPEG has "
            "no alpha channel."
        )
        assert error.hint == "Write `format: png` or `format: webp`, or remove `transparent: true`."

    def test_an_unquoted_ratio_is_read_as_written(self, tmp_path: Path) -> None:
        """`aspect: 16:9` is the text 16:9, not YAML 1.1's base-60 number 969."""
        job = self.parse(tmp_path, "prompt: a valley\naspect: 16:9\n")
        assert getattr(job, "aspect", None) == "16:9"

    def test_a_number_for_aspect_is_still_refused(self, tmp_path: Path) -> None:
        """Only the W:H form is taken as text: `aspect: 969` is a number and wrong."""
        error = self.error(tmp_path, "prompt: a valley\naspect: 969\n")
        assert "`aspect` must be a shape or a width:height ratio, not a number (969)" in str(error)

    def test_a_ratio_out_of_range_says_the_range(self, tmp_path: Path) -> None:
        """`aspect: 16:1` (a typo for 16:9?) is refused naming the range 1:4 to 4:1."""
        error = self.error(tmp_path, "prompt: a valley\naspect: 16:1\n")
        assert "`aspect` 16:1 is beyond the range of 1:4 to 4:1" in str(error)
        assert "`16:9`" in error.hint

    def test_transparent_must_be_true_or_false(self, tmp_path: Path) -> None:
        """A quoted "true" is text, not a yes."""
        error = self.error(tmp_path, 'prompt: a fox\ntransparent: "true"\n')
        assert "`transparent` must be true or false, not text" in str(error)

    def test_an_alias_gets_its_key(self, tmp_path: Path) -> None:
        """`aspect_ratio` and `transparency` are near misses with a fix."""
        error = self.error(tmp_path, "prompt: x\naspect_ratio: 16:9\ntransparency: true\n")
        assert "did you mean 'aspect'?" in str(error)
        assert "did you mean 'transparent'?" in str(error)

    def test_the_schema_uses_the_daemons_ratio_pattern(self) -> None:
        """The schema's W:H pattern is the one parse_job uses, character for character."""
        aspect = load_job_schema()["$defs"]["job"]["properties"]["aspect"]
        assert {"type": "string", "pattern": RATIO_PATTERN} in aspect["anyOf"]


@pytest.mark.parametrize(
    ("text", "ratio", "shape"),
    [
        ("square", "1:1", "square"),
        ("portrait", "2:3", "portrait (taller than wide)"),
        ("landscape", "3:2", "landscape (wider than tall)"),
        ("16:9", "16:9", "landscape (wider than tall)"),
        ("4:1", "4:1", "landscape (wider than tall)"),
        ("1:4", "1:4", "portrait (taller than wide)"),
        ("2:2", "2:2", "square"),
    ],
)
def test_aspects_name_their_shape(text: str, ratio: str, shape: str) -> None:
    """Each accepted aspect has its W:H terms and its shape in words."""
    aspect = parse_aspect(text)
    assert (aspect.asked, aspect.ratio, aspect.shape) == (text, ratio, shape)


@pytest.mark.parametrize("text", ["wide", "4:0", "0:1", "17:4", "4:17", "16:9 ", "1.5:1", ""])
def test_other_aspects_are_refused(text: str) -> None:
    """Anything but the three words and W:H within 1:4 to 4:1 is BadAspect."""
    with pytest.raises(BadAspect):
        parse_aspect(text)


# --- the instruction lines ---------------------------------------------------------------------


def test_a_plain_job_has_no_option_lines(world: World) -> None:
    """Without the keys, codex gets exactly the instruction it always got."""
    world.write_job("plain", "prompt: a fox\n")
    assert world.once() == 0
    assert world.calls()[0]["stdin"] == wrap_prompt("a fox", has_refs=False)


def test_transparent_and_aspect_are_lines_of_their_own_before_the_request(world: World) -> None:
    """Each option is one line before `<<<REQUEST`, transparency first; the prompt between the
    markers is byte for byte the one written."""
    prompt = '  A fox "sticker"\n  on two lines \n'
    job = {"prompt": prompt, "transparent": True, "aspect": "9:16", "format": "png"}
    world.write_job("fox", yaml.safe_dump(job, allow_unicode=True))
    assert world.once() == 0
    stdin = world.calls()[0]["stdin"]
    assert f"<<<REQUEST\n{prompt}\nREQUEST>>>\n" in stdin
    lines = before_marker(stdin)
    assert lines[-2] == TRANSPARENT_INSTRUCTION
    assert "transparent_background: true" in lines[-2]
    assert lines[-1].startswith(
        "The picture should be portrait (taller than wide), 9:16 (width:height)."
    )
    assert '"Aspect ratio 9:16, portrait (taller than wide)."' in lines[-1]
    assert stdin.count(prompt) == 1  # the options are nowhere inside the request


def test_wrap_prompt_puts_each_option_on_its_line_in_order() -> None:
    """wrap_prompt's options go, one per line and in order, between the head and the marker."""
    text = wrap_prompt("p", has_refs=True, options=["First.", "Second."])
    assert text.endswith("First.\nSecond.\n<<<REQUEST\np\nREQUEST>>>\n")
    assert text.startswith(wrap_prompt("p", has_refs=True).partition("<<<REQUEST")[0])


# --- alpha through conversion and the sidecar ---------------------------------------------------


@pytest.mark.parametrize(("fmt", "ext"), [("webp", "webp"), ("png", "png")])
def test_alpha_survives_the_format_conversion(world: World, fmt: str, ext: str) -> None:
    """A transparent image converted by `format: webp` (or png) keeps its transparent pixels;
    the sidecar says `has_alpha: true`, `transparent: true` and the asked aspect."""
    world.set_script(image_b64=base64.b64encode(transparent_png()).decode())
    world.write_job("cut", f"prompt: a cut-out\ntransparent: true\naspect: square\nformat: {fmt}\n")
    assert world.once() == 0
    data = (world.outbox / f"cut.{ext}").read_bytes()
    assert sniff_format(data[:16]) is ImageFormat(fmt)
    assert lowest_alpha(data) == 0
    result = world.sidecar("cut.result.yaml")
    image = result["images"][0]
    assert (image["format"], image["has_alpha"], image["width"], image["height"]) == (
        fmt,
        True,
        8,
        8,
    )
    assert (result["transparent"], result["aspect"]) == (True, "square")


def test_an_opaque_image_has_no_alpha_in_the_sidecar(world: World) -> None:
    """An RGBA image whose every pixel is opaque says `has_alpha: false`, like an RGB one."""
    world.set_script(image_b64=base64.b64encode(png(Image.new("RGBA", (4, 4), "red"))).decode())
    world.write_job("solid", "prompt: a red square\naspect: 4:3\n")
    assert world.once() == 0
    result = world.sidecar("solid.result.yaml")
    assert result["images"][0]["has_alpha"] is False
    assert (result["transparent"], result["aspect"]) == (False, "4:3")


def test_a_transparent_jpeg_job_fails_before_codex_runs(world: World) -> None:
    """`transparent: true` with `format: jpeg`: exit 2, an error sidecar naming both keys and
    the fix, the job in failed/, and codex never started."""
    world.write_job("flat", "prompt: a fox\ntransparent: true\nformat: jpeg\n")
    assert world.once() == 2
    error = world.sidecar("flat.error.yaml")
    assert "`transparent: true` cannot be kept with `format: jpeg`" in error["message"]
    assert "`format: png` or `format: webp`" in error["hint"]
    assert world.files(world.inbox / "failed") == ["flat.prompt.yaml"]
    assert world.calls() == []


@pytest.mark.parametrize(
    "source",
    [
        transparent_png(),
        png(Image.new("LA", (4, 4), (90, 0))),
        png(Image.new("RGBA", (4, 4), (0, 0, 0, 0)).quantize()),
    ],
    ids=["rgba", "la", "palette"],
)
@pytest.mark.parametrize("target", [ImageFormat.WEBP, ImageFormat.PNG])
def test_convert_keeps_alpha_for_png_and_webp(source: bytes, target: ImageFormat) -> None:
    """Every kind of PNG transparency comes out of convert() still transparent."""
    assert has_alpha(source)
    assert has_alpha(convert(source, target))


def test_has_alpha_is_false_for_jpeg_and_rgb() -> None:
    """No alpha channel, or one that is opaque everywhere, is no alpha."""
    assert not has_alpha(convert(transparent_png(), ImageFormat.JPEG))
    assert not has_alpha(png(Image.new("RGB", (4, 4))))


# --- gen and submit ------------------------------------------------------------------------------


def test_gen_transparent_to_a_jpg_is_bad_arguments(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gen --transparent --out x.jpg` exits 2 naming the flag and the file; codex never runs."""
    out = tmp_path / "x.jpg"
    assert world.main("gen", "--prompt", "a fox", "--transparent", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpt-image-inbox: arguments: --transparent cannot be kept in {out}")
    assert "hint: Give --out a .png or .webp name" in err
    assert world.calls() == []
    assert not out.exists()


def test_gen_passes_its_flags_as_instruction_lines(world: World, tmp_path: Path) -> None:
    """`gen --transparent --aspect 16:9` sends both lines; the prompt stays as given."""
    out = tmp_path / "x.webp"
    args = ["--prompt", "a fox", "--transparent", "--aspect", "16:9", "--out", str(out)]
    assert world.main("gen", *args) == 0
    stdin = world.calls()[0]["stdin"]
    lines = before_marker(stdin)
    assert lines[-2] == TRANSPARENT_INSTRUCTION
    assert "16:9 (width:height)" in lines[-1]
    assert stdin.endswith("<<<REQUEST\na fox\nREQUEST>>>\n")


@pytest.mark.parametrize("aspect", ["wide", "16:1", "16x9"])
def test_gen_refuses_a_bad_aspect_as_bad_arguments(
    world: World, aspect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad `--aspect` is a usage error (exit 2) naming the flag; codex never runs."""
    with pytest.raises(SystemExit) as info:
        world.main("gen", "--prompt", "x", "--aspect", aspect)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --aspect: {aspect!r} is not" in err or "1:4 to 4:1" in err, err
    assert world.calls() == []


def test_submit_writes_the_keys_into_the_job(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """`submit --transparent --aspect 16:9` writes a job with both keys that parses as such."""
    args = ["submit", "--config", str(world.config_path), "--prompt", "a fox", "--name", "fox"]
    assert main([*args, "--transparent", "--aspect", "16:9"]) == 0
    job_path = Path(capsys.readouterr().out.strip())
    assert yaml.safe_load(job_path.read_text()) == {
        "prompt": "a fox",
        "transparent": True,
        "aspect": "16:9",
    }
    job = parse_job(job_path, inbox=world.inbox)
    assert (job.prompt, job.transparent, job.aspect) == ("a fox", True, "16:9")


def test_submit_without_the_flags_writes_only_the_prompt(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the flags the job file is `prompt:` alone, as before."""
    assert main(["submit", "--config", str(world.config_path), "--prompt", "a fox"]) == 0
    job_path = Path(capsys.readouterr().out.strip())
    assert yaml.safe_load(job_path.read_text()) == {"prompt": "a fox"}


def test_the_run_record_keeps_what_the_job_asked(tmp_path: Path) -> None:
    """A crash recovery's sidecar can still say `transparent` and `aspect`: the run record
    saved before codex starts keeps them."""
    from daemon.pipeline.run_record import RunRecord

    job_path = tmp_path / "fox.prompt.yaml"
    RunRecord(job_path, job=job_path.name, refs=[], transparent=True, aspect="16:9").save()
    loaded = RunRecord.load(job_path)
    assert (loaded.transparent, loaded.aspect) == (True, "16:9")
