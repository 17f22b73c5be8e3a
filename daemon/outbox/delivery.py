"""The outbox stage: a generation's images and its result sidecar, or a job's error sidecar.

Images are written first and the result sidecar last: its presence means "complete".
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import files
from daemon.codex.generation import Generation
from daemon.errors import Disposition, InboxError, NoImage
from daemon.images import ImageFormat, ImageInfo, ImageTooLarge, convert, has_alpha, inspect
from daemon.outbox.thumbs import write_thumbnails


@dataclass(frozen=True, slots=True)
class Verified:
    """An image ready to write: its bytes in the wanted format, and what they decode to."""

    data: bytes
    info: ImageInfo
    has_alpha: bool = False  # an alpha channel with at least one pixel not opaque


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """The names a delivery writes, and each image's hash, saved before the first write.

    After a crash the same plan is taken up again: a file already under a planned name with
    the planned hash is this delivery's own and is kept, so nothing is written twice.
    """

    base: str
    images: tuple[tuple[str, str], ...]  # (file name, sha256), in order
    sidecar: str

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "images": [list(i) for i in self.images],
            "sidecar": self.sidecar,
        }

    @classmethod
    def from_json(cls, data: object) -> DeliveryPlan | None:
        try:
            assert isinstance(data, dict)
            images = tuple((str(name), str(sha)) for name, sha in data["images"])
            return cls(str(data["base"]), images, str(data["sidecar"]))
        except (AssertionError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Progress:
    """An incomplete result sidecar (`complete: false`) of a job of several variants: the
    images earlier runs made, kept while the job waits for the ones still missing."""

    sidecar: str
    base: str
    data: dict[str, Any]

    @property
    def thread_id(self) -> str:
        return str(self.data.get("thread_id"))

    @property
    def images(self) -> list[dict[str, Any]]:
        return [i for i in self.data.get("images") or [] if isinstance(i, dict)]


def find_progress(
    outbox: Path, *, job_file: str, wanted: str, prompt: str, variants: int
) -> Progress | None:
    """This job's incomplete result sidecar, when it asked for the same prompt and number.

    A job edited while it waited is another request: it starts again from nothing.
    """
    pattern = str(outbox / f"{glob.escape(wanted)}*{files.RESULT_SUFFIX}")
    for name in sorted(glob.glob(pattern)):
        progress = load_progress(outbox, Path(name).name, job_file=job_file)
        if progress is None or progress.data.get("variants") != variants:
            continue
        # A sidecar edited to list enough images is no progress of a job still owed images.
        if progress.data.get("prompt") == prompt and len(progress.images) < variants:
            return progress
    return None


def load_progress(outbox: Path, name: str, *, job_file: str) -> Progress | None:
    """The incomplete result sidecar `name` of `job_file`; None for anything else."""
    data = files.read_yaml(outbox / name)
    if data is None or data.get("job") != job_file or data.get("complete") is not False:
        return None
    return Progress(name, name[: -len(files.RESULT_SUFFIX)], data)


def verified_images(generation: Generation, fmt: ImageFormat | None) -> list[Verified]:
    """Each image converted when a format is asked for, and kept only if it decodes.

    Raises NoImage when none does; an image declaring an absurd size is never decoded.
    """
    verified = []
    for found in generation.images:
        try:
            info = inspect(found.data)  # before converting: a bomb is never decoded
            data = found.data
            if info is not None and fmt is not None and info.format is not fmt:
                data = convert(found.data, fmt)
                info = inspect(data)
        except ImageTooLarge as error:
            raise NoImage(f"codex's image {error}; it was not decoded.") from None
        if info is not None:
            verified.append(Verified(data, info, has_alpha(data)))
    if not verified:
        raise NoImage("codex produced image data that does not decode as PNG, JPEG or WebP.")
    return verified


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
    plan: DeliveryPlan | None = None,
    on_plan: Callable[[DeliveryPlan], None] = lambda _plan: None,
    transparent: bool = False,
    aspect: str | None = None,
    variants: int = 1,
    progress: Progress | None = None,
) -> tuple[Path, ...]:
    """Write the images and then the result sidecar (last: its presence means "complete").

    `ref_files` are where the references `refs` names are now: the gallery gets thumbnails.
    `on_plan` must save the plan durably before the first file is written; `plan` is the one an
    interrupted delivery of the same run saved, taken up where it stopped. `transparent` and
    `aspect` are what the job asked for, recorded beside what each image really is. With fewer
    images than `variants` the sidecar says `complete: false`; `progress` is such a sidecar of
    earlier runs, which this delivery continues (its images keep their names) and replaces.
    """
    images = verified_images(generation, fmt)
    hashes = [files.sha256_of(image.data) for image in images]
    files.ensure_dir(outbox)
    stale = stale_errors(outbox, wanted, job_file)
    thread = progress.thread_id if progress else generation.thread_id
    plan = plan if plan is not None and _ours(outbox, plan, hashes, job_file, thread) else None

    def describe(paths: list[Path]) -> dict[str, Any]:
        fields = _result_fields(generation, paths, images, job_file, prompt, refs)
        fields.update(prompt_source=prompt_source, transparent=transparent, aspect=aspect)
        _count_variants(fields, generation, progress, variants)
        return fields

    while True:
        plan = plan or _choose_plan(outbox, wanted, images, hashes, stale, progress)
        on_plan(plan)
        try:
            fields = _write_planned(outbox, plan, images, hashes, describe, ref_files, thread)
            break
        except FileExistsError:
            plan = None  # someone took a name between the choice and the write: choose again
    _remove(stale)  # the job's earlier error sidecars: its result is in place now
    return (*(outbox / str(i["file"]) for i in fields["images"]), outbox / plan.sidecar)


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _choose_plan(
    outbox: Path,
    wanted: str,
    images: list[Verified],
    hashes: list[str],
    stale: list[Path],
    progress: Progress | None,
) -> DeliveryPlan:
    """Names for these images: numbered on from an incomplete delivery's, else new ones."""
    if progress:
        return _continued_plan(outbox, progress, images, hashes)
    return _new_plan(outbox, wanted, images, hashes, stale)


def _write_planned(
    outbox: Path,
    plan: DeliveryPlan,
    images: list[Verified],
    hashes: list[str],
    describe: Callable[[list[Path]], dict[str, Any]],
    ref_files: Sequence[Path],
    thread_id: str,
) -> dict[str, Any]:
    """Write the plan's images, then its sidecar with the fields `describe` gives; returns
    them. FileExistsError when a planned name is taken by another writer's file."""
    paths = [outbox / name for name, _ in plan.images]
    written = _write_images(paths, images, hashes)
    fields = describe(paths)
    _write_sidecar(outbox / plan.sidecar, fields, written, plan.base, ref_files, thread_id)
    return fields


def _write_sidecar(
    sidecar: Path,
    fields: dict[str, Any],
    written: list[Path],
    base: str,
    ref_files: Sequence[Path],
    thread_id: str,
) -> None:
    """Write the result sidecar; this delivery's own one (from an interrupted try, or the
    incomplete one of earlier runs) is replaced when it lists other images, else kept."""
    before = files.read_yaml(sidecar) if _is_result_of(sidecar, fields["job"], thread_id) else None
    if before is None:
        fields["ref_thumbnails"] = write_thumbnails(sidecar.parent, base, ref_files)
        _write_or_undo(sidecar, files.dump_yaml(fields), written)
    elif _files(before) != _files(fields):
        fields["ref_thumbnails"] = before.get("ref_thumbnails")
        files.replace_file(sidecar, files.dump_yaml(fields))


def _files(fields: dict[str, Any]) -> list[str]:
    return [str(i.get("file")) for i in fields.get("images") or [] if isinstance(i, dict)]


def _count_variants(
    fields: dict[str, Any], generation: Generation, progress: Progress | None, variants: int
) -> None:
    """The sidecar's account of a job of several variants: every image so far, each run with
    its count, and how many are still missing."""
    earlier = progress.data if progress else {}
    fields["images"] = [*(progress.images if progress else []), *fields["images"]]
    runs = [{"thread_id": r.thread_id, "images": r.images} for r in generation.runs]
    fields["runs"] = [*(earlier.get("runs") or []), *runs]
    if progress:
        for key in ("thread_id", "started_at", "revised_prompt"):
            fields[key] = earlier.get(key) or fields[key]
        started = datetime.fromisoformat(str(fields["started_at"]))
        fields["seconds"] = round((generation.finished_at - started).total_seconds(), 3)
    fields["variants"] = variants
    fields["missing"] = max(0, variants - len(fields["images"]))
    fields["complete"] = fields["missing"] == 0


def _continued_plan(
    outbox: Path, progress: Progress, images: list[Verified], hashes: list[str]
) -> DeliveryPlan:
    """The names of further images of an incomplete delivery: they number on from its own."""
    start = len(progress.images)
    names = []
    for n, (image, sha) in enumerate(zip(images, hashes, strict=True), start):
        suffix = _image_suffix(n, image.info.format)
        name = f"{progress.base}{suffix}"
        extra = 2
        while (outbox / name).exists():  # another program's file: never overwritten
            name = f"{progress.base}{suffix[: -len(image.info.format.extension) - 1]}-{extra}"
            name += f".{image.info.format.extension}"
            extra += 1
        names.append((name, sha))
    return DeliveryPlan(progress.base, tuple(names), progress.sidecar)


def _new_plan(
    outbox: Path, wanted: str, images: list[Verified], hashes: list[str], stale: list[Path]
) -> DeliveryPlan:
    suffixes = [_image_suffix(n, image.info.format) for n, image in enumerate(images)]
    base = files.choose_base(
        outbox, wanted, [*suffixes, files.RESULT_SUFFIX, files.ERROR_SUFFIX], reusable=stale
    )
    names = tuple((f"{base}{suffix}", sha) for suffix, sha in zip(suffixes, hashes, strict=True))
    return DeliveryPlan(base, names, f"{base}{files.RESULT_SUFFIX}")


def _ours(
    outbox: Path, plan: DeliveryPlan, hashes: list[str], job_file: str, thread_id: str
) -> bool:
    """Whether an interrupted delivery's plan fits these images and every file already under
    one of its names is what it planned (else another writer has the name)."""
    if [sha for _, sha in plan.images] != hashes:
        return False
    for name, sha in plan.images:
        found = files.file_sha256(outbox / name)
        if found is not None and found != sha:
            return False
    sidecar = outbox / plan.sidecar
    return not sidecar.exists() or _is_result_of(sidecar, job_file, thread_id)


def _image_suffix(index: int, fmt: ImageFormat) -> str:
    return f".{fmt.extension}" if index == 0 else f".{index + 1}.{fmt.extension}"


def _write_images(paths: list[Path], images: list[Verified], hashes: list[str]) -> list[Path]:
    """Write each image not there yet; returns what this call wrote. On FileExistsError (a
    name taken by a file that is not ours) what this call wrote is removed again."""
    written: list[Path] = []
    for path, image, sha in zip(paths, images, hashes, strict=True):
        if files.file_sha256(path) == sha:
            continue  # written by the interrupted delivery this plan comes from
        _write_or_undo(path, image.data, written)
        written.append(path)
    return written


def _write_or_undo(path: Path, data: bytes, undo: list[Path]) -> None:
    try:
        files.write_new(path, data)
    except FileExistsError:
        _remove(undo)
        raise


def _is_result_of(sidecar: Path, job_file: str, thread_id: str) -> bool:
    data = files.read_yaml(sidecar)
    return data is not None and data.get("job") == job_file and data.get("thread_id") == thread_id


def _result_fields(
    generation: Generation,
    written: list[Path],
    images: list[Verified],
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
                "has_alpha": image.has_alpha,
                "bytes": len(image.data),
                "sha256": files.sha256_of(image.data),
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
        # The plan's limits as this run's session log recorded them (no credentials read).
        "rate_limits": [limit.to_json() for limit in generation.rate_limits],
    }


def stale_errors(outbox: Path, wanted: str, job_file: str) -> list[Path]:
    """Error sidecars an earlier try of this same job left; a success replaces them."""
    pattern = str(outbox / f"{glob.escape(wanted)}*{files.ERROR_SUFFIX}")
    stale = []
    for name in glob.glob(pattern):
        data = files.read_yaml(Path(name))
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
    files.ensure_dir(outbox)
    stale = stale_errors(outbox, wanted, job_file)
    fields = {
        "job": job_file,
        "code": error.exit_code,
        "error": error.layer,
        "message": error.message,
        "hint": error.hint,
        "next": _next_step(error, retrying),
        "detail": error.detail,
        "retrying": retrying,
        "retry_at": _iso(error.retry_at) if error.retry_at else None,
        "prompt": prompt,
        "refs": list(refs),
        "failed_at": _iso(datetime.now().astimezone()),
    }
    if stale:
        base = stale[0].name[: -len(files.ERROR_SUFFIX)]
        fields["ref_thumbnails"] = write_thumbnails(outbox, base, ref_files)
        files.replace_file(stale[0], files.dump_yaml(fields))
        return stale[0]
    while True:
        base = files.choose_base(outbox, wanted, [files.ERROR_SUFFIX])
        path = outbox / f"{base}{files.ERROR_SUFFIX}"
        fields["ref_thumbnails"] = write_thumbnails(outbox, base, ref_files)
        try:
            files.write_new(path, files.dump_yaml(fields))
            return path
        except FileExistsError:
            continue


def _next_step(error: InboxError, retrying: bool) -> str:
    """What happens to the job now, in words that match `retrying`."""
    if not retrying:
        return (
            "The job was moved to failed/ in the inbox and is not run again; save it into the "
            "inbox again once fixed."
        )
    at = f" at {error.retry_at.astimezone():%H:%M}" if error.retry_at else ""
    if error.disposition is Disposition.PAUSE:
        return f"The job waits in the inbox; the queue resumes{at or ' once this is fixed'}."
    return f"The job waits in the inbox and is tried again{at or ' after a pause'}."


def _iso(moment: datetime) -> str:
    return moment.astimezone().isoformat(timespec="seconds")
