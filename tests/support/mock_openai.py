"""A local stand-in for the OpenAI Responses and Images APIs that the real codex CLI can talk to.

It plays both the model (answering /v1/responses with SSE) and the image service, and records every
request so tests can check what codex sent.
"""

from __future__ import annotations

import base64
import enum
import io
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from tests.support.codex_home import fake_jwt


class Scenario(str, enum.Enum):
    """How the mock behaves for the next codex run."""

    IMAGE = "image"  # the model calls the image tool; the images endpoint returns a PNG
    REFUSE = "refuse"  # the images endpoint answers 400 moderation_blocked
    USAGE_LIMIT = "usage_limit"  # /v1/responses answers 429 usage_limit_reached
    # The images endpoints answer 429 usage_limit_reached with `x-codex-active-limit: image_gen`:
    # the plan's image limit, which codex reports inside a normally ended turn.
    IMAGE_LIMIT = "image_limit"
    TEXT_ONLY = "text_only"  # the model answers with text and no tool call
    HANG = "hang"  # /v1/responses never sends headers until the server stops
    SERVER_ERROR = "server_error"  # /v1/responses answers 500
    UNAUTHORIZED = "unauthorized"  # /v1/responses answers 401 (token refresh succeeds)
    LOGIN_EXPIRED = "login_expired"  # /v1/responses answers 401 and the token refresh fails too


class ToolKind(str, enum.Enum):
    """Which image tool a /v1/responses request offered the model."""

    HOSTED = "hosted"  # {"type": "image_generation"} (codex <= 0.142)
    NAMESPACE = "namespace"  # function `imagegen` in namespace `image_gen`
    CODE_MODE = "code_mode"  # custom tool `exec` whose description mentions image_gen__imagegen
    NONE = "none"


ASSISTANT_DONE_TEXT = "Here is your image."
ASSISTANT_FAILED_TEXT = "The image could not be generated."
ASSISTANT_TEXT_ONLY = "I can only describe it: a small red square."
REVISED_PROMPT = "A revised prompt from the mock."
MODERATION_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, contact us."
)
MISSING_AUTH_BODY = {
    "error": {
        "message": "Missing bearer or basic authentication in header",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
# The instruction line saying how many images a run is to make, as a model would read it.
_COUNT_LINE = re.compile(r"^Make (\d+) (?:separate )?images? for this request", re.MULTILINE)
_IMAGE_TAG = re.compile(r'<image name=\[Image #\d+\] path="((?:[^"\\]|\\.)*)">')
# The daemon's instruction lines before the request, as a model that follows them reads them.
_TRANSPARENT_ASKED = "transparent_background: true"
_OWN_LINE_ASKED = re.compile(r'this one line of your own: "([^"\n]*)"')
_TOOL_OUTPUT_TYPES = {"function_call_output", "custom_tool_call_output"}


def make_png(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A solid-colour PNG of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_transparent_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """An RGBA PNG: a transparent background around an opaque square in the middle."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    width, height = size
    image.paste((30, 30, 200, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The plan's usage as the mock reports it in response headers, one window per family."""

    primary_used_percent: float = 42.0
    primary_window_minutes: int = 300
    secondary_used_percent: float = 12.0
    secondary_window_minutes: int = 10080
    image_used_percent: float = 80.0
    image_window_minutes: int = 1440
    resets_in_sec: int = 3600
    # Also send the image family on /v1/responses. codex 0.171 records rate limits only from
    # /v1/responses headers (never from the images endpoints'), one family per token_count:
    # with this set, the image family's.
    image_family_on_responses: bool = False

    def responses_headers(self, now: float) -> dict[str, str]:
        """The headers /v1/responses answers carry."""
        headers = self.codex_headers(now)
        if self.image_family_on_responses:
            headers.update(self.image_headers(now))
        return headers

    def codex_headers(self, now: float) -> dict[str, str]:
        """The chat limits' headers."""
        return {
            **_window_headers(
                "x-codex-primary",
                self.primary_used_percent,
                self.primary_window_minutes,
                now + self.resets_in_sec,
            ),
            **_window_headers(
                "x-codex-secondary",
                self.secondary_used_percent,
                self.secondary_window_minutes,
                now + 7 * 24 * 3600,
            ),
        }

    def image_headers(self, now: float) -> dict[str, str]:
        """The image limit's headers, as the images endpoints' answers carry them."""
        return _window_headers(
            "x-image-gen-primary",
            self.image_used_percent,
            self.image_window_minutes,
            now + self.resets_in_sec,
        )


def _window_headers(prefix: str, used: float, window: int, resets_at: float) -> dict[str, str]:
    return {
        f"{prefix}-used-percent": f"{used:g}",
        f"{prefix}-window-minutes": str(window),
        f"{prefix}-reset-at": str(int(resets_at)),
    }


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request the mock received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON


class MockOpenAI:
    """ThreadingHTTPServer on 127.0.0.1 with an ephemeral port; use as a context manager."""

    def __init__(
        self,
        scenario: Scenario | str = Scenario.IMAGE,
        *,
        image_bytes: bytes | None = None,
        image_size: tuple[int, int] = (64, 64),
        resets_in_sec: int = 3600,
        images_per_call: int = 1,
        rate_limits: RateLimits | None = None,
        image_limit_after: int | None = None,
    ) -> None:
        self.scenario = Scenario(scenario)
        self.images_per_call = images_per_call
        # With a number, the images endpoints answer that many requests, then the image limit.
        self.image_limit_after = image_limit_after
        self._images_served = 0
        self._image_bytes = image_bytes if image_bytes is not None else make_png(image_size)
        self.image_size = image_size
        self._own_image = image_bytes is not None
        # What the images endpoint returns when codex asks for `background: "transparent"`.
        self.transparent_image_bytes = make_transparent_png(image_size)
        self.resets_in_sec = resets_in_sec
        # The plan's rate limits as real servers report them in response headers; None sends none.
        self.rate_limits = rate_limits
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._sent_resets_at: list[int] = []
        self._response_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def image_bytes(self) -> bytes:
        """The picture the images endpoint answers with; set by a test, it is every answer."""
        return self._image_bytes

    @image_bytes.setter
    def image_bytes(self, value: bytes) -> None:
        self._image_bytes = value
        self._own_image = True

    @property
    def scenario(self) -> Scenario:
        """The behaviour for the next requests; accepts a Scenario or its string value."""
        return self._scenario

    @scenario.setter
    def scenario(self, value: Scenario | str) -> None:
        self._scenario = Scenario(value)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MockOpenAI:
        """Bind 127.0.0.1:0 and serve in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, name="mock-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging handlers, stop serving and close the socket."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> MockOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "MockOpenAI is not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The provider base_url codex is configured with."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what codex sent -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Requests whose path (without query) equals path."""
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def clear(self) -> None:
        """Forget recorded requests (between runs of one test)."""
        with self._lock:
            self._requests.clear()

    def user_prompts(self) -> list[str]:
        """The user's prompt as each /v1/responses request carried it, byte for byte."""
        return [
            prompt for r in self.requests_to("/v1/responses") if (prompt := user_prompt(r.json))
        ]

    def image_requests(self) -> list[RecordedRequest]:
        """Requests codex made to the Images API (generations and edits)."""
        return [r for r in self.requests if r.path.startswith("/v1/images/")]

    def image_bodies(self) -> list[dict[str, Any]]:
        """The JSON body of each Images API request, in order (what codex asked the tool for)."""
        return [r.json for r in self.image_requests() if isinstance(r.json, dict)]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- model behaviour -------------------------------------------------------------------------

    def responses_reply(self, body: Any) -> tuple[int, Any]:
        """(status, payload) for a /v1/responses request: a list of SSE events, or an error body."""
        scenario = self.scenario
        if scenario is Scenario.USAGE_LIMIT:
            return 429, self.usage_limit_body()
        if scenario is Scenario.SERVER_ERROR:
            return 500, {"error": {"message": "mock internal error", "type": "server_error"}}
        if scenario in (Scenario.UNAUTHORIZED, Scenario.LOGIN_EXPIRED):
            return 401, {"error": {"message": "Invalid token", "code": "invalid_token"}}
        items = list(body.get("input", [])) if isinstance(body, dict) else []
        if scenario is Scenario.TEXT_ONLY:
            return 200, self._sse([assistant_message(ASSISTANT_TEXT_ONLY)])
        if _has_tool_output(items):
            failed = "image generation failed" in json.dumps(items[-1])
            return 200, self._sse(
                [assistant_message(ASSISTANT_FAILED_TEXT if failed else ASSISTANT_DONE_TEXT)]
            )
        return 200, self._sse([self._image_call(body)])

    def usage_limit_body(self) -> dict[str, Any]:
        """The 429 body codex turns into "You've hit your usage limit ... try again at <time>"
        (from /v1/responses), or into a failed image item (from the images endpoints)."""
        resets_at = int(time.time()) + self.resets_in_sec
        with self._lock:
            self._sent_resets_at.append(resets_at)
        return {
            "error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "plus",
                "resets_at": resets_at,
                "resets_in_seconds": self.resets_in_sec,
            }
        }

    def image_limit_resets_at(self) -> int:
        """The `resets_at` (epoch seconds) of the last usage-limit answer the mock sent."""
        with self._lock:
            assert self._sent_resets_at, "the mock sent no usage-limit answer"
            return self._sent_resets_at[-1]

    def _image_call(self, body: dict[str, Any]) -> dict[str, Any]:
        # Like a model that follows the instruction: the tool gets the request between the markers,
        # and whatever the instruction lines before them ask of the call (how many calls too).
        text = user_prompt(body) or "an image"
        prompt = request_between_markers(text) + own_line(text)
        transparent = _TRANSPARENT_ASKED in instruction_lines(text)
        refs = referenced_paths(body)
        kind = offered_tool(body)
        if kind is ToolKind.CODE_MODE:
            count = asked_count(text) or self.images_per_call
            return code_mode_call(prompt, refs, count, transparent=transparent)
        if kind is ToolKind.NAMESPACE:
            args: dict[str, Any] = {"prompt": prompt}
            if refs:
                args["referenced_image_paths"] = refs
            if transparent:
                args["transparent_background"] = True
            return {
                "type": "function_call",
                "namespace": "image_gen",
                "name": "imagegen",
                "call_id": "call_mock1",
                "arguments": json.dumps(args),
            }
        if kind is ToolKind.HOSTED:
            return self._hosted_call()
        return assistant_message("No image tool was offered.")

    def _hosted_call(self) -> dict[str, Any]:
        if self.scenario is Scenario.REFUSE:
            return {
                "type": "image_generation_call",
                "id": "ig_mock1",
                "status": "failed",
                "result": None,
            }
        return {
            "type": "image_generation_call",
            "id": "ig_mock1",
            "status": "completed",
            "revised_prompt": REVISED_PROMPT,
            "result": base64.b64encode(self.image_bytes).decode("ascii"),
        }

    def _sse(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            response_id = f"resp_mock{next(self._response_ids)}"
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {"id": response_id}},
        ]
        for index, item in enumerate(items):
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
        events.append(
            {
                "type": "response.completed",
                "response": {
                    "id": response_id,
                    "usage": {
                        "input_tokens": 10,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": 5,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": 15,
                    },
                },
            }
        )
        return events

    def token_reply(self) -> tuple[int, Any]:
        """(status, JSON body) for a token refresh; LOGIN_EXPIRED rejects the refresh token."""
        if self.scenario is Scenario.LOGIN_EXPIRED:
            return 401, {
                "error": {"code": "refresh_token_expired", "message": "Refresh token expired"}
            }
        token = fake_jwt()
        return 200, {"id_token": token, "access_token": token, "refresh_token": "x"}

    def served_image(self, n: int) -> bytes:
        """The image of the images endpoint's `n`-th answer (from 0): `image_bytes` first, then,
        like a real model, a different picture each time (unless the test chose the bytes)."""
        if n == 0 or self._own_image:
            return self.image_bytes
        return make_png(self.image_size, color=(200, 30, (30 + 40 * n) % 256))

    def _at_image_limit(self) -> bool:
        if self.scenario is Scenario.IMAGE_LIMIT:
            return True
        with self._lock:
            return self.image_limit_after is not None and (
                self._images_served >= self.image_limit_after
            )

    def images_headers(self) -> dict[str, str]:
        """Extra response headers for /v1/images/generations and /v1/images/edits."""
        headers = {}
        if self.rate_limits is not None:
            headers.update(self.rate_limits.image_headers(time.time()))
        if self._at_image_limit():
            headers["x-codex-active-limit"] = "image_gen"
        return headers

    def responses_headers(self) -> dict[str, str]:
        """Extra response headers for /v1/responses (its SSE stream and its errors alike)."""
        if self.rate_limits is None:
            return {}
        return self.rate_limits.responses_headers(time.time())

    def images_reply(self, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body) for /v1/images/generations and /v1/images/edits; an image with
        transparent pixels when the request asks for `background: "transparent"`."""
        if self._at_image_limit():
            return 429, self.usage_limit_body()
        if self.scenario is Scenario.REFUSE:
            return 400, {
                "error": {
                    "message": MODERATION_MESSAGE,
                    "type": "image_generation_user_error",
                    "param": None,
                    "code": "moderation_blocked",
                }
            }
        with self._lock:
            served = self._images_served
            self._images_served += 1
        transparent = isinstance(body, dict) and body.get("background") == "transparent"
        image = self.transparent_image_bytes if transparent else self.served_image(served)
        return 200, {
            "created": int(time.time()),
            "data": [
                {
                    "b64_json": base64.b64encode(image).decode("ascii"),
                    "revised_prompt": REVISED_PROMPT,
                }
            ],
        }


# -- request inspection (pure) ---------------------------------------------------------------------


def _offered_tools(body: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """Every (namespace, tool) offered: top-level `tools` and 0.169's `additional_tools` items."""
    groups: list[Any] = [body.get("tools") or []]
    groups += [
        i.get("tools") or []
        for i in body.get("input", [])
        if isinstance(i, dict) and i.get("type") == "additional_tools"
    ]
    found: list[tuple[str | None, dict[str, Any]]] = []

    def walk(tools: list[Any], namespace: str | None) -> None:
        for tool in tools:
            if isinstance(tool, dict):
                found.append((namespace, tool))
                if tool.get("type") == "namespace":
                    walk(tool.get("tools") or [], tool.get("name"))

    for group in groups:
        walk(group, None)
    return found


def offered_tool(body: dict[str, Any]) -> ToolKind:
    """Which image tool the request offers; code-mode `exec` wins, as 0.169 calls it from there."""
    tools = _offered_tools(body)
    if any(
        t.get("type") == "custom"
        and t.get("name") == "exec"
        and "image_gen__imagegen" in json.dumps(t)
        for _, t in tools
    ):
        return ToolKind.CODE_MODE
    if any(
        ns == "image_gen" or (t.get("type") == "namespace" and t.get("name") == "image_gen")
        for ns, t in tools
    ):
        return ToolKind.NAMESPACE
    if any(t.get("type") == "image_generation" for _, t in tools):
        return ToolKind.HOSTED
    return ToolKind.NONE


def asked_count(text: str) -> int | None:
    """How many images the instruction before the request asks for; None when it does not say."""
    head, _, _ = text.partition("<<<REQUEST\n")
    match = _COUNT_LINE.search(head)
    return int(match[1]) if match else None


def request_between_markers(text: str) -> str:
    """The request inside "<<<REQUEST\n…\nREQUEST>>>", or the whole text when unmarked."""
    _, marker, rest = text.partition("<<<REQUEST\n")
    if not marker:
        return text
    request, end, _ = rest.rpartition("\nREQUEST>>>")
    return request if end else text


def instruction_lines(text: str) -> str:
    """The daemon's instruction text before the request's start marker ("" when unmarked)."""
    head, marker, _ = text.partition("<<<REQUEST\n")
    return head if marker else ""


def own_line(text: str) -> str:
    """The line the instruction asks the model to add after the request ("\n" + it), or ""."""
    asked = _OWN_LINE_ASKED.search(instruction_lines(text))
    return f"\n{asked.group(1)}" if asked else ""


def _user_messages(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [
        item
        for item in body.get("input", [])
        if isinstance(item, dict)
        and item.get("type", "message") == "message"
        and item.get("role") == "user"
    ]


def _texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content", [])
    if isinstance(content, str):
        return [content]
    return [
        c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "input_text"
    ]


def _is_context_text(text: str) -> bool:
    # codex sends its environment context and instructions as user messages wrapped in tags.
    stripped = text.lstrip()
    return stripped.startswith(
        ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<permissions")
    )


def user_texts(body: Any) -> list[str]:
    """Every input_text of the last user message, in order (image tags and placeholders too)."""
    messages = [m for m in _user_messages(body) if not all(_is_context_text(t) for t in _texts(m))]
    return _texts(messages[-1]) if messages else []


def user_prompt(body: Any) -> str | None:
    """The user's own prompt: the last text of the last user message that is not an image tag."""
    texts = [t for t in user_texts(body) if not _IMAGE_TAG.fullmatch(t) and t != "</image>"]
    return texts[-1] if texts else None


def referenced_paths(body: Any) -> list[str]:
    """The `path="..."` values of `-i` image tags in the user's messages, in order."""
    paths: list[str] = []
    for message in _user_messages(body):
        for text in _texts(message):
            paths.extend(json.loads(f'"{m}"') for m in _IMAGE_TAG.findall(text))
    return paths


def _has_tool_output(items: list[Any]) -> bool:
    """True when the model's last tool call already has its output (the turn should end)."""
    return any(isinstance(i, dict) and i.get("type") in _TOOL_OUTPUT_TYPES for i in items)


def assistant_message(text: str) -> dict[str, Any]:
    """A Responses-API assistant message output item."""
    return {
        "type": "message",
        "role": "assistant",
        "id": "msg_mock",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def code_mode_call(
    prompt: str, refs: list[str], count: int = 1, *, transparent: bool = False
) -> dict[str, Any]:
    """A code-mode `exec` call whose JavaScript calls the image tool `count` times."""
    args: dict[str, Any] = {"prompt": prompt}
    if refs:
        args["referenced_image_paths"] = refs
    if transparent:
        args["transparent_background"] = True
    # JSON is valid JavaScript for an object literal, so the prompt needs no other escaping.
    call = f"await tools.image_gen__imagegen({json.dumps(args)})"
    source = "".join(f"const r{n} = {call};\ngeneratedImage(r{n});\n" for n in range(count))
    return {
        "type": "custom_tool_call",
        "id": "ctc_mock1",
        "call_id": "call_mock1",
        "name": "exec",
        "input": source,
        "status": "completed",
    }


# -- HTTP plumbing ---------------------------------------------------------------------------------


def _make_handler(mock: MockOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = mock

    return Handler


class _Handler(BaseHTTPRequestHandler):
    owner: MockOpenAI
    protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _read(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None  # multipart image edits, compressed bodies
        request = RecordedRequest(self.command, self.path, dict(self.headers.items()), raw, parsed)
        self.owner._record(request)
        return request

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: list[dict[str, Any]], headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event in events:
            self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()

    def do_GET(self) -> None:
        self._read()
        path = self.path.split("?", 1)[0]
        if path == "/v1/models":
            self._send_json(200, {"models": []})
        else:
            self._send_json(404, {"error": {"message": f"not found: {path}"}})

    def do_POST(self) -> None:
        request = self._read()
        path = self.path.split("?", 1)[0]
        if path == "/v1/responses":
            self._responses(request)
        elif path in ("/v1/images/generations", "/v1/images/edits"):
            headers = self.owner.images_headers()  # before the reply, which counts the image
            self._send_json(*self.owner.images_reply(request.json), headers)
        elif path == "/oauth/token":
            self._send_json(*self.owner.token_reply())
        else:
            self._send_json(404, {"error": {"message": f"not found: {path}"}})

    def _responses(self, request: RecordedRequest) -> None:
        if self.owner.scenario is Scenario.HANG:
            # Hold the connection without a status line until the mock stops.
            self.owner._stopping.wait()
            self.close_connection = True
            return
        if not self.headers.get("Authorization"):
            # What api.openai.com says to a logged-out codex (no bearer token at all).
            self._send_json(401, MISSING_AUTH_BODY)
            return
        status, payload = self.owner.responses_reply(request.json)
        headers = self.owner.responses_headers()
        if status == 200:
            self._send_sse(payload, headers)
        else:
            self._send_json(status, payload, headers)
