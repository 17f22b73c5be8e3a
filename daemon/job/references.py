"""A job's reference images: each must stay inside the inbox and be a whole PNG, JPEG or WebP."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from daemon import files
from daemon.errors import JobError, ReferenceMissing
from daemon.images import MAX_REFERENCE_BYTES, ImageTooLarge, inspect, sniff_format
from daemon.job.names import reference_path
from daemon.job.problems import Problems


def join_references(names: tuple[str, ...], job_path: Path) -> list[tuple[str, Path]]:
    """Each explicit reference as written, with its absolute path relative to the job's folder."""
    return [(name, reference_path(job_path.parent, name)) for name in names]


def check_references(refs: list[tuple[str, Path]], inbox: Path, label: str) -> tuple[Path, ...]:
    """The absolute paths; JobError if one leads out of the inbox, else ReferenceMissing."""
    inbox_real = Path(os.path.realpath(inbox))
    escapes, missing = Problems(label), Problems(label)
    for shown, path in refs:
        # realpath, not resolve(): it never raises, a symlink loop just fails the check below.
        if not Path(os.path.realpath(path)).is_relative_to(inbox_real):
            how = "'..'" if ".." in PurePosixPath(shown).parts else "a symbolic link"
            escapes.add(
                f"the reference {shown!r} leads out of the inbox through {how}",
                "Copy the image into the inbox and name it relative to the job file.",
            )
        else:
            _check_image(path, shown, missing)
    escapes.raise_if_any(JobError)
    missing.raise_if_any(ReferenceMissing)
    return tuple(path for _, path in refs)


def _check_image(path: Path, shown: str, problems: Problems) -> None:
    """Adds a problem unless `path` is a regular file holding a whole PNG, JPEG or WebP image.

    The image is decoded, not only sniffed: a truncated file would otherwise reach codex and
    come back as a puzzling "no image".
    """
    try:
        data = files.read_regular(path, limit=MAX_REFERENCE_BYTES)
    except FileNotFoundError:
        problems.add(
            f"the reference {shown!r} does not exist",
            "Put the image next to the job file, or fix its name under `refs`.",
        )
        return
    except (files.NotRegularFile, IsADirectoryError):
        what = "a folder" if path.is_dir() else "not a regular file (a pipe or a device)"
        problems.add(
            f"the reference {shown!r} is {what}, not an image", "Name an image file under `refs`."
        )
        return
    except OSError as e:
        problems.add(
            f"the reference {shown!r} cannot be read: {e.strerror}",
            "Check that you may read the image.",
        )
        return
    if len(data) > MAX_REFERENCE_BYTES:
        problems.add(
            f"the reference {shown!r} is over {MAX_REFERENCE_BYTES >> 20} MiB",
            "Use a smaller reference image.",
        )
        return
    if sniff_format(data[:16]) is None:
        problems.add(
            f"the reference {shown!r} is not a PNG, JPEG or WebP image",
            "Use a PNG, JPEG or WebP image as the reference.",
        )
        return
    try:
        whole = inspect(data, decode=True) is not None
    except ImageTooLarge as error:
        problems.add(f"the reference {shown!r} {error}", "Use a smaller reference image.")
        return
    if not whole:
        problems.add(
            f"the reference {shown!r} does not decode as an image (it may be cut short)",
            "Save or copy the reference image again, whole, and then the job.",
        )
