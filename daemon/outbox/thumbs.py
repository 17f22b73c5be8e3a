"""Small copies of a job's reference images in `outbox/references/`, for the gallery's cards.

The references themselves stay in the inbox (`done/`, `failed/` or where explicit `refs` point);
the gallery must open from the outbox alone, synced or copied elsewhere, so it links only to
these copies, never into the inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from daemon import files

FOLDER = "references"
MAX_SIDE = 320  # pixels: enough for a thumbnail on a phone's high-density screen
_QUALITY = 80


def write_thumbnails(outbox: Path, base: str, files: Sequence[Path]) -> list[str | None]:
    """A JPEG thumbnail per reference, named after the sidecar's base; returns each one's path
    relative to the outbox, or None for a reference that cannot be read as an image now."""
    return [_write_one(outbox, f"{base}.ref-{n}.jpg", path) for n, path in enumerate(files, 1)]


def _write_one(outbox: Path, name: str, source: Path) -> str | None:
    data = _thumbnail(source)
    if data is None:
        return None
    folder = files.ensure_dir(outbox / FOLDER)
    # Replaced, not added: the same base is the same job's sidecar (a retry's error, or the
    # success that replaces it).
    files.replace_file(folder / name, data, durable=False)
    return f"{FOLDER}/{name}"


def _thumbnail(source: Path) -> bytes | None:
    import io

    from PIL import Image

    from daemon.images import MAX_PIXELS, MAX_REFERENCE_BYTES

    try:
        # Read as a regular file first: a FIFO named like a reference must not block the page.
        data = files.read_regular(source, limit=MAX_REFERENCE_BYTES)
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                return None
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size, fast
            img.thumbnail((MAX_SIDE, MAX_SIDE))
            rgba = img.convert("RGBA")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # gone, unreadable or not an image: the card names it without a picture
    flat = Image.new("RGB", rgba.size, "white")  # JPEG has no alpha: flatten onto white
    flat.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, format="JPEG", quality=_QUALITY)
    return buffer.getvalue()
