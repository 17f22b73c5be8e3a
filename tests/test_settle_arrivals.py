"""The settle rules for jobs that arrived complete: taken at once, or the settle time when not.

Real files in tmp_path, arrival facts as the watcher's handlers would note them, and a clock the
test moves; the settle time is 30 s, so anything ready within a second was taken at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon.watching.settle import Arrival, Settler

SETTLE = 30.0
MOMENT = 1.0  # well beyond the wait after an arrival, far below the settle time
COMPLETE, CHANGED = Arrival.COMPLETE, Arrival.CHANGED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_ns = time.time_ns()  # the listings' wall clock, moved with the fake one

    def advance(self, seconds: float) -> float:
        self.now += seconds
        self.wall_ns += int(seconds * 1e9)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_settler(inbox: Path, stat: Callable[[Path], os.stat_result] = os.stat) -> Settler:
    return Settler(inbox, settle_sec=SETTLE, grace_sec=60.0, stat=stat)


def look(settler: Settler, clock: Clock, step: float = 0.0, **arrivals: Arrival) -> Path | None:
    """One pass `step` seconds later with these facts (name=kind; dots in names as `__`);
    returns the job handed over, if any."""
    facts = {name.replace("__", "."): kind for name, kind in arrivals.items()}
    settler.update(
        os.listdir(settler.inbox), clock.advance(step), listed_at_ns=clock.wall_ns, arrivals=facts
    )
    return settler.take()


def passes(settler: Settler, clock: Clock, seconds: float, step: float = 0.05) -> Path | None:
    """Looks every `step` seconds for `seconds`, without new facts; the first job handed over."""
    end = clock.now + seconds
    while clock.now < end:
        taken = look(settler, clock, step)
        if taken is not None:
            return taken
    return None


def write(path: Path, text: str = "prompt: a red fox\n") -> Path:
    path.write_text(text)
    return path


def old_ctimes(*names: str) -> Callable[[Path], os.stat_result]:
    """A stat that reports the named files' inode change times as an hour old."""

    def stat(path: Path) -> os.stat_result:
        st = os.stat(path)
        if Path(path).name not in names and str(path).split("/inbox/")[-1] not in names:
            return st
        fields = {k: getattr(st, k) for k in dir(st) if k.startswith("st_")}
        fields["st_ctime_ns"] = time.time_ns() - 3600 * 10**9
        return SimpleNamespace(**fields)  # type: ignore[return-value]

    return stat


def test_job_moved_in_is_taken_at_once(inbox: Path, clock: Clock) -> None:
    """A job file whose last event was a move into the inbox is ready a moment later."""
    settler = make_settler(inbox)
    path = write(inbox / "moved.prompt.yaml")
    assert look(settler, clock, moved__prompt__yaml=COMPLETE) is None
    assert passes(settler, clock, MOMENT) == path


def test_ready_time_is_due_so_the_watcher_wakes_for_it(inbox: Path, clock: Clock) -> None:
    """Looks only at the due times the settler asks for reach the quick take, within a moment
    (the first may be the admission of a file created as the listing began)."""
    settler = make_settler(inbox)
    path = write(inbox / "due.prompt.yaml")
    start = clock.now
    look(settler, clock, due__prompt__yaml=COMPLETE)
    for _ in range(3):
        due = settler.next_due()
        assert due is not None
        assert clock.now < due < start + MOMENT
        if look(settler, clock, due - clock.now) == path:
            return
    pytest.fail("not taken at the times it was due")


def test_job_closed_after_writing_and_unchanged_is_taken_at_once(inbox: Path, clock: Clock) -> None:
    """Created, written, then closed: the close decides, the job is ready a moment later."""
    settler = make_settler(inbox)
    path = write(inbox / "closed.prompt.yaml")
    look(settler, clock, closed__prompt__yaml=CHANGED)
    assert look(settler, clock, 0.01, closed__prompt__yaml=COMPLETE) is None
    assert passes(settler, clock, MOMENT) == path


def test_job_only_created_or_written_waits_for_the_settle_time(inbox: Path, clock: Clock) -> None:
    """A job seen changing and never closed (a writer holding it open) settles as before."""
    settler = make_settler(inbox)
    path = write(inbox / "open.prompt.yaml")
    look(settler, clock, open__prompt__yaml=CHANGED)
    assert passes(settler, clock, SETTLE - 1) is None
    assert settler.busy  # seen, and settling still
    assert passes(settler, clock, 2.0) == path


def test_job_without_any_event_waits_for_the_settle_time(inbox: Path, clock: Clock) -> None:
    """A job found by a listing alone (start-up scan, polling, a missed event) settles."""
    settler = make_settler(inbox)
    path = write(inbox / "found.prompt.yaml")
    assert passes(settler, clock, SETTLE - 1) is None
    assert passes(settler, clock, 2.0) == path


def test_write_after_the_close_without_an_event_yet_is_not_taken(inbox: Path, clock: Clock) -> None:
    """Unchanged since the close means the size and mtime stat saw when the close was noted."""
    settler = make_settler(inbox)
    path = write(inbox / "reopened.prompt.yaml", "prompt: a red\n")
    look(settler, clock, reopened__prompt__yaml=COMPLETE)
    write(path, "prompt: a red fox in the snow\n")  # its events have not arrived
    assert passes(settler, clock, SETTLE - 1) is None
    assert passes(settler, clock, 2.0) == path


def test_reopened_after_the_close_waits_until_closed_again(inbox: Path, clock: Clock) -> None:
    """A writer that closes and reopens at once: the later write's event cancels the close,
    and only its own close makes the job ready at once."""
    settler = make_settler(inbox)
    path = write(inbox / "editor.prompt.yaml", "prompt: a red\n")
    look(settler, clock, editor__prompt__yaml=COMPLETE)
    with path.open("a") as handle:
        handle.write("  fox\n")
        handle.flush()
        assert look(settler, clock, 0.05, editor__prompt__yaml=CHANGED) is None
        assert passes(settler, clock, 5.0) is None
    assert look(settler, clock, 0.01, editor__prompt__yaml=COMPLETE) is None
    assert passes(settler, clock, MOMENT) == path


def test_sibling_image_still_changing_keeps_the_settle_time(inbox: Path, clock: Clock) -> None:
    """A job moved in while its sibling image is being written waits; once the image was closed
    and is unchanged, the job goes at once."""
    settler = make_settler(inbox)
    path = write(inbox / "cat.prompt.yaml")
    image = inbox / "cat.style.png"
    image.write_bytes(b"\x89PNG")
    look(settler, clock, cat__prompt__yaml=COMPLETE, cat__style__png=CHANGED)
    assert passes(settler, clock, 5.0) is None
    image.write_bytes(b"\x89PNG" * 100)
    assert look(settler, clock, 0.05, cat__style__png=COMPLETE) is None
    assert passes(settler, clock, MOMENT) == path


def test_sibling_image_with_a_recent_change_and_no_event_keeps_the_settle_time(
    inbox: Path, clock: Clock
) -> None:
    """A sibling nothing was noted of, whose inode changed within the settle time, holds the job
    back; one unchanged for longer than the settle time does not."""
    settler = make_settler(inbox, stat=old_ctimes("old.png"))
    recent = write(inbox / "recent.prompt.yaml")
    (inbox / "recent.png").write_bytes(b"\x89PNG")
    old = write(inbox / "old.prompt.yaml")
    (inbox / "old.png").write_bytes(b"\x89PNG")
    look(settler, clock, recent__prompt__yaml=COMPLETE, old__prompt__yaml=COMPLETE)
    assert passes(settler, clock, MOMENT) == old
    assert passes(settler, clock, 5.0) is None
    assert passes(settler, clock, SETTLE) == recent


def test_sibling_without_an_event_keeps_the_settle_time_without_a_wall_clock(
    inbox: Path, clock: Clock
) -> None:
    """Without the listing's start time a sibling's age is unknown: the job settles."""
    settler = make_settler(inbox, stat=old_ctimes("noclock.png"))
    path = write(inbox / "noclock.prompt.yaml")
    (inbox / "noclock.png").write_bytes(b"\x89PNG")
    facts = {"noclock.prompt.yaml": COMPLETE}
    settler.update(os.listdir(inbox), clock.advance(0.0), arrivals=facts)
    for _ in range(20):
        settler.update(os.listdir(inbox), clock.advance(0.05))
    assert settler.take() is None
    settler.update(os.listdir(inbox), clock.advance(SETTLE))
    assert settler.take() == path


def test_missing_explicit_reference_keeps_the_settle_time(inbox: Path, clock: Clock) -> None:
    """A job naming a reference that is not there yet waits for it, as before."""
    settler = make_settler(inbox)
    path = write(inbox / "withref.prompt.yaml", "prompt: p\nrefs: [refs/photo.png]\n")
    look(settler, clock, withref__prompt__yaml=COMPLETE)
    assert passes(settler, clock, 5.0) is None
    assert settler.busy  # seen, and waiting for its reference
    (inbox / "refs").mkdir()
    (inbox / "refs" / "photo.png").write_bytes(b"\x89PNG")
    assert passes(settler, clock, 5.0) is None  # just written: it has to settle
    assert passes(settler, clock, SETTLE) == path


def test_explicit_reference_unchanged_for_long_does_not_hold_the_job(
    inbox: Path, clock: Clock
) -> None:
    """A shared style image in a subfolder, unchanged for longer than the settle time, lets a
    job that arrived complete go at once."""
    settler = make_settler(inbox, stat=old_ctimes("refs/style.png"))
    (inbox / "refs").mkdir()
    (inbox / "refs" / "style.png").write_bytes(b"\x89PNG")
    path = write(inbox / "styled.prompt.yaml", "prompt: p\nrefs: [refs/style.png]\n")
    look(settler, clock, styled__prompt__yaml=COMPLETE)
    assert passes(settler, clock, MOMENT) == path


def test_unparsable_job_that_arrived_complete_still_settles(inbox: Path, clock: Clock) -> None:
    """A job that does not parse is not taken at once: it gets the settle time and its grace."""
    settler = make_settler(inbox)
    path = write(inbox / "broken.prompt.yaml", "prompt: [unclosed\n")
    look(settler, clock, broken__prompt__yaml=COMPLETE)
    assert passes(settler, clock, SETTLE + 5, step=0.5) is None
    assert settler.busy  # seen, and settling still
    assert passes(settler, clock, 60.0, step=0.5) == path


def test_empty_file_closed_is_not_taken(inbox: Path, clock: Clock) -> None:
    """An empty job file closed (created first, filled later) waits for its content."""
    settler = make_settler(inbox)
    path = inbox / "empty.prompt.yaml"
    path.touch()
    look(settler, clock, empty__prompt__yaml=COMPLETE)
    assert passes(settler, clock, 5.0) is None
    write(path)
    look(settler, clock, 0.05, empty__prompt__yaml=COMPLETE)
    assert passes(settler, clock, MOMENT) == path


def test_job_moved_away_and_back_is_taken_at_once_again(inbox: Path, clock: Clock) -> None:
    """A fact is about the file under that name now: gone and back, the new move counts."""
    settler = make_settler(inbox)
    path = write(inbox / "back.prompt.yaml")
    look(settler, clock, back__prompt__yaml=COMPLETE)
    assert passes(settler, clock, MOMENT) == path
    path.rename(inbox.parent / path.name)
    look(settler, clock, 0.05, back__prompt__yaml=CHANGED)
    settler.done(path)
    (inbox.parent / path.name).rename(path)
    look(settler, clock, 0.05, back__prompt__yaml=COMPLETE)
    assert passes(settler, clock, MOMENT) == path


def test_jobs_taken_at_once_keep_their_arrival_order(inbox: Path, clock: Clock) -> None:
    """Jobs moved in one after the other are handed over in that order."""
    settler = make_settler(inbox)
    first = write(inbox / "zebra.prompt.yaml")
    look(settler, clock, zebra__prompt__yaml=COMPLETE)
    second = write(inbox / "aardvark.prompt.yaml")
    look(settler, clock, 0.02, aardvark__prompt__yaml=COMPLETE)
    taken = [passes(settler, clock, MOMENT), passes(settler, clock, MOMENT)]
    assert taken == [first, second]


def test_attribute_change_after_the_close_keeps_the_job_quick(inbox: Path, clock: Clock) -> None:
    """A chmod after the close (shutil.copy's) says nothing of the content: still at once."""
    settler = make_settler(inbox)
    path = write(inbox / "copied.prompt.yaml")
    look(settler, clock, copied__prompt__yaml=COMPLETE)
    path.chmod(0o640)
    assert look(settler, clock, 0.01, copied__prompt__yaml=Arrival.TOUCHED) is None
    assert passes(settler, clock, MOMENT) == path


def test_new_mtime_after_the_close_keeps_the_settle_time(inbox: Path, clock: Clock) -> None:
    """A touch that gives the file another mtime after its close is a change: it settles."""
    settler = make_settler(inbox)
    path = write(inbox / "touched.prompt.yaml")
    look(settler, clock, touched__prompt__yaml=COMPLETE)
    os.utime(path, ns=(10**18, 10**18))
    look(settler, clock, 0.01, touched__prompt__yaml=Arrival.TOUCHED)
    assert passes(settler, clock, 5.0) is None
    assert passes(settler, clock, SETTLE) == path
