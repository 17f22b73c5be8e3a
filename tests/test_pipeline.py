"""`once` and `gen` with the fake codex: every outcome leaves its files and loses nothing."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.cli import main
from daemon.images import sniff_format
from tests.support import rollout_shapes as shapes
from tests.support.procs import pid_alive, wait_for
from tests.support.world import World

# --- success ---------------------------------------------------------------------------


def test_a_job_becomes_an_image_and_a_result_sidecar(world: World) -> None:
    """The image, its sidecar with every field, and the job file moved to done/."""
    world.write_job("fox", "prompt: a red fox\n")
    assert world.once() == 0
    assert world.files(world.outbox) == ["fox.png", "fox.result.yaml"]
    result = world.sidecar("fox.result.yaml")
    image = result["images"][0]
    assert image["file"] == "fox.png"
    assert image["format"] == "png"
    assert image["width"] > 0
    assert image["height"] > 0
    assert image["bytes"] == (world.outbox / "fox.png").stat().st_size
    assert len(image["sha256"]) == 64
    assert result["prompt"] == "a red fox"
    assert result["job"] == "fox.prompt.yaml"
    assert result["codex_version"] == "codex-cli 0.169.0"
    assert result["thread_id"] == world.calls()[0]["thread_id"]
    for key in ("revised_prompt", "refs", "started_at", "finished_at", "seconds"):
        assert key in result
    assert world.files(world.inbox / "done") == ["fox.prompt.yaml"]
    assert world.files(world.inbox / "processing") == []


def test_the_prompt_reaches_codex_byte_for_byte(world: World) -> None:
    """Whitespace, quotes, emoji and markup in the prompt arrive unchanged on codex's stdin."""
    prompt = '  "Quoted" <b>bold</b> 🐱\n  second line\ttab  \n'
    world.write_job("exact", yaml.safe_dump({"prompt": prompt}, allow_unicode=True))
    assert world.once() == 0
    stdin = world.calls()[0]["stdin"]
    assert f"<<<REQUEST\n{prompt}\nREQUEST>>>" in stdin
    assert world.sidecar("exact.result.yaml")["prompt"] == prompt


def test_a_bare_string_file_is_the_prompt(world: World) -> None:
    """A job file whose whole content is a YAML string is the prompt."""
    world.write_job("bare", "a lighthouse at dusk\n")
    assert world.once() == 0
    assert "a lighthouse at dusk" in world.calls()[0]["stdin"]


def test_prose_with_a_colon_is_the_prompt_and_the_sidecar_says_so(world: World) -> None:
    """`Style: watercolor, …` is no job mapping: its whole text is sent, byte for byte, and the
    result sidecar says `prompt_source: whole-file`; other jobs name their own source."""
    prose = "Style: watercolor, a fox in the snow\nwhile you were away: a moonlit pond"
    world.write_job("fox", f"{prose}\n")
    world.write_job("plain", "prompt: a cat\n")
    assert world.once() == 0
    stdins = [call["stdin"] for call in world.calls()]
    assert any(f"<<<REQUEST\n{prose}\nREQUEST>>>" in stdin for stdin in stdins)
    result = world.sidecar("fox.result.yaml")
    assert result["prompt"] == prose
    assert result["prompt_source"] == "whole-file"
    assert world.sidecar("plain.result.yaml")["prompt_source"] == "prompt-key"


def test_codex_gets_the_fixed_flags_and_an_empty_working_folder(world: World) -> None:
    """argv, never a shell: the skill's flags, -C a fresh folder, prompt only on stdin."""
    world.write_job("flags", "prompt: x\nmodel: gpt-5.5\n")
    assert world.once() == 0
    call = world.calls()[0]
    argv = call["argv"]
    assert argv[:1] == ["exec"] or "exec" in argv
    for flag in ("--skip-git-repo-check", "--json", "--sandbox", "image_generation"):
        assert flag in argv
    assert argv[argv.index("-m") + 1] == "gpt-5.5"
    workdir = Path(argv[argv.index("-C") + 1])
    assert call["cwd"] == str(workdir)
    assert not workdir.exists()  # removed after the run


def test_sibling_references_travel_with_the_job(world: World) -> None:
    """`<name>.png` and `<name>.<x>.jpg` are the references, passed with -i as ASCII copies."""
    world.write_job("pet", "prompt: repaint in watercolor\n")
    (world.inbox / "pet.png").write_bytes(shapes.tiny_png(1))
    (world.inbox / "pet.side view.png").write_bytes(shapes.tiny_png(2))
    (world.inbox / "petunia.png").write_bytes(shapes.tiny_png(3))  # another job's name
    assert world.once() == 0
    refs = world.calls()[0]["refs"]
    assert [Path(r).name for r in refs] == ["ref-1.png", "ref-2.png"]
    assert world.files(world.inbox / "done") == ["pet.png", "pet.prompt.yaml", "pet.side view.png"]
    assert (world.inbox / "petunia.png").exists()
    assert world.sidecar("pet.result.yaml")["refs"] == ["pet.png", "pet.side view.png"]


def test_explicit_refs_replace_siblings_and_empty_refs_means_none(world: World) -> None:
    """`refs: [...]` names the references; `refs: []` ignores sibling images."""
    (world.inbox / "styles").mkdir()
    (world.inbox / "styles" / "ink.png").write_bytes(shapes.tiny_png(4))
    world.write_job("a", "prompt: x\nrefs: [styles/ink.png]\n")
    world.write_job("b", "prompt: y\nrefs: []\n")
    (world.inbox / "b.png").write_bytes(shapes.tiny_png(5))
    assert world.once() == 0
    calls = {Path(c["argv"][c["argv"].index("-C") + 1]).name: c for c in world.calls()}
    refs_per_call = sorted(len(c["refs"]) for c in calls.values())
    assert refs_per_call == [0, 1]
    assert (world.inbox / "styles" / "ink.png").exists()  # shared references stay put


def test_format_converts_the_result(world: World) -> None:
    """`format: jpeg` turns the PNG into a JPEG named .jpg, and the sidecar says so."""
    world.write_job("conv", "prompt: x\nformat: jpeg\n")
    assert world.once() == 0
    data = (world.outbox / "conv.jpg").read_bytes()
    assert sniff_format(data[:16]).value == "jpeg"
    assert world.sidecar("conv.result.yaml")["images"][0]["format"] == "jpeg"


def test_a_jpeg_named_png_by_codex_is_named_after_its_real_format(world: World) -> None:
    """codex calls every image .png; the outbox names it by its magic bytes."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="JPEG")
    world.set_script(image_b64=base64.b64encode(buffer.getvalue()).decode())
    world.write_job("real", "prompt: x\n")
    assert world.once() == 0
    assert world.files(world.outbox) == ["real.jpg", "real.result.yaml"]


def test_every_image_of_a_run_is_kept(world: World) -> None:
    """Two image calls in one run give two images, both listed in the sidecar."""
    world.set_script(scenario="two_images")
    world.write_job("pair", "prompt: two variants\n")
    assert world.once() == 0
    assert world.files(world.outbox) == ["pair.2.png", "pair.png", "pair.result.yaml"]
    assert len(world.sidecar("pair.result.yaml")["images"]) == 2


def test_images_only_on_disk_are_found_in_generated_images(world: World) -> None:
    """When the log holds no image, `$CODEX_HOME/generated_images/<thread>/` is the fallback."""
    world.set_script(scenario="generated_dir_only")
    world.write_job("disk", "prompt: x\n")
    assert world.once() == 0
    assert "disk.png" in world.files(world.outbox)


@pytest.mark.parametrize("version", ["0.111.0", "0.125.0", "0.144.0", "0.169.0"])
def test_every_supported_log_shape_gives_the_image(world: World, version: str) -> None:
    """The session-log shapes of 0.111 to 0.169 all yield exactly one image."""
    world.set_script(version=version)
    world.write_job("v", "prompt: x\n")
    assert world.once() == 0
    assert len(world.sidecar("v.result.yaml")["images"]) == 1


def test_names_are_never_overwritten(world: World) -> None:
    """Two jobs asking for the same `out` get `cat` and `cat-2`; done/ keeps both job files."""
    world.write_job("one", "prompt: x\nout: cat\n")
    assert world.once() == 0
    world.write_job("one", "prompt: y\nout: cat\n")
    assert world.once() == 0
    assert world.files(world.outbox) == [
        "cat-2.png",
        "cat-2.result.yaml",
        "cat.png",
        "cat.result.yaml",
    ]
    assert world.files(world.inbox / "done") == ["one-2.prompt.yaml", "one.prompt.yaml"]


def test_a_later_success_removes_the_stale_error_sidecar(world: World) -> None:
    """A job that paused on a usage limit and then succeeds leaves only its result."""
    world.set_script(scenario="usage_limit")
    world.write_job("later", "prompt: x\n")
    assert world.once() == 5
    assert world.files(world.outbox) == ["later.error.yaml"]
    world.set_script()
    assert world.once() == 0
    assert world.files(world.outbox) == ["later.png", "later.result.yaml"]


# --- failures ------------------------------------------------------------------------------


def _error(world: World, name: str) -> dict[str, Any]:
    data = world.sidecar(f"{name}.error.yaml")
    for key in ("code", "error", "message", "hint", "detail", "retrying", "failed_at"):
        assert key in data, key
    assert len(data["detail"]) <= 4096
    return data


@pytest.mark.parametrize(
    ("scenario", "code", "layer"),
    [
        ("refuse", 7, "refused"),
        ("text_only", 7, "no-image"),
        ("server_error", 5, "codex"),
        ("no_session_log", 6, "session-log"),
        ("bad_args", 5, "codex-arguments"),
    ],
)
def test_failures_of_the_job_end_in_failed_with_a_sidecar(
    world: World, scenario: str, code: int, layer: str
) -> None:
    """Refusals, text-only answers and codex errors leave an error sidecar, the job in failed/."""
    world.set_script(scenario=scenario)
    world.write_job("bad", "prompt: x\n")
    assert world.once() == code
    error = _error(world, "bad")
    assert (error["code"], error["error"], error["retrying"]) == (code, layer, False)
    assert world.files(world.inbox / "failed") == ["bad.prompt.yaml"]
    assert not (world.inbox / "bad.prompt.yaml").exists()


def test_an_image_logged_before_codex_crashed_is_kept(world: World) -> None:
    """codex panicking after the image reached its log (truncated last line) still delivers it."""
    world.set_script(scenario="crash")
    world.write_job("crashy", "prompt: x\n")
    assert world.once() == 0
    assert "crashy.png" in world.files(world.outbox)


def test_a_refusal_carries_codexs_reason(world: World) -> None:
    """The moderation reason from the tool output lands in `detail`."""
    world.set_script(scenario="refuse")
    world.write_job("mod", "prompt: x\n")
    world.once()
    assert "moderation_blocked" in _error(world, "mod")["detail"]


def test_transient_failures_are_retried_before_giving_up(world: World) -> None:
    """A text-only answer is tried retry.attempts times (2 here) before the job fails."""
    world.write_config(retry={"attempts": 2})
    world.set_script(scenario="text_only")
    world.write_job("again", "prompt: x\n")
    world.once()
    assert len(world.calls()) == 2


def test_a_hang_is_ended_by_the_job_timeout(world: World) -> None:
    """`timeout_sec` stops a hanging codex: code 5, layer timeout, no process left."""
    world.set_script(scenario="hang")
    world.write_job("slow", "prompt: x\ntimeout_sec: 1\n")
    assert world.once() == 5
    assert _error(world, "slow")["error"] == "timeout"
    for call in world.calls():
        for pid in (call["pid"], call.get("child_pid")):
            wait_for(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"codex {pid} gone")


@pytest.mark.parametrize(
    ("scenario", "layer"),
    [
        ("usage_limit", "usage-limit"),
        ("unauthorized", "login"),
    ],
)
def test_environment_failures_keep_the_job_in_the_inbox(
    world: World, scenario: str, layer: str
) -> None:
    """A usage limit or a login problem does not consume the job: it stays, marked retrying."""
    world.set_script(scenario=scenario)
    world.write_job("wait", "prompt: x\n")
    world.write_job("zzz-next", "prompt: y\n")
    assert world.once() == 5
    error = _error(world, "wait")
    assert (error["error"], error["retrying"]) == (layer, True)
    assert (world.inbox / "wait.prompt.yaml").exists()
    assert (world.inbox / "zzz-next.prompt.yaml").exists()  # not tried: the queue stopped
    assert len(world.calls()) == 1


def test_a_usage_limit_sidecar_says_when_to_try_again(world: World) -> None:
    """codex's "try again at 5:46 PM" becomes `retry_at`."""
    world.set_script(
        scenario="usage_limit",
        usage_limit_message="You\u2019ve hit your usage limit. try again at 5:46 PM.",
    )
    world.write_job("limit", "prompt: x\n")
    world.once()
    retry_at = datetime.fromisoformat(_error(world, "limit")["retry_at"])
    assert (retry_at.hour, retry_at.minute) == (17, 46)


def test_codex_missing_keeps_the_job(world: World) -> None:
    """Exit 3 when codex cannot be started; the job waits in the inbox."""
    world.write_config(codex={"command": [str(world.root / "no-such-codex")]})
    world.write_job("keep", "prompt: x\n")
    assert world.once() == 3
    assert (world.inbox / "keep.prompt.yaml").exists()
    error = _error(world, "keep")
    assert (error["retrying"], error["prompt"]) == (True, "x")


def test_a_bad_job_file_fails_with_the_key_and_the_fix(world: World) -> None:
    """A typo'd key: code 2, the message names the file and suggests the key."""
    world.write_job("typo", "promt: a cat\n")
    assert world.once() == 2
    error = _error(world, "typo")
    assert "typo.prompt.yaml" in error["message"]
    assert "prompt" in error["message"]
    assert world.files(world.inbox / "failed") == ["typo.prompt.yaml"]
    assert world.calls() == []


def test_a_missing_reference_is_code_4(world: World) -> None:
    """An explicit reference that does not exist fails with code 4 before codex runs."""
    world.write_job("noref", "prompt: x\nrefs: [missing.png]\n")
    assert world.once() == 4
    assert _error(world, "noref")["error"] == "reference"
    assert world.calls() == []


def test_a_missing_reference_keeps_the_prompt_and_the_other_references(world: World) -> None:
    """The job parsed: its error sidecar has the prompt, every reference as named, and a
    thumbnail in outbox/references/ for the one that exists (none for the missing one)."""
    (world.inbox / "styles").mkdir()
    (world.inbox / "styles" / "ink.png").write_bytes(shapes.tiny_png(1))
    world.write_job("fox", "prompt: a fox in ink\nrefs: [styles/ink.png, gone.png]\n")
    assert world.once() == 4
    error = _error(world, "fox")
    assert error["prompt"] == "a fox in ink"
    assert error["refs"] == ["styles/ink.png", "gone.png"]
    assert error["ref_thumbnails"] == ["references/fox.ref-1.jpg", None]
    thumbnail = (world.outbox / "references" / "fox.ref-1.jpg").read_bytes()
    assert sniff_format(thumbnail) is not None
    assert sniff_format(thumbnail).value == "jpeg"


def test_a_result_keeps_thumbnails_of_its_references(world: World) -> None:
    """Sibling references get small copies in outbox/references/, named in the sidecar."""
    world.write_job("pet", "prompt: repaint in watercolor\n")
    (world.inbox / "pet.png").write_bytes(shapes.tiny_png(1))
    assert world.once() == 0
    result = world.sidecar("pet.result.yaml")
    assert result["refs"] == ["pet.png"]
    assert result["ref_thumbnails"] == ["references/pet.ref-1.jpg"]
    assert (world.outbox / "references" / "pet.ref-1.jpg").stat().st_size > 0


def test_a_job_file_that_does_not_parse_lists_the_images_beside_it(world: World) -> None:
    """No prompt is known, but the images that moved to failed/ with it are named."""
    world.write_job("broken", "prompt: [unclosed\n")
    (world.inbox / "broken.png").write_bytes(shapes.tiny_png(1))
    assert world.once() == 2
    error = _error(world, "broken")
    assert error["prompt"] is None
    assert error["refs"] == ["broken.png"]
    assert error["ref_thumbnails"] == ["references/broken.ref-1.jpg"]


# --- crash recovery --------------------------------------------------------------------


def test_recovery_takes_the_image_from_the_recorded_session_without_running_codex(
    world: World,
) -> None:
    """A job left in processing/ whose codex had finished is delivered from its session log."""
    processing = world.inbox / "processing"
    processing.mkdir()
    (processing / "crash.prompt.yaml").write_text("prompt: after a crash\n")
    run = shapes.Run(images=[shapes.tiny_png(9)])
    started = datetime.now().astimezone()
    shapes.write_session(world.codex_home, run, when=started)
    (processing / ".crash.prompt.yaml.run.json").write_text(
        json.dumps(
            {
                "job": "crash.prompt.yaml",
                "refs": [],
                "prompt": "after a crash",
                "wanted": "crash",
                "format": None,
                "thread_id": run.thread_id,
                "started_at": started.isoformat(),
            }
        )
    )
    assert world.once() == 0
    assert world.calls() == []
    assert world.files(world.outbox) == ["crash.png", "crash.result.yaml"]
    assert world.files(world.inbox / "done") == ["crash.prompt.yaml"]
    assert world.files(processing) == []


def test_recovery_returns_an_unfinished_job_to_the_inbox_and_runs_it(world: World) -> None:
    """A job left in processing/ before codex announced a thread runs again, once."""
    processing = world.inbox / "processing"
    processing.mkdir()
    (processing / "half.prompt.yaml").write_text("prompt: x\n")
    (processing / "half.png").write_bytes(shapes.tiny_png(2))
    assert world.once() == 0
    assert len(world.calls()) == 1
    assert len(world.calls()[0]["refs"]) == 1
    assert world.files(world.inbox / "done") == ["half.png", "half.prompt.yaml"]


# --- gen -----------------------------------------------------------------------------------


def test_gen_prints_the_path_and_exits_0(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gen writes --out and prints its absolute path on stdout, nothing else."""
    out = tmp_path / "result.png"
    assert world.main("gen", "--prompt", "a cat", "--out", str(out)) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert sniff_format(out.read_bytes()[:16]).value == "png"


def test_gen_default_output_name(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --out the image is ./image-YYYYMMDD-HHMMSS.<ext>."""
    monkeypatch.chdir(tmp_path)
    assert world.main("gen", "--prompt", "a cat") == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.parent == tmp_path
    assert printed.name.startswith("image-")
    assert printed.suffix == ".png"


def test_gen_converts_to_the_extension_of_out(world: World, tmp_path: Path) -> None:
    """--out x.webp gives a WebP file."""
    out = tmp_path / "x.webp"
    assert world.main("gen", "--prompt", "a cat", "--out", str(out)) == 0
    assert sniff_format(out.read_bytes()[:16]).value == "webp"


@pytest.mark.parametrize(
    ("setup", "args", "code", "layer"),
    [
        ({}, ["--prompt", "  "], 2, "arguments"),
        ({}, ["--prompt", "x", "--ref", "/nonexistent.png"], 4, "reference"),
        ({"scenario": "refuse"}, ["--prompt", "x"], 7, "refused"),
        ({"scenario": "no_session_log"}, ["--prompt", "x"], 6, "session-log"),
        ({"scenario": "hang"}, ["--prompt", "x", "--timeout-sec", "1"], 5, "timeout"),
        ({"scenario": "usage_limit"}, ["--prompt", "x"], 5, "usage-limit"),
    ],
)
def test_gen_exit_codes_match_the_skill(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: dict[str, Any],
    args: list[str],
    code: int,
    layer: str,
) -> None:
    """Each failure has the skill's exit code and one sentence on stderr naming the layer."""
    world.set_script(**setup)
    assert world.main("gen", *args, "--out", str(tmp_path / "o.png")) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"gpt-image-inbox: {layer}: ")


def test_gen_without_codex_is_exit_3(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing codex CLI is exit code 3."""
    world.write_config(codex={"command": [str(world.root / "nope")]})
    assert world.main("gen", "--prompt", "x") == 3
    assert "codex-missing" in capsys.readouterr().err


def test_gen_bad_flags_exit_2(world: World) -> None:
    """Unknown flags are bad arguments: exit 2."""
    with pytest.raises(SystemExit) as info:
        world.main("gen", "--prompt", "x", "--bogus")
    assert info.value.code == 2


def test_the_jobs_own_timeout_is_announced_before_codex_runs(world: World) -> None:
    """process_job tells its caller the job's timeout_sec (the watchdog window) and references."""
    from daemon.config import load_config
    from daemon.pipeline.flow import Status, cached_setup, process_job

    path = world.write_job("long", "prompt: x\ntimeout_sec: 900\n")
    config = load_config(world.config_path)
    seen: list[tuple[float, list[str]]] = []
    outcome = process_job(
        path,
        config=config,
        get_setup=cached_setup(config),
        on_run=lambda timeout, refs: seen.append((timeout, refs)),
    )
    assert outcome.status is Status.DONE
    assert seen == [(900.0, [])]


def test_submit_refuses_a_missing_reference_and_writes_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`submit --ref` checks the reference first: exit 4, and no file lands in the inbox."""
    args = ["submit", "--config", str(world.config_path), "--prompt", "x"]
    assert main([*args, "--ref", str(tmp_path / "gone.png")]) == 4
    assert "gpt-image-inbox: reference: " in capsys.readouterr().err
    assert world.files(world.inbox) == []
