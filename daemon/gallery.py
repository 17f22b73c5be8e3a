"""The outbox gallery: one static `index.html` built from the result and error sidecars alone.

No script runs in the page (its Content-Security-Policy forbids it); every piece of text is escaped.
"""

from __future__ import annotations

import enum
import html
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from daemon.errors import OutboxUnwritable

try:  # libyaml's loader is several times faster; thousands of sidecars are read per build
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

INDEX_NAME = "index.html"
DEFAULT_LIMIT = 500
RESULT_SUFFIX = ".result.yaml"
ERROR_SUFFIX = ".error.yaml"
# A sidecar holds a prompt of at most 1 MiB plus a few fields; anything far larger is not ours.
MAX_SIDECAR_BYTES = 4 * 1024 * 1024
CSP = (
    "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)


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


# ---------------------------------------------------------------- reading sidecars


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dimension(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _timestamp(value: object) -> datetime | None:
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
        if isinstance(item, dict) and _text(item.get("file")):
            pictures.append(
                Picture(item["file"], _dimension(item.get("width")), _dimension(item.get("height")))
            )
    return tuple(pictures)


def _result_card(name: str, data: dict[str, Any], mtime: Callable[[], float]) -> Card | None:
    if not isinstance(data.get("images"), list):
        return None
    when = _timestamp(data.get("finished_at"))
    return Card(
        kind=CardKind.RESULT,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime(),
        when=when,
        prompt=_text(data.get("prompt")),
        job=_text(data.get("job")),
        pictures=_pictures(data["images"]),
        revised_prompt=_text(data.get("revised_prompt")),
        seconds=_number(data.get("seconds")),
    )


def _failure_card(name: str, data: dict[str, Any], mtime: Callable[[], float]) -> Card | None:
    if _text(data.get("message")) is None and _number(data.get("code")) is None:
        return None
    when = _timestamp(data.get("failed_at"))
    code = _number(data.get("code"))
    return Card(
        kind=CardKind.FAILURE,
        sidecar=name,
        sort_time=when.timestamp() if when else mtime(),
        when=when,
        prompt=_text(data.get("prompt")),
        job=_text(data.get("job")),
        code=int(code) if code is not None else None,
        message=_text(data.get("message")),
        hint=_text(data.get("hint")),
        detail=_text(data.get("detail")),
        retrying=data.get("retrying") is True,
        retry_at=_timestamp(data.get("retry_at")),
    )


def _read_raw(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError:
        return None
    return raw if len(raw) <= MAX_SIDECAR_BYTES else None


def parse_card(path: Path, raw: bytes) -> Card | None:
    """The card for one sidecar's bytes, or None when they are not YAML or not one of ours."""
    try:
        data = yaml.load(raw, Loader=_Loader)  # a safe loader, C or pure Python
    except (yaml.YAMLError, ValueError):  # ValueError: bytes that are not valid UTF-8/16
        return None
    if not isinstance(data, dict):
        return None

    def mtime() -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    build = _result_card if path.name.endswith(RESULT_SUFFIX) else _failure_card
    return build(path.name, data, mtime)


def read_card(path: Path) -> Card | None:
    """The card for one sidecar file, or None when it is unreadable, broken or foreign."""
    raw = _read_raw(path)
    return None if raw is None else parse_card(path, raw)


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
    when = _timestamp(value)
    return when.timestamp() if when else None


def sidecar_paths(outbox: Path) -> Iterator[Path]:
    """Every result and error sidecar directly in the outbox (not in sub-folders)."""
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith((RESULT_SUFFIX, ERROR_SUFFIX)) and not entry.name.startswith("."):
            yield Path(entry.path)


def _newest_first(cards: Iterable[Card]) -> list[Card]:
    return sorted(cards, key=lambda c: (-c.sort_time, c.sidecar))


def read_cards(outbox: Path, *, limit: int | None = None) -> tuple[list[Card], int]:
    """The newest `limit` (default: all) cards, newest first, and how many cards there are in all.

    Sidecars whose time line can be read off directly are parsed only when they are among the
    newest; older ones are counted, not parsed, so a broken one among them still counts.
    """
    parsed: list[Card] = []
    pending: list[tuple[float, str, Path]] = []
    for path in sidecar_paths(outbox):
        raw = _read_raw(path)
        key = None if raw is None else quick_time(path.name, raw)
        if key is not None:
            pending.append((key, path.name, path))
        elif raw is not None and (card := parse_card(path, raw)) is not None:
            parsed.append(card)
    pending.sort(key=lambda p: (-p[0], p[1]))
    want = len(parsed) + len(pending) if limit is None else max(limit, 0)
    chosen, rejected = _parse_newest(pending, want)
    total = len(parsed) + len(pending) - rejected
    return _newest_first(parsed + chosen)[:want], total


def _parse_newest(pending: list[tuple[float, str, Path]], want: int) -> tuple[list[Card], int]:
    """Parse pending sidecars newest first until `want` of them are good; also count the bad."""
    chosen: list[Card] = []
    rejected = 0
    for _, _, path in pending:
        if len(chosen) >= want:
            break
        card = read_card(path)
        if card is None:
            rejected += 1
        else:
            chosen.append(card)
    return chosen, rejected


# ---------------------------------------------------------------- rendering


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def image_href(file: str) -> str | None:
    """A relative URL for an image named in a sidecar; None for a path that leaves the outbox."""
    parts = file.replace("\\", "/").split("/")
    if file.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts):
        return None
    # quote() with no safe characters turns "#", "?", ":" and spaces into %xx, so a name can never
    # become a fragment, a query or a scheme such as "javascript:".
    return "/".join(quote(p, safe="") for p in parts)


def _format_when(when: datetime | None, tz: timezone | None) -> str:
    if when is None:
        return ""
    local = when.astimezone(tz)
    return (
        f'<time datetime="{_e(local.isoformat(timespec="seconds"))}">'
        f"{_e(local.strftime('%Y-%m-%d %H:%M'))}</time>"
    )


def _format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _render_picture(picture: Picture) -> str:
    href = image_href(picture.file)
    if href is None:
        return f'<p class="missing">Image outside the outbox: {_e(picture.file)}</p>'
    size = ""
    if picture.width and picture.height:
        size = f' width="{picture.width}" height="{picture.height}"'
    return (
        f'<a class="pic" href="{_e(href)}"><img src="{_e(href)}" alt="{_e(picture.file)}"'
        f'{size} loading="lazy" decoding="async"></a>'
    )


def _render_prompt(card: Card) -> str:
    parts = []
    if card.prompt is not None:
        parts.append(f'<p class="prompt">{_e(card.prompt)}</p>')
    if card.revised_prompt and card.revised_prompt != card.prompt:
        parts.append(
            '<p class="label">Revised prompt</p>'
            f'<p class="prompt revised">{_e(card.revised_prompt)}</p>'
        )
    return "".join(parts)


def _render_meta(card: Card, tz: timezone | None) -> str:
    items = []
    when = _format_when(card.when, tz)
    if when:
        items.append(("Finished " if card.kind is CardKind.RESULT else "Failed ") + when)
    took = _format_seconds(card.seconds)
    if took:
        items.append(f"took {_e(took)}")
    if card.job:
        items.append(f'<span class="job">{_e(card.job)}</span>')
    return f'<p class="meta">{" · ".join(items)}</p>' if items else ""


def _render_result(card: Card, tz: timezone | None) -> str:
    pictures = "".join(_render_picture(p) for p in card.pictures) or (
        '<p class="missing">No image listed in this result.</p>'
    )
    count = len(card.pictures)
    return (
        f'<article class="card ok" id="{_e(card.sidecar)}">'
        f'<div class="pics" style="--n:{max(count, 1)}">{pictures}</div>'
        f'<div class="body">{_render_prompt(card)}{_render_meta(card, tz)}</div></article>'
    )


def _render_failure(card: Card, tz: timezone | None) -> str:
    badge = "Failed" + (f" (code {card.code})" if card.code is not None else "")
    retry = ""
    if card.retrying:
        until = _format_when(card.retry_at, tz)
        retry = f'<span class="retry">will retry{" after " + until if until else ""}</span>'
    parts = [
        f'<article class="card failed" id="{_e(card.sidecar)}">',
        f'<div class="body"><p class="badge">{_e(badge)} {retry}</p>',
        f'<p class="message">{_e(card.message or "The job failed.")}</p>',
    ]
    if card.hint:
        parts.append(f'<p class="hint"><span class="label">What to do: </span>{_e(card.hint)}</p>')
    parts.append(_render_prompt(card))
    if card.detail:
        parts.append(f"<details><summary>Details</summary><pre>{_e(card.detail)}</pre></details>")
    parts.append(f"{_render_meta(card, tz)}</div></article>")
    return "".join(parts)


_CSS = """
:root{color-scheme:light dark;--bg:#f6f6f4;--card:#fff;--fg:#1d1d1f;--muted:#6b6b70;
--line:#e2e2e0;--bad:#b3261e;--badbg:#fdf0ef;--accent:#2455c3}
@media (prefers-color-scheme:dark){:root{--bg:#121214;--card:#1e1e21;--fg:#ececee;
--muted:#a0a0a8;--line:#34343a;--bad:#ff8a80;--badbg:#2c1a1a;--accent:#8fb4ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:1rem clamp(.75rem,3vw,2rem) .25rem}
h1{font-size:1.3rem;margin:0 0 .25rem}
header p{margin:.1rem 0;color:var(--muted);font-size:.9rem}
main{display:grid;gap:1rem;padding:1rem clamp(.75rem,3vw,2rem) 2rem;
grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr));align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;overflow:hidden}
.card.failed{border:2px solid var(--bad);background:var(--badbg)}
.pics{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:2px;
background:var(--line)}
.pic{display:block;background:var(--card)}
.pic img{display:block;width:100%;height:auto;max-height:70vh;object-fit:contain}
.body{padding:.75rem .9rem}
.prompt{white-space:pre-wrap;overflow-wrap:anywhere;margin:0 0 .5rem}
.revised{color:var(--muted);font-size:.92rem}
.label{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;
margin:.25rem 0 .1rem;font-weight:600}
.meta{color:var(--muted);font-size:.85rem;margin:.25rem 0 0;overflow-wrap:anywhere}
.badge{color:var(--bad);font-weight:700;margin:0 0 .35rem}
.retry{display:inline-block;margin-left:.4rem;padding:0 .45rem;border-radius:999px;
border:1px solid currentColor;font-size:.8rem;font-weight:600}
.message{font-weight:600;margin:0 0 .4rem;overflow-wrap:anywhere}
.hint{margin:0 0 .6rem;overflow-wrap:anywhere}
.missing{color:var(--muted);padding:.75rem .9rem;margin:0}
details{margin:0 0 .5rem;font-size:.85rem}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0 0;font-size:.8rem}
a{color:var(--accent)}
"""


def _render_header(total: int, shown: list[Card], now: datetime) -> str:
    failed = sum(1 for c in shown if c.kind is CardKind.FAILURE)
    images = sum(len(c.pictures) for c in shown)
    summary = (
        f"{total} job{'s' if total != 1 else ''}: newest first."
        if total
        else "No results yet. Drop a prompt file into the inbox; its picture appears here."
    )
    lines = [f"<p>{_e(summary)}</p>"]
    if total:
        lines.append(f"<p>{images} image(s) and {failed} failure(s) on this page.</p>")
    hidden = total - len(shown)
    if hidden > 0:
        lines.append(
            f'<p class="capped">Showing the newest {len(shown)}; '
            f"{hidden} older job{'s are' if hidden != 1 else ' is'} not shown.</p>"
        )
    lines.append(f"<p>Updated {_format_when(now, None)}.</p>")
    return f"<header><h1>Outbox</h1>{''.join(lines)}</header>"


def render(cards: list[Card], *, total: int, now: datetime, tz: timezone | None = None) -> str:
    """The whole page for the given cards (already ordered and capped)."""
    body = "".join(
        _render_result(c, tz) if c.kind is CardKind.RESULT else _render_failure(c, tz)
        for c in cards
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>Outbox</title><style>{_CSS}</style></head>"
        f"<body>{_render_header(total, cards, now)}<main>{body}</main></body></html>\n"
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def build_gallery(
    outbox: Path,
    *,
    limit: int = DEFAULT_LIMIT,
    now: Callable[[], datetime] = _now,
    tz: timezone | None = None,
) -> str:
    """The gallery page for `outbox`, built from its sidecars alone.

    The page is capped, not paged: it shows the `limit` newest jobs (results and failures alike,
    newest first by finished_at / failed_at, else the sidecar's mtime) and says how many older ones
    it leaves out. Unreadable, broken or foreign sidecars are skipped. Times show in `tz`
    (default: the local time zone).
    """
    cards, total = read_cards(outbox, limit=limit)
    return render(cards, total=total, now=now(), tz=tz)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the page is for any local reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_gallery(
    outbox: Path,
    *,
    limit: int = DEFAULT_LIMIT,
    now: Callable[[], datetime] = _now,
    tz: timezone | None = None,
) -> Path:
    """Build the gallery and put it at `outbox/index.html` atomically; returns that path.

    Raises OutboxUnwritable when the outbox cannot be written.
    """
    page = build_gallery(outbox, limit=limit, now=now, tz=tz)
    path = outbox / INDEX_NAME
    try:
        # "replace": a lone surrogate from a YAML escape must not stop the whole page.
        _write_atomically(path, page.encode("utf-8", "replace"))
    except OSError as exc:
        raise OutboxUnwritable(
            f"The gallery could not be written to {path}: {exc.strerror or exc}."
        ) from exc
    return path
