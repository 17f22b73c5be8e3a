"""Files on disk: atomic writes, names that never clobber, sidecars, and the inbox's state folders.

Every file is written under a temporary name in its own folder, then linked or renamed into
place, so a reader (a sync tool, the gallery, a person) never sees half a file and a crash at
any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from daemon import yaml_text
from daemon.errors import OutboxUnwritable

PROCESSING, DONE, FAILED = "processing", "done", "failed"
RESULT_SUFFIX = ".result.yaml"
ERROR_SUFFIX = ".error.yaml"

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# The usual limit of one file name, in bytes (ext4, APFS, NTFS in UTF-16 units, most FUSE).
NAME_MAX = 255
# Temp files carry the writer's pid, so a later start can tell a dead writer's leftover from
# a file another live process is still writing.
_TEMP_NAME = re.compile(r"^\..*\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$", re.DOTALL)


def fit_stem(stem: str, tails: Iterable[str]) -> str:
    """`stem`, shortened only if `stem + tail` would pass NAME_MAX bytes for some tail.

    A shortened stem ends in `~` and 8 hex digits of the whole stem's hash, so two long names
    that share a beginning stay apart, and the same stem always shortens the same way.
    """
    longest = max((len(t.encode()) for t in tails), default=0)
    if len(stem.encode()) + longest <= NAME_MAX:
        return stem
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    room = NAME_MAX - longest - 9
    cut = stem.encode()[: max(room, 1)].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def _temp_name(path: Path) -> Path:
    tail = f".{os.getpid()}-{os.urandom(4).hex()}.tmp"
    return path.with_name("." + fit_stem(path.name, ["." + tail]) + tail)


def remove_dead_temp_files(folder: Path, *, alive: Callable[[int], bool]) -> list[Path]:
    """Delete the temp files in `folder` whose writer is gone (a kill -9 mid-write)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = _TEMP_NAME.match(name)
        if match and not alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed.append(folder / name)
    return removed


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """The hash of a regular file's bytes; None when it is missing or not a regular file."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
    except OSError:
        return None


def _write_temp(path: Path, data: bytes, *, durable: bool = True, mode: int | None = None) -> Path:
    """The one writer: `data` in a new temp file beside `path`, flushed to the disk unless
    `durable` is off; removed again when anything fails. The caller renames or links it."""
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            if mode is not None:  # whatever the umask: a file other local readers need
                os.fchmod(f.fileno(), mode)
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


def move_new(path: Path, data: bytes) -> None:
    """Create `path` by renaming a complete temp file onto it, so that a watcher sees it arrive
    whole (a move, not a creation followed by writes); FileExistsError if the name is taken.

    The name is first claimed by an empty file created exclusively (and opened read-only, so its
    close is no "closed after writing"), which the rename then replaces: nothing else is ever
    overwritten.
    """
    with _unwritable(path):
        tmp = _write_temp(path, data)
        claimed = False
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600))
            claimed = True
            os.replace(tmp, path)
        except BaseException:
            if claimed:
                path.unlink(missing_ok=True)  # still the empty claim: the rename did not happen
            raise
        finally:
            tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, *, durable: bool = True, mode: int | None = None) -> None:
    """Write `path` atomically, replacing the previous version (status file, gallery page).

    `durable=False` skips the fsync for state that only has to survive a crash of this process
    (the page cache keeps it), not a power cut: the status file, a job's run record. `mode`
    sets the file's permissions regardless of the umask (a page or unit others must read).
    """
    with _unwritable(path):
        tmp = _write_temp(path, data, durable=durable, mode=mode)
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
        data = yaml_text.load(path.read_bytes())
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
        base = fit_stem(wanted if n == 1 else f"{wanted}-{n}", suffixes)
        taken = (outbox / (base + s) for s in suffixes)
        if not any(p.exists() and p.resolve() not in keep for p in taken):
            return base
    raise OutboxUnwritable(f"No free name for {wanted!r} in {outbox}.")


def ensure_dir(path: Path) -> Path:
    with _unwritable(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def move_group(files: Sequence[Path], dest_dir: Path, stem: str) -> dict[Path, Path]:
    """Move a job file and its siblings (all named `stem` + something) into `dest_dir`.

    When the names are taken there (the same job name ran before), the whole group is renamed
    `stem-2…` together so that the siblings still belong to their job file. A file that is no
    longer there (the person deleted it while the job ran) is passed over. Returns where each
    moved file is now, by its old path.
    """
    present = [f for f in files if os.path.lexists(f)]
    if not present:
        return {}
    ensure_dir(dest_dir)
    tails = [f.name[len(stem) :] for f in present]
    for n in range(1, 100_000):
        new_stem = fit_stem(stem if n == 1 else f"{stem}-{n}", tails)
        targets = [dest_dir / (new_stem + t) for t in tails]
        if not any(os.path.lexists(t) for t in targets):
            break
    moved = {}
    for src, dst in zip(present, targets, strict=True):
        try:
            with _unwritable(dst):
                _rename_no_clobber(src, dst)
        except OutboxUnwritable:
            if os.path.lexists(src):
                raise
            continue  # gone between the check and the move
        moved[src] = dst
    return moved


def _rename_no_clobber(src: Path, dst: Path) -> None:
    try:
        # Not following symlinks: a link to a file outside the inbox must move as the link,
        # never become a second name of that file inside a synced folder.
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            os.rename(src, dst)
            return
        raise
    src.unlink()


class NotRegularFile(OSError):
    """A path in the inbox that is not a plain file (a FIFO, a device, a folder)."""


def read_regular(path: Path, *, limit: int) -> bytes:
    """Up to `limit` + 1 bytes of `path`, refusing anything but a regular file.

    Opened without blocking and checked on the open descriptor: a FIFO someone named like a
    reference must not hang the reader, and a swap between a check and the open changes nothing.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        with open(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with every symbolic link followed, is `folder` or lies within it."""
    # realpath, not resolve(): it never raises; a symlink loop just fails the check.
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
