"""Benchmark 5: 1,000 jobs dropped into the inbox at once, run through an instant fake codex.

Counted from the first rename into the inbox to the last result sidecar (settle included); every
job must end with a result sidecar and exactly one codex invocation.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    FAKE_CODEX,
    INSTANT_CODEX,
    Options,
    Report,
    job_text,
    start_daemon,
    write_config,
)
from tests.support.procs import Timeout

TARGET_PER_SEC = 50.0


def run(opts: Options) -> Report:
    report = Report("throughput")
    python_instant = [sys.executable, "-S", "-E", str(INSTANT_CODEX)]
    fake = [sys.executable, str(FAKE_CODEX)]
    many = 20 if opts.quick else 1000
    compiled = compile_instant(opts.work)
    # (label, codex command, jobs, gallery, judged): the judged run uses the compiled instant
    # codex (~1 ms to start) so that the daemon's own cost is what is measured; the others are
    # references: a Python instant codex (~20 ms of interpreter start-up per job), the test
    # suite's fake, and the gallery turned off.
    plans = [
        ("instant fake codex (compiled)", compiled, many, True, True),
        ("instant fake codex (python -S -E)", python_instant, many, True, False),
        ("tests/support/fake_codex.py", fake, 5 if opts.quick else 300, True, False),
        ("instant fake codex (compiled), gallery: false", compiled, many, False, False),
    ]
    if compiled == python_instant:
        plans = [
            (label, cmd, n, g, True if label.startswith("instant fake codex (python") else judged)
            for label, cmd, n, g, judged in plans[1:]
        ]
    for n, (label, command, jobs, gallery, judged) in enumerate(plans):
        figures = measure(opts.work / f"run-{n}", command, jobs, gallery=gallery)
        report.raw[label] = figures
        rate = figures["jobs_per_sec"]
        report.add(
            f"{label}: {jobs} jobs",
            rate,
            "jobs/s",
            f">= {TARGET_PER_SEC:g}" if judged else "",
            rate >= TARGET_PER_SEC if judged else None,
            note=f"{figures['seconds']:.1f} s, settle included",
        )
        lost = jobs - min(figures["results"], figures["invocations"], figures["done"])
        extra = max(figures["invocations"], figures["results"]) - jobs + figures["errors"]
        report.add(
            f"{label}: lost or duplicated",
            lost + extra,
            "jobs",
            "0",
            lost + extra == 0,
            note=f"{figures['results']} results, {figures['invocations']} codex runs, "
            f"{figures['done']} in done/, {figures['errors']} errors",
        )
    return report


def compile_instant(work: Path) -> list[str]:
    """bench/instant_codex.c built with the system C compiler; the Python one without it."""
    source = INSTANT_CODEX.with_suffix(".c")
    binary = work / "instant_codex"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is not None:
        work.mkdir(parents=True, exist_ok=True)
        built = subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=False)
        if built.returncode == 0:
            return [str(binary)]
    print("  throughput: no C compiler; the Python instant codex is judged instead", flush=True)
    return [sys.executable, "-S", "-E", str(INSTANT_CODEX)]


def measure(root: Path, command: list[str], jobs: int, *, gallery: bool) -> dict[str, float]:
    record = root / "record.jsonl"
    stage, inbox, outbox = root / "stage", root / "in", root / "out"
    stage.mkdir(parents=True)
    (root / "home").mkdir()
    env = {**os.environ, "INSTANT_CODEX_RECORD": str(record)}
    if command[-1] == str(FAKE_CODEX):
        script = root / "fake.json"
        script.write_text(json.dumps({"record": str(record)}), encoding="utf-8")
        env["FAKE_CODEX_SCRIPT"] = str(script)
    config = write_config(
        root / "daemon.yaml",
        inbox=inbox,
        outbox=outbox,
        command=command,
        home=root / "home",
        gallery=gallery,
    )
    names = [f"job-{n:04d}.prompt.yaml" for n in range(jobs)]
    for name in names:
        (stage / name).write_text(job_text(f"throughput {name}"), encoding="utf-8")
    with start_daemon(config, outbox, env=env) as proc:
        started = time.monotonic()
        for name in names:
            os.rename(stage / name, inbox / name)
        try:
            proc.wait_for(lambda: _results(outbox) >= jobs, timeout=max(120.0, jobs * 1.0))
        except Timeout:  # the rows below count what was lost
            print(f"  throughput: not all jobs finished; see {proc.log_path}", flush=True)
        seconds = time.monotonic() - started
        with contextlib.suppress(Timeout):
            proc.wait_for(
                lambda: len(list((inbox / "done").glob("*.prompt.yaml"))) >= jobs, timeout=30
            )
    return {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_sec": jobs / seconds,
        "results": _results(outbox),
        "errors": sum(1 for n in os.listdir(outbox) if n.endswith(".error.yaml")),
        "invocations": record.read_bytes().count(b"\n") if record.exists() else 0,
        "done": len(list((inbox / "done").glob("*.prompt.yaml"))),
    }


def _results(outbox: Path) -> int:
    try:
        return sum(1 for n in os.listdir(outbox) if n.endswith(".result.yaml"))
    except FileNotFoundError:
        return 0
