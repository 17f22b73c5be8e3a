"""Benchmark 2: detection latency, from a job's rename into the inbox to codex being started.

The instant fake codex writes time.time() as its first act; the difference to the rename time
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
    DaemonProcess,
    Options,
    Report,
    default_settle_sec,
    drop_job,
    median,
    percentile,
    wait_for,
    write_config,
)

MARGIN_SEC = 0.100


def instant_command() -> list[str]:
    return [sys.executable, "-S", "-E", str(INSTANT_CODEX)]


def run(opts: Options) -> Report:
    report = Report("detection")
    settle = default_settle_sec()
    jobs = 3 if opts.quick else 20
    startup = interpreter_start(opts.work, 3 if opts.quick else 10)
    for polling in (False, True):
        kind = "polling" if polling else "native"
        latencies = measure(opts.work / kind, polling=polling, settle=settle, jobs=jobs)
        report.raw[kind] = latencies
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        target = f"<= {settle + MARGIN_SEC:g}" if not polling else ""
        report.add(
            f"{kind} p50",
            p50,
            "s",
            target,
            p50 <= settle + MARGIN_SEC if not polling else None,
            note=f"settle {settle:g} s, {jobs} jobs",
        )
        report.add(f"{kind} p95", p95, "s", note=f"beyond settle: {(p95 - settle) * 1000:.0f} ms")
    report.raw["fake_start"] = startup
    report.add(
        "fake codex interpreter start",
        median(startup) * 1000,
        "ms",
        note="included above (spawn to its first clock reading)",
    )
    return report


def measure(root: Path, *, polling: bool, settle: float, jobs: int) -> list[float]:
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
    with DaemonProcess(config, env=env).start(root / "out") as proc:
        for n in range(jobs):
            time.sleep(rng.uniform(0, 0.5))  # land at different phases of the daemon's ticks
            renamed = drop_job(stage, root / "in", f"job-{n}", f"detection job {n}")
            if not wait_for(lambda n=n: _count(record) > n, timeout=60, step=0.01):
                raise RuntimeError(f"codex was not started for job-{n}; see {proc.log_path}")
            started = json.loads(record.read_text().splitlines()[n])["t"]
            latencies.append(started - renamed)
            result = root / "out" / f"job-{n}.result.yaml"
            wait_for(result.exists, timeout=60, step=0.01)
            moved = root / "in" / "done" / f"job-{n}.prompt.yaml"
            wait_for(moved.exists, timeout=60, step=0.01)
    return latencies


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
