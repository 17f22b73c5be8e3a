"""Remember `codex --version` between runs: asking costs a Node start-up (~80 ms) per command.

The answer is keyed by the codex program's resolved path, size and modification time, so an
upgrade (which rewrites the files) is asked again. Kept in the user's cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from daemon.files import replace_file

MAX_ENTRIES = 32


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


def read(cache_file: Path, key: str) -> str | None:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def write(cache_file: Path, key: str, version_text: str) -> None:
    """Best effort: a cache that cannot be written only costs the next probe."""
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.pop(key, None)
    data[key] = version_text
    while len(data) > MAX_ENTRIES:
        data.pop(next(iter(data)))
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        replace_file(cache_file, json.dumps(data, indent=1).encode())
    except OSError:
        pass
