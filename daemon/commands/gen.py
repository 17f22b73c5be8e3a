"""`gpt-image-inbox gen`: one prompt to one image file, the drop-in for the skill's script."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from daemon import files, logs
from daemon.codex.generation import (
    Generation,
    ImageRequest,
    generate_variants,
    merge,
    prepare_codex,
)
from daemon.commands.interrupt import StopRequest
from daemon.config import Config
from daemon.errors import Cancelled, InboxError, UsageError
from daemon.images import ImageFormat, check_reference_argument
from daemon.outbox.delivery import verified_images
from daemon.pipeline.ending import warm_up_end_of_job


def generate_to_file(
    *,
    prompt: str,
    refs: Sequence[Path],
    out: Path | None,
    timeout_sec: float | None,
    model: str | None,
    config: Config,
    stop: StopRequest | None = None,
    transparent: bool = False,
    aspect: str | None = None,
    variants: int = 1,
) -> list[Path]:
    """`gen`: check the arguments, run codex, write the image(s); returns the paths written.

    `stop` set stops codex (Cancelled); once codex has finished, its images are still written.
    With `variants` codex runs until that many images exist; a failure part-way writes the
    images made and is then raised, naming them.
    """
    target = _check_arguments(prompt, refs, out, transparent=transparent)
    setup = prepare_codex(config.codex)
    request = ImageRequest(
        prompt=prompt,
        refs=tuple(r.resolve() for r in refs),
        model=model,
        timeout_sec=timeout_sec or config.codex.timeout_sec,
        transparent=transparent,
        aspect=aspect,
        variants=variants,
    )
    batch = generate_variants(
        request,
        setup,
        on_start=warm_up_end_of_job,
        cancel=stop.cancel if stop else None,
        kill_now=stop.now if stop else None,
    )
    written = _write_images(merge(batch.generations), out, target)
    if batch.stopped is not None and not isinstance(batch.stopped, Cancelled):
        # A stop request after some images is answered like a stop after codex finished.
        raise _part_written(batch.stopped, written, variants)
    return written


def _check_arguments(
    prompt: str, refs: Sequence[Path], out: Path | None, *, transparent: bool
) -> ImageFormat | None:
    """Refuse what cannot work before codex runs; the format `--out`'s extension asks for."""
    if not prompt.strip():
        raise UsageError("--prompt is empty.", hint="Give the prompt text after --prompt.")
    target = ImageFormat.named(out.suffix.lower().lstrip(".")) if out else None
    if transparent and target is ImageFormat.JPEG:
        raise UsageError(
            f"--transparent cannot be kept in {out}: JPEG has no alpha channel.",
            hint="Give --out a .png or .webp name, or leave out --transparent.",
        )
    for ref in refs:
        check_reference_argument(ref)
    return target


def _part_written(error: InboxError, written: list[Path], variants: int) -> InboxError:
    """`error`, naming the images written before it."""
    made = ", ".join(str(p) for p in written)
    return type(error)(
        f"{error.message} {len(written)} of {variants} images were written: {made}.",
        hint=error.hint,
        detail=error.detail,
        retry_at=error.retry_at,
    )


def _write_images(
    generation: Generation, out: Path | None, target: ImageFormat | None
) -> list[Path]:
    """Each image that decodes (converted to `--out`'s format), under gen's names; the same
    checks as a daemon job's (delivery.verified_images), a decompression bomb refused."""
    written = []
    for n, image in enumerate(verified_images(generation, target)):
        path = _output_path(out, n, image.info.format)
        files.replace_file(path, image.data)
        written.append(path)
        logs.get_logger().info(
            "image written",
            path=str(path),
            format=image.info.format.value,
            width=image.info.width,
            height=image.info.height,
            thread_id=generation.thread_id,
        )
    return written


def _output_path(out: Path | None, index: int, fmt: ImageFormat) -> Path:
    """`--out` as given (its extension decides the format), or ./image-<time>.<real ext>;
    further images of the same run get `-2`, `-3` before the extension."""
    if out is None:
        out = Path(f"image-{datetime.now():%Y%m%d-%H%M%S}.{fmt.extension}")
    elif ImageFormat.named(out.suffix.lower().lstrip(".")) is None:
        out = out.with_name(f"{out.name}.{fmt.extension}")
    if index:
        out = out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
    return out.absolute()
