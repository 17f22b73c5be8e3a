"""One image request through codex: run `codex exec`, then read the images from this run's log.

Knows nothing of inboxes or outboxes: `gen`, `once` and the daemon all come through here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import files, processes
from daemon.codex import run as codex
from daemon.codex.failures import classify, image_limit
from daemon.codex.quota import RateLimit
from daemon.codex.quota import merge as merge_limits
from daemon.codex.version import CodexVersion, default_cache_file, probe_version
from daemon.config import CodexConfig
from daemon.errors import (
    ImageLimit,
    InboxError,
    NoImage,
    NoSessionLog,
    OutboxUnwritable,
    ReferenceMissing,
    Refused,
)
from daemon.images import MAX_REFERENCE_BYTES, sniff_format
from daemon.job import look

if TYPE_CHECKING:
    from daemon.codex.log_scan import FoundImage, RolloutScan


@dataclass(frozen=True, slots=True)
class CodexSetup:
    """How to start codex here, learned once per process (the version probe costs a start-up)."""

    command: tuple[str, ...]
    extra_args: tuple[str, ...]
    env: Mapping[str, str]
    version: CodexVersion
    term_grace_sec: float = codex.TERM_GRACE_SEC

    @property
    def home(self) -> Path:
        return codex.codex_home_of(self.env)


def prepare_codex(config: CodexConfig, *, environ: Mapping[str, str] = os.environ) -> CodexSetup:
    """Probe `codex --version`; raises CodexMissing when codex cannot be started."""
    env = codex.child_environment(environ, config.home)
    cache = default_cache_file(environ)
    version = probe_version(config.command, env=env, cache_file=cache)
    return CodexSetup(config.command, config.extra_args, env, version, config.term_grace_sec)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    prompt: str
    refs: tuple[Path, ...]
    model: str | None
    timeout_sec: float
    transparent: bool = False  # ask the tool for a transparent background
    aspect: str | None = None  # as asked: square, portrait, landscape or W:H (checked before)
    variants: int = 1  # images the job must yield, over as many runs as it takes

    @property
    def options(self) -> tuple[str, ...]:
        """The instruction sentences that go beside the prompt, never into it."""
        return look.instructions(transparent=self.transparent, aspect=self.aspect)


@dataclass(frozen=True, slots=True)
class RunCount:
    """One codex run of a job and how many images it made (the sidecar's `runs`)."""

    thread_id: str
    images: int


@dataclass(frozen=True, slots=True)
class Generation:
    """The images of one finished run (or of several, merged), with what the result sidecar
    reports about it."""

    images: tuple[FoundImage, ...]
    thread_id: str
    codex_version: str
    started_at: datetime
    finished_at: datetime
    rate_limits: tuple[RateLimit, ...] = ()  # the newest snapshot of each limit in the log
    limit: ImageLimit | None = None  # the image limit stopped the run after these images
    merged: tuple[RunCount, ...] = ()  # the runs merged into this one; () for a single run

    @property
    def revised_prompt(self) -> str | None:
        return next((i.revised_prompt for i in self.images if i.revised_prompt), None)

    @property
    def runs(self) -> tuple[RunCount, ...]:
        return self.merged or (RunCount(self.thread_id, len(self.images)),)


def merge(generations: Sequence[Generation]) -> Generation:
    """Several runs of one job as one generation: their images in order, the first run's
    thread (the delivery's identity) and start, the last run's end."""
    first, last = generations[0], generations[-1]
    return Generation(
        images=tuple(i for g in generations for i in g.images),
        thread_id=first.thread_id,
        codex_version=last.codex_version,
        started_at=first.started_at,
        finished_at=last.finished_at,
        limit=last.limit,
        merged=tuple(run for g in generations for run in g.runs),
        rate_limits=merge_limits((), [s for g in generations for s in g.rate_limits]),
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """The runs of one job in this process, and what stopped them before all images were made
    (None when every image the job asks for exists)."""

    generations: tuple[Generation, ...]
    stopped: InboxError | None = None


def generate(
    request: ImageRequest,
    setup: CodexSetup,
    *,
    on_thread_id: Callable[[str], None] = lambda _id: None,
    on_start: Callable[[int], None] = lambda _pid: None,
    cancel: threading.Event | None = None,
    kill_now: threading.Event | None = None,
    on_rate_limits: Callable[[tuple[RateLimit, ...]], None] = lambda _limits: None,
    count: int | None = None,
) -> Generation:
    """Run codex for `request` and return its images; raises an InboxError subclass otherwise.

    `count` is how many images this run is to make (default: `request.variants`); a job of
    several variants tells codex that number on an instruction line of its own.
    The run's folder goes in every case, a `Cancelled` run included. `on_rate_limits` learns
    the plan's rate limits the run's log records, a failed run's too.
    """
    wanted = request.variants if count is None else count
    options = [codex.count_option(wanted)] if request.variants > 1 else []
    with _run_folder() as workdir:
        refs = copy_references(request.refs, workdir)
        argv = codex.build_argv(
            setup.command,
            version=setup.version,
            workdir=workdir,
            refs=refs,
            model=request.model,
            extra_args=setup.extra_args,
        )

        def started(pgid: int) -> None:
            _note_codex_group(workdir, pgid)
            on_start(pgid)

        run = codex.run_codex(
            argv,
            prompt_text=codex.wrap_prompt(
                request.prompt, has_refs=bool(refs), options=[*request.options, *options]
            ),
            cwd=workdir,
            env=setup.env,
            timeout_sec=request.timeout_sec,
            on_thread_id=on_thread_id,
            on_start=started,
            cancel=cancel,
            kill_now=kill_now,
            term_grace_sec=setup.term_grace_sec,
        )
    return collect(run, setup, on_rate_limits=on_rate_limits)


def generate_variants(
    request: ImageRequest,
    setup: CodexSetup,
    *,
    made: int = 0,
    on_thread_id: Callable[[str], None] = lambda _id: None,
    on_start: Callable[[int], None] = lambda _pid: None,
    on_generation: Callable[[Generation], None] = lambda _g: None,
    on_rate_limits: Callable[[tuple[RateLimit, ...]], None] = lambda _limits: None,
    cancel: threading.Event | None = None,
    kill_now: threading.Event | None = None,
) -> Batch:
    """Run codex until `request.variants` images exist, `made` of them by earlier runs.

    Each run is asked, in so many words, for the images still missing; a run that makes more
    keeps them all. `on_generation` learns each finished run before the next starts. A failure
    before this process made any image is raised; after one, it ends the batch as `stopped`
    so that the images made are delivered, not lost.
    """
    done: list[Generation] = []
    while (missing := request.variants - made) > 0:
        try:
            generation = generate(
                request,
                setup,
                on_thread_id=on_thread_id,
                on_start=on_start,
                cancel=cancel,
                kill_now=kill_now,
                on_rate_limits=on_rate_limits,
                count=missing,
            )
        except InboxError as error:
            if not done:
                raise
            return Batch(tuple(done), error)
        done.append(generation)
        on_generation(generation)
        made += len(generation.images)
        if generation.limit is not None and made < request.variants:
            return Batch(tuple(done), generation.limit)
    return Batch(tuple(done))


# The per-run folder (codex's working root and the copies of the references) is named after
# this process, and notes codex's process group once it runs, so that a later start can remove
# what a killed process left without pulling the folder from under a codex still running.
RUN_FOLDER_PREFIX = "gpt-image-inbox-"
_CODEX_GROUP_NOTE = ".codex-pgid"


@contextlib.contextmanager
def _run_folder() -> Iterator[Path]:
    try:
        folder = tempfile.mkdtemp(prefix=f"{RUN_FOLDER_PREFIX}{os.getpid()}-")
    except OSError as error:
        raise OutboxUnwritable(
            f"Cannot create a folder for codex's run in {tempfile.gettempdir()}: {error.strerror}.",
            hint="Free disk space in the temporary folder (TMPDIR); the job is kept.",
        ) from error
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _note_codex_group(workdir: Path, pgid: int) -> None:
    with contextlib.suppress(OSError):
        (workdir / _CODEX_GROUP_NOTE).write_text(str(pgid))


def remove_dead_run_folders(temp_root: Path | None = None) -> list[Path]:
    """Remove the run folders of processes that are gone and whose codex is gone too."""
    root = Path(temp_root or tempfile.gettempdir())
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        match = _RUN_FOLDER.match(name)
        if match is None or processes.process_alive(int(match["pid"])):
            continue
        folder = root / name
        try:
            if os.lstat(folder).st_uid != os.getuid() or not folder.is_dir():
                continue
            pgid = (folder / _CODEX_GROUP_NOTE).read_text().strip()
            if pgid.isdigit() and processes.group_alive(int(pgid)):
                continue
        except FileNotFoundError:
            pass  # no codex was started from it
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


_RUN_FOLDER = re.compile(rf"^{re.escape(RUN_FOLDER_PREFIX)}(?P<pid>\d+)-")


def copy_references(refs: Sequence[Path], workdir: Path) -> list[Path]:
    """Copy references into the run's folder as `ref-1.png`…: plain ASCII names, because
    codex splits `-i` values on commas and some releases mangle other characters.

    Only regular files are read (a FIFO swapped in since the job was checked must not hang
    the run); a reference gone since then is reported as missing.
    """
    copies = []
    for n, ref in enumerate(refs, 1):
        try:
            data = files.read_regular(ref, limit=MAX_REFERENCE_BYTES)
        except OSError as error:
            raise ReferenceMissing(
                f"The reference {ref.name} can no longer be read: {error.strerror}.",
                hint="Put the reference image back and submit the job again.",
            ) from error
        fmt = sniff_format(data[:16])
        dest = workdir / f"ref-{n}.{fmt.extension if fmt else 'png'}"
        try:
            dest.write_bytes(data)
        except OSError as error:
            raise OutboxUnwritable(
                f"Cannot copy the reference {ref.name} for codex: {error.strerror}.",
                hint="Free disk space in the temporary folder (TMPDIR); the job is kept.",
            ) from error
        copies.append(dest)
    return copies


def collect(
    run: codex.CodexRun,
    setup: CodexSetup,
    *,
    on_rate_limits: Callable[[tuple[RateLimit, ...]], None] = lambda _limits: None,
) -> Generation:
    """Read this run's session log (and only it) and decide between images and a failure."""
    if run.thread_id is None:
        if run.returncode != 0:
            raise classify(
                run.error_message or run.stderr_tail, returncode=run.returncode, detail=run.detail
            )
        raise NoSessionLog("codex finished without announcing its session.", detail=run.detail)
    scan, images = _thread_images(setup.home, run.thread_id, run.started_at)
    rate_limits = scan.rate_limits if scan is not None else ()
    if rate_limits:
        on_rate_limits(rate_limits)
    if images:
        # The plan's image limit can stop a run part-way: its images are kept, and the job
        # learns why the rest is missing.
        hit = scan.limits[0] if scan is not None and scan.limits else None
        return Generation(
            images=images,
            thread_id=run.thread_id,
            codex_version=setup.version.text,
            started_at=run.started_at,
            finished_at=run.finished_at,
            rate_limits=rate_limits,
            limit=image_limit(hit.reason, resets_at=hit.resets_at) if hit else None,
        )
    raise _why_no_image(run, scan)


def _thread_images(
    codex_home: Path, thread_id: str, started_at: datetime
) -> tuple[RolloutScan | None, tuple[FoundImage, ...]]:
    """This thread's log scan (None without a log) and its images, from the log or else from
    `generated_images/<thread>/`."""
    # Needed only once codex has finished: imported then, or while it runs by a one-shot
    # command's warm-up, not before codex starts (~10 ms of `once`'s start, measured).
    from daemon.codex import session_log

    log = session_log.find_session_log(codex_home, thread_id, started_at=started_at.astimezone())
    scan = session_log.scan_rollout(log) if log is not None else None
    images = scan.images if scan else ()
    return scan, images or tuple(session_log.generated_images(codex_home, thread_id))


def _short_reason(reason: str) -> str:
    """codex's reason in a few words: the API's error code when it names one."""
    code = re.search(r"\b(moderation_blocked|content_policy_violation|safety_\w+)\b", reason)
    if code:
        return code.group(1)
    first = reason.strip().splitlines()[-1] if reason.strip() else "no reason given"
    return first if len(first) <= 160 else first[:157] + "..."


def _why_no_image(run: codex.CodexRun, scan: RolloutScan | None) -> InboxError:
    # The plan's image limit first: every later job would meet it too, so the queue waits.
    if scan is not None and scan.limits:
        hit = scan.limits[0]
        return image_limit(hit.reason, resets_at=hit.resets_at)
    if scan is not None and scan.refusals:
        return Refused(
            f"The image was refused or failed: {_short_reason(scan.refusals[0])}",
            detail="\n".join(scan.refusals),
        )
    if run.network_down:
        return classify("waiting for network", detail=run.detail)
    turn_error = scan.turn_error if scan else None
    if run.returncode != 0 or turn_error:
        message = run.error_message or turn_error or run.stderr_tail
        kind = scan.turn_error_kind if scan else None
        return classify(message, kind=kind, returncode=run.returncode, detail=run.detail)
    if scan is None:
        return NoSessionLog(
            f"codex's session log for thread {run.thread_id} was not found.",
            detail=run.detail,
        )
    return NoImage(
        "codex answered without generating an image.",
        detail=(run.agent_message or "")[-4096:],
    )


def recover(thread_id: str, started_at: datetime, setup: CodexSetup) -> Generation | None:
    """The images of a run whose codex finished while we were not watching (a crash).

    None when that session produced none (or never finished): the job must run again.
    """
    scan, images = _thread_images(setup.home, thread_id, started_at)
    if not images:
        return None
    return Generation(
        images=images,
        thread_id=thread_id,
        codex_version=setup.version.text,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        rate_limits=scan.rate_limits if scan is not None else (),
    )
