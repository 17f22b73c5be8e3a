"""Benchmark 4: what the `run` daemon costs while the inbox is empty (native observer)."""

from __future__ import annotations

import sys
import time

from bench.common import Options, Report, cpu_seconds, rss_mb, start_daemon, write_config

RSS_LIMIT_MB = 60.0
CPU_LIMIT = 0.05  # CPU-seconds per minute
WARM_UP_SEC = 2.0


def run(opts: Options) -> Report:
    report = Report("idle")
    seconds = 5.0 if opts.quick else 60.0
    root = opts.work
    (root / "home").mkdir()
    # codex is never started with an empty inbox; any command that exists will do.
    config = write_config(
        root / "daemon.yaml",
        inbox=root / "in",
        outbox=root / "out",
        command=[sys.executable],
        home=root / "home",
    )
    with start_daemon(config, root / "out") as proc:
        time.sleep(WARM_UP_SEC)  # start-up work (imports, first scan) is not idling
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss, hwm = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
    per_minute = (cpu1 - cpu0) * 60 / (t1 - t0)
    report.raw = {"seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0, "rss_mb": rss, "hwm_mb": hwm}
    report.add(
        "resident memory (VmRSS)",
        rss,
        "MB",
        f"<= {RSS_LIMIT_MB:g}",
        rss <= RSS_LIMIT_MB,
        note=f"peak VmHWM {hwm:.1f} MB",
    )
    report.add(
        "CPU time",
        per_minute,
        "CPU-s/min",
        f"<= {CPU_LIMIT:g}",
        per_minute <= CPU_LIMIT,
        note=f"{cpu1 - cpu0:.2f} CPU-s over {t1 - t0:.0f} s, /proc utime+stime",
    )
    return report
