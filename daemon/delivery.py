"""The outbox stage: a generation's images and its result sidecar, or a job's error sidecar.

Images are written first and the result sidecar last: its presence means "complete".
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import outbox as disk
from daemon.errors import InboxError, NoImage
from daemon.generation import Generation
from daemon.images import ImageFormat, ImageInfo, convert, inspect
from daemon.thumbs import write_thumbnails


@dataclass(frozen=True, slots=True)
class _Verified:
    data: bytes
    info: ImageInfo


def deliver(
    generation: Generation,
    outbox: Path,
    *,
    job_file: str,
    prompt: str,
    wanted: str,
    fmt: ImageFormat | None,
    refs: list[str],
    prompt_source: str | None,
    ref_files: Sequence[Path] = (),
) -> tuple[Path, ...]:
    """Write the images and then the result sidecar (last: its presence means "complete").

    `ref_files` are where the references `refs` names are now: the gallery gets thumbnails.
    """
    images = _verified_images(generation, fmt)
    disk.ensure_dir(outbox)
    stale = stale_errors(outbox, wanted, job_file)
    suffixes = [_image_suffix(n, image.info.format) for n, image in enumerate(images)]
    while True:
        base = disk.choose_base(
            outbox, wanted, [*suffixes, disk.RESULT_SUFFIX, disk.ERROR_SUFFIX], reusable=stale
        )
        try:
            written = _write_images(outbox, base, images, suffixes)
            break
        except FileExistsError:
            continue  # someone took the name between the check and the write: pick again
    sidecar = outbox / f"{base}{disk.RESULT_SUFFIX}"
    fields = _result_fields(
        generation, written, images, job_file=job_file, prompt=prompt, refs=refs
    )
    fields["prompt_source"] = prompt_source
    fields["ref_thumbnails"] = write_thumbnails(outbox, base, ref_files)
    disk.write_new(sidecar, disk.dump_yaml(fields))
    for path in stale:
        path.unlink(missing_ok=True)
    return (*written, sidecar)


def _verified_images(generation: Generation, fmt: ImageFormat | None) -> list[_Verified]:
    """Each image converted when the job asks for a format, and kept only if it decodes."""
    verified = []
    for found in generation.images:
        data = convert(found.data, fmt) if fmt is not None else found.data
        info = inspect(data)
        if info is not None:
            verified.append(_Verified(data, info))
    if not verified:
        raise NoImage("codex produced image data that does not decode as PNG, JPEG or WebP.")
    return verified


def _image_suffix(index: int, fmt: ImageFormat) -> str:
    return f".{fmt.extension}" if index == 0 else f".{index + 1}.{fmt.extension}"


def _write_images(
    outbox: Path, base: str, images: list[_Verified], suffixes: list[str]
) -> list[Path]:
    written: list[Path] = []
    try:
        for image, suffix in zip(images, suffixes, strict=True):
            path = outbox / f"{base}{suffix}"
            disk.write_new(path, image.data)
            written.append(path)
    except FileExistsError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _result_fields(
    generation: Generation,
    written: list[Path],
    images: list[_Verified],
    *,
    job_file: str,
    prompt: str,
    refs: list[str],
) -> dict[str, Any]:
    return {
        "job": job_file,
        "images": [
            {
                "file": path.name,
                "format": image.info.format.value,
                "width": image.info.width,
                "height": image.info.height,
                "bytes": len(image.data),
                "sha256": _sha256(image.data),
            }
            for path, image in zip(written, images, strict=True)
        ],
        "prompt": prompt,
        "revised_prompt": generation.revised_prompt,
        "refs": refs,
        "codex_version": generation.codex_version,
        "thread_id": generation.thread_id,
        "started_at": _iso(generation.started_at),
        "finished_at": _iso(generation.finished_at),
        "seconds": round((generation.finished_at - generation.started_at).total_seconds(), 3),
    }


def stale_errors(outbox: Path, wanted: str, job_file: str) -> list[Path]:
    """Error sidecars an earlier try of this same job left; a success replaces them."""
    pattern = str(outbox / f"{glob.escape(wanted)}*{disk.ERROR_SUFFIX}")
    stale = []
    for name in glob.glob(pattern):
        data = disk.read_yaml(Path(name))
        if data is not None and data.get("job") == job_file:
            stale.append(Path(name))
    return stale


def write_error(
    outbox: Path,
    error: InboxError,
    *,
    job_file: str,
    wanted: str,
    prompt: str | None,
    retrying: bool,
    refs: Sequence[str] = (),
    ref_files: Sequence[Path] = (),
) -> Path:
    """The error sidecar, replacing this job's own earlier one rather than piling up copies.

    `refs` are the job's references as named (`ref_files`: where they are now, for thumbnails).
    """
    disk.ensure_dir(outbox)
    stale = stale_errors(outbox, wanted, job_file)
    fields = {
        "job": job_file,
        "code": error.exit_code,
        "error": error.layer,
        "message": error.message,
        "hint": error.hint,
        "detail": error.detail,
        "retrying": retrying,
        "retry_at": _iso(error.retry_at) if error.retry_at else None,
        "prompt": prompt,
        "refs": list(refs),
        "failed_at": _iso(datetime.now().astimezone()),
    }
    if stale:
        base = stale[0].name[: -len(disk.ERROR_SUFFIX)]
        fields["ref_thumbnails"] = write_thumbnails(outbox, base, ref_files)
        disk.replace_file(stale[0], disk.dump_yaml(fields))
        return stale[0]
    while True:
        base = disk.choose_base(outbox, wanted, [disk.ERROR_SUFFIX])
        path = outbox / f"{base}{disk.ERROR_SUFFIX}"
        fields["ref_thumbnails"] = write_thumbnails(outbox, base, ref_files)
        try:
            disk.write_new(path, disk.dump_yaml(fields))
            return path
        except FileExistsError:
            continue


def _iso(moment: datetime) -> str:
    return moment.astimezone().isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    # Imported here: loading OpenSSL costs ~3 ms that a one-shot command pays after codex ran.
    import hashlib

    return hashlib.sha256(data).hexdigest()
