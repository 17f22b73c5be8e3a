"""The inbox watcher: complete jobs handed over once each, in arrival order, whatever the writer."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from structlog.testing import CapturingLogger, capture_logs
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.watching.icloud import SF_DATALESS
from daemon.watching.settle import Settler
from daemon.watching.watcher import InboxWatcher
from tests.support.procs import wait_for

SETTLE = 0.2
DEADLINE = 20.0


class Events:
    """Every event a watcher or settler logs, at every level, kept by structlog's own
    CapturingLogger: what a user would read in the log, without the global configuration."""

    def __init__(self) -> None:
        self.captured = CapturingLogger()
        self.log = structlog.wrap_logger(
            self.captured, processors=[], wrapper_class=structlog.BoundLogger
        )

    def saw(self, event: str, **fields: object) -> bool:
        """Whether `event` was logged with these fields (among others)."""
        return any(
            call.kwargs.get("event") == event
            and all(call.kwargs.get(k) == v for k, v in fields.items())
            for call in list(self.captured.calls)
        )


def take_all(watcher: InboxWatcher, count: int, *, quiet: float = 0.6) -> list[str]:
    """Takes jobs like the pipeline does (moving each out of the root), until `count` arrived
    and then nothing more for `quiet` seconds; returns their names in delivery order."""
    processing = watcher.inbox / "processing"
    processing.mkdir(exist_ok=True)
    names: list[str] = []
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        path = watcher.get(timeout=quiet if len(names) >= count else 0.5)
        if path is None:
            if len(names) >= count:
                return names
            continue
        names.append(path.name)
        os.replace(path, processing / path.name)
        watcher.done(path)
    pytest.fail(f"only {len(names)} of {count} jobs handed over: {names[-5:]}")


def job(inbox: Path, name: str, prompt: str = "a red fox") -> Path:
    path = inbox / f"{name}.prompt.yaml"
    path.write_text(f"prompt: {prompt}\n")
    return path


@pytest.fixture(params=["native", "polling"])
def watcher(request: pytest.FixtureRequest, inbox: Path) -> Iterator[InboxWatcher]:
    """A running watcher with each kind of observer; stopped after the test."""
    w = InboxWatcher(
        inbox,
        settle_sec=SETTLE,
        rescan_sec=2.0,
        polling=request.param == "polling",
        grace_sec=2.0,
    )
    w.start()
    yield w
    w.stop()


# --- real observers on real folders -----------------------------------------------------------


def test_starts_with_the_observer_asked_for(watcher: InboxWatcher) -> None:
    """A native or a polling observer runs, as configured."""
    assert watcher.observer_kind == ("polling" if watcher.polling else "native")


def test_slowly_written_job_is_handed_over_once_complete(inbox: Path) -> None:
    """A job written in chunks is handed over once, only after its last chunk."""
    settle = 0.8
    for polling in (False, True):
        folder = inbox / f"polling-{polling}"
        folder.mkdir()
        chunks = ["prompt: >\n  slow\n"] + [f"  line {i}\n" for i in range(8)]
        with InboxWatcher(folder, settle_sec=settle, polling=polling) as w:
            path = folder / "slow.prompt.yaml"
            with path.open("w") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    handle.flush()
                    assert w.get(timeout=0.1) is None
            delivered = w.get(timeout=DEADLINE)
            assert delivered == path
            assert delivered.read_text() == "".join(chunks)
            assert w.get(timeout=settle * 1.5) is None


def test_job_renamed_into_place_is_handed_over(watcher: InboxWatcher, tmp_path: Path) -> None:
    """Editor-style temp-then-rename and `mv` from outside both deliver the destination."""
    inbox = watcher.inbox
    temp = inbox / "saved.prompt.yaml.tmp"
    temp.write_text("prompt: saved by an editor\n")
    os.replace(temp, inbox / "saved.prompt.yaml")
    outside = tmp_path / "moved.prompt.yaml"
    outside.write_text("prompt: moved in\n")
    shutil.move(outside, inbox / "moved.prompt.yaml")
    assert sorted(take_all(watcher, 2)) == ["moved.prompt.yaml", "saved.prompt.yaml"]


def test_burst_of_1000_is_handed_over_once_each_in_order(
    watcher: InboxWatcher, tmp_path: Path
) -> None:
    """A thousand job files copied in are each handed over exactly once, in copy order."""
    source = tmp_path / "source"
    source.mkdir()
    names = [f"job-{i:04d}.prompt.yaml" for i in range(1000)]
    for name in names:
        (source / name).write_text(f"prompt: picture {name}\n")
    for name in names:
        shutil.copy(source / name, watcher.inbox / name)
    assert take_all(watcher, len(names)) == names


def test_ignored_names_are_never_handed_over(watcher: InboxWatcher) -> None:
    """Litter shaped like jobs is skipped while the real job beside it is taken."""
    inbox = watcher.inbox
    for litter in [
        "._a.prompt.yaml",
        ".hidden.prompt.yaml",
        "b.prompt.yaml.part",
        "~syncthing~c.prompt.yaml.tmp",
        ".syncthing.d.prompt.yaml.tmp",
        "e.prompt.yaml.swp",
        "f.prompt.yaml~",
        ".#g.prompt.yaml",
        ".h.prompt.yaml.icloud",
    ]:
        (inbox / litter).write_text("prompt: litter\n")
    job(inbox, "real")
    assert take_all(watcher, 1) == ["real.prompt.yaml"]


def test_sync_conflict_copy_is_a_job_of_its_own(watcher: InboxWatcher) -> None:
    """A Syncthing conflict copy is handed over like any other job file."""
    job(watcher.inbox, "cat")
    job(watcher.inbox, "cat.sync-conflict-20240101-120000-ABCDEFG")
    assert len(take_all(watcher, 2)) == 2


def test_jobs_present_before_start_are_found(inbox: Path) -> None:
    """The start-up scan queues jobs that arrived while the daemon was down."""
    for polling in (False, True):
        job(inbox, f"early-{polling}")
        with InboxWatcher(inbox, settle_sec=SETTLE, polling=polling) as w:
            assert take_all(w, 1) == [f"early-{polling}.prompt.yaml"]


@pytest.mark.parametrize("polling", [False, True])
def test_deleted_queued_job_is_dropped(inbox: Path, polling: bool) -> None:
    """A job removed before it was taken is never handed over."""
    events = Events()
    with InboxWatcher(inbox, settle_sec=SETTLE, polling=polling, log=events.log) as w:
        path = job(inbox, "gone")
        wait_for(lambda: events.saw("job.ready", job="gone.prompt.yaml"))
        path.unlink()
        wait_for(lambda: events.saw("job.dropped", job="gone.prompt.yaml"))
        job(inbox, "kept")
        assert take_all(w, 1) == ["kept.prompt.yaml"]


@pytest.mark.parametrize("polling", [False, True])
def test_edited_ready_job_settles_again(inbox: Path, polling: bool) -> None:
    """A queued job edited after it was ready waits another settle period, then is handed over."""
    events = Events()
    with InboxWatcher(inbox, settle_sec=1.0, polling=polling, log=events.log) as w:
        path = job(inbox, "edited", "first")
        wait_for(lambda: events.saw("job.ready", job=path.name))
        path.write_text("prompt: second, longer\n")
        wait_for(lambda: events.saw("job.changed", job=path.name, state="settling"))
        assert take_all(w, 1) == [path.name]
        assert "second" in (inbox / "processing" / path.name).read_text()


def test_inbox_deleted_and_recreated_is_watched_again(watcher: InboxWatcher) -> None:
    """After the inbox folder is removed and made again, new jobs in it are still taken."""
    inbox = watcher.inbox
    job(inbox, "before")
    assert take_all(watcher, 1) == ["before.prompt.yaml"]
    shutil.rmtree(inbox)
    wait_for(lambda: watcher.observer_kind is None, timeout=DEADLINE)
    inbox.mkdir()
    wait_for(lambda: watcher.observer_kind is not None, timeout=DEADLINE)
    job(inbox, "after")
    assert take_all(watcher, 1) == ["after.prompt.yaml"]


@pytest.mark.parametrize("polling", [False, True])
def test_never_parsing_job_is_handed_over_after_the_grace(inbox: Path, polling: bool) -> None:
    """A job file with broken YAML still reaches the pipeline, later, so it can be reported."""
    events = Events()
    with InboxWatcher(
        inbox, settle_sec=SETTLE, rescan_sec=2.0, polling=polling, grace_sec=2.0, log=events.log
    ) as w:
        broken = inbox / "broken.prompt.yaml"
        broken.write_text("prompt: [unclosed\n")
        assert w.get(timeout=SETTLE * 4) is None
        assert events.saw("job.unparsable", job=broken.name, state="settling")
        assert take_all(w, 1) == [broken.name]


def test_native_failure_falls_back_to_polling(inbox: Path) -> None:
    """When inotify is out of watches the watcher polls instead and says why."""

    def exhausted() -> BaseObserver:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    with (
        capture_logs() as logs,
        InboxWatcher(inbox, settle_sec=SETTLE, native_observer=exhausted) as w,
    ):
        assert w.observer_kind == "polling"
        job(inbox, "polled")
        assert take_all(w, 1) == ["polled.prompt.yaml"]
    [warning] = [e for e in logs if e["event"] == "watch.native_unavailable"]
    assert "max_user_watches" in warning["hint"]


def test_missing_inbox_at_start_is_waited_for(tmp_path: Path) -> None:
    """An inbox that does not exist yet is watched as soon as it appears."""
    inbox = tmp_path / "later"
    with capture_logs() as logs, InboxWatcher(inbox, settle_sec=SETTLE) as w:
        assert w.observer_kind is None
        inbox.mkdir()
        job(inbox, "late")
        assert take_all(w, 1) == ["late.prompt.yaml"]
    assert any(e["event"] == "inbox.missing" for e in logs)


@pytest.mark.parametrize("polling", [False, True])
def test_stopped_observer_is_restarted(inbox: Path, polling: bool) -> None:
    """An observer whose thread died (watchdog #1065) is replaced without a daemon restart."""
    made: list[BaseObserver] = []

    def native() -> BaseObserver:
        made.append(Observer())
        return made[-1]

    def poller(interval: float) -> BaseObserver:
        made.append(PollingObserver(timeout=interval))
        return made[-1]

    with InboxWatcher(
        inbox, settle_sec=SETTLE, polling=polling, native_observer=native, polling_observer=poller
    ) as w:
        for emitter in list(made[0].emitters):
            emitter.stop()
            emitter.join()
        wait_for(lambda: len(made) == 2 and w.observer_kind is not None, timeout=DEADLINE)
        job(inbox, "after-restart")
        assert take_all(w, 1) == ["after-restart.prompt.yaml"]


def test_get_returns_none_once_stopped(inbox: Path) -> None:
    """A consumer blocked in get() is released by stop()."""
    w = InboxWatcher(inbox, settle_sec=SETTLE)
    w.start()
    result: list[Path | None] = [inbox]
    consumer = threading.Thread(target=lambda: result.__setitem__(0, w.get()))
    consumer.start()
    w.stop()
    consumer.join(timeout=DEADLINE)
    assert not consumer.is_alive()
    assert result == [None]


def test_unreadable_inbox_is_not_listed_in_a_tight_loop(inbox: Path) -> None:
    """While a job waits and listing the inbox fails, the watcher retries at its recheck pace."""
    calls: list[float] = []

    def failing_listdir(path: Path) -> list[str]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return os.listdir(path)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    job(inbox, "waiting")
    with InboxWatcher(inbox, settle_sec=SETTLE, listdir=failing_listdir) as w:
        wait_for(lambda: len(calls) >= 3, timeout=DEADLINE)
        time.sleep(1.0)  # the span whose listings are counted, not a synchronisation
        assert w.get(timeout=0) is None  # still waiting: no listing has seen it settle
    assert len(calls) < 60  # about 20 a second at settle 0.2 s; a tight loop makes thousands


# --- the settle rules, on real files with a clock the test moves ------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def settle(settler: Settler, clock: Clock, seconds: float, step: float = 0.25) -> None:
    """Looks at the inbox every `step` seconds of fake time for `seconds`."""
    end = clock.now + seconds
    while clock.now < end:
        settler.update(os.listdir(settler.inbox), clock.advance(step))


def make_settler(inbox: Path, **kwargs: object) -> tuple[Settler, Clock]:
    clock = Clock()
    settler = Settler(inbox, settle_sec=1.0, grace_sec=10.0, **kwargs)  # type: ignore[arg-type]
    return settler, clock


def test_job_is_ready_only_after_settle(inbox: Path) -> None:
    """A job is handed over once it stayed unchanged for settle_sec, not before."""
    settler, clock = make_settler(inbox)
    path = job(inbox, "a")
    settle(settler, clock, 0.75)
    assert settler.take() is None
    with path.open("a") as handle:
        handle.write("# still writing\n")
    settle(settler, clock, 0.75)
    assert settler.take() is None
    settle(settler, clock, 1.0)
    assert settler.take() == path
    assert settler.take() is None


def test_late_sibling_image_delays_the_job(inbox: Path) -> None:
    """A sibling image that is still arriving keeps its job waiting until it settles."""
    settler, clock = make_settler(inbox)
    job(inbox, "cat")
    settle(settler, clock, 0.75)
    image = inbox / "cat.style.png"
    for _ in range(6):
        with image.open("ab") as handle:
            handle.write(b"\x89PNG" * 100)
        settle(settler, clock, 0.5)
        assert settler.take() is None
    settle(settler, clock, 1.25)
    assert settler.take() == inbox / "cat.prompt.yaml"


def test_handed_over_job_is_not_handed_over_again_until_done(inbox: Path) -> None:
    """Repeated looks never queue a job twice; done() or leaving and coming back re-queues it."""
    settler, clock = make_settler(inbox)
    path = job(inbox, "once")
    settle(settler, clock, 1.5)
    assert settler.take() == path
    settle(settler, clock, 3.0)
    assert settler.take() is None
    settler.done(path)
    settle(settler, clock, 1.5)
    assert settler.take() == path
    path.rename(inbox / "elsewhere")
    settle(settler, clock, 0.5)
    (inbox / "elsewhere").rename(path)
    settle(settler, clock, 1.5)
    assert settler.take() == path


def test_ready_jobs_go_in_arrival_order(inbox: Path) -> None:
    """A job that arrived first is handed over first, even when named later."""
    settler, clock = make_settler(inbox)
    first = job(inbox, "zebra")
    settle(settler, clock, 0.5)
    second = job(inbox, "aardvark")
    settle(settler, clock, 2.0)
    assert [settler.take(), settler.take()] == [first, second]


def test_unparsable_job_is_handed_over_after_the_grace(inbox: Path) -> None:
    """A job that never parses waits grace_sec, then goes on so the pipeline can report it."""
    events = Events()
    settler, clock = make_settler(inbox, log=events.log)
    path = inbox / "broken.prompt.yaml"
    path.write_text("prompt: [unclosed\n")
    settle(settler, clock, 5.0)
    assert settler.take() is None
    assert events.saw("job.unparsable", job=path.name, state="settling")
    settle(settler, clock, 6.0)
    assert settler.take() == path


def test_empty_job_file_waits_for_content(inbox: Path) -> None:
    """An empty job file (a client that creates first and fills later) waits for its content."""
    settler, clock = make_settler(inbox)
    path = inbox / "empty.prompt.yaml"
    path.touch()
    settle(settler, clock, 3.0)
    assert settler.take() is None
    path.write_text("prompt: filled in\n")
    settle(settler, clock, 1.5)
    assert settler.take() == path


def test_missing_explicit_reference_gets_a_grace_period(inbox: Path) -> None:
    """A job naming a reference not synced yet waits for it, and goes on once it is there."""
    events = Events()
    settler, clock = make_settler(inbox, log=events.log)
    path = inbox / "withref.prompt.yaml"
    path.write_text("prompt: p\nrefs: [refs/photo.png]\n")
    settle(settler, clock, 3.0)
    assert settler.take() is None
    assert events.saw("job.references_missing", job=path.name, state="waiting")
    (inbox / "refs").mkdir()
    (inbox / "refs" / "photo.png").write_bytes(b"\x89PNG")
    settle(settler, clock, 1.5)
    assert settler.take() == path


def test_icloud_placeholder_waits_until_downloaded(inbox: Path) -> None:
    """An evicted iCloud job file is not read until its bytes are on disk."""
    evicted = {"cloud.prompt.yaml"}

    def icloud_stat(path: Path) -> os.stat_result:
        st = os.stat(path)
        if Path(path).name not in evicted:
            return st
        fields = {k: getattr(st, k) for k in dir(st) if k.startswith("st_")}
        return SimpleNamespace(**{**fields, "st_flags": SF_DATALESS})  # type: ignore[return-value]

    events = Events()
    settler, clock = make_settler(inbox, stat=icloud_stat, log=events.log)
    path = job(inbox, "cloud")
    settle(settler, clock, 30.0)
    assert settler.take() is None
    assert events.saw("job.not_downloaded", job=path.name, state="waiting")
    evicted.clear()
    settle(settler, clock, 1.5)
    assert settler.take() == path


def test_old_style_icloud_sibling_keeps_its_job_waiting(inbox: Path) -> None:
    """A sibling image present only as `.<name>.icloud` holds its job back."""
    settler, clock = make_settler(inbox)
    path = job(inbox, "photo")
    stub = inbox / ".photo.png.icloud"
    stub.write_bytes(b"bplist")
    settle(settler, clock, 30.0)
    assert settler.take() is None
    stub.unlink()
    (inbox / "photo.png").write_bytes(b"\x89PNG")
    settle(settler, clock, 1.5)
    assert settler.take() == path


def test_stable_job_is_ready_exactly_at_settle(inbox: Path) -> None:
    """A stable, parseable job is ready at the look settle_sec after it was seen, no later."""
    settler, clock = make_settler(inbox)
    path = job(inbox, "prompt")
    seen = clock.now
    settler.update(os.listdir(inbox), seen)
    assert settler.next_due() == seen + 1.0
    settler.update(os.listdir(inbox), seen + 0.999)
    assert settler.take() is None
    settler.update(os.listdir(inbox), seen + 1.0)
    assert settler.take() == path
    assert settler.next_due() is None


def fake_ctimes(ctimes: dict[str, int]) -> Callable[[Path], os.stat_result]:
    """A stat that reports the given inode change times (ns) for the named files."""

    def stat(path: Path) -> os.stat_result:
        st = os.stat(path)
        if Path(path).name not in ctimes:
            return st
        fields = {k: getattr(st, k) for k in dir(st) if k.startswith("st_")}
        fields["st_ctime_ns"] = ctimes[Path(path).name]
        return SimpleNamespace(**fields)  # type: ignore[return-value]

    return stat


MS = 1_000_000


def test_just_created_job_is_held_back_briefly_without_delaying_it(inbox: Path) -> None:
    """A job created as the listing began is admitted by a look tens of ms later, and is still
    ready settle_sec after it was first seen."""
    settler, clock = make_settler(inbox, stat=fake_ctimes({"new.prompt.yaml": 1000 * MS}))
    path = job(inbox, "new")
    seen = clock.now
    settler.update(os.listdir(inbox), seen, listed_at_ns=1005 * MS)
    assert settler.busy
    assert settler.take() is None
    admit_at = settler.next_due()
    assert admit_at is not None
    assert seen < admit_at <= seen + 0.05
    later_ns = 1005 * MS + int((admit_at - seen) * 1e9)
    settler.update(os.listdir(inbox), admit_at, listed_at_ns=later_ns)
    assert settler.take() is None
    settler.update(os.listdir(inbox), seen + 1.0, listed_at_ns=2005 * MS)
    assert settler.take() == path


def test_job_missed_by_a_listing_still_goes_first(inbox: Path) -> None:
    """An older job a listing missed (hash order) is handed over before a newer one it returned."""
    ctimes = {"zebra.prompt.yaml": 1000 * MS, "aardvark.prompt.yaml": 1004 * MS}
    settler, clock = make_settler(inbox, stat=fake_ctimes(ctimes))
    older, newer = job(inbox, "zebra"), job(inbox, "aardvark")
    first = clock.now
    settler.update([newer.name], first, listed_at_ns=1005 * MS)
    settler.update([newer.name, older.name], first + 0.03, listed_at_ns=1035 * MS)
    taken: list[Path] = []
    for moment in (first + 1.0, first + 1.1):  # settle_sec after the first and the second look
        settler.update(os.listdir(inbox), moment, listed_at_ns=3000 * MS)
        taken += iter(settler.take, None)
    assert taken == [older, newer]


def test_change_time_ahead_of_the_clock_holds_a_job_back_only_briefly(inbox: Path) -> None:
    """A job whose change time is in the future (a server's clock) is still handed over."""
    settler, clock = make_settler(inbox, stat=fake_ctimes({"skewed.prompt.yaml": 10**19}))
    path = job(inbox, "skewed")
    first = clock.now
    settler.update(os.listdir(inbox), first, listed_at_ns=1000 * MS)
    assert settler.busy
    assert settler.take() is None
    for step in (0.25, 0.5, 0.75):
        settler.update(os.listdir(inbox), first + step, listed_at_ns=1000 * MS)
    assert settler.take() is None
    settler.update(os.listdir(inbox), first + 1.0, listed_at_ns=1000 * MS)
    assert settler.take() == path


def test_nothing_due_while_no_job_waits_for_a_time(inbox: Path) -> None:
    """An empty inbox asks for no timed wake-up, and a job that does not parse for its grace."""
    settler, clock = make_settler(inbox)
    settler.update(os.listdir(inbox), clock.now)
    assert settler.next_due() is None
    broken = inbox / "broken.prompt.yaml"
    broken.write_text("prompt: [unclosed\n")
    settle(settler, clock, 1.5)
    due = settler.next_due()
    assert due is not None
    assert due > clock.now + 8
