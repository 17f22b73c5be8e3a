"""The loop's decisions, in-process with a fake clock: the scheduler (queue, retries, pauses,
disk probes) and the runner shell driven by a fake watcher and a fake process_job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import RetryConfig
from daemon.errors import CodexFailed, NetworkDown, OutboxUnwritable, UsageLimit
from daemon.loop.backoff import doubling, retry_delay
from daemon.loop.runner import Daemon
from daemon.loop.scheduler import (
    IDLE_WAIT_SEC,
    PAUSE_MAX_SEC,
    TICK_SEC,
    Scheduler,
)
from daemon.loop.sd_notify import SystemdNotifier
from daemon.pipeline.flow import Outcome, Status

START = 1_800_000_000.0  # a fixed Unix time: the fake clock's start


class FakeClock:
    """Seconds since the epoch; moves only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def scheduler(
    clock: FakeClock, *, attempts: int = 3, first: float = 2.0, cap: float = 10.0
) -> Scheduler:
    retry = RetryConfig(attempts=attempts, backoff_sec=first, max_backoff_sec=cap)
    return Scheduler(retry, clock=clock)


# --- the backoff ------------------------------------------------------------------------


def test_the_backoff_doubles_from_its_first_value_up_to_its_cap() -> None:
    """One formula for retries, pauses and probes: first, twice, four times, ..., the cap."""
    assert [doubling(1.0, n, cap=10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    retry = RetryConfig(attempts=5, backoff_sec=30.0, max_backoff_sec=100.0)
    assert [retry_delay(retry, n) for n in (1, 2, 3)] == [30.0, 60.0, 100.0]


# --- the queue --------------------------------------------------------------------------


def test_jobs_run_in_arrival_order_and_each_is_queued_once(clock: FakeClock) -> None:
    """The first handed-over job is due first; a job handed over again is not queued twice."""
    s = scheduler(clock)
    a, b = Path("a.prompt.yaml"), Path("b.prompt.yaml")
    assert s.add(a)
    assert s.add(b)
    assert not s.add(a)
    assert len(s) == 2
    assert s.due() == a
    s.drop(a)
    assert s.due() == b
    s.drop(b)
    assert s.due() is None
    assert len(s) == 0


def test_a_retried_job_waits_its_backoff_while_the_next_one_runs(clock: FakeClock) -> None:
    """A passing failure puts the job back with a growing, capped wait; jobs behind it go first."""
    s = scheduler(clock, attempts=5, first=2.0, cap=5.0)
    a, b = Path("a.prompt.yaml"), Path("b.prompt.yaml")
    s.add(a)
    s.add(b)
    assert s.retry_later(a) == 2.0
    assert s.due() == b
    s.drop(b)
    assert s.due() is None
    assert s.sleep_time() == pytest.approx(TICK_SEC)  # looks again soon: the queue is not empty
    clock.advance(2.0)
    assert s.due() == a
    assert [s.retry_later(a) for _ in range(3)] == [4.0, 5.0, 5.0]  # doubling, then the cap


def test_the_sleep_time_is_the_nearest_retry_or_an_idle_wait(clock: FakeClock) -> None:
    """With nothing queued the loop waits long for the watcher; a retry due soon shortens that."""
    s = scheduler(clock, first=0.2)
    assert s.sleep_time() == IDLE_WAIT_SEC
    a = Path("a.prompt.yaml")
    s.add(a)
    s.retry_later(a)
    assert s.sleep_time() == pytest.approx(0.2)
    clock.advance(1.0)
    assert s.sleep_time() == pytest.approx(0.01)  # due: at once, but never a busy zero


def test_the_last_try_is_known_before_it_runs(clock: FakeClock) -> None:
    """process_job is told when a passing failure would fail the job for good."""
    s = scheduler(clock, attempts=2)
    a = Path("a.prompt.yaml")
    s.add(a)
    assert not s.final_attempt(a)
    s.retry_later(a)
    assert s.final_attempt(a)


def test_after_a_stop_nothing_more_is_due(clock: FakeClock) -> None:
    """A stop request takes no further job; the queued ones stay (their files wait in the inbox)."""
    s = scheduler(clock)
    s.add(Path("a.prompt.yaml"))
    s.stop()
    assert s.due() is None
    assert len(s) == 1


# --- pauses -----------------------------------------------------------------------------


def test_a_paused_queue_runs_nothing_until_the_reset_time(clock: FakeClock) -> None:
    """A limit with a reset time holds the queue until that time, however long; then it runs."""
    s = scheduler(clock)
    s.add(Path("a.prompt.yaml"))
    reset = datetime.fromtimestamp(START).astimezone() + timedelta(hours=2)
    pause = s.pause_for(UsageLimit("limit reached", retry_at=reset))
    assert pause.resumes_at == reset
    assert s.due() is None
    assert s.sleep_time() == TICK_SEC  # an early end (a login) is looked for meanwhile
    clock.advance(2 * 3600 - 1)
    assert not s.pause_expired()
    clock.advance(1)
    assert s.pause_expired()
    s.resume()
    assert s.due() == Path("a.prompt.yaml")


def test_a_reset_time_already_past_still_pauses_a_second(clock: FakeClock) -> None:
    """A reset time codex names in the past (a slow clock) still pauses for a second."""
    s = scheduler(clock)
    past = datetime.fromtimestamp(START).astimezone() - timedelta(minutes=5)
    assert s.pause_for(UsageLimit("limit", retry_at=past)).until == START + 1.0


def test_pauses_in_a_row_double_until_a_job_gets_through(clock: FakeClock) -> None:
    """Without a reset time a pause lasts its kind's first wait, doubling for each pause in a
    row up to the cap; a job that gets through starts the doubling over."""
    s = scheduler(clock)
    waits = [s.pause_for(NetworkDown("offline")).until - START for _ in range(8)]
    assert waits == [10, 20, 40, 80, 160, 320, 640, PAUSE_MAX_SEC]
    s.got_through()
    assert s.pause_for(UsageLimit("limit")).until - START == 300.0
    s.got_through()
    assert s.pause_for(CodexFailed("other")).until - START == 30.0  # the default first wait


def test_a_disk_full_pause_probes_at_doubling_spacings(clock: FakeClock) -> None:
    """The test writes that may end a disk-full pause early come 1, 2, 4 s apart as the pauses
    grow; between them no probe is due."""

    def probe_times(pause_count: int) -> list[float]:
        s = scheduler(clock)
        for _ in range(pause_count):
            s.pause_for(OutboxUnwritable("disk full"))
        start, seen = clock(), []
        for _ in range(40):
            clock.advance(0.25)
            if s.probe_due():
                seen.append(clock() - start)
        return seen

    assert probe_times(1)[:3] == [1.0, 2.0, 3.0]
    assert probe_times(2)[:3] == [2.0, 4.0, 6.0]
    assert probe_times(3)[:2] == [4.0, 8.0]


def test_only_a_disk_full_pause_probes_the_disk(clock: FakeClock) -> None:
    """A network pause ends by time or a login; test writes would tell it nothing."""
    s = scheduler(clock)
    s.pause_for(NetworkDown("offline"))
    clock.advance(5)
    assert not s.probe_due()


# --- the runner shell, in-process -------------------------------------------------------


@dataclass
class FakeWatcher:
    """Hands over the scripted job files, one per wait; a wait with none left moves the fake
    clock by its timeout, and asks the daemon to stop once `until` says the test is over."""

    clock: FakeClock
    script: list[Path]
    until: Any  # () -> bool
    stop_daemon: Any = None  # () -> None, set once the daemon exists
    done_paths: list[Path] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    observer_kind: str | None = "fake"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def get(self, timeout: float | None = None) -> Path | None:
        if timeout == 0:
            return self.script.pop(0) if self.script else None
        self.waits.append(timeout or 0.0)
        self.clock.advance(timeout or 0.0)
        if self.script:
            return self.script.pop(0)
        if self.until():
            self.stop_daemon()
        return None

    def done(self, path: Path) -> None:
        self.done_paths.append(path)


class FakeNotifier(SystemdNotifier):
    """Keeps the status lines the service manager would be sent."""

    def __init__(self) -> None:
        super().__init__({})
        self.lines: list[str] = []

    def status(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "inbox": str(tmp_path / "inbox"),
        "outbox": str(tmp_path / "outbox"),
        "gallery": False,
        "codex": {"home": str(tmp_path / "codex-home")},
        "retry": {"attempts": 3, "backoff_sec": 30, "max_backoff_sec": 60},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_daemon(
    config_path: Path, clock: FakeClock, script: list[str], outcomes: dict[str, Iterator[Status]]
) -> tuple[list[tuple[str, float, bool]], FakeWatcher, FakeNotifier]:
    """Run the daemon until every scripted outcome has been given; returns (job, clock time,
    final_attempt) of every process_job call."""
    inbox = config_path.parent / "inbox"
    inbox.mkdir(exist_ok=True)
    paths = []
    for name in script:
        (inbox / name).write_text("prompt: x\n", encoding="utf-8")
        paths.append(inbox / name)
    calls: list[tuple[str, float, bool]] = []
    left = {name: list(statuses) for name, statuses in outcomes.items()}

    def process_job(path: Path, *, final_attempt: bool, **_: Any) -> Outcome:
        calls.append((path.name, clock() - START, final_attempt))
        status = left[path.name].pop(0)
        errors = {Status.PAUSED: NetworkDown("offline"), Status.RETRY: CodexFailed("server error")}
        return Outcome(path.name, status, error=errors.get(status))

    watcher = FakeWatcher(clock, paths, until=lambda: not any(left.values()))
    notifier = FakeNotifier()
    daemon = Daemon(
        config_path,
        environ={},
        clock=clock,
        notifier=notifier,
        watcher=lambda _config: watcher,
        process_job=process_job,
    )
    watcher.stop_daemon = daemon.request_stop
    assert daemon.run() == 0
    return calls, watcher, notifier


def test_the_loop_runs_jobs_in_order_and_retries_after_the_backoff(
    config_path: Path, clock: FakeClock
) -> None:
    """Two jobs: the first fails for a passing reason, the second runs meanwhile, and the first
    runs again once its 30 s backoff has passed on the loop's clock; both end done."""
    calls, watcher, _ = run_daemon(
        config_path,
        clock,
        ["a.prompt.yaml", "b.prompt.yaml"],
        {"a.prompt.yaml": iter([Status.RETRY, Status.DONE]), "b.prompt.yaml": iter([Status.DONE])},
    )
    names = [name for name, _, _ in calls]
    assert names == ["a.prompt.yaml", "b.prompt.yaml", "a.prompt.yaml"]
    first_try, retry = calls[0][1], calls[2][1]
    assert retry - first_try >= 30.0
    assert retry - first_try < 30.0 + 2 * TICK_SEC + IDLE_WAIT_SEC
    assert [final for _, _, final in calls] == [False, False, False]
    assert sorted(p.name for p in watcher.done_paths) == ["a.prompt.yaml", "b.prompt.yaml"]


def test_the_loop_holds_the_queue_during_a_pause_and_writes_the_status_file(
    config_path: Path, clock: FakeClock
) -> None:
    """A network pause holds every job for its 10 s; status.json and the service manager's
    status line say paused meanwhile, and the jobs run after it, in order."""
    calls, _, notifier = run_daemon(
        config_path,
        clock,
        ["a.prompt.yaml", "b.prompt.yaml"],
        {
            "a.prompt.yaml": iter([Status.PAUSED, Status.DONE]),
            "b.prompt.yaml": iter([Status.DONE]),
        },
    )
    assert [name for name, _, _ in calls] == ["a.prompt.yaml", "a.prompt.yaml", "b.prompt.yaml"]
    assert calls[1][1] - calls[0][1] >= 10.0
    assert any(line.startswith("paused: offline") for line in notifier.lines)
    status = yaml.safe_load((config_path.parent / "outbox" / "status.json").read_text())
    assert status["state"] == "stopped"
    assert status["paused"] is None
    assert status["since"] == datetime.fromtimestamp(START).astimezone().isoformat()
