"""Files on disk: atomic writes, names that never clobber, sidecars, and the inbox's state folders.

Every file is written under a temporary name in its own folder, then linked or renamed into
place, so a reader (a sync tool, the gallery, a person) never sees half a file and a crash at
any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from daemon.errors import OutboxUnwritable

PROCESSING, DONE, FAILED = "processing", "done", "failed"
RESULT_SUFFIX = ".result.yaml"
ERROR_SUFFIX = ".error.yaml"

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")


def _write_temp(path: Path, data: bytes, *, durable: bool = True) -> Path:
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_new(path: Path, data: bytes) -> None:
    """Create `path` atomically; FileExistsError if the name is taken (nothing is overwritten)."""
    with _unwritable(path):
        tmp = _write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            # Some synced and network mounts have no hard links: fall back to a checked rename.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if path.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `path` atomically, replacing the previous version (status file, gallery page).

    `durable=False` skips the fsync for state that only has to survive a crash of this process
    (the page cache keeps it), not a power cut: the status file, a job's run record.
    """
    with _unwritable(path):
        tmp = _write_temp(path, data, durable=durable)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Turns disk-full, permission and vanished-folder errors into OutboxUnwritable."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno in _DISK_ERRORS or isinstance(exc, FileNotFoundError):
            raise OutboxUnwritable(
                f"Cannot write {path}: {exc.strerror or exc}.", detail=repr(exc)
            ) from exc
        raise


def dump_yaml(data: dict[str, Any]) -> bytes:
    return yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    ).encode("utf-8")


def read_yaml(path: Path) -> dict[str, Any] | None:
    """A sidecar's mapping, or None when it is missing or not ours."""
    try:
        data = yaml.load(path.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def choose_base(
    outbox: Path, wanted: str, suffixes: Sequence[str], *, reusable: Iterable[Path] = ()
) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`…: the first base for which no `base+suffix` exists.

    Files in `reusable` (this job's own stale error sidecar) do not count as taken.
    """
    keep = {p.resolve() for p in reusable}
    for n in range(1, 100_000):
        base = wanted if n == 1 else f"{wanted}-{n}"
        taken = (outbox / (base + s) for s in suffixes)
        if not any(p.exists() and p.resolve() not in keep for p in taken):
            return base
    raise OutboxUnwritable(f"No free name for {wanted!r} in {outbox}.")


def ensure_dir(path: Path) -> Path:
    with _unwritable(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def move_group(files: Sequence[Path], dest_dir: Path, stem: str) -> list[Path]:
    """Move a job file and its siblings (all named `stem` + something) into `dest_dir`.

    When the names are taken there (the same job name ran before), the whole group is renamed
    `stem-2…` together so that the siblings still belong to their job file. Returns new paths.
    """
    ensure_dir(dest_dir)
    tails = [f.name[len(stem) :] for f in files]
    for n in range(1, 100_000):
        new_stem = stem if n == 1 else f"{stem}-{n}"
        targets = [dest_dir / (new_stem + t) for t in tails]
        if not any(t.exists() for t in targets):
            break
    for src, dst in zip(files, targets, strict=True):
        with _unwritable(dst):
            _rename_no_clobber(src, dst)
    return targets


def _rename_no_clobber(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            os.rename(src, dst)
            return
        raise
    src.unlink()
