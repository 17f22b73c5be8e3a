"""Which inbox names are litter (for every command alike), and which are iCloud placeholders."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daemon.commands.once import pending_jobs
from daemon.commands.submit import submit_job
from daemon.config import default_config
from daemon.errors import UsageError
from daemon.job.names import is_litter
from daemon.watching.icloud import SF_DATALESS, icloud_stub_target, is_icloud_placeholder
from daemon.watching.settle import Settler

LITTER = [
    ".DS_Store",
    "._cat.prompt.yaml",
    ".hidden.prompt.yaml",
    "desktop.ini",
    "Desktop.ini",
    "Thumbs.db",
    ".syncthing.cat.prompt.yaml.tmp",
    "~syncthing~cat.prompt.yaml.tmp",
    ".stfolder",
    ".stversions",
    "@eaDir",
    ".Spotlight-V100",
    ".Trashes",
    "__MACOSX",
    "cat.prompt.yaml.part",
    "cat.png.crdownload",
    "cat.prompt.yaml.filepart",
    ".cat.prompt.yaml.swp",
    "cat.prompt.yaml.swp",
    "cat.prompt.yaml~",
    ".#cat.prompt.yaml",
    ".cat.prompt.yaml.icloud",
    "",
]

REAL = [
    "cat.prompt.yaml",
    "cat.png",
    "cat.ref.JPG",
    "cat.sync-conflict-20240101-120000-ABCDEFG.prompt.yaml",
    "my part.prompt.yaml",
    "tilde~in~middle.prompt.yaml",
]


@pytest.mark.parametrize("name", LITTER)
def test_litter_is_recognised(name: str) -> None:
    """Sync-tool, editor and OS files are never taken for jobs or references."""
    assert is_litter(name)


@pytest.mark.parametrize("name", REAL)
def test_real_files_are_not_ignored(name: str) -> None:
    """Job files, images and sync-conflict copies are ordinary files."""
    assert not is_litter(name)


def test_icloud_stub_names_its_target() -> None:
    """An old-style stub `.<name>.icloud` stands for `<name>`; other names stand for nothing."""
    assert icloud_stub_target(".cat.png.icloud") == "cat.png"
    assert icloud_stub_target("cat.png.icloud") is None
    assert icloud_stub_target(".icloud") is None


def _st(**fields: Any) -> os.stat_result:
    base = {"st_size": 10, "st_blocks": 8, "st_flags": 0}
    base.update(fields)
    return SimpleNamespace(**base)  # type: ignore[return-value]


def test_old_style_stub_is_a_placeholder(tmp_path: Path) -> None:
    """A `.<name>.icloud` file is a placeholder whatever its stat says."""
    assert is_icloud_placeholder(tmp_path / ".cat.png.icloud", _st(), platform="linux")


def test_dataless_flag_is_a_placeholder(tmp_path: Path) -> None:
    """The SF_DATALESS flag marks an evicted file on any platform that reports it."""
    assert is_icloud_placeholder(tmp_path / "cat.png", _st(st_flags=SF_DATALESS), platform="linux")


def test_size_without_blocks_is_a_placeholder_on_macos(tmp_path: Path) -> None:
    """On macOS a file with bytes but no blocks is evicted; elsewhere it is inline data."""
    evicted = _st(st_size=5000, st_blocks=0)
    assert is_icloud_placeholder(tmp_path / "cat.png", evicted, platform="darwin")
    assert not is_icloud_placeholder(tmp_path / "cat.png", evicted, platform="linux")


def test_real_file_is_not_a_placeholder(tmp_path: Path) -> None:
    """A file written here is on disk, and an empty file is not evicted."""
    path = tmp_path / "cat.png"
    path.write_bytes(b"x" * 100)
    assert not is_icloud_placeholder(path, os.stat(path), platform="darwin")
    empty = _st(st_size=0, st_blocks=0)
    assert not is_icloud_placeholder(tmp_path / "e.png", empty, platform="darwin")


def test_once_and_run_take_the_same_files_as_jobs(tmp_path: Path) -> None:
    """`once` and the watcher of `run` agree on which files are jobs: an Office owner file
    `~$x.prompt.yaml` and other litter with a job's name are jobs for neither."""
    names = ["cat.prompt.yaml", "~$x.prompt.yaml", "~syncthing~x.prompt.yaml", ".x.prompt.yaml"]
    for name in names:
        (tmp_path / name).write_text("prompt: a cat\n")
    once = [path.name for path in pending_jobs(tmp_path)]
    settler = Settler(tmp_path, settle_sec=0.0, grace_sec=0.0)
    for moment in (0.0, 1.0):  # seen, then unchanged since: settled
        settler.update(os.listdir(tmp_path), moment)
    run = [path.name for path in iter(settler.take, None)]
    assert once == run == ["cat.prompt.yaml"]


@pytest.mark.parametrize("name", ["~$x", "~syncthing~x", ".x"])
def test_submit_refuses_a_name_no_command_would_take(tmp_path: Path, name: str) -> None:
    """`submit --name` with a litter name is refused, not written as a job never taken."""
    config = default_config(environ={"HOME": str(tmp_path)})
    with pytest.raises(UsageError, match="temporary file, which the daemon never takes") as caught:
        submit_job(prompt="a cat", refs=[], name=name, config=config)
    assert caught.value.hint is not None
    assert "~syncthing~" in caught.value.hint
    assert not any(config.inbox.iterdir())
