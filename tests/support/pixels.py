"""What an image's pixels say, for tests of transparency."""

from __future__ import annotations

import io

from PIL import Image


def lowest_alpha(data: bytes) -> int:
    """The lowest alpha value of the image's pixels (255 when it has no alpha channel)."""
    with Image.open(io.BytesIO(data)) as image:
        if "A" not in image.getbands():
            return 255
        low, _ = image.getchannel("A").getextrema()
        return int(low)
