"""The installed unit under a real `systemd --user`: crash, restart, stop and uninstall.

A private user manager (its own HOME and XDG_RUNTIME_DIR) runs the unit `service install` writes,
with a slow fake codex that records each run, so codex runs can be counted after a `kill -9` of
the daemon and after a `systemctl --user stop`. Needs root (a user manager for uid 0 needs no
login session) and systemd; skipped otherwise, and a failure when CI is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import pid_alive, wait_for
from tests.support.world import FAKE_CODEX, World

pytestmark = pytest.mark.systemd

UNIT = "gpt-image-inbox.service"
SYSTEMD = next((p for p in (Path("/lib/systemd/systemd"), Path("/usr/lib/systemd/systemd"))
               if p.exists()), None)  # fmt: skip
BOOTED_MARKER = Path("/run/systemd/system")  # sd_booted(): a user manager refuses to start without
DEADLINE = 90.0
RESTART_SEC = 10  # the shipped unit's RestartSec=, waited for as is
RECOVERING = "waiting for the codex an earlier run left"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is an error)")
    pytest.skip(message)


@dataclass
class UserManager:
    """A running `systemd --user` with a private HOME and XDG_RUNTIME_DIR."""

    home: Path
    runtime: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def systemctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", "--user", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def show(self, prop: str) -> str:
        return self.systemctl("show", UNIT, "-p", prop, "--value").stdout.strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`gpt-image-inbox ...` as the user would type it in this manager's session."""
        return subprocess.run(
            [*_own_command(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    @property
    def unit_file(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / UNIT

    def drop_in(self, text: str) -> None:
        """A drop-in for the installed unit, then daemon-reload; removed by `remove_drop_in`."""
        folder = self.unit_file.with_name(f"{UNIT}.d")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test.conf").write_text(text, encoding="utf-8")
        assert self.systemctl("daemon-reload").returncode == 0

    def remove_drop_in(self) -> None:
        shutil.rmtree(self.unit_file.with_name(f"{UNIT}.d"), ignore_errors=True)

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-40:]
        return "\n".join(lines)


def _own_command() -> list[str]:
    script = Path(sys.executable).with_name("gpt-image-inbox")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserManager]:
    """A user manager for this module's tests, killed at teardown whatever happened."""
    if os.geteuid() != 0:
        _unavailable("a private systemd user manager needs root here")
    if SYSTEMD is None or shutil.which("systemctl") is None:
        _unavailable("systemd is not installed (apt-get install systemd)")
    assert SYSTEMD is not None
    created_marker = not BOOTED_MARKER.exists()
    if created_marker:
        BOOTED_MARKER.mkdir(parents=True)
    home = tmp_path_factory.mktemp("home")
    # Short: the manager's sockets live here and a socket path has at most 107 bytes.
    runtime = Path(tempfile.mkdtemp(prefix="sdu-"))
    runtime.chmod(0o700)
    # The manager hands its whole environment to its units: keep it small and private.
    env = {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "USER": "root",
        "GPT_IMAGE_INBOX_CACHE": str(home / ".cache" / "gpt-image-inbox"),
        "SYSTEMD_LOG_TARGET": "console",  # no journald here: the manager logs to our file
    }
    # No session bus: systemctl, here and in the unit's ExecStopPost, talks to the manager over
    # its private socket, so the test shows the unit needs no dbus-user-session.
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    for name in ("dbus.socket", "dbus.service"):
        (units / name).symlink_to(os.devnull)
    log = home / "user-manager.log"
    own = OwnCgroup.create(f"gpt-image-inbox-test.{os.getpid()}")
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"{own.join_command()}; exec {shlex.quote(str(SYSTEMD))} --user"],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    mgr = UserManager(home, runtime, env, process, log)
    try:
        # "degraded" only says some other user unit failed (distributions ship default user
        # units that want a desktop session); this test's unit does not depend on any of them.
        state = wait_for(
            lambda: _system_state(mgr) in ("running", "degraded") and _system_state(mgr),
            timeout=DEADLINE,
            what="user manager running",
            alive=lambda: _manager_alive(mgr),
        )
        if state == "degraded":
            print(mgr.systemctl("list-units", "--failed", "--no-pager").stdout)
        yield mgr
    finally:
        _stop_manager(mgr)
        own.remove()
        if created_marker:
            shutil.rmtree(BOOTED_MARKER, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


@dataclass
class OwnCgroup:
    """A cgroup for the user manager alone. systemd takes the cgroup it starts in as its own and
    moves every other process in it into its init.scope: started in the test's cgroup (the root
    one, in a VM or container) it would take over every process there."""

    tracking: list[Path]  # where the manager goes: the hierarchies systemd tracks units in
    relative: str  # the same path below every hierarchy's mount point

    @classmethod
    def create(cls, name: str) -> OwnCgroup:
        tracking_mounts = _cgroup_mounts()[1]
        paths = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            paths[controllers] = path.rstrip("/")
        # On a hybrid or legacy host systemd's own path is the one in name=systemd.
        base = paths.get("name=systemd", paths.get("", ""))
        relative = f"{base}/{name}"
        tracking = [Path(tracking_mounts[k] + relative) for k in tracking_mounts if k in paths]
        for folder in tracking:
            folder.mkdir(exist_ok=True)
        return cls(tracking, relative)

    def join_command(self) -> str:
        """Shell words that move the shell running them into this cgroup."""
        moves = [f"echo $$ > {shlex.quote(str(f / 'cgroup.procs'))}" for f in self.tracking]
        return "; ".join(moves) or ":"

    def remove(self) -> None:
        """Kill anything still in it, in every hierarchy, and remove its folders, deepest first."""
        for mount in _cgroup_mounts()[0]:
            top = Path(mount + self.relative)
            if not top.is_dir():
                continue
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError, ValueError):
                    for pid in Path(folder, "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):  # a killed process leaves its cgroup a moment later
                    try:
                        os.rmdir(folder)
                        break
                    except OSError:
                        time.sleep(0.1)


def _cgroup_mounts() -> tuple[list[str], dict[str, str]]:
    """Every cgroup mount point, and those systemd tracks units in: "" (v2), "name=systemd"."""
    every: list[str] = []
    tracking: dict[str, str] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, options, *_ = line.split()
        if fstype not in ("cgroup", "cgroup2"):
            continue
        every.append(point)
        if fstype == "cgroup2":
            tracking.setdefault("", point)
        elif "name=systemd" in options.split(","):
            tracking.setdefault("name=systemd", point)
    return every, tracking


def _system_state(mgr: UserManager) -> str:
    return mgr.systemctl("is-system-running").stdout.strip()


def _manager_alive(mgr: UserManager) -> None:
    if mgr.process.poll() is not None:
        raise AssertionError(f"systemd --user exited {mgr.process.returncode}:\n{mgr.log_tail()}")


def _stop_manager(mgr: UserManager) -> None:
    """Everything the unit left is killed, then the manager: gracefully, else SIGKILL."""
    if mgr.process.poll() is None:
        mgr.systemctl("kill", "--kill-who=all", "--signal=SIGKILL", UNIT, timeout=30)
        mgr.process.terminate()
        try:
            mgr.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(mgr.process.pid, signal.SIGKILL)
            mgr.process.wait(timeout=30)


@pytest.fixture
def world(manager: UserManager, tmp_path: Path) -> Iterator[World]:
    """Inbox, outbox and fake codex in the manager's HOME; nothing of them outlives the test."""
    world = World(manager.home / f"world-{tmp_path.name}")
    # The service gets no test environment: a wrapper names the fake codex's script.
    wrapper = world.root / "codex"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"FAKE_CODEX_SCRIPT={shlex.quote(str(world.script_path))} "
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_CODEX))} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    world.write_config(codex={"command": [str(wrapper)]}, shutdown_grace_sec=3)
    try:
        yield world
    finally:
        manager.remove_drop_in()
        manager.cli("service", "uninstall")
        world.kill_codex_leftovers()


def run_record(world: World, job_file: str) -> dict[str, Any]:
    try:
        data = json.loads((world.inbox / "processing" / f".{job_file}.run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cgroup_procs(control_group: str) -> list[int]:
    """The pids in the unit's cgroup, in every hierarchy that has it (cgroup v2 or hybrid)."""
    pids: set[int] = set()
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        procs = Path(root + control_group) / "cgroup.procs"
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(pids)


def install(manager: UserManager, world: World) -> None:
    done = manager.cli("service", "install", "--config", str(world.config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    # loginctl (the linger hint) finds no logind here and fails at once: install says nothing.
    assert "Installed and started" in done.stdout
    wait_for(lambda: manager.show("ActiveState") == "active", what="unit active")


def kill_9_mid_job(manager: UserManager, world: World, job: str) -> dict[str, Any]:
    """SIGKILL the daemon while codex runs `job`; returns that codex's recorded call."""
    wait_for(lambda: run_record(world, job).get("thread_id"), what=f"{job}: codex running")
    wait_for(lambda: manager.show("StatusText") == f"working on {job}", what="STATUS working")
    main = int(manager.show("MainPID"))
    os.kill(main, signal.SIGKILL)
    call = world.calls()[-1]
    wait_for(lambda: manager.show("SubState") == "auto-restart", what="waiting to restart")
    # The point of KillMode=process: the daemon's death took codex with it under mixed.
    assert pid_alive(call["pid"]), "codex died with the daemon"
    wait_for(
        lambda: manager.show("StatusText") == f"recovering {job}: {RECOVERING}",
        timeout=RESTART_SEC + DEADLINE,
        what="the restarted daemon waiting for the leftover codex",
    )
    assert int(manager.show("MainPID")) not in (0, main)
    return call


def assert_nothing_left(control_group: str, call: dict[str, Any]) -> None:
    for pid in (call["pid"], call.get("child_pid")):
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"pid {pid} gone")
    assert cgroup_procs(control_group) == []


def test_installed_unit_survives_kill_9_and_stops_clean(manager: UserManager, world: World) -> None:
    """Installed and started, the daemon reports its status; after `kill -9` mid-job systemd
    restarts it and the job is done with exactly one codex run; `systemctl --user stop` mid-job
    leaves no process of the unit and the job back in the inbox; uninstall removes the unit."""
    install(manager, world)
    status = wait_for(lambda: manager.show("StatusText"), what="a STATUS= line")
    assert status.startswith("idle")
    shown = manager.systemctl("status", UNIT, "--no-pager")
    assert f'Status: "{status}"' in shown.stdout, shown.stdout

    world.write_job("first")
    wait_for(lambda: world.jobs_in("done") == ["first.prompt.yaml"], what="first job done")
    assert len(world.calls()) == 1

    # Pings every 3 s instead of 30: a recovery wait (about 15 s) far longer than WatchdogSec
    # would end in a watchdog restart (NRestarts 2) if the pings paused while waiting.
    manager.drop_in("[Service]\nWatchdogSec=6\n")
    manager.systemctl("restart", UNIT)
    wait_for(lambda: manager.show("ActiveState") == "active", what="unit active again")
    # Slow enough that codex still runs when systemd restarts the daemon RestartSec= later.
    world.set_script(delay_sec=RESTART_SEC + 15)
    world.write_job("crash")
    call = kill_9_mid_job(manager, world, "crash.prompt.yaml")
    wait_for(
        lambda: world.jobs_in("done") == ["crash.prompt.yaml", "first.prompt.yaml"],
        timeout=DEADLINE,
        what="crashed job done",
    )
    calls = world.calls()
    assert len(calls) == 2, "the job's codex ran again after the crash"
    (result,) = world.results_for("crash.prompt.yaml")
    assert result["thread_id"] == call["thread_id"]
    assert manager.show("NRestarts") == "1"
    assert world.jobs_in("processing") == []

    world.set_script(scenario="hang_ignoring_sigterm")  # the daemon must escalate to SIGKILL
    world.write_job("stopped")
    wait_for(lambda: len(world.calls()) == 3, what="codex started for the stopped job")
    wait_for(lambda: run_record(world, "stopped.prompt.yaml").get("thread_id"), what="recorded")
    control_group = manager.show("ControlGroup")
    stopped = manager.systemctl("stop", UNIT)
    assert stopped.returncode == 0, stopped.stderr
    assert manager.show("ActiveState") == "inactive"
    assert manager.show("Result") == "success"  # the daemon stopped codex itself, in time
    assert_nothing_left(control_group, world.calls()[-1])
    assert world.jobs_in() == ["stopped.prompt.yaml"]
    assert world.jobs_in("processing") == []
    assert len(world.calls()) == 3

    manager.remove_drop_in()
    removed = manager.cli("service", "uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not manager.unit_file.exists()
    assert manager.show("LoadState") == "not-found"
    assert manager.show("ActiveState") == "inactive"


def test_stop_during_the_recovery_wait_leaves_nothing_and_keeps_the_job(
    manager: UserManager, world: World
) -> None:
    """A stop while the restarted daemon waits for the codex a killed one left: that codex is
    stopped within the shutdown grace, nothing of the unit runs on, and the job is back in the
    inbox, run once."""
    install(manager, world)
    world.set_script(scenario="hang")
    world.write_job("fox")
    call = kill_9_mid_job(manager, world, "fox.prompt.yaml")
    control_group = manager.show("ControlGroup")
    stopped = manager.systemctl("stop", UNIT)
    assert stopped.returncode == 0, stopped.stderr
    assert manager.show("Result") == "success"
    assert_nothing_left(control_group, call)
    assert world.jobs_in() == ["fox.prompt.yaml"]
    assert world.jobs_in("processing") == []
    assert len(world.calls()) == 1


def test_unit_cleans_up_what_a_daemon_failing_to_stop_leaves(
    manager: UserManager, world: World
) -> None:
    """The shipped KillMode and ExecStopPost with a stand-in daemon that ignores SIGTERM and
    leaves a child in a session of its own: the child survives a `kill -9` of the main process
    and the restart, and a stop that times out still leaves nothing of the unit running."""
    install(manager, world)
    pids = world.root / "child.pids"
    # `$$` is systemd's escape for the shell's `$`.
    stand_in = f'setsid sleep 600 & echo $$! >> "{pids}"; trap "" TERM; while :; do sleep 1; done'
    manager.drop_in(
        "[Service]\nType=simple\nWatchdogSec=0\nTimeoutStopSec=3\nRestartSec=1\n"
        f"ExecStart=\nExecStart=/bin/sh -c '{stand_in}'\n"
    )
    manager.systemctl("restart", UNIT)
    wait_for(lambda: pids.exists() and pids.read_text().split(), what="child started")
    first = int(pids.read_text().split()[-1])
    os.kill(int(manager.show("MainPID")), signal.SIGKILL)
    wait_for(lambda: len(pids.read_text().split()) == 2, what="restarted")
    assert pid_alive(first), "the child died with the main process"
    control_group = manager.show("ControlGroup")
    manager.systemctl("stop", UNIT)
    assert manager.show("Result") == "timeout"
    for pid in (int(p) for p in pids.read_text().split()):
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"child {pid} gone")
    assert cgroup_procs(control_group) == []
