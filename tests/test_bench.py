"""The benchmark suite runs: a quick run of each benchmark writes its table (targets not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import percentile

REPO = Path(__file__).resolve().parents[1]


def run_quick(name: str, out: Path) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", name, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "| benchmark | metric |" in done.stdout
    return json.loads((out / "latest.json").read_text(encoding="utf-8"))


def rows_of(document: dict, name: str) -> list[dict]:  # type: ignore[type-arg]
    (result,) = [r for r in document["results"] if r["name"] == name]
    return result["rows"]


@pytest.mark.parametrize("name", ["detection", "extraction", "idle"])
def test_quick_run_writes_results(name: str, tmp_path: Path) -> None:
    """A quick run of one benchmark prints its table and writes Markdown and JSON with figures."""
    document = run_quick(name, tmp_path)
    rows = rows_of(document, name)
    assert rows
    assert all(isinstance(r["value"], (int, float)) for r in rows)
    assert document["machine"]["cores"] >= 1
    assert document["machine"]["python"]
    markdown = (tmp_path / "latest.md").read_text(encoding="utf-8")
    assert f"## {name}" in markdown
    assert rows[0]["metric"] in markdown


def test_throughput_quick_run_loses_no_job(tmp_path: Path) -> None:
    """Every job dropped in the quick throughput run ends with one result and one codex run."""
    rows = rows_of(run_quick("throughput", tmp_path), "throughput")
    lost = [r for r in rows if "lost or duplicated" in r["metric"]]
    assert lost
    assert all(r["value"] == 0 for r in lost)


@pytest.mark.real_codex
def test_overhead_quick_run_through_real_codex(codex_bin: Path, tmp_path: Path) -> None:
    """The overhead benchmark drives the real codex CLI, the daemon and `once` to ratios."""
    rows = rows_of(run_quick("overhead", tmp_path), "overhead")
    ratios = {r["metric"]: r["value"] for r in rows if r["unit"] == "x"}
    assert ratios["daemon / bare"] > 0.5
    assert ratios["once (cold) / bare"] > 0.5


def test_percentile_is_nearest_rank() -> None:
    """p50 and p95 pick measured values by nearest rank."""
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile([3.0], 95) == 3.0
