"""Knowing which codex-cli release runs here: asking `codex --version`, parsing its answer, and
remembering it between runs, since asking costs a Node start-up (~80 ms) per command.

The answer is kept in the user's cache folder, keyed by the codex program's resolved path,
size and modification time, so an upgrade (which rewrites the files) is asked again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import CodexMissing
from daemon.files import replace_file

# codex-cli releases this tool knows how to read.
MIN_SUPPORTED = (0, 111, 0)
# `--disable unbounded_connection_retries` makes a network outage fail fast instead of retrying
# forever; releases before it exit 1 on an unknown feature flag, so it is added only from here.
BOUNDED_RETRIES_SINCE = (0, 150, 0)
CACHE_ENTRIES = 32
# As much of an odd answer as an error sidecar keeps of codex's words.
_ANSWER_TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class CodexVersion:
    text: str
    number: tuple[int, int, int]

    @property
    def bounded_retries(self) -> bool:
        return self.number >= BOUNDED_RETRIES_SINCE


def parse_version(text: str) -> CodexVersion | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return CodexVersion(text.strip(), (major, minor, patch))


def probe_version(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    cache_file: Path | None = None,
) -> CodexVersion:
    """Ask `codex --version` (or the cache, when given); CodexMissing when codex cannot be
    started, answers oddly or is older than this tool supports."""
    key = program_key(command, env or os.environ) if cache_file else None
    cached = _read_cache(cache_file, key) if cache_file and key else None
    version = parse_version(cached) if cached else None
    if version is None:
        version = _ask_version(command, env=env, run=run)
        if cache_file and key:
            _write_cache(cache_file, key, version.text)
    if version.number < MIN_SUPPORTED:
        raise CodexMissing(
            f"codex {version.text} is too old; codex-cli 0.111 or later is needed.",
            hint="Update the Codex CLI (`npm install -g @openai/codex`).",
        )
    return version


def _ask_version(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> CodexVersion:
    try:
        done = run(
            [*command, "--version"],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise CodexMissing(
            f"The codex command {command[0]!r} cannot be started.", detail=str(exc)
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CodexMissing("`codex --version` did not answer within 60 seconds.") from exc
    version = parse_version(done.stdout) if done.returncode == 0 else None
    if version is None:
        raise CodexMissing(
            f"`{' '.join(command)} --version` did not print a codex-cli version.",
            detail=(done.stdout + done.stderr)[-_ANSWER_TAIL_BYTES:],
        )
    return version


# --- the cache ----------------------------------------------------------------------------------


def default_cache_file(environ: Mapping[str, str] = os.environ) -> Path:
    """$GPT_IMAGE_INBOX_CACHE, else $XDG_CACHE_HOME/gpt-image-inbox, else ~/.cache/…"""
    folder = environ.get("GPT_IMAGE_INBOX_CACHE")
    if not folder:
        base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "gpt-image-inbox")
    return Path(folder) / "codex-version.json"


def program_key(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Identity of the programs a command runs; None when the first one is not found."""
    found = shutil.which(command[0], path=env.get("PATH"))
    if found is None:
        return None
    parts = []
    for word in [found, *command[1:]]:
        path = Path(word)
        if path.is_file():
            real = path.resolve()
            st = real.stat()
            parts.append(f"{real}:{st.st_size}:{st.st_mtime_ns}")
        else:
            parts.append(word)
    return "\0".join(parts)


def _read_entries(cache_file: Path) -> dict[str, object]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_cache(cache_file: Path, key: str) -> str | None:
    value = _read_entries(cache_file).get(key)
    return value if isinstance(value, str) else None


def _write_cache(cache_file: Path, key: str, version_text: str) -> None:
    """Best effort: a cache that cannot be written only costs the next probe."""
    data = _read_entries(cache_file)
    data.pop(key, None)
    data[key] = version_text
    while len(data) > CACHE_ENTRIES:
        data.pop(next(iter(data)))
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        replace_file(cache_file, json.dumps(data, indent=1).encode())
    except OSError:
        pass
