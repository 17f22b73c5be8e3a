#!/usr/bin/env python3
"""A stand-in for the codex CLI that plays one scripted outcome, for fault-injection tests.

The JSON file named by FAKE_CODEX_SCRIPT chooses the behaviour; every key is optional:
  version ("0.169.0"), logged_in (true), thread_id, scenario (image | two_images | refuse |
  text_only | usage_limit | unauthorized | server_error | hang | hang_ignoring_sigterm |
  no_session_log | crash | bad_args | network_down | generated_dir_only), image_b64,
  image_b64_calls (only the first N calls use image_b64), image_size, exit_code, delay_sec,
  usage_limit_message, record (a file that gets one JSON line per call: argv, cwd, stdin,
  refs, pid, child_pid, codex_home), images_by_call (scenario image: how many images call
  1, 2, ... makes, the last entry for later calls; each image differs by call and index),
  image_limit_calls (calls whose last generation meets the plan's image limit).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import rollout_shapes as shapes

UNAUTHORIZED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token was already used. "
    "Please log out and sign in again."
)
SERVER_ERROR_MESSAGE = (
    "We\u2019re currently experiencing high demand, which may cause temporary errors."
)
CONNECTION_FAILED_MESSAGE = "Connection failed: error sending request for url (https://chatgpt.com/backend-api/codex/responses)"
NETWORK_WAIT_MESSAGE = "Reconnecting... 1/5 (waiting for network)"
# Flags of `codex exec` that take one value, and those that take none.
VALUE_FLAGS = {
    "-C",
    "--cd",
    "-m",
    "--model",
    "-s",
    "--sandbox",
    "--color",
    "--enable",
    "--disable",
    "-c",
    "--config",
    "-p",
    "--profile",
    "--output-last-message",
    "-o",
    "--output-schema",
}
BOOL_FLAGS = {
    "--json",
    "--skip-git-repo-check",
    "--ephemeral",
    "--full-auto",
    "--oss",
    "--dangerously-bypass-approvals-and-sandbox",
}
FEATURES_SINCE = {"unbounded_connection_retries": 150}


def script() -> dict[str, Any]:
    path = os.environ.get("FAKE_CODEX_SCRIPT")
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else {}


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class BadArgs(Exception):
    pass


def parse_exec(args: list[str]) -> dict[str, Any]:
    """The options of `codex exec` as codex reads them, -i taking several values."""
    opts: dict[str, Any] = {"refs": [], "flags": {}, "enable": [], "disable": [], "prompt": None}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-i", "--image"):
            i = take_images(args, i + 1, opts["refs"])
            continue
        if arg in VALUE_FLAGS:
            if i + 1 >= len(args):
                raise BadArgs(f"error: a value is required for '{arg}' but none was supplied")
            key = {"--enable": "enable", "--disable": "disable"}.get(arg)
            if key:
                opts[key].append(args[i + 1])
            opts["flags"][arg] = args[i + 1]
            i += 2
            continue
        if arg in BOOL_FLAGS:
            opts["flags"][arg] = True
        elif arg.startswith("-") and arg != "-":
            raise BadArgs(f"error: unexpected argument '{arg}' found")
        elif opts["prompt"] is None:
            opts["prompt"] = arg
        else:
            raise BadArgs(f"error: unexpected argument '{arg}' found")
        i += 1
    return opts


def take_images(args: list[str], i: int, refs: list[str]) -> int:
    """The values of one -i from args[i] on (comma-separated too, up to the next option or a
    `--`, which is consumed) into `refs`; the index after them."""
    while i < len(args) and not args[i].startswith("-"):
        refs += [p for p in args[i].split(",") if p]
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    return i


def call_number(conf: dict[str, Any]) -> int:
    """1 for the first recorded call, 2 for the second... (0 when calls are not recorded)."""
    try:
        return len(Path(conf["record"]).read_text().splitlines())
    except (KeyError, OSError):
        return 0


def image_bytes(conf: dict[str, Any], n: int) -> bytes:
    calls = conf.get("image_b64_calls")  # only the first N calls answer with image_b64
    if "image_b64" in conf and n == 0 and (calls is None or call_number(conf) <= calls):
        return base64.b64decode(conf["image_b64"])
    png = shapes.tiny_png(n + 1)
    size = int(conf.get("image_size", 0))
    if size <= len(png):
        return png
    # Pad with a private ancillary chunk before IEND so that the PNG stays valid.
    pad = size - len(png) - 12
    body = (b"pad " * (pad // 4 + 1))[:pad]
    crc = zlib.crc32(b"fkPd" + body).to_bytes(4, "big")
    chunk = len(body).to_bytes(4, "big") + b"fkPd" + body + crc
    return png[:-12] + chunk + png[-12:]


def spawn_child() -> int:
    """A child in our process group, so that tests can check the whole group is stopped."""
    code = "import time\nwhile True: time.sleep(60)\n"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL).pid


def record(conf: dict[str, Any], entry: dict[str, Any]) -> None:
    if conf.get("record"):
        with open(conf["record"], "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def fail(message: str, kind: Any, events: bool = True) -> tuple[shapes.Run, int]:
    if events:
        emit({"type": "error", "message": message})
        emit({"type": "turn.failed", "error": {"message": message}})
    return shapes.Run(turn_error=message, turn_error_kind=kind), 1


def outcome(conf: dict[str, Any], opts: dict[str, Any]) -> tuple[shapes.Run, int]:
    """The run to log and the exit code for the scripted scenario."""
    scenario = conf.get("scenario", "image")
    if scenario == "image" and ("images_by_call" in conf or "image_limit_calls" in conf):
        return counted_images(conf), 0
    if scenario == "usage_limit":
        message = conf.get("usage_limit_message", shapes.USAGE_LIMIT_MESSAGE)
        return fail(message, "usage_limit_exceeded")
    if scenario in FAILURES:
        return fail(*FAILURES[scenario])
    return successful_run(conf, scenario), 0


# Scenarios whose turn fails: codex's message and the error kind its session log names.
FAILURES: dict[str, tuple[str, Any]] = {
    "unauthorized": (UNAUTHORIZED_MESSAGE, "unauthorized"),
    "server_error": (SERVER_ERROR_MESSAGE, "internal_server_error"),
    "network_down": (
        CONNECTION_FAILED_MESSAGE,
        {"http_connection_failed": {"http_status_code": None}},
    ),
}


def successful_run(conf: dict[str, Any], scenario: str) -> shapes.Run:
    """The run of a scenario whose turn completes (with an image or not)."""
    if scenario in ("image", "no_session_log", "crash", "generated_dir_only"):
        return shapes.Run(images=[image_bytes(conf, 0)])
    if scenario == "two_images":
        return shapes.Run(images=[image_bytes(conf, 0), image_bytes(conf, 1)])
    if scenario == "refuse":
        return shapes.Run(refusals=[shapes.MODERATION_FAILURE], agent_text="I can't make that.")
    if scenario == "text_only":
        return shapes.Run(agent_text="I can only describe it: a small red square.")
    raise SystemExit(f"fake codex: unknown scenario {scenario!r}")


IMAGE_LIMIT_REASON = (
    "image generation failed: http 429 Too Many Requests: "
    '{"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached"}}'
)


def counted_images(conf: dict[str, Any]) -> shapes.Run:
    """Call n's scripted number of images, then the image limit when the script says so."""
    call = call_number(conf)
    counts = conf.get("images_by_call") or [1]
    count = int(counts[min(max(call, 1), len(counts)) - 1])
    images = [shapes.tiny_png(call * 100 + n + 1) for n in range(count)]
    if call not in conf.get("image_limit_calls", []):
        agent = "Here is your image." if images else "I can only describe it."
        return shapes.Run(images=images, agent_text=agent)
    failure = {
        "type": "usageLimitExceeded",
        "limitId": "image_gen",
        "resetsAt": int(time.time()) + int(conf.get("resets_in_sec", 3600)),
    }
    return shapes.Run(images=images, refusals=[IMAGE_LIMIT_REASON], refusal_failure_field=failure)


def write_log(conf: dict[str, Any], run: shapes.Run, home: Path, started: datetime) -> None:
    scenario = conf.get("scenario", "image")
    if scenario == "no_session_log":
        return
    images = list(run.images)
    if scenario == "generated_dir_only":
        run.images = ()  # a shape this reader does not know: the image is only on disk
    if scenario == "crash":
        run.complete, run.truncate_last = False, True
    shapes.write_session(home, run, when=started)
    folder = home / "generated_images" / run.thread_id
    for name, data in shapes.generated_files(
        shapes.Run(version=run.version, thread_id=run.thread_id, images=images)
    ):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def run_exec(conf: dict[str, Any], args: list[str]) -> int:
    version = conf.get("version", "0.169.0")
    try:
        opts = parse_exec(args)
        if conf.get("scenario") == "bad_args":
            raise BadArgs("error: unexpected argument '--bogus' found")
    except BadArgs as exc:
        sys.stderr.write(
            f"{exc}\n\nUsage: codex exec [OPTIONS] [PROMPT]\n\n"
            "For more information, try '--help'.\n"
        )
        return 2
    minor = int(version.split(".")[1])
    for feature in opts["enable"] + opts["disable"]:
        if FEATURES_SINCE.get(feature, 0) > minor:
            sys.stderr.write(f"Error: Unknown feature flag: {feature}\n")
            return 1
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    if not home.is_dir():
        sys.stderr.write(
            f"Error finding codex home: CODEX_HOME points to {str(home)!r}, "
            "but that path does not exist\n"
        )
        return 1
    stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    prompt = (opts["prompt"] or "") + stdin.decode("utf-8", "replace")
    scenario = conf.get("scenario", "image")
    if scenario == "hang_ignoring_sigterm":
        # Set before the child starts: an ignored signal stays ignored across exec.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = spawn_child() if scenario.startswith("hang") else None
    thread_id = conf.get("thread_id") or str(uuid.uuid4())
    record(
        conf,
        {
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "stdin": stdin.decode("utf-8", "replace"),
            "stdin_b64": base64.b64encode(stdin).decode(),
            "refs": opts["refs"],
            "pid": os.getpid(),
            "child_pid": child,
            "codex_home": str(home),
            "thread_id": thread_id,
        },
    )
    if not prompt.strip():
        sys.stderr.write(
            "No prompt provided. Either specify one as an argument or pipe the prompt into stdin.\n"
        )
        return 1
    return play(conf, opts, version, home, thread_id, prompt)


def play(
    conf: dict[str, Any],
    opts: dict[str, Any],
    version: str,
    home: Path,
    thread_id: str,
    prompt: str,
) -> int:
    scenario = conf.get("scenario", "image")
    started = datetime.now().astimezone()
    emit({"type": "thread.started", "thread_id": thread_id})
    emit({"type": "turn.started"})
    if scenario.startswith("hang") or (
        scenario == "network_down" and "unbounded_connection_retries" not in opts["disable"]
    ):
        if scenario == "network_down":
            emit({"type": "error", "message": NETWORK_WAIT_MESSAGE})
        while True:
            time.sleep(60)
    time.sleep(float(conf.get("delay_sec", 0)))
    run, code = outcome(conf, opts)
    run.version, run.thread_id, run.prompt = version, thread_id, prompt
    run.cwd = opts["flags"].get("-C") or opts["flags"].get("--cd") or os.getcwd()
    run.codex_home = str(home)
    run.references = [Path(p).read_bytes() for p in opts["refs"] if Path(p).is_file()]
    write_log(conf, run, home, started)
    if scenario == "crash":
        sys.stderr.write("thread 'main' panicked at core/src/codex.rs:1:1:\nfake crash\n")
        return int(conf.get("exit_code", 101))
    if code == 0:
        item = {"id": "item_0", "type": "agent_message", "text": run.agent_text}
        emit({"type": "item.completed", "item": item})
        usage = {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 5}
        emit({"type": "turn.completed", "usage": usage})
    return int(conf.get("exit_code", code))


def main(argv: list[str]) -> int:
    conf = script()
    if argv[:1] in (["--version"], ["-V"]):
        print(f"codex-cli {conf.get('version', '0.169.0')}")
        return 0
    if argv[:2] == ["login", "status"]:
        if conf.get("logged_in", True):
            sys.stderr.write("Logged in using ChatGPT\n")
            return 0
        sys.stderr.write("Not logged in\n")
        return 1
    if argv[:1] == ["exec"]:
        return run_exec(conf, argv[1:])
    sys.stderr.write(f"error: unrecognized subcommand '{' '.join(argv[:1])}'\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
