"""Benchmark 2: detection latency, from a job's arrival in the inbox to codex being started.

A job renamed into the inbox, or written there and closed, arrives complete: with the native
observer it is taken at once, not after the settle time (target: p50 <= 0.3 s). The polling
observer has no such events and keeps the settle time; it is shown for reference.

The instant fake codex writes time.time() as its first act; the difference to the arrival time
also holds the fake's interpreter start, measured separately and shown as a reference.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    INSTANT_CODEX,
    Options,
    Report,
    default_settle_sec,
    drop_job,
    job_text,
    median,
    percentile,
    start_daemon,
    write_config,
)

TARGET_SEC = 0.3

# (label, observer, how the job arrives)
CASES = (
    ("native, renamed in", False, "rename"),
    ("native, written and closed", False, "write"),
    ("polling, renamed in", True, "rename"),
)


def instant_command() -> list[str]:
    return [sys.executable, "-S", "-E", str(INSTANT_CODEX)]


def run(opts: Options) -> Report:
    report = Report("detection")
    settle = default_settle_sec()
    jobs = 3 if opts.quick else 20
    startup = interpreter_start(opts.work, 3 if opts.quick else 10)
    for label, polling, how in CASES:
        folder = opts.work / label.replace(", ", "-").replace(" ", "-")
        latencies = measure(folder, polling=polling, how=how, jobs=jobs)
        report.raw[label] = latencies
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        note = f"{jobs} jobs, settle {settle:g} s"
        if polling:
            report.add(f"{label} p50", p50, "s", note=note + ": kept (no close or move events)")
        else:
            report.add(f"{label} p50", p50, "s", f"<= {TARGET_SEC:g}", p50 <= TARGET_SEC, note=note)
        report.add(f"{label} p95", p95, "s")
    report.raw["settle_sec"] = settle
    report.raw["fake_start"] = startup
    report.add(
        "fake codex interpreter start",
        median(startup) * 1000,
        "ms",
        note="included above (spawn to its first clock reading)",
    )
    return report


def measure(root: Path, *, polling: bool, how: str, jobs: int) -> list[float]:
    """Seconds from each job's arrival (`rename` from outside, or `write` and close under its
    own name) to the fake codex's first clock reading, one job at a time."""
    record = root / "record.jsonl"
    stage = root / "stage"
    stage.mkdir(parents=True)
    home = root / "codex-home"
    home.mkdir()
    config = write_config(
        root / "daemon.yaml",
        inbox=root / "in",
        outbox=root / "out",
        command=instant_command(),
        home=home,
        polling=polling,
    )
    env = {**os.environ, "INSTANT_CODEX_RECORD": str(record)}
    latencies = []
    rng = random.Random(5)
    with start_daemon(config, root / "out", env=env) as proc:
        for n in range(jobs):
            time.sleep(rng.uniform(0, 0.5))  # land at different phases of the daemon's ticks
            name, prompt = f"job-{n}", f"detection job {n}"
            if how == "rename":
                arrived = drop_job(stage, root / "in", name, prompt)
            else:
                arrived = _write_job(root / "in", name, prompt)
            proc.wait_for(
                lambda n=n: _count(record) > n,
                timeout=60,
                what=f"codex started for {name}",
                interval=0.01,
            )
            started = json.loads(record.read_text().splitlines()[n])["t"]
            latencies.append(started - arrived)
            result = root / "out" / f"{name}.result.yaml"
            proc.wait_for(result.exists, timeout=60, what=f"{result.name}", interval=0.01)
            moved = root / "in" / "done" / f"{name}.prompt.yaml"
            proc.wait_for(moved.exists, timeout=60, what=f"{name} in done/", interval=0.01)
    return latencies


def _write_job(inbox: Path, name: str, prompt: str) -> float:
    """Write a job under its own name in the inbox and close it; returns the close's time."""
    with (inbox / f"{name}.prompt.yaml").open("w", encoding="utf-8") as handle:
        handle.write(job_text(prompt))
    return time.time()


def _count(record: Path) -> int:
    try:
        return record.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def interpreter_start(root: Path, runs: int) -> list[float]:
    """Seconds from spawning the instant fake to its first clock reading."""
    record = root / "start.jsonl"
    env = {**os.environ, "INSTANT_CODEX_RECORD": str(record), "CODEX_HOME": str(root / "home")}
    times = []
    for n in range(runs):
        spawned = time.time()
        subprocess.run(
            [*instant_command(), "exec"], input=b"x", capture_output=True, env=env, check=True
        )
        times.append(json.loads(record.read_text().splitlines()[n])["t"] - spawned)
    return times
