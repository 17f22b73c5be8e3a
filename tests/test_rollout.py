"""Tests for daemon.codex.session_log: finding a run's session log and reading its images."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.codex.log_lines import BufferSizes, FileStrings, LogLines
from daemon.codex.log_scan import GENERIC_REFUSAL, Scanner
from daemon.codex.session_log import find_session_log, generated_images, scan_rollout
from daemon.images import ImageFormat
from tests.support.rollout_shapes import (
    MODERATION_FAILURE,
    USAGE_LIMIT_MESSAGE,
    Run,
    Shape,
    fake_jpeg,
    fake_webp,
    render,
    rollout_lines,
    session_log_path,
    shape_for,
    tiny_png,
    write_rollout,
)

REAL = Path(__file__).parent / "fixtures" / "rollouts"
VERSIONS = ["0.111.0", "0.117.0", "0.125.0", "0.142.0", "0.144.0", "0.145.0", "0.150.0", "0.169.0"]
THREAD = "01a21317-4b16-7900-b2ca-5484e8b77d77"


def big_png(size: int) -> bytes:
    """PNG magic followed by `size` random bytes (only the magic is checked here)."""
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size)


def write_lines(path: Path, lines: list[dict[str, Any]], tail: bytes = b"") -> Path:
    body = b"".join(
        json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for line in lines
    )
    path.write_bytes(body + tail)
    return path


# --- every shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_each_release_shape_yields_its_one_image(tmp_path: Path, version: str) -> None:
    """Every release family's log gives back exactly the image the run generated."""
    image = tiny_png(5)
    path = write_rollout(tmp_path / "log.jsonl", Run(version=version, images=[image]))

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [image]
    assert scan.images[0].format is ImageFormat.PNG
    assert scan.images[0].revised_prompt == "revised: a red fox in the snow #0"
    assert scan.turn_error is None
    assert scan.refusals == ()


@pytest.mark.parametrize("version", ["0.111.0", "0.125.0", "0.144.0", "0.169.0"])
def test_call_ids_follow_the_release(tmp_path: Path, version: str) -> None:
    """Hosted-tool images carry ig_ ids, client-side ones exec-<uuid> ids."""
    path = write_rollout(tmp_path / "log.jsonl", Run(version=version, images=[tiny_png(1)]))

    call_id = scan_rollout(path).images[0].call_id

    hosted = shape_for(version) in (Shape.HOSTED_CALL, Shape.HOSTED_BOTH)
    assert call_id is not None
    assert call_id.startswith("ig_" if hosted else "exec-")


@pytest.mark.parametrize("version", VERSIONS)
def test_several_images_are_kept_in_order_with_their_real_formats(
    tmp_path: Path, version: str
) -> None:
    """A run with three generations yields three images, in order, named by their magic bytes."""
    images = [fake_jpeg(b"first"), tiny_png(2), fake_webp(b"third")]
    path = write_rollout(tmp_path / "log.jsonl", Run(version=version, images=images))

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == images
    assert [i.format for i in scan.images] == [ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP]


# --- the same image twice -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.117.0", "0.142.0"])
def test_hosted_image_logged_twice_is_kept_once(tmp_path: Path, version: str) -> None:
    """0.117-0.142 log each image as image_generation_end and image_generation_call: one result."""
    image = tiny_png(3)
    path = write_rollout(tmp_path / "log.jsonl", Run(version=version, images=[image]))
    assert path.read_text().count(base64.b64encode(image).decode()) == 2

    assert [i.data for i in scan_rollout(path).images] == [image]


def test_identical_bytes_under_different_ids_are_kept_once(tmp_path: Path) -> None:
    """When the two copies of one image disagree on the id, the bytes' hash still dedupes."""
    image = tiny_png(4)
    lines = rollout_lines(Run(version="0.125.0", images=[image]))
    for line in lines:
        if line["payload"].get("type") == "image_generation_end":
            line["payload"]["call_id"] = "ig_someotherid"
    path = write_lines(tmp_path / "log.jsonl", lines)

    assert [i.data for i in scan_rollout(path).images] == [image]


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.144.0", "0.150.0", "0.169.0"])
def test_refusal_reason_comes_from_the_following_tool_output(tmp_path: Path, version: str) -> None:
    """A failed client-side generation is reported with codex's own words from the tool output."""
    path = write_rollout(
        tmp_path / "log.jsonl", Run(version=version, refusals=[MODERATION_FAILURE])
    )

    scan = scan_rollout(path)

    assert scan.images == ()
    assert scan.refusals == (MODERATION_FAILURE,)
    assert "moderation_blocked" in scan.refusals[0]


def test_refusal_falls_back_to_the_failure_field(tmp_path: Path) -> None:
    """Without a reason in the tool output, the Extension item's `failure` text is used."""
    run = Run(refusals=["Script error:"], refusal_failure_field="content policy violation")
    path = write_rollout(tmp_path / "log.jsonl", run)

    assert scan_rollout(path).refusals == ("content policy violation",)


def test_refusal_without_any_reason_gets_a_generic_one(tmp_path: Path) -> None:
    """A failed hosted generation with no words anywhere is still reported as a refusal, once."""
    lines = rollout_lines(Run(version="0.125.0", images=[tiny_png(1)]))
    for line in lines:
        if line["payload"].get("type") in ("image_generation_end", "image_generation_call"):
            line["payload"].update(status="failed", result="")
    path = write_lines(tmp_path / "log.jsonl", lines)

    scan = scan_rollout(path)

    assert scan.images == ()
    assert scan.refusals == (GENERIC_REFUSAL,)


def test_refusal_and_image_in_one_run_are_both_reported(tmp_path: Path) -> None:
    """One generation may succeed and another be refused in the same run."""
    run = Run(images=[tiny_png(1)], refusals=[MODERATION_FAILURE])
    scan = scan_rollout(write_rollout(tmp_path / "log.jsonl", run))

    assert [i.data for i in scan.images] == [tiny_png(1)]
    assert scan.refusals == (MODERATION_FAILURE,)


def test_refusal_reason_is_found_in_a_very_long_tool_output(tmp_path: Path) -> None:
    """A reason at the start of a tool output too long to load is still read back from the file."""
    reason = MODERATION_FAILURE + "\n" + "x" * (3 << 20)
    path = write_rollout(tmp_path / "log.jsonl", Run(refusals=[reason], images=[big_png(3 << 20)]))

    assert scan_rollout(path).refusals == (MODERATION_FAILURE,)


# --- the trap -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.111.0", "0.125.0", "0.144.0", "0.169.0"])
def test_reference_images_and_the_tool_echo_are_never_results(tmp_path: Path, version: str) -> None:
    """Bigger -i references in the user message and the echoed input_image are not taken."""
    result = tiny_png(7)
    references = [big_png(200_000), big_png(300_000)]
    run = Run(version=version, images=[result], references=references)
    path = write_rollout(tmp_path / "log.jsonl", run)

    assert [i.data for i in scan_rollout(path).images] == [result]


def test_an_echo_alone_is_not_an_image(tmp_path: Path) -> None:
    """A log whose only image is the tool output's input_image yields nothing."""
    lines = [
        line
        for line in rollout_lines(Run(images=[tiny_png(1)], references=[tiny_png(2)]))
        if line["payload"].get("type") != "item_completed"
        or line["payload"]["item"].get("kind") != "image_gen.generation"
    ]
    path = write_lines(tmp_path / "log.jsonl", lines)

    scan = scan_rollout(path)

    assert scan.images == ()
    assert scan.turn_error is None


def test_results_that_are_not_images_are_ignored(tmp_path: Path) -> None:
    """A result whose bytes are not PNG, JPEG or WebP is skipped, the next one kept."""
    run = Run(images=[b"GIF89a not supported", b"plain text", tiny_png(8)])

    scan = scan_rollout(write_rollout(tmp_path / "log.jsonl", run))

    assert [i.data for i in scan.images] == [tiny_png(8)]


def test_text_only_answer_has_no_image_and_no_refusal(tmp_path: Path) -> None:
    """A model that answered in words leaves a completed turn with nothing to keep."""
    scan = scan_rollout(write_rollout(tmp_path / "log.jsonl", Run(references=[tiny_png(1)])))

    assert scan.images == ()
    assert scan.refusals == ()
    assert scan.turn_error is None


# --- turn outcome ---------------------------------------------------------------------------------


def test_usage_limit_is_recorded_with_its_kind(tmp_path: Path) -> None:
    """task_complete's error message and string kind become turn_error and turn_error_kind."""
    run = Run(turn_error=USAGE_LIMIT_MESSAGE, turn_error_kind="usage_limit_exceeded")

    scan = scan_rollout(write_rollout(tmp_path / "log.jsonl", run))

    assert scan.turn_error == USAGE_LIMIT_MESSAGE
    assert scan.turn_error_kind == "usage_limit_exceeded"


def test_a_dict_error_kind_is_named_by_its_key(tmp_path: Path) -> None:
    """codex_error_info {"http_connection_failed": {...}} is reported as http_connection_failed."""
    run = Run(
        turn_error="stream disconnected before completion",
        turn_error_kind={"http_connection_failed": {"http_status_code": None}},
    )

    scan = scan_rollout(write_rollout(tmp_path / "log.jsonl", run))

    assert scan.turn_error_kind == "http_connection_failed"


def test_error_event_explains_a_turn_without_task_complete(tmp_path: Path) -> None:
    """When the turn never completed, a fatal error event is the turn error."""
    lines = rollout_lines(Run(complete=False))
    error = {"type": "error", "message": "Quota exceeded.", "codex_error_info": "quota_exceeded"}
    lines.append({"timestamp": "t", "type": "event_msg", "payload": error})

    scan = scan_rollout(write_lines(tmp_path / "log.jsonl", lines))

    assert (scan.turn_error, scan.turn_error_kind) == ("Quota exceeded.", "quota_exceeded")


def test_error_event_before_a_completed_turn_is_not_the_turn_error(tmp_path: Path) -> None:
    """A Reconnecting-style error event the turn outlived is not what ended it."""
    lines = rollout_lines(Run(images=[tiny_png(1)]))
    error = {"type": "error", "message": "Quota exceeded.", "codex_error_info": "quota_exceeded"}
    lines.insert(len(lines) - 1, {"timestamp": "t", "type": "event_msg", "payload": error})
    assert lines[-1]["payload"]["type"] == "task_complete"

    scan = scan_rollout(write_lines(tmp_path / "log.jsonl", lines))

    assert (scan.turn_error, scan.turn_error_kind) == (None, None)
    assert [i.data for i in scan.images] == [tiny_png(1)]


# --- robustness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 3 << 20])
def test_truncated_last_line_keeps_earlier_images(tmp_path: Path, size: int) -> None:
    """A killed run's half-written last line is dropped; the images before it are kept."""
    first, second = big_png(size), tiny_png(2)
    lines = rollout_lines(Run(images=[first, second], complete=False))
    cut = json.dumps(rollout_lines(Run(images=[big_png(size)]))[6]).encode()
    assert b"image_gen.generation" in cut
    path = write_lines(tmp_path / "log.jsonl", lines, tail=cut[: len(cut) * 2 // 3])

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [first, second]
    assert scan.turn_error is None


def test_a_whole_long_last_line_without_a_newline_is_kept(tmp_path: Path) -> None:
    """A long last line cut before its newline only is read like a short one: kept."""
    image = big_png(3 << 20)
    lines = rollout_lines(Run(images=[image]))
    at = next(
        n
        for n, line in enumerate(lines)
        if base64.b64encode(image[:30])[:36] in json.dumps(line).encode()
    )
    path = write_lines(tmp_path / "log.jsonl", lines[: at + 1])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))

    assert [i.data for i in scan_rollout(path).images] == [image]


def test_builder_truncation_leaves_an_unparsable_last_line(tmp_path: Path) -> None:
    """The `truncate_last` option cuts mid-line, and the scan still completes without it."""
    path = write_rollout(tmp_path / "log.jsonl", Run(images=[tiny_png(1)], truncate_last=True))
    assert not path.read_bytes().endswith(b"\n")

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [tiny_png(1)]
    assert scan.turn_error is None


@pytest.mark.parametrize("image_size", [1000, 4 << 20])
def test_line_separators_inside_strings_do_not_split_lines(tmp_path: Path, image_size: int) -> None:
    """U+2028, U+2029 and U+0085 in prompts stay inside their line, short lines and long."""
    prompt = "first\u2028second\u2029third\x85fourth"
    image = big_png(image_size)
    path = write_rollout(tmp_path / "log.jsonl", Run(prompt=prompt, images=[image]))
    assert "\u2028".encode() in path.read_bytes()

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [image]
    assert scan.images[0].revised_prompt == f"revised: {prompt} #0"


def test_long_line_with_escaped_slashes_decodes_exactly(tmp_path: Path) -> None:
    r"""A multi-megabyte result written with "\/" escapes decodes to the original bytes."""
    image = big_png(5 << 20)
    data = render(Run(images=[image], prompt='say "hi"\\ \n'))
    encoded = base64.b64encode(image)
    escaped = encoded.replace(b"/", b"\\/")
    assert data.count(encoded) == 2
    path = tmp_path / "log.jsonl"
    path.write_bytes(data.replace(encoded, escaped, 1))

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [image]
    assert scan.images[0].revised_prompt == 'revised: say "hi"\\ \n #0'


def test_blank_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    """Empty lines, non-JSON lines and JSON that is not an object do not stop the scan."""
    path = tmp_path / "log.jsonl"
    good = render(Run(images=[tiny_png(1)]))
    path.write_bytes(b"\n\nnot json\n[1,2]\n" + good)

    assert [i.data for i in scan_rollout(path).images] == [tiny_png(1)]


def _render_as(lines: list[dict[str, Any]], layout: str) -> bytes:
    if layout == "payload-sorted":  # "type" first at the top, after nested values in the payload
        lines = [{**line, "payload": dict(sorted(line["payload"].items()))} for line in lines]
    dumps: dict[str, Any] = {
        "sorted-keys": {"sort_keys": True, "separators": (",", ":")},
        "spaced": {},
        "payload-sorted": {"separators": (",", ":")},
    }[layout]
    return b"".join(json.dumps(line, **dumps).encode() + b"\n" for line in lines)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layout", ["sorted-keys", "spaced", "payload-sorted"])
def test_lines_in_another_key_order_or_spacing_are_read_the_same(
    tmp_path: Path, version: str, layout: str
) -> None:
    """Keys in another order, or spaces after separators, still give every image and refusal."""
    images = [tiny_png(1), fake_jpeg(b"second")]
    run = Run(version=version, images=images, refusals=[MODERATION_FAILURE])
    path = tmp_path / "log.jsonl"
    path.write_bytes(_render_as(rollout_lines(run), layout))

    scan = scan_rollout(path)

    client_side = shape_for(version) in (Shape.EXEC_END, Shape.EXTENSION)
    assert [i.data for i in scan.images] == images
    assert scan.refusals == (MODERATION_FAILURE if client_side else GENERIC_REFUSAL,)
    assert scan.turn_error is None


@pytest.mark.parametrize("version", ["0.125.0", "0.144.0", "0.169.0"])
def test_image_lines_quoted_inside_a_prompt_are_not_taken(tmp_path: Path, version: str) -> None:
    """A prompt holding the text of image and task_complete lines yields only the real image."""
    decoys = rollout_lines(Run(version=version, images=[tiny_png(9)], turn_error="decoy"))
    prompt = "\n".join(json.dumps(line) for line in decoys)
    image = tiny_png(1)
    path = write_rollout(
        tmp_path / "log.jsonl", Run(version=version, prompt=prompt, images=[image])
    )

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == [image]
    assert scan.turn_error is None


def test_refusal_reason_is_found_past_lines_that_are_skipped(tmp_path: Path) -> None:
    """Token counts and world state between a failure and its tool output do not lose the reason."""
    lines = rollout_lines(Run(refusals=[MODERATION_FAILURE]))
    at = next(
        n
        for n, line in enumerate(lines)
        if line["payload"].get("type") == "item_completed"
        and line["payload"]["item"].get("kind") == "image_gen.generation"
    )
    between = [
        {"timestamp": "t", "type": "event_msg", "payload": {"type": "token_count", "info": None}},
        {"timestamp": "t", "type": "world_state", "payload": {"full": True, "state": {}}},
        {"timestamp": "t", "type": "response_item", "payload": {"type": "reasoning", "id": "r"}},
    ]
    path = write_lines(tmp_path / "log.jsonl", lines[: at + 1] + between + lines[at + 1 :])

    assert scan_rollout(path).refusals == (MODERATION_FAILURE,)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("read", "inline", "head"), [(1, 200, 16), (7, 300, 1024), (64, 100, 40)])
def test_tiny_reads_split_every_line_string_and_escape_the_same_way(
    tmp_path: Path, version: str, read: int, inline: int, head: int
) -> None:
    """With reads of a few bytes, escapes, backslash runs and U+2028 across reads decode exactly."""
    # Strings over 64 bytes (longer than any key or type name) stay in the file.
    sizes = BufferSizes(read=read, inline_line_max=inline, head=head, blob_min=64)
    prompt = 'a "quoted" \\ word, \\\\ four\u2028 \\" and a trailing \\'
    images = [tiny_png(1), fake_webp(b"x" * 300)]
    run = Run(version=version, prompt=prompt, images=images, refusals=[MODERATION_FAILURE])
    path = write_rollout(tmp_path / "log.jsonl", run)

    scan = scan_rollout(path, sizes=sizes)

    client_side = shape_for(version) in (Shape.EXEC_END, Shape.EXTENSION)
    assert [i.data for i in scan.images] == images
    assert [i.revised_prompt for i in scan.images] == [f"revised: {prompt} #{n}" for n in (0, 1)]
    assert scan.refusals == (MODERATION_FAILURE if client_side else GENERIC_REFUSAL,)
    assert scan.turn_error is None


# --- the real captured 0.169 and 0.171 logs ------------------------------------------------------


def _b64_strings(path: Path, key: str) -> list[bytes]:
    found = []
    for raw in path.read_bytes().splitlines():
        stack: list[Any] = [json.loads(raw)]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                for k, v in value.items():
                    if k == key and isinstance(v, str) and v:
                        found.append(base64.b64decode(v.split(",")[-1]))
                    stack.append(v)
            elif isinstance(value, list):
                stack.extend(value)
    return found


REAL_VERSIONS = ["0.169", "0.171"]


def _real(version: str, scenario: str) -> Path:
    """A session log captured from the real codex (tests/support/capture_rollouts.py)."""
    return REAL / f"real-{version}-{scenario}.jsonl"


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_image_log_yields_the_generated_png(version: str) -> None:
    """The captured image run yields one PNG, the same one codex echoed to the model."""
    path = _real(version, "image")

    scan = scan_rollout(path)

    assert len(scan.images) == 1
    assert scan.images[0].format is ImageFormat.PNG
    assert scan.images[0].call_id is not None
    assert scan.images[0].call_id.startswith("exec-")
    assert _b64_strings(path, "image_url") == [scan.images[0].data]
    assert scan.turn_error is None
    assert scan.limits == ()


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_reference_log_never_returns_the_reference(version: str) -> None:
    """With an -i reference in the log, the result is the generated image, not the reference."""
    path = _real(version, "image-reference")

    scan = scan_rollout(path)

    reference, echo = _b64_strings(path, "image_url")
    assert [i.data for i in scan.images] == [echo]
    assert reference != echo


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_two_image_log_keeps_the_same_bytes_once(version: str) -> None:
    """Two image calls whose results are the same bytes (the mock's one PNG) give one image."""
    path = _real(version, "image-two")
    lines = [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw.strip()]
    items = [
        line["payload"]["item"]
        for line in lines
        if line["payload"].get("type") == "item_completed"
        and line["payload"]["item"].get("kind") == "image_gen.generation"
    ]
    assert [i["status"] for i in items] == ["completed", "completed"]

    scan = scan_rollout(path)

    assert [i.data for i in scan.images] == _b64_strings(path, "image_url")[:1]
    assert scan.images[0].call_id == items[0]["id"]
    assert (scan.refusals, scan.limits) == ((), ())


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_refusal_log_gives_codex_reason(version: str) -> None:
    """The captured refusal yields no image and the moderation reason from the tool output."""
    scan = scan_rollout(_real(version, "refuse"))

    assert scan.images == ()
    assert scan.limits == ()
    assert len(scan.refusals) == 1
    assert scan.refusals[0].startswith("image generation failed: http 400")
    assert "moderation_blocked" in scan.refusals[0]


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_text_only_log_has_nothing(version: str) -> None:
    """The captured text-only answer is a completed turn without images or refusals."""
    scan = scan_rollout(_real(version, "text_only"))

    assert (scan.images, scan.refusals, scan.limits, scan.turn_error) == ((), (), (), None)


@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_real_usage_limit_log_gives_message_and_kind(version: str) -> None:
    """The captured usage limit carries codex's sentence and the usage_limit_exceeded kind."""
    scan = scan_rollout(_real(version, "usage_limit"))

    assert scan.turn_error is not None
    assert scan.turn_error.startswith("You\u2019ve hit your usage limit.")
    assert "try again at" in scan.turn_error
    assert scan.turn_error_kind == "usage_limit_exceeded"


def _image_limit_failure(path: Path) -> dict[str, Any]:
    """The typed `failure` of the captured run's one failed generation."""
    lines = [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw.strip()]
    return dict(_extension_item(lines)["failure"])


def test_real_image_limit_log_is_a_limit_with_its_reset_time_not_a_refusal() -> None:
    """The plan's image limit (images endpoint 429): a LimitHit at codex's resetsAt, no refusal."""
    path = _real("0.171", "image_limit")
    failure = _image_limit_failure(path)
    assert (failure["type"], failure["limitId"]) == ("usageLimitExceeded", "image_gen")

    scan = scan_rollout(path)

    assert scan.images == ()
    assert scan.refusals == ()
    assert scan.turn_error is None
    [hit] = scan.limits
    assert hit.limit_id == "image_gen"
    assert hit.resets_at == datetime.fromtimestamp(failure["resetsAt"]).astimezone()
    assert hit.resets_at is not None
    assert hit.resets_at.utcoffset() is not None
    assert hit.reason.startswith("image generation failed: http 429 Too Many Requests")
    assert "usage_limit_reached" in hit.reason


def test_an_image_limit_is_recognised_from_codexs_words_alone(tmp_path: Path) -> None:
    """Without the typed failure, 429, usage_limit_reached and resets_at in codex's words do."""
    real = _real("0.171", "image_limit")
    resets_at = _image_limit_failure(real)["resetsAt"]
    lines = [json.loads(raw) for raw in real.read_bytes().split(b"\n") if raw.strip()]
    del _extension_item(lines)["failure"]
    path = write_lines(tmp_path / "log.jsonl", lines)

    scan = scan_rollout(path)

    assert scan.refusals == ()
    [hit] = scan.limits
    assert hit.limit_id is None
    assert hit.resets_at == datetime.fromtimestamp(resets_at).astimezone()


def test_a_429_without_usage_limit_words_stays_a_refusal(tmp_path: Path) -> None:
    """Another 429 (no usage_limit_reached) from the images endpoint is not taken for the limit."""
    real = _real("0.171", "image_limit")
    text = real.read_text(encoding="utf-8").replace("usage_limit_reached", "rate_limit_exceeded")
    lines = [json.loads(raw) for raw in text.split("\n") if raw.strip()]
    del _extension_item(lines)["failure"]
    path = write_lines(tmp_path / "log.jsonl", lines)

    scan = scan_rollout(path)

    assert scan.limits == ()
    assert len(scan.refusals) == 1
    assert "http 429" in scan.refusals[0]


def _extension_item(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        line["payload"]["item"]
        for line in lines
        if line["type"] == "event_msg"
        and line["payload"].get("type") == "item_completed"
        and line["payload"]["item"].get("kind") == "image_gen.generation"
    )


def test_builder_matches_the_real_0169_shape() -> None:
    """The 0.169 builder writes the same keys and tool-output layout as real codex."""
    real = [json.loads(raw) for raw in (REAL / "real-0.169-image.jsonl").read_bytes().splitlines()]
    built = rollout_lines(Run(images=[tiny_png(1)]))

    assert set(_extension_item(built)) == set(_extension_item(real))
    assert {"timestamp", "ordinal", "type", "payload"} <= set(built[0])

    def echo_layout(lines: list[dict[str, Any]]) -> list[str]:
        out = next(
            line["payload"]["output"]
            for line in lines
            if line["payload"].get("type") == "custom_tool_call_output"
        )
        return [part["type"] for part in out]

    assert echo_layout(built) == echo_layout(real)


# --- finding the log ------------------------------------------------------------------------------


def test_log_is_found_in_the_folder_of_the_local_start_date(tmp_path: Path) -> None:
    """A run's log under today's local-date folder is found by its thread id."""
    started = datetime.now().astimezone()
    path = write_rollout(session_log_path(tmp_path, THREAD, started), Run(thread_id=THREAD))

    assert find_session_log(tmp_path, THREAD, started_at=started) == path


@pytest.mark.parametrize("days", [-1, 1])
def test_log_is_found_in_a_neighbouring_day(tmp_path: Path, days: int) -> None:
    """A run that crossed midnight (or a clock near it) is found in the day before or after."""
    started = datetime(2030, 3, 17, 23, 59, 58)
    path = write_rollout(
        session_log_path(tmp_path, THREAD, started + timedelta(days=days)), Run(thread_id=THREAD)
    )

    assert find_session_log(tmp_path, THREAD, started_at=started) == path


def test_log_two_days_away_is_not_looked_for(tmp_path: Path) -> None:
    """Only three folders are searched: a log two days off is not found."""
    started = datetime(2030, 3, 17, 12, 0, 0)
    write_rollout(session_log_path(tmp_path, THREAD, started + timedelta(days=2)), Run())

    assert find_session_log(tmp_path, THREAD, started_at=started) is None


def test_aware_start_time_is_turned_into_the_local_date(tmp_path: Path) -> None:
    """An aware UTC start time picks the local-date folder codex writes into."""
    started = datetime(2030, 3, 17, 12, 0, tzinfo=timezone.utc)
    path = write_rollout(session_log_path(tmp_path, THREAD, started), Run(thread_id=THREAD))

    assert find_session_log(tmp_path, THREAD, started_at=started) == path


def test_other_sessions_and_compressed_logs_are_not_returned(tmp_path: Path) -> None:
    """Another thread's log and a .jsonl.zst of this thread are ignored."""
    started = datetime(2030, 3, 17, 12, 0, 0)
    other = "01a21317-0000-7000-8000-000000000000"
    write_rollout(session_log_path(tmp_path, other, started), Run(thread_id=other))
    zst = session_log_path(tmp_path, THREAD, started).with_suffix(".jsonl.zst")
    zst.write_bytes(b"\x28\xb5\x2f\xfd")

    assert find_session_log(tmp_path, THREAD, started_at=started) is None


def test_missing_sessions_folder_means_no_log(tmp_path: Path) -> None:
    """A CODEX_HOME without any sessions folder gives None, not an error."""
    assert find_session_log(tmp_path, THREAD, started_at=datetime.now()) is None


@pytest.mark.parametrize(
    "bad",
    ["", "../etc", "a/b/c/d/e/f", "abc*defgh", "abcdefg?h", "[abcdefgh]", "abc def gh", "x\\y"],
)
def test_thread_ids_that_could_escape_the_pattern_are_refused(tmp_path: Path, bad: str) -> None:
    """A thread id with separators, glob characters or spaces raises ValueError."""
    with pytest.raises(ValueError, match="not a codex thread id"):
        find_session_log(tmp_path, bad, started_at=datetime.now())
    with pytest.raises(ValueError, match="not a codex thread id"):
        generated_images(tmp_path, bad)


# --- generated_images -----------------------------------------------------------------------------


def test_generated_images_are_read_oldest_first_by_real_format(tmp_path: Path) -> None:
    """Files under generated_images/<thread>/ come back in write order with sniffed formats."""
    folder = tmp_path / "generated_images" / THREAD
    folder.mkdir(parents=True)
    files = [("exec-b.png", fake_jpeg()), ("exec-a.png", tiny_png(1)), ("notes.txt", b"hello")]
    for n, (name, data) in enumerate(files):
        (folder / name).write_bytes(data)
        os.utime(folder / name, ns=(10**18 + n, 10**18 + n))

    found = generated_images(tmp_path, THREAD)

    assert [(i.call_id, i.format) for i in found] == [
        ("exec-b", ImageFormat.JPEG),
        ("exec-a", ImageFormat.PNG),
    ]
    assert found[0].data == fake_jpeg()


def test_generated_images_of_an_unknown_thread_are_empty(tmp_path: Path) -> None:
    """No folder for the thread means no images."""
    assert generated_images(tmp_path, THREAD) == []


def test_a_uuid7_thread_log_is_found_without_listing_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Current releases' thread ids carry their creation time: the log is opened by name only."""
    thread_id = "01a2131a-7c83-73e0-a23c-dc7485dcd616"  # created 2026-11-25 14:27:12.643 UTC
    created = datetime.fromtimestamp(0x01A2131A7C83 / 1000).astimezone()
    log = (
        tmp_path
        / "sessions"
        / f"{created:%Y/%m/%d}"
        / f"rollout-{created:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"
    )
    log.parent.mkdir(parents=True)
    log.write_text("{}\n")

    def no_listing(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a session folder was listed")

    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(Path, "iterdir", no_listing)
    found = find_session_log(tmp_path, thread_id, started_at=created)
    assert found == log


def test_a_uuid7_id_with_an_impossible_time_is_looked_for_in_the_date_folders(
    tmp_path: Path,
) -> None:
    """A version-7 id whose time is past year 9999 does not crash the search: folders are used."""
    thread_id = "ffffffff-ffff-7fff-bfff-ffffffffffff"  # 2^48-1 ms: the year 10889
    started = datetime.now().astimezone()
    path = write_rollout(session_log_path(tmp_path, thread_id, started), Run(thread_id=thread_id))

    assert find_session_log(tmp_path, thread_id, started_at=started) == path


# --- the plan's rate limits (token_count events) --------------------------------------------------


def token_count(stamp: str, rate_limits: object) -> dict[str, Any]:
    """An event_msg token_count line as 0.171 writes it (token totals trimmed)."""
    return {
        "timestamp": stamp,
        "type": "event_msg",
        "payload": {"type": "token_count", "info": None, "rate_limits": rate_limits},
    }


def limits(limit_id: object = "codex", **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "limit_id": limit_id,
        "limit_name": None,
        "primary": {"used_percent": 42.0, "window_minutes": 300, "resets_at": 1796179300},
        "secondary": {"used_percent": 12.0, "window_minutes": 10080, "resets_at": 1796780500},
        "credits": None,
        "plan_type": "plus",
        "rate_limit_reached_type": None,
    }
    base.update(fields)
    return base


def test_real_0171_log_keeps_the_chat_limit_the_server_sent() -> None:
    """A real 0.171 log of a run whose server sent x-codex-primary/secondary headers holds the
    primary window: 42 % of 300 minutes, with an aware reset time from the header's epoch."""
    scan = scan_rollout(REAL / "real-0.171-rate_limits.jsonl")
    assert len(scan.images) == 1
    (snapshot,) = scan.rate_limits
    assert (snapshot.limit_id, snapshot.used_percent, snapshot.window_minutes) == (
        "codex",
        42.0,
        300,
    )
    assert snapshot.resets_at is not None
    assert snapshot.resets_at.tzinfo is not None
    assert snapshot.seen_at is not None
    assert snapshot.resets_at > snapshot.seen_at
    assert snapshot.plan_type is None  # 0.171 writes null: the mock sends no plan header


def test_real_0171_image_limit_log_names_the_image_limit_and_the_chat_limit() -> None:
    """At the image limit the typed failure (`limitId: image_gen`, `resetsAt`) is a snapshot
    of that limit, used up; the chat limit's token_count stays beside it."""
    scan = scan_rollout(REAL / "real-0.171-image_limit-rate_limits.jsonl")
    by_id = {s.limit_id: s for s in scan.rate_limits}
    assert set(by_id) == {"image_gen", "codex"}
    image = by_id["image_gen"]
    assert image.used_percent == 100.0
    assert image.window_minutes is None
    assert image.resets_at == scan.limits[0].resets_at
    assert by_id["codex"].used_percent == 42.0


def test_real_logs_without_rate_limit_headers_hold_no_snapshot() -> None:
    """Without the headers codex writes `primary: null, secondary: null`: nothing to show."""
    assert scan_rollout(REAL / "real-0.171-image.jsonl").rate_limits == ()


def test_null_windows_give_no_snapshot(tmp_path: Path) -> None:
    """A token_count whose windows are null, or whose rate_limits is null, is no snapshot."""
    path = write_lines(
        tmp_path / "log.jsonl",
        [
            token_count("2026-12-02T10:00:00Z", limits(primary=None, secondary=None)),
            token_count("2026-12-02T10:00:01Z", None),
            token_count("2026-12-02T10:00:02Z", "not a mapping"),
        ],
    )
    assert scan_rollout(path).rate_limits == ()


def test_missing_fields_are_left_empty(tmp_path: Path) -> None:
    """No limit_id reads as codex's own limit; a window without minutes or reset time keeps
    its percentage; a window without a percentage is no window."""
    path = write_lines(
        tmp_path / "log.jsonl",
        [
            token_count(
                "2026-12-02T10:00:00Z",
                {"primary": {"used_percent": 7}, "secondary": {"window_minutes": 60}},
            ),
            token_count("2026-12-02T10:00:01Z", limits("image_gen", primary={"resets_at": 5})),
        ],
    )
    codex_limit, image_limit = scan_rollout(path).rate_limits
    assert codex_limit.limit_id == "codex"
    assert (codex_limit.used_percent, codex_limit.window_minutes) == (7.0, None)
    assert codex_limit.resets_at is None
    assert codex_limit.plan_type is None
    assert codex_limit.seen_at == datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    # The image limit's primary has no percentage: its secondary window is the one kept.
    assert (image_limit.used_percent, image_limit.window_minutes) == (12.0, 10080)
    assert image_limit.plan_type == "plus"


def test_several_snapshots_keep_the_newest_of_each_limit(tmp_path: Path) -> None:
    """Later token_count lines replace earlier ones of the same limit; other limits stay."""
    first = limits(primary={"used_percent": 10.0, "window_minutes": 300, "resets_at": 1})
    image = limits(
        "image_gen", primary={"used_percent": 80, "window_minutes": 1440}, secondary=None
    )
    newest = limits(primary={"used_percent": 55.5, "window_minutes": 300, "resets_at": 1796179300})
    path = write_lines(
        tmp_path / "log.jsonl",
        [
            token_count("2026-12-02T10:00:00Z", first),
            token_count("2026-12-02T10:00:01Z", image),
            token_count("2026-12-02T10:00:02Z", newest),
        ],
    )
    by_id = {s.limit_id: s for s in scan_rollout(path).rate_limits}
    assert by_id["codex"].used_percent == 55.5
    assert by_id["codex"].resets_at == datetime.fromtimestamp(1796179300, timezone.utc)
    assert by_id["image_gen"].used_percent == 80.0


def test_the_window_nearest_its_cap_is_the_one_kept(tmp_path: Path) -> None:
    """When the weekly window is fuller than the 5-hour one, the weekly one is shown."""
    weekly_full = limits(secondary={"used_percent": 95, "window_minutes": 10080, "resets_at": 9})
    path = write_lines(tmp_path / "log.jsonl", [token_count("2026-12-02T10:00:00Z", weekly_full)])
    (snapshot,) = scan_rollout(path).rate_limits
    assert (snapshot.used_percent, snapshot.window_minutes) == (95.0, 10080)


def test_token_count_lines_are_read_and_big_lines_still_skipped() -> None:
    """The scanner wants token_count events, and still steps over what cannot matter."""
    scanner = Scanner()
    assert scanner.wanted(b"event_msg", b"token_count")
    assert not scanner.wanted(b"event_msg", b"agent_message")
    assert not scanner.wanted(b"turn_context", None)


# --- the line reader against json.loads -----------------------------------------------------------


class _Trickle(io.RawIOBase):
    """A file that hands out at most `step` bytes per read, so reads end anywhere in a line."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.step, len(self.data) - self.at)
        buffer[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


# Characters that are hard on a byte-level string scanner: quotes, backslashes, what JSON must
# escape, line separators that are not b"\n", astral characters (surrogate pairs when escaped)
# and lone surrogates (only ever written as \\uXXXX escapes).
_HARD_TEXT = st.text(
    alphabet=st.sampled_from(
        [
            *('"', "\\", "/", "\n", "\r", "\t", "\x00", "\u2028", "\u2029", "\x85", "é"),
            *("\U0001f98a", "\ud800", "\udbff", "\udc00", "\udfff", "a", "b", " ", "u", "0"),
            *("{", "}", ":", ","),
        ]
    ),
    max_size=40,
)
_BASE64_RUN = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
    min_size=40,
    max_size=400,
)
_STRINGS = _HARD_TEXT | _BASE64_RUN | st.builds(lambda a, b: a + b, _BASE64_RUN, _HARD_TEXT)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _STRINGS
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_STRINGS, inner, max_size=4),
    max_leaves=12,
)
_LINES = st.builds(
    lambda kind, payload, rest: {"type": kind, "payload": payload, **rest},
    st.sampled_from(["event_msg", "response_item", "skip"]),
    _VALUES,
    st.dictionaries(st.sampled_from(["timestamp", "id", "x"]), _VALUES, max_size=2),
)


def _render(value: Any, ascii_only: bool, compact: bool) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    try:
        return json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode()
    except UnicodeEncodeError:  # a lone surrogate can only be written as an escape
        return json.dumps(value, separators=separators).encode()


def _resolve(value: Any, strings: FileStrings) -> Any:
    """The parsed line with every string left in the file read back whole."""
    if isinstance(value, dict):
        return {_resolve(k, strings): _resolve(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, strings) for v in value]
    if strings.blob(value) is not None:
        return strings.text(value, limit=1 << 30)
    return value


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.tuples(_LINES, st.booleans(), st.booleans()), max_size=6),
    blank_lines=st.integers(0, 2),
    final_newline=st.booleans(),
    step=st.integers(1, 17),
    sizes=st.builds(
        BufferSizes,
        read=st.integers(1, 64),
        inline_line_max=st.integers(1, 300),
        head=st.integers(16, 64),
        blob_min=st.integers(1, 100),
    ),
)
def test_the_line_reader_yields_what_json_loads_gives(
    lines: list[tuple[dict[str, Any], bool, bool]],
    blank_lines: int,
    final_newline: bool,
    step: int,
    sizes: BufferSizes,
) -> None:
    """Any JSON lines, read a few bytes at a time with tiny buffers, come out as json.loads
    reads them, big strings read back from the file; only lines turned down by their head are
    left out."""
    rendered = [_render(line, ascii_only, compact) for line, ascii_only, compact in lines]
    data = (b"\n" * (1 + blank_lines)).join(rendered) + (
        b"\n" if final_newline and rendered else b""
    )
    # The head names a line's kind only when "type" comes first and unspaced.
    expected = [json.loads(raw) for raw in rendered if not raw.startswith(b'{"type":"skip"')]

    blob_file = io.BytesIO(data)
    got = [
        _resolve(value, FileStrings(blob_file, blobs))
        for value, blobs in LogLines(
            _Trickle(data, step), lambda kind, _ptype: kind != b"skip", sizes
        )
    ]

    assert got == expected
