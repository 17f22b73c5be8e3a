"""An instant stand-in for `codex exec`: the start time, thread.started, a minimal 0.169 log.

Run as `python -S -E instant_codex.py ...` so that start-up is the interpreter alone; it imports
nothing beyond os, sys, time and json. INSTANT_CODEX_RECORD names a file that gets one JSON line
per call: {"t": time.time() at start, "pid", "stdin"}.
"""

import os
import sys
import time

STARTED = time.time()

import json  # noqa: E402  (after the clock: the start time is the first thing taken)

VERSION = "0.169.0"
# A valid 1x1 PNG (tests.support.rollout_shapes.tiny_png(1)).
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgZOcFAAAiABbQMsz1AAAAAElFTkSuQmCC"
)


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def thread_id():
    """A UUIDv7, as codex makes them: the creation time in ms, then random bits."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (int(STARTED * 1000) << 80) | (7 << 76) | ((rand >> 64) & 0xFFF) << 64
    value |= (2 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


def session_lines(tid, stamp, prompt):
    meta = {
        "id": tid,
        "timestamp": stamp,
        "cwd": os.getcwd(),
        "originator": "codex_exec",
        "cli_version": VERSION,
        "source": "exec",
        "model_provider": "openai",
    }
    item = {
        "type": "Extension",
        "kind": "image_gen.generation",
        "id": "exec-1",
        "status": "completed",
        "revisedPrompt": prompt[-200:],
        "result": PNG_B64,
        "failure": None,
        "savedPath": None,
        "generationId": None,
    }
    done = {"type": "task_complete", "turn_id": "turn-1", "last_agent_message": "Done."}
    payloads = [
        ("session_meta", meta),
        (
            "event_msg",
            {"type": "item_completed", "thread_id": tid, "turn_id": "turn-1", "item": item},
        ),
        ("event_msg", done),
    ]
    return "".join(
        json.dumps({"timestamp": stamp, "type": kind, "payload": payload, "ordinal": n}) + "\n"
        for n, (kind, payload) in enumerate(payloads)
    )


def write_log(tid, prompt):
    home = os.environ.get("CODEX_HOME") or os.path.expanduser("~/.codex")
    local = time.localtime(STARTED)
    folder = os.path.join(home, "sessions", time.strftime("%Y/%m/%d", local))
    os.makedirs(folder, exist_ok=True)
    name = "rollout-{}-{}.jsonl".format(time.strftime("%Y-%m-%dT%H-%M-%S", local), tid)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(STARTED))
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write(session_lines(tid, stamp, prompt))


def main(argv):
    if argv[:1] in (["--version"], ["-V"]):
        print("codex-cli " + VERSION)
        return 0
    if argv[:1] != ["exec"]:
        sys.stderr.write("instant codex: only `exec` and `--version`\n")
        return 2
    prompt = sys.stdin.read()
    record = os.environ.get("INSTANT_CODEX_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": STARTED, "pid": os.getpid(), "stdin": prompt}) + "\n")
    tid = thread_id()
    emit({"type": "thread.started", "thread_id": tid})
    emit({"type": "turn.started"})
    write_log(tid, prompt)
    emit(
        {
            "type": "item.completed",
            "item": {"id": "item_0", "type": "agent_message", "text": "Done."},
        }
    )
    emit(
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 1},
        }
    )
    return 0


sys.exit(main(sys.argv[1:]))
