"""What the gallery shows of one sidecar: a `Card`, read from a result or error sidecar's bytes.

Only plain parsing here; which files are read, and when again, is `sidecars.py`'s job.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from daemon import yaml_text
from daemon.files import ERROR_SUFFIX, RESULT_SUFFIX


class CardKind(enum.Enum):
    RESULT = "result"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Picture:
    """One image of a result, as its sidecar describes it."""

    file: str
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference image of a job: its name as the job gave it, and its thumbnail's file in
    the outbox (None when there is none, e.g. the reference was missing)."""

    name: str
    thumbnail: str | None


@dataclass(frozen=True, slots=True)
class Card:
    """What the gallery shows of one sidecar."""

    kind: CardKind
    sidecar: str
    sort_time: float  # seconds since the epoch: the sidecar's own time, else its mtime
    when: datetime | None
    prompt: str | None
    job: str | None
    pictures: tuple[Picture, ...] = ()
    revised_prompt: str | None = None
    seconds: float | None = None
    code: int | None = None
    message: str | None = None
    hint: str | None = None
    detail: str | None = None
    retrying: bool = False
    retry_at: datetime | None = None
    layer: str | None = None  # the sidecar's `error`: "image-limit", "refused", ...
    refs: tuple[Reference, ...] = ()
    missing: int = 0  # images a job of several variants still waits for (`complete: false`)


def as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dimension(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_time(value: object) -> datetime | None:
    """A sidecar time: YAML may hand back a datetime already, or the ISO text we wrote."""
    if isinstance(value, str):
        try:
            # Python 3.10's fromisoformat does not read a trailing "Z".
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    # A naive time is taken as local time, as the machine that wrote it would have meant.
    return value if value.tzinfo is not None else value.astimezone()


def _pictures(value: object) -> tuple[Picture, ...]:
    if not isinstance(value, list):
        return ()
    pictures = []
    for item in value:
        if isinstance(item, dict) and as_text(item.get("file")):
            pictures.append(
                Picture(item["file"], _dimension(item.get("width")), _dimension(item.get("height")))
            )
    return tuple(pictures)


def _references(data: dict[str, Any]) -> tuple[Reference, ...]:
    names = data.get("refs")
    thumbs = data.get("ref_thumbnails")
    if not isinstance(names, list):
        return ()
    thumbs = thumbs if isinstance(thumbs, list) else []
    found = []
    for n, name in enumerate(names):
        if isinstance(name, str):
            thumb = thumbs[n] if n < len(thumbs) else None
            found.append(Reference(name, as_text(thumb)))
    return tuple(found)


def _result_card(name: str, data: dict[str, Any], mtime: float) -> Card | None:
    if not isinstance(data.get("images"), list):
        return None
    when = parse_time(data.get("finished_at"))
    return Card(
        kind=CardKind.RESULT,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime,
        when=when,
        prompt=as_text(data.get("prompt")),
        job=as_text(data.get("job")),
        pictures=_pictures(data["images"]),
        revised_prompt=as_text(data.get("revised_prompt")),
        seconds=_number(data.get("seconds")),
        refs=_references(data),
        missing=_missing(data),
    )


def _missing(data: dict[str, Any]) -> int:
    missing = _number(data.get("missing"))
    return int(missing) if data.get("complete") is False and missing and missing > 0 else 0


def _failure_card(name: str, data: dict[str, Any], mtime: float) -> Card | None:
    if as_text(data.get("message")) is None and _number(data.get("code")) is None:
        return None
    when = parse_time(data.get("failed_at"))
    code = _number(data.get("code"))
    return Card(
        kind=CardKind.FAILURE,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime,
        when=when,
        prompt=as_text(data.get("prompt")),
        job=as_text(data.get("job")),
        code=int(code) if code is not None else None,
        message=as_text(data.get("message")),
        hint=as_text(data.get("hint")),
        detail=as_text(data.get("detail")),
        retrying=data.get("retrying") is True,
        retry_at=parse_time(data.get("retry_at")),
        layer=as_text(data.get("error")),
        refs=_references(data),
    )


def parse_card(name: str, raw: bytes, *, mtime: float) -> Card | None:
    """The card for the bytes of the sidecar `name`, or None when they are not YAML or not one
    of ours. `mtime` (the file's) orders a sidecar without its own time."""
    try:
        data = yaml_text.load(raw)
    except (yaml.YAMLError, ValueError):  # ValueError: bytes that are not valid UTF-8/16
        return None
    if not isinstance(data, dict):
        return None
    build = _result_card if name.endswith(RESULT_SUFFIX) else _failure_card
    return build(name, data, mtime)


_TIME_LINES = {
    RESULT_SUFFIX: re.compile(rb"^finished_at:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$", re.MULTILINE),
    ERROR_SUFFIX: re.compile(rb"^failed_at:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$", re.MULTILINE),
}


def quick_time(name: str, raw: bytes) -> float | None:
    """The sidecar's time read off its top-level time line without parsing the YAML, or None.

    Parsing YAML is most of a build's cost; this lets a build parse only the sidecars it shows.
    """
    suffix = RESULT_SUFFIX if name.endswith(RESULT_SUFFIX) else ERROR_SUFFIX
    match = _TIME_LINES[suffix].search(raw)
    if match is None:
        return None
    value = match.group(1).decode("ascii", "replace")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    when = parse_time(value)
    return when.timestamp() if when else None
