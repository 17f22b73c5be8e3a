"""Capture real session logs of each mock scenario as fixtures for tests/test_rollout.py.

    python -m tests.support.capture_rollouts CODEX_BIN [OUT_DIR [NAME...]]

Runs the given real codex CLI offline against MockOpenAI once per scenario and copies each
run's session log, unchanged, to OUT_DIR/real-<major.minor>-<name>.jsonl. The images are tiny PNGs,
so a log stays near the size of codex's own instructions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.codex_home import codex_env, make_codex_home
from tests.support.mock_openai import MockOpenAI, RateLimits, Scenario, make_png

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rollouts"
PROMPT = "A red square on white.\n"


@dataclass(frozen=True, slots=True)
class Capture:
    name: str
    scenario: Scenario
    prompt: str = PROMPT
    with_reference: bool = False
    images_per_call: int = 1
    rate_limits: RateLimits | None = None


CAPTURES = (
    Capture("image", Scenario.IMAGE),
    Capture("image-reference", Scenario.IMAGE, with_reference=True),
    Capture("image-two", Scenario.IMAGE, "Two red squares on white.\n", images_per_call=2),
    Capture("refuse", Scenario.REFUSE),
    Capture("text_only", Scenario.TEXT_ONLY),
    Capture("usage_limit", Scenario.USAGE_LIMIT),
    Capture("image_limit", Scenario.IMAGE_LIMIT),
    # The mock sends rate-limit headers: codex records them in token_count events.
    Capture("rate_limits", Scenario.IMAGE, rate_limits=RateLimits()),
    Capture("image_limit-rate_limits", Scenario.IMAGE_LIMIT, rate_limits=RateLimits()),
)


def capture(codex_bin: Path, spec: Capture, out_dir: Path) -> Path:
    """Run one scenario and copy its session log into out_dir; returns the copy's path."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        MockOpenAI(
            spec.scenario, images_per_call=spec.images_per_call, rate_limits=spec.rate_limits
        ) as mock,
    ):
        root = Path(tmp)
        home = make_codex_home(root / "codex-home", port=mock.port)
        work = root / "work"
        work.mkdir()
        argv = [str(codex_bin), "exec", "--skip-git-repo-check", "--sandbox", "read-only"]
        argv += ["--color", "never", "--enable", "image_generation", "--json", "-C", str(work)]
        if spec.with_reference:
            reference = root / "reference.png"
            reference.write_bytes(make_png(size=(16, 16), color=(10, 200, 10)))
            argv += ["-i", str(reference)]
        run = subprocess.run(
            argv,
            input=spec.prompt.encode(),
            capture_output=True,
            env=codex_env(mock.port, codex_home=home),
            timeout=120,
            check=False,
        )
        [log] = (home / "sessions").rglob("rollout-*.jsonl")
        # Named by major.minor, as the existing fixtures are: real-0.171-image.jsonl.
        version = re.search(rb'"cli_version":"(\d+\.\d+)', log.read_bytes())
        assert version is not None, f"{spec.name}: no cli_version in {log}"
        dest = out_dir / f"real-{version[1].decode()}-{spec.name}.jsonl"
        shutil.copyfile(log, dest)
        print(f"{dest.name}: exit {run.returncode}, {dest.stat().st_size} bytes")
        return dest


def main(argv: list[str]) -> int:
    codex_bin = Path(argv[0])
    out_dir = Path(argv[1]) if len(argv) > 1 else FIXTURES
    names = set(argv[2:])  # capture only these, when named
    for spec in CAPTURES:
        if not names or spec.name in names:
            capture(codex_bin, spec, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
