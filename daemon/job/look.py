"""How the picture should look beyond its prompt: a transparent background and an aspect.

codex's image tool takes `transparent_background` but always sends size "auto", so both travel
to the agent as instruction sentences of their own, outside the user's request (see
`codex.wrap_prompt`); the request itself is never edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Named shapes, as the image tool's own sizes have them (1024x1024, 1024x1536, 1536x1024).
NAMED_ASPECTS = {"square": (1, 1), "portrait": (2, 3), "landscape": (3, 2)}
# W:H with positive whole numbers of at most four digits; the same pattern is in job.schema.json.
# It ends in "nothing follows" rather than `$`, which in Python (and so in the jsonschema package)
# also matches before a final newline: both engines then agree that "16:9\n" is no ratio.
RATIO_PATTERN = r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}(?![\s\S])"
# Beyond 4:1 either way the image model cannot come near it at any of its sizes; a ratio out of
# range is much more likely a typo (`16:1` for `16:9`) than a wish.
MAX_RATIO = Fraction(4)
MIN_RATIO = 1 / MAX_RATIO
ASPECT_FIX = (
    "Write `aspect: square`, `portrait`, `landscape` or a width:height ratio between 1:4 and "
    "4:1 such as `16:9`."
)
TRANSPARENT_INSTRUCTION = (
    "Call the image tool with transparent_background: true, so that the picture has a "
    "transparent background."
)

_RATIO = re.compile(RATIO_PATTERN)


@dataclass(frozen=True, slots=True)
class Aspect:
    """An asked aspect: as written (for the sidecar) and as width:height terms."""

    asked: str
    width: int
    height: int

    @property
    def shape(self) -> str:
        """The shape in words: square, landscape (wider than tall) or portrait."""
        if self.width == self.height:
            return "square"
        return (
            "landscape (wider than tall)"
            if self.width > self.height
            else "portrait (taller than wide)"
        )

    @property
    def ratio(self) -> str:
        return f"{self.width}:{self.height}"


class BadAspect(ValueError):
    """An `aspect` that is neither a named shape nor a W:H ratio in range; says what is wrong."""


def parse_aspect(text: str) -> Aspect:
    """`square`, `portrait`, `landscape` or `W:H` (1:4 to 4:1); BadAspect otherwise."""
    if text in NAMED_ASPECTS:
        width, height = NAMED_ASPECTS[text]
        return Aspect(text, width, height)
    if not _RATIO.search(text):
        raise BadAspect(f"{text!r} is not square, portrait, landscape or a ratio like 16:9")
    width, height = (int(term) for term in text.split(":"))
    if not MIN_RATIO <= Fraction(width, height) <= MAX_RATIO:
        raise BadAspect(f"{text} is beyond the range of 1:4 to 4:1")
    return Aspect(text, width, height)


def aspect_instruction(aspect: Aspect) -> str:
    """The sentence asking for the shape. The tool has no size setting (it sends "auto"), so
    the only way to reach the image model is a line of the agent's own after the request."""
    line = f"Aspect ratio {aspect.ratio}, {aspect.shape}."
    return (
        f"The picture should be {aspect.shape}, {aspect.ratio} (width:height). The tool has no "
        f'size setting, so give it the request followed by this one line of your own: "{line}"'
    )


def instructions(*, transparent: bool, aspect: str | None) -> tuple[str, ...]:
    """The instruction sentences for these options, in a fixed order (none by default)."""
    found = []
    if transparent:
        found.append(TRANSPARENT_INSTRUCTION)
    if aspect is not None:
        found.append(aspect_instruction(parse_aspect(aspect)))
    return tuple(found)
