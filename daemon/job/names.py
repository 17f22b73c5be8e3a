"""Which names in the inbox are jobs, and which images and references belong to a job.

One rule for every command: `run` (the watcher), `once` and crash recovery take the same files
as jobs, and the watcher waits for the same references that parse_job reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from daemon.images import IMAGE_EXTENSIONS

JOB_SUFFIX = ".prompt.yaml"

# Exact names written by operating systems, NAS boxes and sync tools.
_LITTER_NAMES = frozenset(
    {
        "desktop.ini",
        "thumbs.db",
        "@eadir",
        "__macosx",
        "$recycle.bin",
        "system volume information",
    }
)

# Partial downloads and editor scratch files: the real file appears later under its own name.
_LITTER_SUFFIXES = (".part", ".crdownload", ".filepart", ".swp", ".swo", ".tmp", "~")

# Syncthing writes `~syncthing~NAME.tmp` (and `.syncthing.NAME.tmp`, caught as a dotfile);
# Microsoft Office writes an owner file `~$NAME` beside a file it has open.
_LITTER_PREFIXES = ("~syncthing~", "~$")


def is_litter(name: str) -> bool:
    """True for a file name that is never a job or a reference, whatever its content.

    Covers dotfiles (so `.DS_Store`, AppleDouble `._*`, `.stfolder`, `.stversions`, `.Trashes`,
    `.Spotlight-V100`, Emacs `.#*` locks, Syncthing `.syncthing.*.tmp` and old-style iCloud
    `.<name>.icloud` stubs), Windows and NAS litter, partial downloads and editor backups.
    Syncthing conflict copies (`x.sync-conflict-...`) are not litter: they are ordinary files.
    """
    if not name or name.startswith("."):
        return True
    lowered = name.lower()
    if lowered in _LITTER_NAMES:
        return True
    return lowered.endswith(_LITTER_SUFFIXES) or lowered.startswith(_LITTER_PREFIXES)


def is_job_file(name: str) -> bool:
    """True for `<name>.prompt.yaml` with a non-empty name that is not litter."""
    return name.endswith(JOB_SUFFIX) and len(name) > len(JOB_SUFFIX) and not is_litter(name)


def job_name(path: Path) -> str:
    """The job's name: the file name without `.prompt.yaml`."""
    if not is_job_file(path.name):
        raise ValueError(f"{path.name!r} is not a job file name (<name>{JOB_SUFFIX})")
    return path.name[: -len(JOB_SUFFIX)]


def sibling_owners(name: str) -> list[str]:
    """The job names an image file is a sibling reference of: `a.b.png` belongs to `a.b` and `a`.

    A job's siblings are `<name>.png|jpg|jpeg|webp` and `<name>.<anything>.<ext>` beside it.
    """
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or ext.lower() not in IMAGE_EXTENSIONS:
        return []
    owners = [stem]
    owners.extend(stem[:i] for i, char in enumerate(stem) if char == "." and i > 0)
    return owners


def sibling_references(job_path: Path) -> list[Path]:
    """The sibling images beside a job file (see sibling_owners), sorted by name."""
    name = job_name(job_path)
    try:
        entries = os.listdir(job_path.parent)
    except FileNotFoundError:
        return []
    found = sorted(entry for entry in entries if name in sibling_owners(entry))
    return [job_path.parent / entry for entry in found]


def reference_path(folder: Path, written: str) -> Path:
    """Where a reference as written in `refs` leads from the job's folder: absolute and
    normalised (`a/../b.png` is `b.png`), links not followed."""
    return Path(os.path.normpath(Path(os.path.abspath(folder)) / written))


def named_references(document: Any) -> tuple[str, ...]:
    """The references a job document names under `refs` that stay in the job's folder, each
    relative to it and normalised as reference_path does; parse_job refuses or checks the rest."""
    refs = document.get("refs") if isinstance(document, dict) else None
    if not isinstance(refs, list):
        return ()
    found = []
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            continue
        norm = os.path.normpath(ref)
        if not os.path.isabs(norm) and norm != ".." and not norm.startswith(".." + os.sep):
            found.append(norm)
    return tuple(found)
