"""Image bytes: recognise their real format, measure them, convert them.

codex names every image `.png` whatever the bytes are, so the format always comes from the
magic bytes. Pillow is imported lazily: the start-up path of `gen` and `once` stays lean.
"""

from __future__ import annotations

import enum
import io
import re
from dataclasses import dataclass
from pathlib import Path


class ImageFormat(str, enum.Enum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def extension(self) -> str:
        return "jpg" if self is ImageFormat.JPEG else self.value

    @property
    def pillow_name(self) -> str:
        return self.name

    @classmethod
    def named(cls, name: str) -> ImageFormat | None:
        """The format a lower-case name or extension stands for (`jpg` is JPEG), or None:
        what `format:` in a job file and the extension of `gen --out` may say."""
        return _NAMED_FORMATS.get(name)


_NAMED_FORMATS = {
    "png": ImageFormat.PNG,
    "jpg": ImageFormat.JPEG,
    "jpeg": ImageFormat.JPEG,
    "webp": ImageFormat.WEBP,
}

# Extensions a reference image may have, lower-case, without the dot.
IMAGE_EXTENSIONS = tuple(_NAMED_FORMATS)
# The Images API takes reference images up to 50 MB.
MAX_REFERENCE_BYTES = 50 * 1024 * 1024


def sniff_format(head: bytes) -> ImageFormat | None:
    """The format told by the first bytes, or None when they are not PNG, JPEG or WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageFormat.WEBP
    return None


def sniff_file(path: Path) -> ImageFormat | None:
    with path.open("rb") as f:
        return sniff_format(f.read(16))


def check_reference_argument(ref: Path) -> ImageFormat:
    """A `--ref` given on the command line (`gen`, `submit`): an existing PNG, JPEG or WebP."""
    from daemon.errors import ReferenceMissing

    fmt = sniff_file(ref) if ref.is_file() else None
    if fmt is None:
        raise ReferenceMissing(
            f"The reference {ref} does not exist or is not a PNG, JPEG or WebP image.",
            hint="Check the path given to --ref.",
        )
    return fmt


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: ImageFormat
    width: int
    height: int


# Far beyond any size the image tool makes (its largest is a few megapixels): an image that
# declares more is refused before a pixel is decoded, so a crafted file cannot exhaust memory.
MAX_PIXELS = 64 * 1024 * 1024


class ImageTooLarge(ValueError):
    """The image declares more than MAX_PIXELS pixels (a decompression bomb, or a mistake)."""

    def __init__(self, size: str) -> None:
        super().__init__(f"declares {size}, more than the {MAX_PIXELS >> 20}-megapixel limit")


def inspect(data: bytes, *, decode: bool = False) -> ImageInfo | None:
    """Check the image with Pillow; None when the bytes are not a complete, readable image.

    Pillow's verify() checks the structure only (a JPEG's end is not looked for); `decode`
    decodes every pixel instead, which also finds a file cut short. Raises ImageTooLarge for an
    image declaring more than MAX_PIXELS pixels.
    """
    fmt = sniff_format(data[:16])
    if fmt is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageTooLarge(f"{width}x{height} pixels")
            if decode:
                img.load()
            else:
                img.verify()
    except Image.DecompressionBombError as bomb:
        # Pillow refuses the largest before their size is readable; its message has the count.
        count = re.search(r"\((\d+) pixels\)", str(bomb))
        raise ImageTooLarge(f"{count[1]} pixels" if count else "a huge size") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageTooLarge):
            raise
        return None
    return ImageInfo(fmt, width, height)


def has_alpha(data: bytes) -> bool:
    """True when the image has an alpha channel and at least one pixel that is not opaque.

    An alpha channel whose every pixel is opaque looks like none, so it counts as none: the
    answer tells whether a transparent background really came back. Only images that carry
    alpha (or a palette transparency) are decoded; the others are answered from the header.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
            return False
        lowest, _ = img.convert("RGBA").getchannel("A").getextrema()
    # A single channel's extrema are two numbers; the type also allows a multi-band tuple.
    return isinstance(lowest, (int, float)) and lowest < 255


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def convert(data: bytes, target: ImageFormat) -> bytes:
    """Re-encode `data` as `target`; returns `data` unchanged when it already is.

    PNG and WebP keep the alpha channel (Pillow writes RGBA and LA as they are, and a palette
    transparency as RGBA); JPEG has none, so its image is flattened onto white.
    """
    if sniff_format(data[:16]) is target:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as source:
        source.load()
        image: Image.Image = source
        if target is ImageFormat.JPEG and source.mode not in ("RGB", "L"):
            # JPEG has no alpha: flatten onto white rather than onto black.
            image = Image.new("RGB", source.size, "white")
            rgba = source.convert("RGBA")
            image.paste(rgba, mask=rgba.getchannel("A"))
        buffer = io.BytesIO()
        options = {"quality": 95} if target is not ImageFormat.PNG else {}
        image.save(buffer, format=target.pillow_name, **options)
    return buffer.getvalue()
