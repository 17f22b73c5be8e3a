"""Each key of a job file checked on its own: what its value must be, and the fix when it is not.

The patterns are those of job.schema.json, used with re.search so both agree on every string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from daemon.images import IMAGE_EXTENSIONS, ImageFormat
from daemon.job.look import ASPECT_FIX, BadAspect, parse_aspect

MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200  # leaves room for "-12.result.yaml" under the usual 255-byte name limit
MAX_TIMEOUT_SEC = 86_400.0
MAX_VARIANTS = 8

HAS_TEXT = re.compile(r"\S")
_OUT_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")
_MODEL_FIRST = re.compile(r"^[A-Za-z0-9]")
_MODEL_FORBIDDEN = re.compile(r"[^A-Za-z0-9._:@/+-]")


class BadValue(Exception):
    """One key's value is wrong: what is wrong and how to fix it."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


def kind_of(value: Any) -> str:
    """How a person would name the YAML type of `value`."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text"


def _check_prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(
            f"must be text, not {kind_of(value)}", 'Put the prompt in quotes, e.g. `prompt: "..."`.'
        )
    if not HAS_TEXT.search(value):
        raise BadValue("is empty", "Write what the picture should show after `prompt:`.")
    return value


def _check_refs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BadValue(
            f"must be a list of image paths, not {kind_of(value)}",
            "Write `refs: [photo.png]`, or `refs: []` for no reference images.",
        )
    for item in value:
        if not isinstance(item, str) or not HAS_TEXT.search(item):
            raise BadValue(
                f"must list image paths as text, not {kind_of(item)}",
                "Write each reference as a file name, e.g. `refs: [photo.png]`.",
            )
        if item.startswith(("/", "~")):
            raise BadValue(
                f"names {item!r}, which is not relative to the job file",
                "Put the image in the inbox and name it relative to the job file.",
            )
    return tuple(value)


def _check_out(value: Any) -> str:
    fix = "Write a plain file name without folders or extension, e.g. `out: sunset`."
    if not isinstance(value, str):
        raise BadValue(f"must be a file name, not {kind_of(value)}", fix)
    if not value:
        raise BadValue("is empty", fix)
    if _OUT_FORBIDDEN.search(value):
        raise BadValue(f"{value!r} contains a path separator or a control character", fix)
    if value.startswith("."):
        raise BadValue(f"{value!r} starts with a dot, which would hide the file", fix)
    if len(value) > MAX_NAME_CHARS or len(value.encode()) > MAX_NAME_BYTES:
        raise BadValue(f"is longer than {MAX_NAME_CHARS} characters ({MAX_NAME_BYTES} bytes)", fix)
    # The extension follows the image's real format: `out: sunset.png` means "sunset".
    stem, dot, ext = value.rpartition(".")
    return stem if dot and stem and ext.lower() in IMAGE_EXTENSIONS else value


def _check_timeout(value: Any) -> float:
    fix = "Write the number of seconds, e.g. `timeout_sec: 600`."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"must be a number of seconds, not {kind_of(value)}", fix)
    if not 0 < value <= MAX_TIMEOUT_SEC:  # also refuses .nan and .inf
        raise BadValue(
            f"must be more than 0 and at most {MAX_TIMEOUT_SEC:.0f} seconds, not {value}", fix
        )
    return float(value)


def _check_model(value: Any) -> str:
    fix = "Write a model name such as `model: gpt-5.4`, or leave the key out."
    if not isinstance(value, str):
        raise BadValue(f"must be a model name, not {kind_of(value)}", fix)
    if not value:
        raise BadValue("is empty", fix)
    bad = not _MODEL_FIRST.search(value) or _MODEL_FORBIDDEN.search(value)
    if bad or len(value) > MAX_NAME_CHARS:
        raise BadValue(
            f"{value!r} is not a model name (letters, digits and . _ : @ / + - only, "
            "starting with a letter or digit)",
            fix,
        )
    return value


def _check_format(value: Any) -> ImageFormat:
    found = ImageFormat.named(value) if isinstance(value, str) else None
    if found is None:
        shown = repr(value) if isinstance(value, str) else kind_of(value)
        raise BadValue(
            f"must be png, jpeg (or jpg) or webp, not {shown}",
            "Write `format: png`, `format: jpeg` or `format: webp`.",
        )
    return found


def _check_transparent(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(
            f"must be true or false, not {kind_of(value)}",
            "Write `transparent: true` for a transparent background, or leave the key out.",
        )
    return value


def _check_aspect(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(f"must be a shape or a width:height ratio, not {kind_of(value)}", ASPECT_FIX)
    try:
        return parse_aspect(value).asked
    except BadAspect as bad:
        raise BadValue(str(bad), ASPECT_FIX) from None


def _check_variants(value: Any) -> int:
    fix = f"Write how many images to make, from 1 to {MAX_VARIANTS}, e.g. `variants: 3`."
    # JSON Schema's "integer" takes 3.0 too; the daemon agrees with it.
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise BadValue(f"must be a whole number, not {kind_of(value)}", fix)
    if not 1 <= value <= MAX_VARIANTS:
        raise BadValue(f"must be from 1 to {MAX_VARIANTS}, not {value:g}", fix)
    return int(value)


CHECKS: dict[str, Callable[[Any], Any]] = {
    "prompt": _check_prompt,
    "refs": _check_refs,
    "out": _check_out,
    "timeout_sec": _check_timeout,
    "model": _check_model,
    "format": _check_format,
    "transparent": _check_transparent,
    "aspect": _check_aspect,
    "variants": _check_variants,
}
