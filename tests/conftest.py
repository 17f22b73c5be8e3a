"""Shared fixtures: the pinned real codex CLI, a mock OpenAI server, a CODEX_HOME bound to it,
a daemon's world and the daemons a test starts; no test may leave a thread of its own running."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.codex_home import make_codex_home
from tests.support.daemon_proc import DaemonProcess
from tests.support.mock_openai import MockOpenAI
from tests.support.threads import no_leaked_threads  # noqa: F401 (an autouse fixture)
from tests.support.world import World

CODEX_VERSION = "0.171.0"


def _pinned_codex_path() -> Path:
    explicit = os.environ.get("GPT_IMAGE_INBOX_CODEX_BIN")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("GPT_IMAGE_INBOX_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-image-inbox"
    )
    return Path(cache) / f"codex-{CODEX_VERSION}" / "node_modules" / ".bin" / "codex"


def _unavailable(message: str) -> None:
    # On CI a missing codex must not turn the real-codex tests into silent skips.
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is an error; run scripts/install-codex)")
    pytest.skip(f"{message}; run scripts/install-codex")


# Resolved once, before any test points GPT_IMAGE_INBOX_CACHE at a folder of its own.
PINNED_CODEX = _pinned_codex_path()


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets its own cache folder, so a remembered `codex --version` of one test's
    fake codex never answers for another's (subprocesses inherit it too)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("GPT_IMAGE_INBOX_CACHE", str(folder))
    monkeypatch.setenv("GPT_IMAGE_INBOX_CODEX_BIN", str(PINNED_CODEX))
    return folder


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """Path of the pinned real codex CLI; skips (fails on CI) when it is not installed."""
    path = PINNED_CODEX
    if not os.access(path, os.X_OK):
        _unavailable(f"codex {CODEX_VERSION} not found at {path}")
    probe = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    if CODEX_VERSION not in probe.stdout:
        _unavailable(f"{path} reports {probe.stdout.strip()!r}, not codex-cli {CODEX_VERSION}")
    return path


@pytest.fixture
def mock_openai() -> Iterator[MockOpenAI]:
    """A started MockOpenAI (scenario "image"); set `.scenario` to change its behaviour."""
    with MockOpenAI() as server:
        yield server


@pytest.fixture
def codex_home(tmp_path: Path, mock_openai: MockOpenAI) -> Path:
    """A private CODEX_HOME with a test ChatGPT login, pointed at the mock's port."""
    return make_codex_home(tmp_path / "codex-home", port=mock_openai.port)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty inbox folder, for tests of the watcher and of job files."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """Inbox, outbox, CODEX_HOME, config and fake codex of one daemon, in tmp_path/world; the
    environment names the fake codex's script for `once` run in this process (World.once)."""
    made = World(tmp_path / "world")
    monkeypatch.setenv("FAKE_CODEX_SCRIPT", str(made.script_path))
    return made


@pytest.fixture
def daemons(world: World) -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; any still running at the end are killed, the world's codex too."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill_if_running()
    world.kill_codex_leftovers()


@pytest.fixture
def start(world: World, daemons: list[DaemonProcess]) -> Iterator[Callable[..., DaemonProcess]]:
    """start(target=world, ready=True, **World.daemon's options) -> a started DaemonProcess,
    cleaned up after the test with every codex of its world."""
    others: list[World] = []  # worlds besides `world`: `daemons` does not know their codex

    def starter(
        target: World | None = None, *, ready: bool = True, **options: Any
    ) -> DaemonProcess:
        if target is not None and target not in others:
            others.append(target)
        daemon = (target or world).daemon(**options)
        daemons.append(daemon)
        return daemon.start(ready=ready)

    yield starter
    for daemon in daemons:  # first, so that none starts another codex
        daemon.kill_if_running()
    for other in others:
        other.kill_codex_leftovers()
