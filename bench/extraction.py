"""Benchmark 3: session-log extraction (daemon.codex.session_log.scan_rollout) against its floor.

Floor: reading the log once (1 MiB chunks) plus base64-decoding the image. Each measurement runs
in a fresh interpreter; peak memory is the VmHWM high-water mark (/proc/self/status) minus VmRSS
just before the work, so imports are excluded. Not ru_maxrss: Linux carries it over from the
parent across fork and exec, which would count the benchmark runner's own memory.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

from bench.common import Options, Report, median

MB = 1_000_000
FULL_COMBOS = ((1, 0.2), (20, 0.2), (20, 3), (100, 0.2), (100, 3), (100, 30))
QUICK_COMBOS = ((1, 0.2), (3, 1.6))
PAD_LINE = 32 * 1024  # padding lines: a long session's tool outputs and messages


def run(opts: Options) -> Report:
    report = Report("extraction")
    reps = 1 if opts.quick else 3
    for log_mb, image_mb in QUICK_COMBOS if opts.quick else FULL_COMBOS:
        label = f"{log_mb:g} MB log, {image_mb:g} MB image"
        log, b64_file = build_log(opts.work, int(log_mb * MB), int(image_mb * MB))
        scans, floors = [], []
        for _ in range(reps):
            scans.append(_worker("scan", log))
            floors.append(_worker("floor", log, b64_file))
        scan_t = median([s["seconds"] for s in scans])
        floor_t = median([f["seconds"] for f in floors])
        peak = max(s["peak_mb"] for s in scans)
        limit = 1.5 * image_mb + 30
        report.raw[label] = {"log_bytes": log.stat().st_size, "scans": scans, "floors": floors}
        report.add(
            f"{label}: time / floor",
            scan_t / floor_t,
            "x",
            "<= 2",
            scan_t / floor_t <= 2,
            note=f"scan {scan_t * 1000:.0f} ms, floor {floor_t * 1000:.0f} ms",
        )
        report.add(
            f"{label}: peak memory",
            peak,
            "MB",
            f"<= {limit:g}",
            peak <= limit,
            note="VmHWM - VmRSS before",
        )
        log.unlink()
        b64_file.unlink()
    return report


def padded_png(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a 1x1 image plus a private chunk of random bytes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.rollout_shapes import tiny_png

    png = tiny_png(3)
    body = os.urandom(max(0, size - len(png) - 12))
    chunk = len(body).to_bytes(4, "big") + b"raNd" + body
    chunk += zlib.crc32(b"raNd" + body).to_bytes(4, "big")
    return png[:-12] + chunk + png[-12:]


def build_log(root: Path, log_size: int, image_size: int) -> tuple[Path, Path]:
    """A 0.169-shape session log of about `log_size` bytes holding one generated image."""
    from tests.support import rollout_shapes as shapes

    image = padded_png(image_size)
    lines = [
        json.dumps(line, separators=(",", ":")) + "\n"
        for line in shapes.rollout_lines(shapes.Run(images=[image]))
    ]
    filler = log_size - sum(len(line) for line in lines)
    path = root / f"rollout-{log_size}-{image_size}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        f.writelines(lines[:4])  # session_meta, turn_context, the user's message (two lines)
        n = 0
        while filler > 0:
            pad = _pad_line(n, min(PAD_LINE, max(filler - 200, 10)))
            f.write(pad)
            filler -= len(pad)
            n += 1
        f.writelines(lines[4:])
    b64_file = path.with_suffix(".b64")
    b64_file.write_bytes(base64.b64encode(image))
    return path, b64_file


def _pad_line(n: int, size: int) -> str:
    text = f"ls -la output line {n}: drwxr-xr-x  2 user user 4096 notes.txt\n" * (size // 60)
    payload = {"type": "function_call_output", "call_id": f"call_pad{n}", "output": text}
    return (
        json.dumps(
            {
                "timestamp": "2030-03-17T16:40:00.000Z",
                "type": "response_item",
                "payload": payload,
                "ordinal": n,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def _worker(kind: str, *paths: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.extraction", kind, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(done.stdout)


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _scan(log: Path) -> dict[str, float]:
    from daemon.codex.session_log import scan_rollout

    before = _status_mb("VmRSS")
    started = time.perf_counter()
    scan = scan_rollout(log)
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    assert len(scan.images) == 1, scan
    return {"seconds": seconds, "peak_mb": peak - before, "image_bytes": len(scan.images[0].data)}


def _floor(log: Path, b64_file: Path) -> dict[str, float]:
    text = b64_file.read_bytes()
    started = time.perf_counter()
    with log.open("rb") as f:
        while f.read(1 << 20):
            pass
    base64.b64decode(text)
    return {"seconds": time.perf_counter() - started}


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    result = _scan(Path(args[0])) if kind == "scan" else _floor(Path(args[0]), Path(args[1]))
    print(json.dumps(result))
