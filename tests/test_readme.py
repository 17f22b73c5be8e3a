"""The README's own commands work as written, in a fresh home folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from daemon.job.schema import load_job_schema

README = Path(__file__).resolve().parents[1] / "README.md"


def shell_block_with(text: str) -> str:
    """The README's one ```sh block that contains `text`."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if text in block]
    assert len(found) == 1, found
    return found[0]


def test_saving_the_schema_works_in_a_fresh_home(tmp_path: Path) -> None:
    """The schema example creates ~/.config/gpt-image-inbox/ itself, and leaves the schema."""
    block = shell_block_with("gpt-image-inbox schema >")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    saved = tmp_path / ".config" / "gpt-image-inbox" / "job.schema.json"
    assert json.loads(saved.read_text(encoding="utf-8")) == load_job_schema()


def test_the_readme_says_where_the_command_is_after_scripts_run() -> None:
    """`scripts/run` leaves the command in ./.venv: the README says so and how to install it."""
    text = README.read_text(encoding="utf-8")
    assert "`.venv/bin/gpt-image-inbox`" in text
    install = shell_block_with("pipx install .")
    assert "uv tool install ." in install
