"""The benchmark suite's entry point: `python -m bench [--quick] [--only NAME] [--out DIR]`.

Prints a table and writes it as latest.md and latest.json (with the machine's description).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Options, Report, Row
from bench.machine import describe, summary

BENCHMARKS = ("overhead", "detection", "extraction", "idle", "throughput")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and counts: checks that each benchmark runs",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for latest.md and latest.json (default bench/results)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))  # tests.support (mock server, log builders)
    names = args.only or list(BENCHMARKS)
    work = Path(tempfile.mkdtemp(prefix="gpt-image-inbox-bench-"))
    machine = describe()
    print(f"Machine: {summary(machine)}", flush=True)
    reports, started = [], time.monotonic()
    try:
        for name in names:
            print(f"-- {name} ...", flush=True)
            t0 = time.monotonic()
            module = importlib.import_module(f"bench.{name}")
            scratch = work / name
            scratch.mkdir()
            report: Report = module.run(Options(quick=args.quick, work=scratch))
            report.raw["wall_sec"] = round(time.monotonic() - t0, 1)
            reports.append(report)
            print(render_table(report.rows), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    document = {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine,
        "wall_sec": round(time.monotonic() - started, 1),
        "results": [
            {"name": r.name, "rows": [_row_dict(row) for row in r.rows], "raw": r.raw}
            for r in reports
        ],
    }
    write_results(args.out, document, reports)
    print(
        f"\nWritten {args.out / 'latest.md'} and latest.json ({document['wall_sec']:.0f} s in all)"
    )
    return 0


def _row_dict(row: Row) -> dict[str, object]:
    return {
        "metric": row.metric,
        "value": row.value,
        "unit": row.unit,
        "target": row.target,
        "met": row.met,
        "note": row.note,
    }


def fmt_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3f}"
    if unit in ("s", "ms", "MB", "CPU-s/min") and abs(value) < 10:
        return f"{value:.3f}" if unit in {"s", "CPU-s/min"} else f"{value:.1f}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**NO**")


def table_lines(rows: Sequence[Row], *, with_bench: bool = False) -> list[str]:
    head = ["benchmark"] if with_bench else []
    lines = ["| " + " | ".join([*head, "metric", "value", "unit", "target", "met", "note"]) + " |"]
    lines.append("|" + "---|" * (len(head) + 6))
    for row in rows:
        cells = [row.bench] if with_bench else []
        cells += [
            row.metric,
            fmt_value(row.value, row.unit),
            row.unit,
            row.target,
            _verdict(row.met),
            row.note,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def render_table(rows: Sequence[Row]) -> str:
    return "\n".join(table_lines(rows, with_bench=True))


def write_results(out: Path, document: dict[str, object], reports: Sequence[Report]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    machine = document["machine"]
    assert isinstance(machine, dict)
    lines = [
        "# Benchmark results",
        "",
        f"Measured {document['measured_at']}{' (quick run)' if document['quick'] else ''} on: "
        f"{summary(machine)}. Whole run: {document['wall_sec']} s.",
        "",
        "Command: `.venv/bin/python -m bench` (see bench/README.md). "
        "Targets are ratios measured in the same run.",
        "",
    ]
    for report in reports:
        lines += [f"## {report.name}", "", *table_lines(report.rows), ""]
    (out / "latest.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
