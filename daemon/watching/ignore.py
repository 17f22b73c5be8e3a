"""Names in the inbox that are never jobs or references: sync-tool, editor and OS litter.

Also tells an iCloud file that is not downloaded yet, which must wait rather than be read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Exact names written by operating systems, NAS boxes and sync tools.
_IGNORED_NAMES = frozenset(
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
_IGNORED_SUFFIXES = (".part", ".crdownload", ".filepart", ".swp", ".swo", ".tmp", "~")

# Syncthing writes `~syncthing~NAME.tmp` (and `.syncthing.NAME.tmp`, caught as a dotfile).
_IGNORED_PREFIXES = ("~syncthing~", "~$")

# macOS 12.3+ marks an evicted ("dataless") iCloud file with this st_flags bit.
SF_DATALESS = 0x40000000

_ICLOUD_SUFFIX = ".icloud"


def is_ignored(name: str) -> bool:
    """True for a file name that is never a job or a reference, whatever its content.

    Covers dotfiles (so `.DS_Store`, AppleDouble `._*`, `.stfolder`, `.stversions`, `.Trashes`,
    `.Spotlight-V100`, Emacs `.#*` locks, Syncthing `.syncthing.*.tmp` and old-style iCloud
    `.<name>.icloud` stubs), Windows and NAS litter, partial downloads and editor backups.
    Syncthing conflict copies (`x.sync-conflict-...`) are not ignored: they are ordinary files.
    """
    if not name or name.startswith("."):
        return True
    lowered = name.lower()
    if lowered in _IGNORED_NAMES:
        return True
    return lowered.endswith(_IGNORED_SUFFIXES) or lowered.startswith(_IGNORED_PREFIXES)


def icloud_stub_target(name: str) -> str | None:
    """The real file name an old-style iCloud stub `.<name>.icloud` stands for, else None."""
    if name.startswith(".") and name.endswith(_ICLOUD_SUFFIX):
        target = name[1 : -len(_ICLOUD_SUFFIX)]
        return target or None
    return None


def is_icloud_placeholder(
    path: Path | str, st: os.stat_result, *, platform: str = sys.platform
) -> bool:
    """True when the file at `path` is an iCloud placeholder whose bytes are not on disk yet.

    Old style: the stub `.<name>.icloud`. Since macOS 12.3 an evicted file keeps its name; it has
    the SF_DATALESS flag, or `st_size > 0` with `st_blocks == 0`. The size/blocks rule is applied
    on macOS only: on Linux ext4 inline data and ZFS's delayed allocation give the same numbers
    for complete files, and no iCloud client evicts files there.
    """
    if icloud_stub_target(os.path.basename(os.fspath(path))) is not None:
        return True
    if getattr(st, "st_flags", 0) & SF_DATALESS:
        return True
    return platform == "darwin" and st.st_size > 0 and getattr(st, "st_blocks", 1) == 0
