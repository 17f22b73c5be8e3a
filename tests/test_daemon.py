"""The daemon (`gpt-image-inbox run`) as a real process: watching, crashes, signals, pauses, status.

Every test starts `python -m daemon run` on real folders with a fake codex (tests/support/
fake_codex.py) and polls for what a user would see: images, sidecars, job files in done/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.procs import pid_alive, wait_for
from tests.support.rollout_shapes import tiny_png
from tests.support.world import REPO, World


def done_once(world: World, job_file: str) -> dict[str, object]:
    """The job's one result sidecar, once it is complete and the job file sits in done/."""
    wait_for(
        lambda: job_file in world.jobs_in("done") and world.results_for(job_file),
        what=f"{job_file} done",
    )
    results = world.results_for(job_file)
    assert len(results) == 1, results
    return results[0]


def assert_settled(world: World) -> None:
    """Nothing is left half-way: processing/ holds no file, the inbox root no job."""
    processing = world.inbox / "processing"
    assert not processing.exists() or not list(processing.iterdir())
    assert world.jobs_in() == []


# --- 1. jobs however they arrive --------------------------------------------------------------


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
def test_jobs_copied_renamed_and_with_a_sibling_reference_become_images(
    world: World, start, polling: bool
) -> None:
    """A job written slowly like `cp`, one renamed in from an editor's temp file and one with a
    sibling reference each become an image with its sidecar, their files moving to done/."""
    world.write_config(watch={"polling": polling})
    daemon = start()
    assert daemon.logged("watching", observer="polling" if polling else "native")
    slow = world.inbox / "copied.prompt.yaml"
    with slow.open("w", encoding="utf-8") as f:
        for chunk in ("prompt: >\n", "  a lighthouse\n", "  at dusk\n", "timeout_sec: 30\n"):
            f.write(chunk)
            f.flush()
            time.sleep(0.05)
    temp = world.inbox / ".edited.prompt.yaml.swp"
    temp.write_text("prompt: a teapot\n", encoding="utf-8")
    os.rename(temp, world.inbox / "edited.prompt.yaml")
    (world.inbox / "with-ref.png").write_bytes(tiny_png(3))
    world.write_job("with-ref", "prompt: the same, in blue\n")

    for job in ("copied", "edited", "with-ref"):
        result = done_once(world, f"{job}.prompt.yaml")
        image = world.outbox / result["images"][0]["file"]
        assert image.read_bytes().startswith(b"\x89PNG")
    assert world.results_for("copied.prompt.yaml")[0]["prompt"] == "a lighthouse at dusk\n"
    assert world.results_for("with-ref.prompt.yaml")[0]["refs"] == ["with-ref.png"]
    assert (world.inbox / "done" / "with-ref.png").exists()
    calls = world.calls()
    assert len(calls) == 3
    assert [len(c["refs"]) for c in calls].count(1) == 1
    assert_settled(world)
    assert daemon.stop() == 0


# --- 2. kill -9 at any moment, then a restart --------------------------------------------------


def run_record(world: World, job_file: str) -> dict[str, object] | None:
    """processing/.<job>.run.json, the daemon's note of the codex thread of a running job."""
    try:
        return json.loads((world.inbox / "processing" / f".{job_file}.run.json").read_text())
    except (OSError, ValueError):
        return None


def wait_codex_gone(world: World) -> None:
    """Wait until every fake codex process (and its child) has ended."""
    wait_for(lambda: not any(pid_alive(c["pid"]) for c in world.calls()), what="fake codex exited")


@pytest.mark.parametrize("moment", ["claimed", "codex_running", "codex_finished"])
def test_kill_9_then_restart_finishes_every_job_exactly_once(
    world: World, start, moment: str
) -> None:
    """Killed with SIGKILL mid-job and restarted, the daemon finishes every job once, leaves
    nothing in processing/, and never runs codex again for a run that had already finished."""
    world.set_script(delay_sec=2.0)
    temp = world.root / "tmp"  # the daemons' TMPDIR: where the per-run folders go
    temp.mkdir()
    daemon = start(env=world.env(TMPDIR=str(temp)))
    world.write_job("victim", "prompt: a crash test dummy\n")
    if moment == "claimed":
        daemon.wait_for(
            lambda: "victim.prompt.yaml" in world.jobs_in("processing"), what="job claimed"
        )
    else:
        daemon.wait_for(
            lambda: (run_record(world, "victim.prompt.yaml") or {}).get("thread_id"),
            what="thread id recorded",
        )
    daemon.kill9()
    if moment == "codex_finished":
        wait_codex_gone(world)  # codex ends its run while no daemon is there
    world.set_script()
    start(env=world.env(TMPDIR=str(temp)))
    result = done_once(world, "victim.prompt.yaml")
    wait_codex_gone(world)
    # The killed daemon's run folder (with copies of the references) is gone too, once the
    # restarted daemon has finished with its codex.
    wait_for(lambda: list(temp.iterdir()) == [], what="run folders of the killed daemon removed")
    calls = world.calls()
    if moment == "claimed":
        # Killed between claiming and codex's start being recorded, the job runs once more.
        assert 1 <= len(calls) <= 2
        assert result["thread_id"] == calls[-1]["thread_id"]
    else:
        # A codex that outlived the daemon is waited for, never started a second time.
        assert len(calls) == 1, "codex ran again for a run that had started"
        assert result["thread_id"] == calls[0]["thread_id"]
    assert_settled(world)
    assert len(list(world.outbox.glob("victim*.png"))) == 1
    assert world.errors() == {}


def test_restart_after_the_outbox_write_does_not_deliver_twice(world: World, start) -> None:
    """A crash between writing the result and moving the job to done/ (the job and its run
    record still in processing/) is finished on restart without a second copy of the image."""
    daemon = start()
    world.write_job("twice")
    result = done_once(world, "twice.prompt.yaml")
    assert daemon.stop() == 0
    # Put the disk back as it was at that moment: job and thread id in processing/.
    world.crash_after_delivery("twice.prompt.yaml", result)
    start()
    wait_for(lambda: world.jobs_in("done") == ["twice.prompt.yaml"], what="job in done/")
    assert len(world.results()) == 1
    assert len(list(world.outbox.glob("*.png"))) == 1
    assert len(world.calls()) == 1
    assert_settled(world)


def test_many_kills_at_random_moments_lose_and_duplicate_nothing(world: World, start) -> None:
    """Jobs under a daemon killed again and again at varying moments all end up done, each with
    one result, once a daemon finally runs undisturbed."""
    world.set_script(delay_sec=0.3)
    names = [f"job-{n:02d}" for n in range(6)]
    for name in names:
        world.write_job(name, f"prompt: picture {name}\n")
    for delay in (0.2, 0.9, 0.5, 1.4, 0.7, 1.1, 0.3, 1.7):
        daemon = start(ready=False)
        time.sleep(delay)  # the moment of the crash, not a synchronisation
        daemon.kill9()
    start()
    for name in names:
        done_once(world, f"{name}.prompt.yaml")
    wait_codex_gone(world)
    assert_settled(world)
    assert len(list(world.outbox.glob("*.png"))) == len(names)
    # Nothing an interrupted delivery wrote is left behind: no temp file, no second copy.
    assert sorted(p.name for p in world.outbox.iterdir() if p.name != "status.json") == sorted(
        [f"{n}.png" for n in names] + [f"{n}.result.yaml" for n in names]
    )
    thread_ids = {c["thread_id"] for c in world.calls()}
    assert {r["thread_id"] for r in world.results().values()} <= thread_ids


# --- 3. SIGTERM and SIGINT -------------------------------------------------------------------


def test_sigterm_stops_a_hanging_job_within_grace_and_puts_it_back(world: World, start) -> None:
    """SIGTERM while codex hangs: after the shutdown grace the run is stopped, the job is back in
    the inbox root, no codex process is left, and the daemon exits 0."""
    world.write_config(shutdown_grace_sec=1)
    world.set_script(scenario="hang")
    daemon = start()
    world.write_job("stuck")
    daemon.wait_for(lambda: world.calls(), what="codex started")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=1 + 15) == 0
    assert world.jobs_in() == ["stuck.prompt.yaml"]
    assert world.jobs_in("processing") == []
    call = world.calls()[0]
    wait_for(
        lambda: not pid_alive(call["pid"]) and not pid_alive(call["child_pid"]),
        timeout=10,
        what="codex and its child gone",
    )
    assert world.results() == {}
    assert world.status()["state"] == "stopped"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_lets_a_job_finish_within_grace(world: World, start, sig: int) -> None:
    """SIGTERM or SIGINT while a job can still finish within the grace: it finishes, exit 0."""
    world.write_config(shutdown_grace_sec=20)
    world.set_script(delay_sec=1.0)
    daemon = start()
    world.write_job("nearly")
    daemon.wait_for(lambda: world.calls(), what="codex started")
    daemon.signal(sig)
    assert daemon.wait_exit() == 0
    assert len(world.results_for("nearly.prompt.yaml")) == 1
    assert world.jobs_in("done") == ["nearly.prompt.yaml"]


def test_stop_signal_takes_no_new_job(world: World, start) -> None:
    """After SIGTERM the daemon takes no further job: queued ones wait in the inbox."""
    world.write_config(shutdown_grace_sec=20)
    world.set_script(delay_sec=1.0)
    daemon = start()
    world.write_job("first")
    daemon.wait_for(lambda: world.calls(), what="codex started")
    world.write_job("second")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert world.jobs_in() == ["second.prompt.yaml"]
    assert len(world.calls()) == 1


# --- 4. a hanging codex and retries ------------------------------------------------------------


def test_hanging_codex_is_timed_out_retried_then_failed(world: World, start) -> None:
    """A codex that hangs is stopped at the job's timeout_sec, tried retry.attempts times, and
    then the job fails with a sidecar that says it is not retried."""
    world.write_config(retry={"attempts": 2, "backoff_sec": 0.2})
    world.set_script(scenario="hang")
    daemon = start()
    world.write_job("sleepy", "prompt: a sloth\ntimeout_sec: 1\n")
    daemon.wait_for(lambda: world.jobs_in("failed") == ["sleepy.prompt.yaml"], what="job failed")
    errors = list(world.errors().values())
    assert len(errors) == 1
    assert errors[0]["error"] == "timeout"
    assert errors[0]["code"] == 5
    assert errors[0]["retrying"] is False
    calls = world.calls()
    assert len(calls) == 2
    for call in calls:
        wait_for(
            lambda c=call: not pid_alive(c["pid"]) and not pid_alive(c["child_pid"]),
            timeout=10,
            what="timed-out codex gone",
        )
    assert daemon.stop() == 0


def test_transient_failure_then_success_removes_the_error_sidecar(world: World, start) -> None:
    """A server error is retried after a backoff; when the retry succeeds the job is done and its
    earlier `retrying: true` sidecar is gone."""
    world.write_config(retry={"attempts": 3, "backoff_sec": 2, "max_backoff_sec": 2})
    world.set_script(scenario="server_error")
    daemon = start()
    world.write_job("flaky")
    sidecar = daemon.wait_for(lambda: world.errors(), what="retrying sidecar")
    assert next(iter(sidecar.values()))["retrying"] is True
    world.set_script()
    done_once(world, "flaky.prompt.yaml")
    assert world.errors() == {}
    assert len(world.calls()) == 2
    assert daemon.stop() == 0


# --- 5. pauses: login, usage limit, network ----------------------------------------------------


def status_is(world: World, **fields: object) -> dict[str, object] | None:
    status = world.status()
    if status and all(status.get(k) == v for k, v in fields.items()):
        return status
    return None


def test_login_pause_resumes_when_auth_json_changes(world: World, start) -> None:
    """Logged out: the job waits in the inbox with a `retrying: true` sidecar, status.json says
    paused with a hint and counts each waiting job once; `codex login` (auth.json rewritten)
    resumes the queue without a restart."""
    world.set_script(scenario="unauthorized", delay_sec=1.0)
    daemon = start()
    world.write_job("patient")
    daemon.wait_for(lambda: world.calls(), what="codex started")
    world.write_job("later")  # complete, and queued behind the running job
    status = daemon.wait_for(lambda: status_is(world, state="paused"), what="paused")
    assert status["paused"]["error"] == "login"
    assert "codex login" in status["paused"]["hint"]
    (sidecar,) = world.errors().values()
    assert sidecar["retrying"] is True
    assert sidecar["error"] == "login"
    daemon.wait_for(
        lambda: world.jobs_in() == ["later.prompt.yaml", "patient.prompt.yaml"],
        what="both jobs in the inbox",
    )
    time.sleep(1.5)  # well past the settle time: every recount has happened
    assert world.status()["queue_length"] == 2
    shown = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--config", str(world.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "paused" in shown
    assert "queued: 2" in shown
    assert "hint" in shown

    world.set_script()
    (world.codex_home / "auth.json").write_text('{"auth_mode": "chatgpt"}')
    done_once(world, "patient.prompt.yaml")
    done_once(world, "later.prompt.yaml")
    assert world.errors() == {}
    daemon.wait_for(lambda: status_is(world, state="idle", queue_length=0), what="idle")
    assert world.status()["paused"] is None
    assert daemon.stop() == 0


def test_usage_limit_pauses_until_the_time_codex_gives(world: World, start) -> None:
    """A usage limit with "try again in 3 seconds" pauses the queue, the job waiting in the
    inbox, and resumes on its own at that time."""
    world.set_script(
        scenario="usage_limit",
        usage_limit_message="You've hit your usage limit. Try again in 3 seconds.",
    )
    daemon = start()
    world.write_job("limited")
    status = daemon.wait_for(lambda: status_is(world, state="paused"), what="paused")
    world.set_script()
    assert status["paused"]["error"] == "usage-limit"
    assert status["paused"]["resumes_at"]
    (sidecar,) = world.errors().values()
    assert sidecar["retrying"] is True
    assert sidecar["retry_at"]
    assert world.jobs_in() == ["limited.prompt.yaml"]
    done_once(world, "limited.prompt.yaml")
    assert len(world.calls()) == 2
    assert daemon.logged("queue resumed", reason="time")
    assert daemon.stop() == 0


def test_network_down_is_noticed_in_seconds(world: World, start) -> None:
    """codex waiting for the network pauses the queue in seconds, long before the job timeout,
    and no codex is left waiting."""
    world.set_script(scenario="network_down")
    daemon = start()
    world.write_job("offline", "prompt: a modem\ntimeout_sec: 600\n")
    status = daemon.wait_for(lambda: status_is(world, state="paused"), timeout=30, what="paused")
    assert status["paused"]["error"] == "network"
    call = world.calls()[0]
    assert not pid_alive(call["pid"])
    assert world.jobs_in() == ["offline.prompt.yaml"]
    assert daemon.stop() == 0


def test_status_counts_a_job_waiting_for_its_retry_once(world: World, start) -> None:
    """While another job runs, a job back in the inbox for a retry counts once in the queue
    length, and the running job is shown as the current one, not as queued."""
    world.write_config(retry={"attempts": 3, "backoff_sec": 30, "max_backoff_sec": 30})
    world.set_script(scenario="server_error")
    daemon = start()
    world.write_job("flaky")
    daemon.wait_for(lambda: world.errors(), what="retrying sidecar")
    world.set_script(delay_sec=3.0)
    world.write_job("steady")
    status = daemon.wait_for(
        lambda: status_is(world, state="working", current_job="steady.prompt.yaml"),
        what="working on the second job",
    )
    assert status["queue_length"] == 1
    # The status says "working" a moment before the job file moves to processing/.
    daemon.wait_for(lambda: world.jobs_in() == ["flaky.prompt.yaml"], what="steady claimed")
    assert daemon.stop() == 0


# --- 6. one daemon per inbox; 7. SIGHUP ---------------------------------------------------------


def test_second_daemon_on_the_same_inbox_exits_at_once_naming_the_first(
    world: World, start
) -> None:
    """A second `run` on the same inbox exits non-zero at once, naming the first one's pid."""
    first = start()
    second = world.cli("run", cwd=REPO)
    assert second.returncode != 0
    assert f"pid {first.pid}" in second.stderr
    assert "already working on" in second.stderr
    assert first.running()
    assert first.stop() == 0


def test_sighup_reloads_the_configuration(world: World, start) -> None:
    """After SIGHUP the daemon uses the edited config (a new outbox); a broken config is
    reported and the running one kept."""
    daemon = start()
    new_outbox = world.root / "outbox-2"
    world.write_config(outbox=str(new_outbox))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.logged("configuration reloaded"), what="reloaded")
    world.write_job("moved")
    daemon.wait_for(lambda: list(new_outbox.glob("moved.result.yaml")), what="result in new outbox")
    assert not list(world.outbox.glob("moved*"))
    status_file = new_outbox / "status.json"
    daemon.wait_for(
        lambda: status_file.exists() and json.loads(status_file.read_text())["state"] == "idle",
        what="status in the new outbox",
    )

    world.config_path.write_text("inbox: [not, a, path]\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(
        lambda: daemon.logged("reload failed; keeping the running configuration"),
        what="reload refused",
    )
    world.write_job("still")
    daemon.wait_for(lambda: list(new_outbox.glob("still.result.yaml")), what="still working")
    assert daemon.stop() == 0


# --- 8. an outbox that cannot be written ------------------------------------------------------

NOBODY = 65534


@pytest.fixture
def nobody_world() -> Iterator[World]:
    """A world owned by an unprivileged user, so that a read-only folder really stops writes."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the daemon as another user")
    # The venv's interpreter may live under a folder only root can enter (/root/.pyenv): use
    # the system one of the same version, with the venv's packages on PYTHONPATH.
    python = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin"
    )
    if python is None:
        pytest.skip("no system Python of this version for the unprivileged daemon")
    root = Path(tempfile.mkdtemp(prefix="daemon-nobody-"))
    root.chmod(0o755)
    world = World(root / "world", python=python)
    for path in [world.root, *world.root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    yield world
    shutil.rmtree(root, ignore_errors=True)


def test_unwritable_outbox_keeps_the_job_and_resumes_when_fixed(nobody_world, start) -> None:
    """With the outbox read-only the finished job waits in processing/ with its run record, the
    failure is logged and the queue pauses; once the outbox is writable again the job is
    delivered from its session, without running codex again and without a restart."""
    world = nobody_world
    env = world.env(HOME=str(world.root))
    daemon = start(
        world,
        env=env,
        prefix=["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
    )
    world.write_job("first")
    done_once(world, "first.prompt.yaml")
    world.outbox.chmod(0o555)
    world.write_job("blocked")
    daemon.wait_for(lambda: daemon.logged("queue paused", error="outbox"), what="paused")
    assert world.jobs_in() == []
    assert world.jobs_in("processing") == ["blocked.prompt.yaml"]
    world.outbox.chmod(0o755)
    done_once(world, "blocked.prompt.yaml")
    assert_settled(world)
    assert len(world.calls()) == 2  # "first" and "blocked", each once
    daemon.wait_for(lambda: status_is(world, state="idle"), what="status current again")
    assert world.errors() == {}
    assert daemon.stop() == 0


@pytest.fixture
def small_outbox(world: World) -> Iterator[Path]:
    """The outbox on a real 256 KiB tmpfs (root only), unmounted at the end."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("a tmpfs needs root and mount(8); CI has both")
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(world.outbox)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield world.outbox
    finally:
        subprocess.run(["umount", "-l", str(world.outbox)], check=False)


def test_a_disk_with_some_room_but_not_enough_pauses_with_a_growing_backoff(
    world: World, start, small_outbox: Path
) -> None:
    """The image does not fit, a small test write does: the queue does not flip between paused
    and resumed twice a second, and once there is room the job is delivered without codex
    running again."""
    world.set_script(image_size=200_000)
    filler = small_outbox / "filler.bin"
    filler.write_bytes(bytes(160 * 1024))  # leaves ~96 KiB: room for a probe, not the image
    daemon = start()
    world.write_job("big")
    daemon.wait_for(lambda: daemon.logged("queue paused", error="outbox"), what="paused")
    paused_at = time.monotonic()
    time.sleep(8.0)  # a window to count resumes in, not a synchronisation
    window = time.monotonic() - paused_at
    resumes = len(daemon.logged("queue resumed", reason="disk writable"))
    # Spacings of 1, 2, 4 s allow at most 3 resumes in 8 s (and fewer on a slow machine);
    # resuming at every tick would give about 16.
    assert resumes <= 3 + int(window > 15), resumes
    assert world.jobs_in("processing") == ["big.prompt.yaml"]
    filler.unlink()
    done_once(world, "big.prompt.yaml")
    assert len(world.calls()) == 1
    assert daemon.stop() == 0


# --- 9. fuzzed job files; 10. a burst ------------------------------------------------------------

YAMLISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "prompt: ",
                "prompt: a cat\n",
                "promt: typo\n",
                "refs: [",
                "refs: []\n",
                "- ",
                "]\n",
                "refs:\n  - missing.png\n",
                "out: ",
                "out: ../escape\n",
                "timeout_sec: ",
                "model: ",
                "format: ",
                "webp\n",
                "gif\n",
                "&a [1, 2]\n",
                "*a\n",
                "!!python/object:os.system\n",
                "{",
                "}",
                ":",
                "\t",
                "\n",
                "  ",
                "'",
                '"',
                "0.5\n",
                "-1\n",
                "null\n",
                "~\n",
                "---\n",
                "...\n",
                "\u2028",
                "\ufeff",
                "\x00",
                "%YAML 1.2\n",
                "? ",
                "| \n",
                "> \n",
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=12,
).map("".join)


FUZZ_BATCH = 10  # job files dropped together in one example


def test_fuzzed_job_files_each_end_with_a_sidecar_and_never_crash_the_daemon(
    world: World, start
) -> None:
    """Random bytes and YAML-like text dropped as job files into one running daemon: each ends
    with a result or an error sidecar, none is left behind, and the daemon stays up."""
    daemon = start()
    written: list[str] = []

    @settings(
        max_examples=max(1, int(os.environ.get("DAEMON_FUZZ_EXAMPLES", "30")) // FUZZ_BATCH),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        contents=st.lists(
            st.one_of(st.binary(max_size=300), YAMLISH.map(str.encode)),
            min_size=FUZZ_BATCH,
            max_size=FUZZ_BATCH,
        )
    )
    def drop(contents: list[bytes]) -> None:
        batch = []
        for content in contents:  # a batch at once: the daemon sees them side by side
            name = f"fuzz-{len(written):03d}.prompt.yaml"
            staging = world.root / name
            staging.write_bytes(content)
            os.rename(staging, world.inbox / name)
            written.append(name)
            batch.append(name)

        def all_settled() -> bool:
            finished = set(world.jobs_in("done")) | set(world.jobs_in("failed"))
            return finished >= set(batch)

        daemon.wait_for(all_settled, timeout=120, what="every fuzzed job done or failed")
        errors = world.errors().values()
        sidecar_jobs = [d.get("job") for d in [*world.results().values(), *errors]]
        for name in batch:
            assert sidecar_jobs.count(name) == 1, name
            if name in world.jobs_in("failed"):
                assert any(d.get("job") == name and d["retrying"] is False for d in errors)

    drop()

    assert written
    assert_settled(world)
    assert all("raw" not in e for e in daemon.log_lines()), "a traceback in the log"
    assert daemon.stop() == 0


def test_burst_of_jobs_is_done_exactly_once_each(world: World, start) -> None:
    """200 job files copied in at once are all done, each once: none lost, none run twice; the
    gallery, rebuilt sparingly during the burst, shows every one of them once the queue is empty."""
    world.write_config(gallery=True)
    count = 200
    staging = world.root / "staging"
    staging.mkdir()
    names = [f"burst-{n:03d}" for n in range(count)]
    for name in names:
        (staging / f"{name}.prompt.yaml").write_text(f"prompt: picture {name}\n")
    daemon = start()
    for name in names:
        shutil.copy(staging / f"{name}.prompt.yaml", world.inbox)
    daemon.wait_for(
        lambda: len(world.jobs_in("done")) == count, timeout=240, what=f"{count} jobs done"
    )
    calls = world.calls()
    prompts = [c["stdin"] for c in calls]
    for name in names:
        assert sum(f"picture {name}\n" in p for p in prompts) == 1, name
    assert len(calls) == count
    assert len(world.results()) == count
    assert {d["job"] for d in world.results().values()} == {f"{n}.prompt.yaml" for n in names}
    assert_settled(world)
    page = world.outbox / "index.html"
    daemon.wait_for(
        lambda: page.exists() and all(f"picture {n}" in page.read_text() for n in names),
        what="every job in the gallery",
    )
    assert daemon.stop() == 0


# --- 11. submit --wait; 12. systemd notifications ---------------------------------------------


def submit(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.cli("submit", *args)


def test_submit_wait_prints_the_image_path(world: World, start) -> None:
    """`submit --wait` against a running daemon prints the image's path and exits 0; the
    reference travels with the job."""
    ref = world.root / "photo.png"
    ref.write_bytes(tiny_png(5))
    start()
    done = submit(world, "--prompt", "a cat in a hat", "--ref", str(ref), "--name", "cat", "--wait")
    assert done.returncode == 0, done.stderr
    (printed,) = done.stdout.split()
    assert Path(printed) == world.outbox / "cat.png"
    assert Path(printed).read_bytes().startswith(b"\x89PNG")
    assert world.results_for("cat.prompt.yaml")[0]["refs"] == ["cat.ref-01.png"]
    assert len(world.calls()[0]["refs"]) == 1


def test_submit_wait_exits_with_the_failed_jobs_code(world: World, start) -> None:
    """`submit --wait` for a job that is refused exits with the job's code (7) and says why."""
    world.set_script(scenario="refuse")
    start()
    done = submit(world, "--prompt", "something refused", "--name", "nope", "--wait")
    assert done.returncode == 7
    assert done.stdout == ""
    assert "refused" in done.stderr


def test_systemd_notifications(world: World, start) -> None:
    """Under systemd the daemon sends READY=1 once watching, STATUS= lines as it works,
    WATCHDOG=1 pings when WATCHDOG_USEC is set, and STOPPING=1 on SIGTERM."""
    folder = Path(tempfile.mkdtemp(prefix="notify-"))  # a short path: sun_path is 108 bytes
    address = folder / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(0.2)
        got: list[str] = []

        def received(message: str) -> bool:
            while True:
                try:
                    got.append(sock.recv(4096).decode())
                except TimeoutError:
                    break
            return any(m.startswith(message) for m in got)

        env = world.env(NOTIFY_SOCKET=str(address), WATCHDOG_USEC="1000000")
        daemon = start(env=env)
        wait_for(lambda: received("READY=1"), what="READY=1")
        world.write_job("notified")
        wait_for(lambda: received("STATUS=working on notified.prompt.yaml"), what="STATUS")
        done_once(world, "notified.prompt.yaml")
        wait_for(
            lambda: received("WATCHDOG=1") and got.count("WATCHDOG=1") >= 2, what="watchdog pings"
        )
        daemon.signal(signal.SIGTERM)
        wait_for(lambda: received("STOPPING=1"), what="STOPPING=1")
        assert daemon.wait_exit() == 0
    shutil.rmtree(folder, ignore_errors=True)
    assert got.index("READY=1") < got.index("STOPPING=1")
    assert any(m.startswith("STATUS=idle") for m in got)


# --- 13. the real codex CLI ----------------------------------------------------------------------


@pytest.mark.real_codex
def test_real_codex_turns_a_saved_job_into_an_image(
    world: World, start, codex_bin: Path, mock_openai, codex_home: Path
) -> None:
    """A job file saved into the inbox of a running daemon becomes an image through the real
    codex CLI (against the mock server on 127.0.0.1)."""
    from tests.support.codex_home import codex_env

    world.write_config(
        codex={"command": [str(codex_bin)], "home": str(codex_home), "timeout_sec": 120}
    )
    start(env=codex_env(mock_openai.port, codex_home=codex_home, base=world.env()))
    world.write_job("real", "prompt: a small red square on white\n")
    wait_for(lambda: world.results_for("real.prompt.yaml"), timeout=180, what="real result")
    (result,) = world.results_for("real.prompt.yaml")
    assert result["codex_version"].endswith("0.171.0")
    image = world.outbox / result["images"][0]["file"]
    assert image.stat().st_size == result["images"][0]["bytes"]
    assert result["images"][0]["format"] in ("png", "jpeg", "webp")
    assert world.jobs_in("done") == ["real.prompt.yaml"]
    assert any("a small red square on white" in p for p in mock_openai.user_prompts())


@pytest.mark.real_codex
def test_real_codex_image_limit_pauses_the_queue_until_the_reset(
    world: World, start, codex_bin: Path, mock_openai, codex_home: Path
) -> None:
    """Two queued jobs, the plan's image limit on the first (real codex, the images endpoint
    answering 429): the queue pauses until the reset, the second job spends no try, and
    status.json, `status`, the STATUS= line and the gallery say "image limit until HH:MM"."""
    from datetime import datetime

    from tests.support.codex_home import codex_env

    mock_openai.scenario = "image_limit"
    world.write_config(
        gallery=True,
        codex={"command": [str(codex_bin)], "home": str(codex_home), "timeout_sec": 120},
    )
    world.write_job("a-first", "prompt: a fox\n")
    world.write_job("b-second", "prompt: a hare\n")
    folder = Path(tempfile.mkdtemp(prefix="notify-"))  # a short path: sun_path is 108 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(folder / "notify.sock"))
        sock.settimeout(0.2)
        got: list[str] = []

        def received(prefix: str, *, count: int = 1) -> bool:
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(sock.recv(4096).decode())
            return sum(m.startswith(prefix) for m in got) >= count

        base = world.env(NOTIFY_SOCKET=str(folder / "notify.sock"), WATCHDOG_USEC="1000000")
        daemon = start(env=codex_env(mock_openai.port, codex_home=codex_home, base=base))
        status = daemon.wait_for(
            lambda: status_is(world, state="paused"), timeout=180, what="paused"
        )
        resets = datetime.fromtimestamp(mock_openai.image_limit_resets_at()).astimezone()
        until = f"image limit until {resets:%H:%M}"
        if resets.date() != datetime.now().astimezone().date():
            until = f"image limit until {resets:%Y-%m-%d %H:%M}"
        wait_for(lambda: received(f"STATUS=paused: {until}"), what="STATUS= paused")
        # The paused loop keeps ticking (and the watchdog pinged) while no job starts.
        start_pings = got.count("WATCHDOG=1")
        wait_for(lambda: received("WATCHDOG=1", count=start_pings + 3), what="pings")
        shown = world.cli("status", cwd=REPO)
        page = (world.outbox / "index.html").read_text("utf-8")
        assert daemon.stop() == 0
    shutil.rmtree(folder, ignore_errors=True)

    assert f"paused: {until}" in shown.stdout, shown.stdout + shown.stderr
    assert f"Queue paused: {until}." in page
    assert status["paused"]["error"] == "image-limit"
    assert status["paused"]["summary"] == until
    # resumes_at is written to the second: at most one second before the reset itself.
    resumes_at = datetime.fromisoformat(status["paused"]["resumes_at"])
    assert 0 <= (resets - resumes_at).total_seconds() <= 1
    assert status["queue_length"] == 2
    # The failed run's log names the image limit: status.json keeps it as a used-up snapshot.
    (image_limit,) = [s for s in status["rate_limits"] if s["limit_id"] == "image_gen"]
    assert image_limit["used_percent"] == 100.0
    assert datetime.fromisoformat(image_limit["resets_at"]) == resets
    assert f"quota: image limit 100 % used, resets {resets:%H:%M}" in shown.stdout
    assert len(mock_openai.image_requests()) == 1
    (sidecar,) = world.errors().values()
    assert (sidecar["job"], sidecar["error"], sidecar["retrying"]) == (
        "a-first.prompt.yaml",
        "image-limit",
        True,
    )
    assert datetime.fromisoformat(sidecar["retry_at"]) == resets
    assert world.jobs_in() == ["a-first.prompt.yaml", "b-second.prompt.yaml"]
    assert world.jobs_in("failed") == []


@pytest.mark.real_codex
def test_real_codex_image_limit_resumes_at_the_reset_and_runs_the_queue(
    world: World, start, codex_bin: Path, mock_openai, codex_home: Path
) -> None:
    """An image limit that resets in a few seconds: the queue waits for the reset, not a
    backoff of its own, then runs the waiting job and the one queued behind it."""
    from tests.support.codex_home import codex_env

    mock_openai.scenario = "image_limit"
    # Long enough for the test to switch the mock back before the reset, even under load.
    mock_openai.resets_in_sec = 6
    world.write_config(
        codex={"command": [str(codex_bin)], "home": str(codex_home), "timeout_sec": 120}
    )
    world.write_job("a-first", "prompt: a fox\n")
    world.write_job("b-second", "prompt: a hare\n")
    daemon = start(env=codex_env(mock_openai.port, codex_home=codex_home, base=world.env()))
    daemon.wait_for(lambda: status_is(world, state="paused"), timeout=180, what="paused")
    assert len(mock_openai.image_requests()) == 1
    mock_openai.scenario = "image"
    for job in ("a-first", "b-second"):
        done_once(world, f"{job}.prompt.yaml")
    assert daemon.logged("queue resumed", reason="time")
    assert len(mock_openai.image_requests()) == 3
    assert world.errors() == {}  # the success removed the limit's sidecar
    assert_settled(world)
    assert daemon.stop() == 0


# --- 14. quota and the live gallery --------------------------------------------------------------


@pytest.mark.real_codex
def test_real_codex_rate_limits_reach_sidecar_status_status_line_and_gallery(
    world: World, start, codex_bin: Path, mock_openai, codex_home: Path
) -> None:
    """The server's rate-limit headers, as the real codex logs them, show in the result
    sidecar, status.json, `status`, the STATUS= line and the gallery header."""
    from datetime import datetime

    from tests.support.codex_home import codex_env
    from tests.support.mock_openai import RateLimits

    mock_openai.rate_limits = RateLimits(image_family_on_responses=True, resets_in_sec=7200)
    world.write_config(
        gallery=True,
        codex={"command": [str(codex_bin)], "home": str(codex_home), "timeout_sec": 120},
    )
    folder = Path(tempfile.mkdtemp(prefix="notify-"))  # a short path: sun_path is 108 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(folder / "notify.sock"))
        sock.settimeout(0.2)
        got: list[str] = []

        def received(part: str) -> bool:
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(sock.recv(4096).decode())
            return any(part in m for m in got)

        base = world.env(NOTIFY_SOCKET=str(folder / "notify.sock"))
        daemon = start(env=codex_env(mock_openai.port, codex_home=codex_home, base=base))
        world.write_job("quota", "prompt: a red square\n")
        (result,) = done_once(world, "quota.prompt.yaml") and world.results_for("quota.prompt.yaml")
        wait_for(lambda: received("STATUS=idle, 0 queued, image limit 80 % used"), what="STATUS=")
        status = daemon.wait_for(lambda: status_is(world, state="idle"), what="idle")
        shown = world.cli("status", cwd=REPO)
        page = (world.outbox / "index.html").read_text("utf-8")
        assert daemon.stop() == 0
    shutil.rmtree(folder, ignore_errors=True)

    (snapshot,) = result["rate_limits"]
    assert (snapshot["limit_id"], snapshot["used_percent"], snapshot["window_minutes"]) == (
        "image_gen",
        80.0,
        1440,
    )
    resets = datetime.fromisoformat(snapshot["resets_at"])
    assert 7000 < (resets - datetime.now().astimezone()).total_seconds() <= 7200
    assert status["rate_limits"] == result["rate_limits"]
    clock = f"{resets.astimezone():%H:%M}"
    if resets.astimezone().date() != datetime.now().astimezone().date():
        clock = f"{resets.astimezone():%Y-%m-%d %H:%M}"
    assert f"quota: image limit 80 % used, resets {clock}" in shown.stdout, shown.stdout
    assert f"STATUS=idle, 0 queued, image limit 80 % used, resets {clock}" in got
    assert f'<p class="quota">image limit: 80 % used, resets {clock}</p>' in page
    assert 'http-equiv="refresh"' not in page  # idle: the page stopped following the daemon


def test_gallery_follows_a_running_job_and_stops_refreshing_once_idle(world: World, start) -> None:
    """While a job runs the page names it and reloads itself; once the queue is empty the page
    is rebuilt one last time, without the refresh."""
    world.write_config(gallery=True)
    world.set_script(delay_sec=3)
    daemon = start()
    index = world.outbox / "index.html"
    world.write_job("slow")

    def page_says(text: str) -> str | None:
        page = index.read_text("utf-8") if index.exists() else ""
        return page if text in page else None

    working = daemon.wait_for(
        lambda: page_says("Working on slow.prompt.yaml since"), what="working"
    )
    assert '<meta http-equiv="refresh" content="5">' in working
    done_once(world, "slow.prompt.yaml")
    idle = daemon.wait_for(lambda: page_says("slow.png"), what="the finished page")
    assert "Working on" not in idle
    assert 'http-equiv="refresh"' not in idle
    assert daemon.stop() == 0


def test_gallery_shows_a_pause_and_refreshes_while_paused(world: World, start) -> None:
    """A pause is on the page at once, with its reason, and the page reloads itself."""
    world.write_config(gallery=True)
    world.set_script(scenario="usage_limit")
    daemon = start()
    index = world.outbox / "index.html"
    world.write_job("limited")
    daemon.wait_for(lambda: status_is(world, state="paused"), what="paused")
    page = daemon.wait_for(
        lambda: (t := index.read_text("utf-8")) and "Queue paused: usage limit until" in t and t,
        what="the paused page",
    )
    assert '<meta http-equiv="refresh" content="5">' in page
    header = page[page.index("<header>") : page.index("</header>")]
    assert "Reason: codex reports that the ChatGPT usage limit is reached: You\u2019ve" in header
    assert "1 job queued." in page
    assert daemon.stop() == 0
