"""Write codex session logs (rollout JSONL) in the shape each codex release family uses.

Standard library only: the fake codex program imports this module with the system python3.
"""

from __future__ import annotations

import base64
import enum
import json
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

USAGE_LIMIT_MESSAGE = (
    "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), "
    "visit https://chatgpt.com/settings/usage to purchase more credits "
    "or try again at 5:46 PM."
)
# As 0.169 words it in the tool output that follows a failed generation.
MODERATION_FAILURE = (
    'image generation failed: http 400 Bad Request: Some("{\\"error\\": {\\"message\\": '
    '\\"Your request was rejected by the safety system.\\", \\"type\\": '
    '\\"image_generation_user_error\\", \\"param\\": null, \\"code\\": '
    '\\"moderation_blocked\\"}}")'
)


class Shape(str, enum.Enum):
    """Where a release family puts the generated image in its session log."""

    HOSTED_CALL = "0.111"  # response_item image_generation_call only
    HOSTED_BOTH = "0.117-0.142"  # event_msg image_generation_end AND image_generation_call
    EXEC_END = "0.144-0.145"  # event_msg image_generation_end with exec-<uuid> ids
    EXTENSION = "0.150-0.169"  # event_msg item_completed, item type Extension


def shape_for(version: str) -> Shape:
    """The log shape written by codex `version` ("0.169.0")."""
    minor = int(version.split(".")[1])
    if minor < 117:
        return Shape.HOSTED_CALL
    if minor < 144:
        return Shape.HOSTED_BOTH
    if minor < 150:
        return Shape.EXEC_END
    return Shape.EXTENSION


def tiny_png(seed: int = 0) -> bytes:
    """A valid 1x1 RGB PNG whose colour (and so bytes) depend on `seed`."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    pixel = bytes([seed % 256, (seed * 7) % 256, (seed * 13) % 256])
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" + pixel))
        + chunk(b"IEND", b"")
    )


def fake_jpeg(payload: bytes = b"jpeg") -> bytes:
    """Bytes that start like a JPEG (enough for magic-byte sniffing)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + payload + b"\xff\xd9"


def fake_webp(payload: bytes = b"webp") -> bytes:
    """Bytes that start like a WebP file (enough for magic-byte sniffing)."""
    body = b"WEBPVP8 " + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes) -> str:
    # codex labels every data URL image/png whatever the bytes are.
    return "data:image/png;base64," + b64(data)


def session_log_path(codex_home: Path, thread_id: str, when: datetime) -> Path:
    """`sessions/YYYY/MM/DD/rollout-<local time>-<id>.jsonl` for a run started at `when`."""
    local = when.astimezone() if when.tzinfo else when
    folder = codex_home / "sessions" / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}"
    return folder / f"rollout-{local:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"


@dataclass
class Run:
    """What happened in one codex turn, to be written as a session log."""

    version: str = "0.169.0"
    thread_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    prompt: str = "a red fox in the snow"
    images: Sequence[bytes] = ()
    refusals: Sequence[str] = ()  # reason text of each failed generation (tool output text)
    refusal_failure_field: Any = None  # 0.150+: the item's `failure` value (text or typed)
    references: Sequence[bytes] = ()  # -i reference images (input_image in the user message)
    echo: bool = True  # the tool output repeats each generated image as an input_image
    agent_text: str = "Here is your image."
    turn_error: str | None = None
    turn_error_kind: Any = None  # "usage_limit_exceeded" or {"http_connection_failed": {...}}
    complete: bool = True  # write task_complete
    truncate_last: bool = False  # cut the last line in half, as a killed run leaves it
    cwd: str = "/tmp/work"
    codex_home: str = "/tmp/codex-home"


class _Writer:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.shape = shape_for(run.version)
        self.lines: list[dict[str, Any]] = []
        self.clock = datetime(2030, 3, 17, 16, 40, 0, tzinfo=timezone.utc)

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "timestamp": self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": kind,
            "payload": payload,
        }
        if self.shape is Shape.EXTENSION:
            line["ordinal"] = len(self.lines)
            if kind == "response_item":
                line["metadata"] = {}
        self.lines.append(line)

    def saved_path(self, call_id: str) -> str:
        return f"{self.run.codex_home}/generated_images/{self.run.thread_id}/{call_id}.png"


def _user_message(w: _Writer) -> None:
    run = w.run
    content: list[dict[str, Any]] = [{"type": "input_text", "text": run.prompt}]
    for n, ref in enumerate(run.references, start=1):
        # Up to 0.128 the tag carries no path.
        path = "" if w.shape is Shape.HOSTED_CALL else f' path="/refs/ref{n}.png"'
        content.append({"type": "input_text", "text": f"<image name=[Image #{n}]{path}>"})
        content.append({"type": "input_image", "image_url": data_url(ref)})
        content.append({"type": "input_text", "text": "</image>"})
    w.add("response_item", {"type": "message", "role": "user", "content": content})
    if w.shape is Shape.EXTENSION:
        parts: list[dict[str, Any]] = [
            {"type": "local_image", "path": f"/refs/ref{n}.png"} for n in range(len(run.references))
        ]
        parts.append({"type": "text", "text": run.prompt, "text_elements": []})
        item = {"type": "UserMessage", "id": "user-1", "content": parts}
        w.add("event_msg", {"type": "item_completed", "turn_id": "turn-1", "item": item})
    else:
        images = [data_url(r) for r in run.references]
        w.add("event_msg", {"type": "user_message", "message": run.prompt, "images": images})


def hosted_call_id(run: Run, n: int) -> str:
    """The `ig_...` id of the n-th hosted image call of `run`."""
    return f"ig_{n:04d}{run.thread_id.replace('-', '')[:20]}"


def exec_call_id(n: int) -> str:
    """The `exec-<uuid>` id of the n-th client-side image generation."""
    return f"exec-{uuid.UUID(int=n + 1)}"


def generated_files(run: Run) -> list[tuple[str, bytes]]:
    """(file name, bytes) codex saves under `generated_images/<thread>/`; none before 0.117."""
    shape = shape_for(run.version)
    if shape is Shape.HOSTED_CALL:
        return []
    name = (lambda n: hosted_call_id(run, n)) if shape is Shape.HOSTED_BOTH else exec_call_id
    return [(f"{name(n)}.png", image) for n, image in enumerate(run.images)]


def _hosted(w: _Writer, n: int, image: bytes | None, reason: str | None) -> None:
    call_id = hosted_call_id(w.run, n)
    status = "completed" if image is not None else "failed"
    result = b64(image) if image is not None else ""
    revised = f"revised: {w.run.prompt} #{n}"
    if w.shape is Shape.HOSTED_BOTH:
        w.add(
            "event_msg",
            {
                "type": "image_generation_end",
                "call_id": call_id,
                "status": status,
                "revised_prompt": revised,
                "result": result,
                "saved_path": w.saved_path(call_id),
            },
        )
    w.add(
        "response_item",
        {
            "type": "image_generation_call",
            "id": call_id,
            "status": status,
            "revised_prompt": revised,
            "result": result,
        },
    )


def _client_side(w: _Writer, n: int, image: bytes | None, reason: str | None) -> None:
    run = w.run
    tool_call = f"call_{n:04d}"
    exec_id = exec_call_id(n)
    w.add(
        "response_item",
        {
            "type": "custom_tool_call",
            "call_id": tool_call,
            "name": "exec",
            "input": 'const r = await tools.image_gen__imagegen({"prompt": "..."});\n'
            "generatedImage(r);\n",
            "status": "completed",
        },
    )
    result = b64(image) if image is not None else ""
    status = "completed" if image is not None else "failed"
    revised = f"revised: {run.prompt} #{n}"
    if w.shape is Shape.EXEC_END:
        w.add(
            "event_msg",
            {
                "type": "image_generation_end",
                "call_id": exec_id,
                "status": status,
                "revised_prompt": revised,
                "result": result,
                "saved_path": w.saved_path(exec_id) if image is not None else None,
            },
        )
    else:
        w.add(
            "event_msg",
            {
                "type": "item_completed",
                "thread_id": run.thread_id,
                "turn_id": "turn-1",
                "item": {
                    "type": "Extension",
                    "kind": "image_gen.generation",
                    "id": exec_id,
                    "status": status,
                    "revisedPrompt": revised if image is not None else None,
                    "result": result,
                    "transparentBackground": None,
                    "failure": run.refusal_failure_field if image is None else None,
                    "savedPath": w.saved_path(exec_id) if image is not None else None,
                    "generationId": None,
                },
            },
        )
    _tool_output(w, tool_call, image, reason)


def _tool_output(w: _Writer, call_id: str, image: bytes | None, reason: str | None) -> None:
    head = "Script {}\nWall time 0.0 seconds\nOutput:\n"
    if image is None:
        output: Any = [
            {"type": "input_text", "text": head.format("failed")},
            {"type": "input_text", "text": f"Script error:\n{reason}"},
        ]
    else:
        output = [{"type": "input_text", "text": head.format("completed")}]
        if w.run.echo:
            output.append(
                {"type": "input_image", "image_url": data_url(image), "detail": "original"}
            )
        output.append({"type": "input_text", "text": "Generated images are saved to ..."})
    w.add(
        "response_item",
        {"type": "custom_tool_call_output", "call_id": call_id, "output": output},
    )


def _task_complete(w: _Writer) -> None:
    run = w.run
    payload: dict[str, Any] = {
        "type": "task_complete",
        "turn_id": "turn-1",
        "last_agent_message": None if run.turn_error else run.agent_text,
    }
    if run.turn_error is not None:
        payload["error"] = {"message": run.turn_error, "codex_error_info": run.turn_error_kind}
    w.add("event_msg", payload)


def rollout_lines(run: Run) -> list[dict[str, Any]]:
    """Every log line of `run`, as dicts, in file order."""
    w = _Writer(run)
    w.add(
        "session_meta",
        {
            "id": run.thread_id,
            "timestamp": "2030-03-17T16:40:00.000Z",
            "cwd": run.cwd,
            "originator": "codex_exec",
            "cli_version": run.version,
            "source": "exec",
            "model_provider": "openai",
        },
    )
    w.add("turn_context", {"cwd": run.cwd, "approval_policy": "never", "model": "gpt-5.5"})
    _user_message(w)
    w.add("event_msg", {"type": "task_started", "turn_id": "turn-1"})
    if run.turn_error is None:
        emit = _hosted if w.shape in (Shape.HOSTED_CALL, Shape.HOSTED_BOTH) else _client_side
        calls: list[tuple[bytes | None, str | None]] = [(img, None) for img in run.images]
        calls += [(None, reason) for reason in run.refusals]
        for n, (image, reason) in enumerate(calls):
            emit(w, n, image, reason)
        w.add(
            "response_item",
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": run.agent_text}],
            },
        )
        w.add("event_msg", {"type": "agent_message", "message": run.agent_text})
    if run.complete:
        _task_complete(w)
    return w.lines


def render(run: Run) -> bytes:
    """The session log file's bytes: one compact JSON value per line, U+2028 left raw."""
    text = "".join(
        json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
        for line in rollout_lines(run)
    )
    data = text.encode("utf-8")
    if run.truncate_last:
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        data = data[: last_start + (len(data) - last_start) // 2]
    return data


def write_rollout(path: Path, run: Run) -> Path:
    """Write `run`'s session log at `path` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render(run))
    return path


def write_session(codex_home: Path, run: Run, *, when: datetime | None = None) -> Path:
    """Write `run`'s log where codex would put it under `codex_home` for a start at `when`."""
    started = when or datetime.now().astimezone()
    return write_rollout(session_log_path(codex_home, run.thread_id, started), run)
