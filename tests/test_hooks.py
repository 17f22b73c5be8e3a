"""Hooks when a job ends, with real programs: the daemon and `once` run them after the job's
files are in place; a hook that fails, is missing or hangs is logged and changes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon_proc import DaemonProcess
from tests.support.procs import kill_alive, pid_alive, wait_for
from tests.support.world import REPO, World

NOT_ON_MACOS = pytest.mark.skipif(sys.platform == "darwin", reason="macOS notifies with osascript")
BAD_JOB = "prompt: a fox\nnot_a_key: 1\n"  # refused as written: failed/ at once, no retry

# One hook for every test: what it does depends on the job's name.
HOOK = """\
import json, os, signal, subprocess, sys, time
record = sys.argv[1]
job = os.environ["GPT_IMAGE_INBOX_JOB"]
env = {k: v for k, v in os.environ.items() if k.startswith("GPT_IMAGE_INBOX_")}
inbox = sys.argv[2]
env["state"] = [s for s in ("done", "failed", "processing", "")
                if os.path.exists(os.path.join(inbox, s, job))]
with open(record, "a", encoding="utf-8") as f:
    f.write(json.dumps(env) + "\\n")
if job.startswith("hang"):
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(record + ".pids", "a", encoding="utf-8") as f:
        f.write(json.dumps({"job": job, "pid": os.getpid(), "child": child.pid}) + "\\n")
    time.sleep(600)
if job.startswith("fail"):
    print("hook cannot cope with " + job, file=sys.stderr)
    sys.exit(3)
print("hook saw " + job + " " + os.environ["GPT_IMAGE_INBOX_STATUS"])
"""

# A stand-in for notify-send that records its arguments.
FAKE_NOTIFY = """\
#!{python}
import json, sys
with open({record!r}, "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def read_lines(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Hooked:
    """A World with the hook script written next to it and what the hook recorded."""

    def __init__(self, root: Path) -> None:
        self.world = World(root / "world")
        self.script = root / "hook.py"
        self.script.write_text(HOOK, encoding="utf-8")
        self.record = root / "hook-calls.jsonl"

    def argv(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.record), str(self.world.inbox)]

    def calls(self) -> dict[str, dict[str, Any]]:
        """Job file name -> the hook's environment and where the job file was."""
        return {c["GPT_IMAGE_INBOX_JOB"]: c for c in read_lines(self.record)}

    def pids(self) -> list[dict[str, Any]]:
        return read_lines(Path(f"{self.record}.pids"))

    def once(self, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.world.cli("once", env=env)


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[Hooked]:
    """The world; any hook process a test left behind is killed at the end."""
    world = Hooked(tmp_path)
    yield world
    kill_alive(pid for entry in world.pids() for pid in (entry["pid"], entry["child"]))


@pytest.fixture
def daemon(hooked: Hooked) -> Iterator[DaemonProcess]:
    """A daemon on the hooked world, not started yet; killed at the end if still running."""
    process = hooked.world.daemon()
    yield process
    process.kill_if_running()


def hook_log(daemon: DaemonProcess, event: str, **fields: Any) -> list[dict[str, Any]]:
    return daemon.logged(event, **fields)


def test_hooks_see_the_job_sidecar_and_images_after_its_files_are_in_place(
    hooked: Hooked, daemon: DaemonProcess
) -> None:
    """A done job runs on_done and a job file refused as written runs on_failed, each once its
    sidecar is written and its file in done/ or failed/, with the four variables set; the
    hook's output is in the log under the job's name."""
    world = hooked.world
    world.write_config(hooks={"on_done": hooked.argv(), "on_failed": hooked.argv()})
    daemon.start()
    world.write_job("fox")
    world.write_job("broken", BAD_JOB)
    calls = daemon.wait_for(lambda: len(hooked.calls()) == 2 and hooked.calls(), what="2 hooks")

    done = calls["fox.prompt.yaml"]
    assert done["GPT_IMAGE_INBOX_STATUS"] == "done"
    assert done["state"] == ["done"]
    sidecar = Path(done["GPT_IMAGE_INBOX_SIDECAR"])
    assert sidecar == world.outbox / "fox.result.yaml"
    result = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    images = done["GPT_IMAGE_INBOX_IMAGES"].split("\n")
    assert images == [str(world.outbox / i["file"]) for i in result["images"]]
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in images)

    failed = calls["broken.prompt.yaml"]
    assert failed["GPT_IMAGE_INBOX_STATUS"] == "failed"
    assert failed["state"] == ["failed"]
    assert failed["GPT_IMAGE_INBOX_SIDECAR"] == str(world.outbox / "broken.error.yaml")
    assert Path(failed["GPT_IMAGE_INBOX_SIDECAR"]).is_file()
    assert failed["GPT_IMAGE_INBOX_IMAGES"] == ""

    daemon.wait_for(
        lambda: hook_log(daemon, "hook output", job="broken.prompt.yaml"), what="hook output"
    )
    [said] = hook_log(daemon, "hook output", job="fox.prompt.yaml", stream="stdout")
    assert said["output"] == "hook saw fox.prompt.yaml done"
    assert hook_log(daemon, "hook finished", job="fox.prompt.yaml", status="done")
    assert daemon.stop() == 0


def test_a_hanging_hook_is_killed_with_its_group_and_the_next_job_runs(
    hooked: Hooked, daemon: DaemonProcess
) -> None:
    """A hook that ignores SIGTERM and leaves a child doing the same is killed, child and all,
    at hooks.timeout_sec; its job stays done and the job after it still runs."""
    world = hooked.world
    world.write_config(hooks={"on_done": hooked.argv(), "timeout_sec": 1})
    daemon.start()
    world.write_job("hang")
    [pids] = daemon.wait_for(hooked.pids, what="hanging hook started")
    world.write_job("after")
    daemon.wait_for(lambda: "after.prompt.yaml" in hooked.calls(), what="next job's hook")
    for pid in (pids["pid"], pids["child"]):
        wait_for(lambda pid=pid: not pid_alive(pid), what=f"hook process {pid} killed")
    [stopped] = hook_log(daemon, "hook stopped", job="hang.prompt.yaml")
    assert stopped["reason"] == "time limit"
    assert stopped["level"] == "warning"
    assert world.jobs_in("done") == ["after.prompt.yaml", "hang.prompt.yaml"]
    assert len(world.results_for("hang.prompt.yaml")) == 1
    assert world.errors() == {}
    assert daemon.stop() == 0


def test_a_failing_or_missing_hook_is_logged_and_changes_nothing(
    hooked: Hooked, daemon: DaemonProcess, tmp_path: Path
) -> None:
    """A hook program that does not exist, and one that exits 3, are warnings in the log with
    the job's name; each job stays done with its result and no error sidecar."""
    world = hooked.world
    world.write_config(hooks={"on_done": [str(tmp_path / "no-such-hook")]})
    daemon.start()
    world.write_job("first")
    [missing] = daemon.wait_for(
        lambda: hook_log(daemon, "hook cannot be started"), what="missing hook logged"
    )
    assert (missing["job"], missing["level"]) == ("first.prompt.yaml", "warning")

    world.write_config(hooks={"on_done": hooked.argv()})
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.logged("configuration reloaded"), what="reload")
    world.write_job("failing")
    [failed] = daemon.wait_for(lambda: hook_log(daemon, "hook failed"), what="hook failed")
    assert (failed["job"], failed["exit_code"], failed["level"]) == (
        "failing.prompt.yaml",
        3,
        "warning",
    )
    [said] = hook_log(daemon, "hook output", job="failing.prompt.yaml", stream="stderr")
    assert said["output"] == "hook cannot cope with failing.prompt.yaml"
    world.write_job("later")
    daemon.wait_for(lambda: "later.prompt.yaml" in hooked.calls(), what="later job's hook")

    assert world.jobs_in("done") == [
        "failing.prompt.yaml",
        "first.prompt.yaml",
        "later.prompt.yaml",
    ]
    assert sorted(world.results()) == [
        "failing.result.yaml",
        "first.result.yaml",
        "later.result.yaml",
    ]
    assert world.errors() == {}
    assert world.jobs_in("failed") == []
    assert daemon.stop() == 0


def test_once_runs_the_hooks_too(hooked: Hooked) -> None:
    """`once` runs on_done and on_failed after each job, like the daemon; its exit code is the
    failed job's, whatever the hooks did."""
    world = hooked.world
    world.write_config(hooks={"on_done": hooked.argv(), "on_failed": hooked.argv()})
    world.write_job("fox")
    world.write_job("broken", BAD_JOB)
    done = hooked.once()
    assert done.returncode == 2, done.stderr
    assert (world.jobs_in("done"), world.jobs_in("failed")) == (
        ["fox.prompt.yaml"],
        ["broken.prompt.yaml"],
    )
    calls = hooked.calls()
    assert {job: c["GPT_IMAGE_INBOX_STATUS"] for job, c in calls.items()} == {
        "fox.prompt.yaml": "done",
        "broken.prompt.yaml": "failed",
    }
    assert calls["fox.prompt.yaml"]["state"] == ["done"]
    assert calls["broken.prompt.yaml"]["state"] == ["failed"]
    assert "hook saw fox.prompt.yaml done" in done.stderr


@NOT_ON_MACOS
def test_desktop_notification_gets_the_job_its_status_and_the_message(
    hooked: Hooked, tmp_path: Path
) -> None:
    """`notify: desktop` finds notify-send on PATH and calls it with the job's name, done or
    failed, and the images written or the error's message."""
    world = hooked.world
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notify-calls.jsonl"
    notify = bin_dir / "notify-send"
    notify.write_text(FAKE_NOTIFY.format(python=sys.executable, record=str(record)))
    notify.chmod(0o755)
    world.write_config(hooks={"notify": "desktop"})
    world.write_job("fox")
    world.write_job("broken", BAD_JOB)
    env = world.env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = hooked.once(env)
    assert done.returncode == 2, done.stderr
    assert world.jobs_in("failed") == ["broken.prompt.yaml"]
    calls = read_lines(record)
    [error] = world.errors().values()
    [result] = world.results().values()
    image = result["images"][0]["file"]
    assert sorted(calls) == sorted(
        [
            [
                "--app-name=gpt-image-inbox",
                "--urgency=normal",
                "--",
                "gpt-image-inbox: fox.prompt.yaml done",
                image,
            ],
            [
                "--app-name=gpt-image-inbox",
                "--urgency=critical",
                "--",
                "gpt-image-inbox: broken.prompt.yaml failed",
                error["message"].splitlines()[0],
            ],
        ]
    )


@NOT_ON_MACOS
def test_desktop_notification_without_notify_send_is_a_config_error(
    hooked: Hooked, tmp_path: Path
) -> None:
    """Without notify-send on PATH, `notify: desktop` stops the daemon at start, naming the key."""
    world = hooked.world
    (tmp_path / "empty").mkdir()
    world.write_config(hooks={"notify": "desktop"})
    env = world.env(PATH=str(tmp_path / "empty"))
    done = world.cli("run", env=env, cwd=REPO)
    assert done.returncode == 2
    assert "hooks.notify: desktop notifications need notify-send" in done.stderr


def test_stopping_the_daemon_stops_a_running_hook_and_its_children(
    hooked: Hooked, daemon: DaemonProcess
) -> None:
    """SIGTERM while a hook runs (its limit far away) stops the hook's whole group once
    shutdown_grace_sec runs out: the daemon exits 0 and no hook process is left running."""
    world = hooked.world
    world.write_config(shutdown_grace_sec=1, hooks={"on_done": hooked.argv(), "timeout_sec": 300})
    daemon.start()
    world.write_job("hang")
    [pids] = daemon.wait_for(hooked.pids, what="hanging hook started")
    assert daemon.stop() == 0
    for pid in (pids["pid"], pids["child"]):
        wait_for(lambda pid=pid: not pid_alive(pid), what=f"hook process {pid} killed")
    [stopped] = hook_log(daemon, "hook stopped", job="hang.prompt.yaml")
    assert stopped["reason"] == "the daemon is stopping"
    assert world.jobs_in("done") == ["hang.prompt.yaml"]


def test_the_readmes_phone_copy_script_copies_the_images(hooked: Hooked, tmp_path: Path) -> None:
    """The README's to-phone script, run as on_done, copies each image of a job into
    ~/Phone/Pictures."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    [script] = [b for b in blocks if "GPT_IMAGE_INBOX_IMAGES" in b]
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    to_phone = home / "bin" / "to-phone"
    to_phone.write_text(script, encoding="utf-8")
    to_phone.chmod(0o755)
    world = hooked.world
    world.write_config(hooks={"on_done": [str(to_phone)]})
    world.set_script(scenario="two_images")
    world.write_job("pair")
    done = hooked.once(world.env(HOME=str(home)))
    assert done.returncode == 0, done.stderr
    [result] = world.results().values()
    names = [i["file"] for i in result["images"]]
    assert len(names) == 2
    phone = home / "Phone" / "Pictures"
    assert sorted(p.name for p in phone.iterdir()) == sorted(names)
    for name in names:
        assert (phone / name).read_bytes() == (world.outbox / name).read_bytes()


class _Log:
    """Records what run_hook logs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append(("warning", event, fields))


def test_a_hooks_output_in_the_log_is_bounded_to_its_end() -> None:
    """A hook that prints 200 KB leaves only its last 4 KB in the log, marked truncated."""
    from daemon.pipeline.hooks import OUTPUT_TAIL_BYTES, run_hook

    log = _Log()
    code = "import sys; sys.stdout.write('x' * 200_000 + 'THE END\\n')"
    run = run_hook([sys.executable, "-c", code], dict(os.environ), 60, log=log)
    assert run.returncode == 0
    [(level, _, fields)] = [e for e in log.events if e[1] == "hook output"]
    assert level == "info"
    assert fields["output"].endswith("THE END")
    assert len(fields["output"]) <= OUTPUT_TAIL_BYTES
    assert fields["truncated"] is True
    assert fields["stream"] == "stdout"


def test_a_job_finished_by_crash_recovery_runs_its_hook(hooked: Hooked) -> None:
    """A job a crash left in processing/ after its delivery (the result written, the file not yet
    in done/) is finished by the next start's recovery, and its on_done hook runs then."""
    world = hooked.world
    world.write_job("twice")
    assert hooked.once().returncode == 0
    [result] = world.results().values()
    world.crash_after_delivery("twice.prompt.yaml", result)
    world.write_config(hooks={"on_done": hooked.argv()})
    done = hooked.once()
    assert done.returncode == 0, done.stderr
    call = hooked.calls()["twice.prompt.yaml"]
    assert (call["GPT_IMAGE_INBOX_STATUS"], call["state"]) == ("done", ["done"])
    assert call["GPT_IMAGE_INBOX_SIDECAR"] == str(world.outbox / "twice.result.yaml")
    assert len(world.calls()) == 1  # codex ran once, for the first run only
