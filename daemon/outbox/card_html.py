"""One card of the gallery as HTML: its pictures, prompt, references and times, all escaped."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from urllib.parse import quote

from daemon.outbox.cards import Card, CardKind, Picture

# Each failure layer (the `error` of an error sidecar) as a person would say it.
LAYER_WORDS = {
    "job": "the job file has a mistake",
    "arguments": "bad command-line arguments",
    "config": "the configuration has a mistake",
    "reference": "a reference image is missing or not an image",
    "codex-missing": "the codex command was not found",
    "codex": "codex failed",
    "codex-arguments": "codex refused its arguments",
    "timeout": "it took longer than its time limit",
    "usage-limit": "your plan's usage limit is reached",
    "login": "codex is not logged in",
    "network": "the network is down",
    "session-log": "codex's session log was not found",
    "no-image": "the answer held no image",
    "refused": "the image was refused",
    "outbox": "the outbox could not be written",
    "lock": "another process holds the inbox",
    "cancelled": "it was stopped",
}


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def image_href(file: str) -> str | None:
    """A relative URL for an image named in a sidecar; None for a path that leaves the outbox."""
    parts = file.replace("\\", "/").split("/")
    if file.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts):
        return None
    # quote() with no safe characters turns "#", "?", ":" and spaces into %xx, so a name can never
    # become a fragment, a query or a scheme such as "javascript:".
    return "/".join(quote(p, safe="") for p in parts)


def format_when(when: datetime | None, tz: timezone | None) -> str:
    if when is None:
        return ""
    local = when.astimezone(tz)
    return (
        f'<time datetime="{escape(local.isoformat(timespec="seconds"))}">'
        f"{escape(local.strftime('%Y-%m-%d %H:%M'))}</time>"
    )


def format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _render_picture(picture: Picture) -> str:
    href = image_href(picture.file)
    if href is None:
        return f'<p class="missing">Image outside the outbox: {escape(picture.file)}</p>'
    size = ""
    if picture.width and picture.height:
        size = f' width="{picture.width}" height="{picture.height}"'
    return (
        f'<a class="pic" href="{escape(href)}"><img src="{escape(href)}" '
        f'alt="{escape(picture.file)}"{size} loading="lazy" decoding="async"></a>'
    )


def _render_prompt(card: Card) -> str:
    parts = []
    if card.prompt is not None:
        parts.append(f'<p class="prompt">{escape(card.prompt)}</p>')
    if card.revised_prompt and card.revised_prompt != card.prompt:
        # Folded: codex's rewrite can be long, and the person's own prompt leads the card.
        parts.append(
            '<details class="fold"><summary class="label">Revised prompt</summary>'
            f'<p class="prompt revised">{escape(card.revised_prompt)}</p></details>'
        )
    return "".join(parts)


def _render_refs(card: Card) -> str:
    """The job's references as small pictures from outbox/references/, each with its name."""
    if not card.refs:
        return ""
    items = []
    for ref in card.refs:
        href = image_href(ref.thumbnail) if ref.thumbnail else None
        picture = (
            f'<img src="{escape(href)}" alt="{escape(ref.name)}" loading="lazy" decoding="async">'
            if href
            else '<span class="nothumb">no picture</span>'
        )
        name = escape(ref.name)
        items.append(f'<li class="ref" title="{name}">{picture}<span>{name}</span></li>')
    return f'<p class="label">References</p><ul class="refs">{"".join(items)}</ul>'


def _render_meta(card: Card, tz: timezone | None) -> str:
    items = []
    when = format_when(card.when, tz)
    if when:
        items.append(("Finished " if card.kind is CardKind.RESULT else "Failed ") + when)
    took = format_seconds(card.seconds)
    if took:
        items.append(f"took {escape(took)}")
    if card.job:
        items.append(f'<span class="job">{escape(card.job)}</span>')
    if card.kind is CardKind.FAILURE and card.code is not None:
        items.append(f"exit code {card.code}")
    return f'<p class="meta">{" · ".join(items)}</p>' if items else ""


def render_result(card: Card, tz: timezone | None) -> str:
    pictures = "".join(_render_picture(p) for p in card.pictures) or (
        '<p class="missing">No image listed in this result.</p>'
    )
    count = len(card.pictures)
    waiting = (
        f'<p class="partial">{count} of {count + card.missing} images so far: the job waits in '
        f"the inbox for the rest</p>"
        if card.missing
        else ""
    )
    return (
        f'<article class="card ok" id="{escape(card.sidecar)}">'
        f'<div class="pics" style="--n:{max(count, 1)}">{pictures}</div>'
        f'<div class="body">{waiting}{_render_prompt(card)}{_render_refs(card)}'
        f"{_render_meta(card, tz)}</div></article>"
    )


def render_failure(card: Card, tz: timezone | None) -> str:
    words = LAYER_WORDS.get(card.layer or "")
    badge = f"Failed: {words}" if words else "Failed"
    retry = ""
    if card.retrying:
        until = format_when(card.retry_at, tz)
        retry = f'<span class="retry">will retry{" after " + until if until else ""}</span>'
    parts = [
        f'<article class="card failed" id="{escape(card.sidecar)}">',
        f'<div class="body"><p class="badge">{escape(badge)} {retry}</p>',
        f'<p class="message">{escape(card.message or "The job failed.")}</p>',
    ]
    if card.hint:
        parts.append(
            f'<p class="hint"><span class="label">What to do: </span>{escape(card.hint)}</p>'
        )
    parts.append(
        _render_prompt(card)
        if card.prompt is not None
        else '<p class="noprompt">No prompt is known: the job file did not pass its checks.</p>'
    )
    parts.append(_render_refs(card))
    if card.detail:
        parts.append(
            f"<details><summary>Details</summary><pre>{escape(card.detail)}</pre></details>"
        )
    parts.append(f"{_render_meta(card, tz)}</div></article>")
    return "".join(parts)
