"""The real codex CLI run offline against MockOpenAI: what each scenario looks like from outside.

These tests pin down the facts the daemon relies on (exit codes, --json events, session log shapes),
so a codex upgrade that changes them fails here first.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CODEX_VERSION
from tests.support.codex_home import codex_env, make_codex_home
from tests.support.mock_openai import (
    ASSISTANT_TEXT_ONLY,
    MockOpenAI,
    Scenario,
    ToolKind,
    make_png,
    offered_tool,
    referenced_paths,
    user_prompt,
)
from tests.support.procs import wait_for

RUN_TIMEOUT_SEC = 60.0
# Quotes, non-ASCII, U+2028 and surrounding whitespace: all must reach the model untouched.
TRICKY_PROMPT = '  A "red" square — on white,\u2028with a caption: 100% ✓.\n\n'


@dataclass(frozen=True, slots=True)
class CodexRun:
    """What one `codex exec --json` run left behind."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    @property
    def thread_id(self) -> str:
        assert self.events, "codex printed no event"
        assert self.events[0]["type"] == "thread.started", self.events
        return str(self.events[0]["thread_id"])

    @property
    def event_types(self) -> list[str]:
        return [e["type"] for e in self.events]


def codex_argv(codex_bin: Path, workdir: Path, refs: tuple[Path, ...] = ()) -> list[str]:
    """The argv the daemon uses, with `-i` references and the prompt left to stdin."""
    argv = [str(codex_bin), "exec", "--skip-git-repo-check", "--sandbox", "read-only"]
    argv += ["--color", "never", "--enable", "image_generation", "--json", "-C", str(workdir)]
    for ref in refs:
        argv += ["-i", str(ref)]
    return argv


def start_codex(
    codex_bin: Path, home: Path, port: int, workdir: Path, prompt: str, refs: tuple[Path, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start codex in its own process group, the prompt on stdin up to EOF."""
    workdir.mkdir(exist_ok=True)
    # A file as stdin gives codex the exact bytes and then EOF, like a pipe closed after writing.
    prompt_file = workdir.parent / "prompt.txt"
    prompt_file.write_bytes(prompt.encode("utf-8"))
    with prompt_file.open("rb") as stdin:
        return subprocess.Popen(
            codex_argv(codex_bin, workdir, refs),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=codex_env(port, codex_home=home),
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes], grace_sec: float = 10.0) -> None:
    """SIGTERM the whole process group, then SIGKILL it if it outlives the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_sec)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(
    proc: subprocess.Popen[bytes], started: float, timeout: float = RUN_TIMEOUT_SEC
) -> CodexRun:
    """Collect a run's output; a run that outlives the timeout is killed and fails the test."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        pytest.fail(f"codex did not finish within {timeout} s")
    events = [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]
    return CodexRun(
        proc.returncode, events, stderr.decode("utf-8", "replace"), time.monotonic() - started
    )


@pytest.fixture
def run_codex(
    codex_bin: Path, codex_home: Path, mock_openai: MockOpenAI, tmp_path: Path
) -> Callable[..., CodexRun]:
    """Run codex to completion against the mock: run_codex(prompt, refs=(), home=codex_home)."""

    def run(
        prompt: str = "A red square.\n", refs: tuple[Path, ...] = (), home: Path = codex_home
    ) -> CodexRun:
        started = time.monotonic()
        proc = start_codex(codex_bin, home, mock_openai.port, tmp_path / "work", prompt, refs)
        return finish(proc, started)

    return run


def rollout_path(home: Path, thread_id: str) -> Path:
    """The one session log of this thread under $CODEX_HOME/sessions/YYYY/MM/DD/."""
    found = list(
        (home / "sessions").glob(
            f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/rollout-*-{thread_id}.jsonl"
        )
    )
    assert len(found) == 1, found
    return found[0]


def rollout_lines(path: Path) -> list[dict[str, Any]]:
    """Parse a session log, splitting on \\n only (JSON strings may hold U+2028)."""
    return [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw.strip()]


def payloads(lines: list[dict[str, Any]], payload_type: str) -> list[dict[str, Any]]:
    """Payloads of the given payload type, in order."""
    return [line["payload"] for line in lines if line["payload"].get("type") == payload_type]


def image_items(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Extension `image_gen.generation` items of 0.150+ session logs."""
    items = [p["item"] for p in payloads(lines, "item_completed")]
    return [
        i for i in items if i.get("type") == "Extension" and i.get("kind") == "image_gen.generation"
    ]


def task_complete(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The turn's task_complete payload, which is the log's last line."""
    assert lines[-1]["payload"]["type"] == "task_complete", lines[-1]
    return lines[-1]["payload"]


def generated_files(home: Path, thread_id: str) -> list[Path]:
    """Files codex saved under generated_images/<thread_id>/."""
    folder = home / "generated_images" / thread_id
    return sorted(folder.iterdir()) if folder.is_dir() else []


# -- successful turns ------------------------------------------------------------------------------


@pytest.mark.real_codex
def test_image_turn_writes_image_to_session_log_and_disk(
    run_codex, codex_home, mock_openai
) -> None:
    """An image turn exits 0, and the mock's PNG is in the session log and in generated_images/."""
    run = run_codex(TRICKY_PROMPT)

    assert run.returncode == 0, run.stderr
    assert run.event_types == ["thread.started", "turn.started", "item.completed", "turn.completed"]
    assert run.events[2]["item"]["type"] == "agent_message"
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    assert lines[0]["type"] == "session_meta"
    assert lines[0]["payload"]["id"] == run.thread_id
    assert lines[0]["payload"]["cli_version"] == CODEX_VERSION
    [item] = image_items(lines)
    assert item["status"] == "completed"
    assert base64.b64decode(item["result"]) == mock_openai.image_bytes
    [saved] = generated_files(codex_home, run.thread_id)
    assert saved.read_bytes() == mock_openai.image_bytes
    assert item["savedPath"] == str(saved)
    assert "error" not in task_complete(lines)


@pytest.mark.real_codex
def test_prompt_reaches_model_and_image_api_byte_for_byte(run_codex, mock_openai) -> None:
    """The stdin prompt arrives unchanged at /v1/responses and, via the tool, at the Images API."""
    run_codex(TRICKY_PROMPT)

    assert mock_openai.user_prompts()[0] == TRICKY_PROMPT
    [generation] = mock_openai.requests_to("/v1/images/generations")
    assert generation.json["prompt"] == TRICKY_PROMPT
    assert generation.json["model"] == "gpt-image-2"


@pytest.mark.real_codex
def test_reference_image_goes_to_the_edits_endpoint(
    run_codex, codex_home, mock_openai, tmp_path
) -> None:
    """A `-i` reference is sent to /v1/images/edits and recorded as an input image of the result."""
    ref = tmp_path / "reference.png"
    ref.write_bytes(make_png((32, 32), (0, 0, 200)))

    run = run_codex("Make it red.\n", refs=(ref,))

    assert run.returncode == 0, run.stderr
    [edit] = mock_openai.requests_to("/v1/images/edits")
    [sent] = edit.json["images"]
    assert base64.b64decode(sent["image_url"].split(",", 1)[1]) == ref.read_bytes()
    assert mock_openai.user_prompts()[0] == "Make it red.\n"
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    [item] = image_items(lines)
    assert base64.b64decode(item["result"]) == mock_openai.image_bytes
    assert [i["path"] for i in item["inputImages"]] == [str(ref)]


@pytest.mark.real_codex
def test_two_image_calls_in_one_turn_leave_two_images(run_codex, codex_home, mock_openai) -> None:
    """Two image tool calls in one turn give two completed items and two files."""
    mock_openai.images_per_call = 2

    run = run_codex()

    assert run.returncode == 0, run.stderr
    items = image_items(rollout_lines(rollout_path(codex_home, run.thread_id)))
    assert [i["status"] for i in items] == ["completed", "completed"]
    assert len({i["id"] for i in items}) == 2
    assert len(generated_files(codex_home, run.thread_id)) == 2
    assert len(mock_openai.requests_to("/v1/images/generations")) == 2


@pytest.mark.real_codex
def test_text_only_answer_exits_zero_without_image(run_codex, codex_home, mock_openai) -> None:
    """A model that only answers in text still exits 0, with no image anywhere."""
    mock_openai.scenario = Scenario.TEXT_ONLY

    run = run_codex()

    assert run.returncode == 0, run.stderr
    assert run.events[2]["item"] == {
        "id": "item_0",
        "type": "agent_message",
        "text": ASSISTANT_TEXT_ONLY,
    }
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    assert image_items(lines) == []
    assert generated_files(codex_home, run.thread_id) == []
    assert task_complete(lines)["last_agent_message"] == ASSISTANT_TEXT_ONLY


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.real_codex
def test_refused_generation_exits_zero_with_failed_item(run_codex, codex_home, mock_openai) -> None:
    """A moderation refusal exits 0; a failed item, the reason only in the following tool output."""
    mock_openai.scenario = Scenario.REFUSE

    run = run_codex()

    assert run.returncode == 0, run.stderr
    assert run.event_types[-1] == "turn.completed"
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    [item] = image_items(lines)
    assert (item["status"], item["result"], item["failure"]) == ("failed", "", None)
    [output] = payloads(lines, "custom_tool_call_output")
    reason = output["output"][-1]["text"]
    assert "image generation failed: http 400" in reason
    assert "moderation_blocked" in reason
    assert generated_files(codex_home, run.thread_id) == []
    assert "error" not in task_complete(lines)


@pytest.mark.real_codex
def test_usage_limit_exits_one_with_try_again_time(run_codex, codex_home, mock_openai) -> None:
    """A 429 usage_limit_reached fails the turn with codex's usage-limit sentence and its kind."""
    mock_openai.scenario = Scenario.USAGE_LIMIT

    run = run_codex()

    assert run.returncode == 1
    assert run.event_types == ["thread.started", "turn.started", "error", "turn.failed"]
    message = run.events[-1]["error"]["message"]
    assert message.startswith("You\u2019ve hit your usage limit.")
    assert " try again at " in message
    error = task_complete(rollout_lines(rollout_path(codex_home, run.thread_id)))["error"]
    assert error == {"message": message, "codex_error_info": "usage_limit_exceeded"}


@pytest.mark.real_codex
def test_image_limit_exits_zero_with_a_typed_failed_item(
    run_codex, codex_home, mock_openai
) -> None:
    """The images endpoint's 429 usage_limit_reached (x-codex-active-limit: image_gen): one
    images request, exit 0, a failed item typed usageLimitExceeded with the mock's resets_at."""
    mock_openai.scenario = Scenario.IMAGE_LIMIT

    run = run_codex()

    assert run.returncode == 0, run.stderr
    assert run.event_types[-1] == "turn.completed"
    assert len(mock_openai.image_requests()) == 1
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    [item] = image_items(lines)
    assert (item["status"], item["result"]) == ("failed", "")
    assert item["failure"] == {
        "type": "usageLimitExceeded",
        "limitId": "image_gen",
        "resetsAt": mock_openai.image_limit_resets_at(),
    }
    [output] = payloads(lines, "custom_tool_call_output")
    reason = output["output"][-1]["text"]
    assert "image generation failed: http 429 Too Many Requests" in reason
    assert "usage_limit_reached" in reason
    assert "resets_at" in reason
    assert generated_files(codex_home, run.thread_id) == []
    assert "error" not in task_complete(lines)


@pytest.mark.real_codex
@pytest.mark.parametrize(
    ("scenario", "message_start", "kind"),
    [
        (
            Scenario.SERVER_ERROR,
            "We\u2019re currently experiencing high demand",
            "internal_server_error",
        ),
        (
            Scenario.UNAUTHORIZED,
            "unexpected status 401 Unauthorized: Invalid token",
            {"http_connection_failed": {"http_status_code": 401}},
        ),
        (
            Scenario.LOGIN_EXPIRED,
            "Your access token could not be refreshed because your refresh token has expired.",
            "unauthorized",
        ),
    ],
)
def test_turn_errors_exit_one(
    run_codex, codex_home, mock_openai, scenario, message_start, kind
) -> None:
    """Server and login failures exit 1 with a turn.failed message and a codex_error_info kind."""
    mock_openai.scenario = scenario

    run = run_codex()

    assert run.returncode == 1
    assert run.event_types[-1] == "turn.failed"
    message = run.events[-1]["error"]["message"]
    assert message.startswith(message_start)
    error = task_complete(rollout_lines(rollout_path(codex_home, run.thread_id)))["error"]
    assert error["message"] == message
    assert error["codex_error_info"] == kind


@pytest.mark.real_codex
def test_logged_out_home_offers_no_image_tool_and_exits_one(
    run_codex, mock_openai, tmp_path
) -> None:
    """Without auth.json codex sends no token and no image tool; the 401 fails the turn."""
    home = make_codex_home(tmp_path / "logged-out", port=mock_openai.port, logged_out=True)

    run = run_codex(home=home)

    assert run.returncode == 1
    message = run.events[-1]["error"]["message"]
    assert message.startswith("unexpected status 401 Unauthorized: Missing bearer")
    [request] = mock_openai.requests_to("/v1/responses")
    assert "Authorization" not in request.headers
    assert offered_tool(request.json) is ToolKind.NONE
    assert mock_openai.image_requests() == []


@pytest.mark.real_codex
@pytest.mark.parametrize(
    ("logged_out", "code", "answer"),
    [(False, 0, "Logged in using ChatGPT"), (True, 1, "Not logged in")],
)
def test_login_status_answers_on_stderr(codex_bin, tmp_path, logged_out, code, answer) -> None:
    """`codex login status` exits 0/1 and prints its answer on stderr, nothing on stdout."""
    home = make_codex_home(tmp_path / "home", port=1, logged_out=logged_out)

    result = subprocess.run(
        [str(codex_bin), "login", "status"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=codex_env(1, codex_home=home),
        timeout=RUN_TIMEOUT_SEC,
        check=False,
    )

    assert result.returncode == code
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == answer


@pytest.mark.real_codex
def test_hanging_server_needs_caller_timeout(codex_bin, codex_home, mock_openai, tmp_path) -> None:
    """A server that never answers keeps codex running; SIGTERM to its group ends it promptly."""
    mock_openai.scenario = Scenario.HANG
    started = time.monotonic()
    proc = start_codex(
        codex_bin, codex_home, mock_openai.port, tmp_path / "work", "A red square.\n"
    )
    try:
        wait_for(lambda: mock_openai.requests_to("/v1/responses"), what="codex asks the mock")
        time.sleep(2.0)  # codex is now waiting on a reply that never comes; it must still be alive
        assert proc.poll() is None
    finally:
        kill_group(proc)
    run = finish(proc, started, timeout=15)

    assert run.returncode != 0
    assert run.event_types[:2] == ["thread.started", "turn.started"]
    lines = rollout_lines(rollout_path(codex_home, run.thread_id))
    assert all(line["payload"].get("type") != "task_complete" for line in lines)


# -- the mock's model side for older releases (no codex needed) ------------------------------------


def _request(tools: list[dict[str, Any]], text: str) -> dict[str, Any]:
    tag = '<image name=[Image #1] path="/abs/ref \\"1\\".png">'
    content = [{"type": "input_text", "text": tag}, {"type": "input_text", "text": "</image>"}]
    content.append({"type": "input_text", "text": text})
    return {"tools": tools, "input": [{"type": "message", "role": "user", "content": content}]}


def test_hosted_tool_request_gets_image_generation_call() -> None:
    """A request offering the hosted tool (codex <= 0.142) gets an image_generation_call."""
    body = _request([{"type": "image_generation"}], "draw")
    mock = MockOpenAI(image_bytes=b"\x89PNG fake")

    status, events = mock.responses_reply(body)

    assert offered_tool(body) is ToolKind.HOSTED
    assert status == 200
    item = events[1]["item"]
    assert (item["type"], base64.b64decode(item["result"])) == (
        "image_generation_call",
        b"\x89PNG fake",
    )
    assert events[-1] == {**events[-1], "type": "response.completed"}
    assert events[-1]["response"]["id"]


def test_namespace_tool_request_gets_function_call_with_references() -> None:
    """A request offering the image_gen namespace gets a function call carrying the -i paths."""
    tools = [
        {
            "type": "namespace",
            "name": "image_gen",
            "tools": [{"type": "function", "name": "imagegen"}],
        }
    ]
    body = _request(tools, "draw it")

    _status, events = MockOpenAI().responses_reply(body)

    assert offered_tool(body) is ToolKind.NAMESPACE
    item = events[1]["item"]
    assert (item["type"], item["namespace"], item["name"]) == (
        "function_call",
        "image_gen",
        "imagegen",
    )
    assert json.loads(item["arguments"]) == {
        "prompt": "draw it",
        "referenced_image_paths": ['/abs/ref "1".png'],
    }
    assert referenced_paths(body) == ['/abs/ref "1".png']
    assert user_prompt(body) == "draw it"


def test_stop_returns_while_a_request_hangs() -> None:
    """Stopping the mock releases a hanging /v1/responses handler instead of blocking."""
    import http.client

    mock = MockOpenAI(Scenario.HANG).start()
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=30)
    conn.request("POST", "/v1/responses", body=b"{}", headers={"Content-Type": "application/json"})
    wait_for(lambda: mock.requests_to("/v1/responses"), timeout=10, what="codex asks the mock")
    started = time.monotonic()
    mock.stop()

    assert time.monotonic() - started < 5
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.getresponse()
    conn.close()
