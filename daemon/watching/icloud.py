"""iCloud files that are not downloaded yet: they must wait rather than be read.

Which names are never jobs or references at all (sync-tool, editor and OS litter) is a rule of
the job files, daemon.job.names.is_litter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# macOS 12.3+ marks an evicted ("dataless") iCloud file with this st_flags bit.
SF_DATALESS = 0x40000000

_ICLOUD_SUFFIX = ".icloud"


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
