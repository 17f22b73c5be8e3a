"""Benchmark 1: per-job overhead of the daemon and of `once`, through the real codex CLI.

Each round runs bare `codex exec` (the daemon's own argv and wrapped prompt, same CODEX_HOME),
one job through the running daemon, bare codex again, and `once` in a fresh process.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    CODEX_VERSION,
    CONSOLE_SCRIPT,
    Options,
    Report,
    default_settle_sec,
    drop_job,
    job_text,
    median,
    start_daemon,
    write_config,
)
from daemon.codex import run as codex
from daemon.codex.version import CodexVersion, probe_version
from daemon.watching.settle import ARRIVAL_QUIET_SEC
from tests.support.daemon_proc import DaemonProcess

PROMPT = "A red fox in the snow, watercolour."
OLD_SESSIONS = 20_000
GROWTH_ALLOWANCE = 0.03  # relative: medians of a handful of ~0.5 s codex runs differ this much
JOB_TIMEOUT = 120.0
# codex (0.171) indexes every session log it finds into its state database on its first run in
# a CODEX_HOME: about 9 ms a log here, minutes for tens of thousands. Only that run waits this.
FIRST_RUN_TIMEOUT = 1200.0


def run(opts: Options) -> Report:
    report = Report("overhead")
    from bench.common import codex_bin

    binary = codex_bin()
    if binary is None:
        note = f"codex {CODEX_VERSION} not installed (scripts/install-codex)"
        report.add("skipped", 0, "", note=note)
        return report
    from tests.support.mock_openai import MockOpenAI

    rounds = 2 if opts.quick else 7
    old = 200 if opts.quick else OLD_SESSIONS
    with MockOpenAI() as mock:
        empty = _variant(opts.work / "overhead-empty", binary, mock.port, rounds, old=0)
        full = _variant(opts.work / "overhead-old", binary, mock.port, rounds, old=old)
    report.raw = {"rounds": rounds, "old_sessions": old, "empty": empty, "old": full}
    _rows(report, empty, full, old)
    return report


def _variant(root: Path, binary: Path, port: int, rounds: int, *, old: int) -> dict[str, object]:
    from tests.support.codex_home import codex_env, make_codex_home

    home = make_codex_home(root / "codex-home", port=port)
    if old:
        populate_sessions(home, old)
    env = codex_env(port, codex_home=home)
    settle = default_settle_sec()
    # Renamed in, the job is taken at once: the daemon's one deliberate wait is the moment it
    # leaves for events still on their way, taken off like the settle time was before.
    wait = min(settle, ARRIVAL_QUIET_SEC)
    stage = root / "stage"
    stage.mkdir(parents=True)
    d_cfg = write_config(
        root / "daemon.yaml",
        inbox=root / "d-in",
        outbox=root / "d-out",
        command=[str(binary)],
        home=home,
    )
    o_cfg = write_config(
        root / "once.yaml",
        inbox=root / "o-in",
        outbox=root / "o-out",
        command=[str(binary)],
        home=home,
    )
    version = probe_version([str(binary)], env=env)
    bare, daemon, daemon_idle, once, listing = [], [], [], [], []
    with start_daemon(d_cfg, root / "d-out", env=env) as proc:
        # Warm-up: the first run pays for cold disk caches and codex's one-time session index.
        first_run = _bare(binary, version, env, timeout=FIRST_RUN_TIMEOUT)
        _daemon_job(proc, stage, root, "warmup")
        for n in range(rounds):
            bare.append(_bare(binary, version, env))
            seen, idle = _daemon_job(proc, stage, root, f"job-{n}")
            daemon.append(seen - wait)
            daemon_idle.append(idle - wait)
            bare.append(_bare(binary, version, env))
            once.append(_once(o_cfg, root / "o-in", root / "o-out", f"job-{n}", env))
            listing.append(skill_listing(home))
    return {
        "bare": bare,
        "daemon": daemon,
        "daemon_until_idle": daemon_idle,
        "once": once,
        "skill_listing": listing,
        "first_run": first_run,
        "settle_sec": settle,
        "wait_sec": wait,
    }


def _bare(
    binary: Path, version: CodexVersion, env: dict[str, str], timeout: float = JOB_TIMEOUT
) -> float:
    """One bare `codex exec` with the daemon's flags and prompt; seconds from start to exit."""
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        argv = codex.build_argv([str(binary)], version=version, workdir=Path(tmp))
        text = codex.wrap_prompt(PROMPT, has_refs=False).encode()
        started = time.monotonic()
        done = subprocess.run(
            argv,
            input=text,
            capture_output=True,
            cwd=tmp,
            env=env,
            timeout=timeout,
            check=False,
        )
        elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"bare codex failed: {done.stderr.decode()[-500:]}")
    return elapsed


def _daemon_job(proc: DaemonProcess, stage: Path, root: Path, name: str) -> tuple[float, float]:
    """Seconds from the rename into the inbox to the result sidecar, and to the daemon idle."""
    outbox = root / "d-out"
    result = outbox / f"{name}.result.yaml"
    renamed = drop_job(stage, root / "d-in", name, PROMPT)
    proc.wait_for(result.exists, timeout=JOB_TIMEOUT, what=f"result of {name}", interval=0.002)
    seen = time.time() - renamed
    done = root / "d-in" / "done" / f"{name}.prompt.yaml"
    proc.wait_for(
        lambda: done.exists() and _idle(outbox),
        timeout=JOB_TIMEOUT,
        what=f"{name} done, daemon idle",
        interval=0.002,
    )
    return seen, time.time() - renamed


def _idle(outbox: Path) -> bool:
    try:
        return '"state": "idle"' in (outbox / "status.json").read_text(encoding="utf-8")
    except OSError:
        return False


def _once(config: Path, inbox: Path, outbox: Path, name: str, env: dict[str, str]) -> float:
    """`gpt-image-inbox once` from a cold start on one job; seconds from spawn to exit."""
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{name}.prompt.yaml").write_text(job_text(PROMPT), encoding="utf-8")
    started = time.monotonic()
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "once", "--config", str(config)],
        capture_output=True,
        env=env,
        timeout=JOB_TIMEOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0 or not (outbox / f"{name}.result.yaml").exists():
        raise RuntimeError(f"once failed ({done.returncode}): {done.stderr.decode()[-800:]}")
    return elapsed


def populate_sessions(home: Path, count: int, *, per_day: int = 50) -> None:
    """`count` small old session logs, `per_day` a day, ending two days ago."""
    line = b'{"timestamp":"2030-01-01T00:00:00.000Z","type":"session_meta","payload":{}}\n'
    day = datetime.now() - timedelta(days=2)
    for n in range(count):
        if n and n % per_day == 0:
            day -= timedelta(days=1)
        folder = home / "sessions" / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        if n % per_day == 0:
            folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{day:%Y-%m-%d}T10-00-{n % 60:02d}"
        (folder / f"rollout-{stamp}-00000000-0000-0000-0000-{n:012d}.jsonl").write_bytes(line * 8)


def skill_listing(home: Path) -> float:
    """The skill's way of finding the new log: list every session file before and after a run."""
    started = time.monotonic()
    for _ in range(2):
        subprocess.run(
            ["find", str(home / "sessions"), "-name", "*.jsonl"], capture_output=True, check=True
        )
    return time.monotonic() - started


def _rows(report: Report, empty: dict[str, Any], full: dict[str, Any], old: int) -> None:
    ratios = {}
    for label, data in (("", empty), (f", {old:,} old sessions", full)):
        bare = median(data["bare"])
        daemon, once = median(data["daemon"]), median(data["once"])
        ratios[label] = (daemon / bare, once / bare)
        report.add(
            f"first codex run{label}",
            data["first_run"],
            "s",
            note="reference: codex's one-time index of the session logs already there",
        )
        report.add(f"bare codex exec{label}", bare, "s", note="median")
        report.add(
            f"daemon job - wait{label}",
            daemon,
            "s",
            note=f"rename to result sidecar, minus the {data['wait_sec']:g} s wait after an "
            "arrival (taken at once, not after the settle time); "
            f"{(daemon - bare) * 1000:.0f} ms more than bare",
        )
        report.add(f"daemon / bare{label}", daemon / bare, "x", "<= 1.05", daemon / bare <= 1.05)
        report.add(
            f"once (cold) / bare{label}",
            once / bare,
            "x",
            "<= 1.20",
            once / bare <= 1.20,
            note=f"{(once - bare) * 1000:.0f} ms more than bare",
        )
        skill = median(data["skill_listing"])
        report.add(
            f"skill-style listing{label}",
            (bare + skill) / bare,
            "x",
            note=f"reference: bare + two `find` of sessions/ ({skill * 1000:.0f} ms)",
        )
    (d0, o0), (d1, o1) = ratios.values()
    allowance = f"<= {GROWTH_ALLOWANCE:.0%}"
    for what, before, after in (("daemon", d0, d1), ("once", o0, o1)):
        growth = after / before - 1
        report.add(
            f"{what} ratio growth with old sessions",
            growth * 100,
            "%",
            allowance,
            growth <= GROWTH_ALLOWANCE,
            note="relative; allowance for run-to-run noise",
        )
