"""The outbox gallery: what the page says and links, and what a person sees in Chromium."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from PIL import Image

from daemon.codex.quota import RateLimit
from daemon.errors import OutboxUnwritable
from daemon.outbox.gallery import LiveState, build_gallery, live_state, write_gallery
from daemon.outbox.sidecars import CardCache, read_cards, read_sidecar
from tests.support.browser import Browser, require_chromium

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PALETTE = [(233, 120, 60), (70, 130, 200), (90, 170, 110), (200, 80, 150), (240, 200, 70)]
INJECTION = (
    'Draw <script>alert("x")</script> and <img src=x onerror="alert(1)"> '
    "& 'quotes' \"double\" </article></main><b>bold?</b> 🐱🎨\n  second line, indented"
)


# ---------------------------------------------------------------- helpers


def image_bytes(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def add_result(
    outbox: Path,
    base: str,
    *,
    prompt: str = "a cat",
    minutes: int = 0,
    images: list[tuple[str, str, tuple[int, int]]] | None = None,
    **extra: Any,
) -> Path:
    """Write real images and their result sidecar, as the daemon would."""
    entries = []
    for i, (file, fmt, size) in enumerate(images or [(f"{base}.png", "PNG", (64, 48))]):
        data = image_bytes(fmt, size, PALETTE[(len(outbox.name) + len(file) + i) % len(PALETTE)])
        (outbox / file).write_bytes(data)
        entries.append(
            {
                "file": file,
                "format": fmt.lower(),
                "width": size[0],
                "height": size[1],
                "bytes": len(data),
                "sha256": "0" * 64,
            }
        )
    finished = T0 + timedelta(minutes=minutes)
    sidecar = {
        "images": entries,
        "prompt": prompt,
        "revised_prompt": extra.pop("revised_prompt", prompt),
        "refs": [],
        "codex_version": "0.169.0",
        "thread_id": "t-" + base,
        "started_at": (finished - timedelta(seconds=42)).isoformat(),
        "finished_at": finished.isoformat(),
        "seconds": 42.4,
        "job": f"{base}.prompt.yaml",
        **extra,
    }
    path = outbox / f"{base}.result.yaml"
    path.write_text(yaml.safe_dump(sidecar, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def add_error(outbox: Path, base: str, *, minutes: int = 0, **extra: Any) -> Path:
    sidecar = {
        "code": 7,
        "error": "rollout",
        "message": "codex refused to draw this picture.",
        "hint": "Rephrase the prompt; codex's reason is in `detail`.",
        "detail": "safety system",
        "retrying": False,
        "failed_at": (T0 + timedelta(minutes=minutes)).isoformat(),
        "job": f"{base}.prompt.yaml",
        "prompt": "a forbidden thing",
        **extra,
    }
    path = outbox / f"{base}.error.yaml"
    path.write_text(yaml.safe_dump(sidecar, sort_keys=False, allow_unicode=True), "utf-8")
    return path


class Page(HTMLParser):
    """The parsed page: every start tag, and the text inside elements of each class."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[list[str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br"):
            classes = (dict(attrs).get("class") or "").split()
            self._open.append(classes)
            for c in classes:
                self.texts.setdefault(c, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("img", "meta", "br") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for classes in self._open:
            for c in classes:
                self.texts[c][-1] += data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def page(outbox: Path, **kw: Any) -> Page:
    return Page(build_gallery(outbox, tz=timezone.utc, **kw))


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    path = tmp_path / "outbox"
    path.mkdir()
    return path


# ---------------------------------------------------------------- the page's content


def test_result_card_links_its_image_lazily_with_its_size(outbox: Path) -> None:
    """A result shows its image linked relatively, lazy-loaded, with width and height set."""
    add_result(outbox, "cat", images=[("cat.png", "PNG", (64, 48))])
    img = page(outbox).all("img")
    assert img == [
        {
            "src": "cat.png",
            "alt": "cat.png",
            "width": "64",
            "height": "48",
            "loading": "lazy",
            "decoding": "async",
        }
    ]
    assert {"class": "pic", "href": "cat.png"} in page(outbox).all("a")


@pytest.mark.parametrize("name", ["my cat #2?.png", "kätzchen 猫.png", "50% off&more.png"])
def test_awkward_file_names_are_url_quoted(outbox: Path, name: str) -> None:
    """Spaces, #, ?, % and unicode in a file name become a relative URL that finds the file."""
    add_result(outbox, "job", images=[(name, "PNG", (8, 8))])
    src = page(outbox).all("img")[0]["src"]
    assert src is not None
    assert not set(src) & set(" #?&")
    assert src.isascii()
    assert (outbox / unquote(src)).is_file()


def test_file_paths_leaving_the_outbox_are_not_linked(outbox: Path) -> None:
    """A sidecar naming ../ or an absolute path gets no image element, only a note."""
    add_result(outbox, "ok")
    sidecar = yaml.safe_load((outbox / "ok.result.yaml").read_text())
    sidecar["images"] = [{"file": "../secret.png"}, {"file": "/etc/passwd"}]
    (outbox / "ok.result.yaml").write_text(yaml.safe_dump(sidecar))
    result = page(outbox)
    assert result.all("img") == []
    assert "Image outside the outbox: ../secret.png" in result.texts["missing"]


def test_several_images_of_one_job_share_one_card(outbox: Path) -> None:
    """All images of a job appear in one card, in the sidecar's order."""
    add_result(outbox, "pair", images=[("pair.png", "PNG", (8, 8)), ("pair-2.jpg", "JPEG", (8, 8))])
    result = page(outbox)
    assert len(result.all("article")) == 1
    assert [i["src"] for i in result.all("img")] == ["pair.png", "pair-2.jpg"]


def test_prompt_is_text_never_markup(outbox: Path) -> None:
    """A prompt full of tags, quotes and emoji reads back exactly and adds no elements."""
    add_result(outbox, "evil", prompt=INJECTION)
    text = build_gallery(outbox)
    result = Page(text)
    assert result.texts["prompt"] == [INJECTION]
    assert [t for t, _ in result.tags].count("script") == 0
    assert len(result.all("img")) == 1  # only the job's own image
    assert not any(k.startswith("on") for _, attrs in result.tags for k in attrs)
    for escaped in ("&lt;script&gt;", "&quot;double&quot;", "&#x27;quotes&#x27;"):
        assert escaped in text


def test_every_field_is_escaped(outbox: Path) -> None:
    """Job names, messages, hints and file names are escaped too, not only the prompt."""
    evil = '"><script>x</script>'
    add_result(
        outbox,
        "r",
        images=[(f"a{evil.replace('/', '_')}.png", "PNG", (8, 8))],
        job=evil,
        revised_prompt=evil,
    )
    add_error(outbox, "e", message=evil, hint=evil, detail=evil, job=evil, prompt=evil)
    result = page(outbox)
    assert [t for t, _ in result.tags].count("script") == 0
    assert result.texts["message"] == [evil]
    assert result.texts["job"] == [evil, evil]


def test_revised_prompt_shows_only_when_codex_changed_it(outbox: Path) -> None:
    """An unchanged revised prompt is not repeated; a changed one is shown under a label."""
    add_result(outbox, "same", prompt="a cat", revised_prompt="a cat", minutes=1)
    add_result(outbox, "changed", prompt="a dog", revised_prompt="A photo of a dog, 35mm.")
    result = page(outbox)
    assert result.texts["revised"] == ["A photo of a dog, 35mm."]
    assert result.texts["prompt"] == ["a cat", "a dog", "A photo of a dog, 35mm."]


def test_card_says_when_it_finished_and_how_long_it_took(outbox: Path) -> None:
    """The meta line carries the finish time and the duration."""
    add_result(outbox, "cat", minutes=5)
    assert page(outbox).texts["meta"] == ["Finished 2026-03-01 12:05 · took 42 s · cat.prompt.yaml"]


def test_newest_first_by_sidecar_time_then_mtime(outbox: Path) -> None:
    """Cards are ordered by finished_at / failed_at; a sidecar without a time uses its mtime."""
    add_result(outbox, "oldest", minutes=0)
    add_error(outbox, "middle", minutes=10)
    add_result(outbox, "newest", minutes=20)
    untimed = add_result(outbox, "untimed")
    data = yaml.safe_load(untimed.read_text())
    del data["finished_at"]
    untimed.write_text(yaml.safe_dump(data))
    stamp = (T0 + timedelta(minutes=15)).timestamp()
    os.utime(untimed, (stamp, stamp))
    ids = [a["id"] for a in page(outbox).all("article")]
    assert ids == [
        "newest.result.yaml",
        "untimed.result.yaml",
        "middle.error.yaml",
        "oldest.result.yaml",
    ]


def test_gallery_is_capped_and_says_how_many_are_hidden(outbox: Path) -> None:
    """With more jobs than the limit, only the newest show, and the page says how many do not."""
    for i in range(5):
        add_result(outbox, f"job{i}", minutes=i)
    result = page(outbox, limit=3)
    assert [a["id"] for a in result.all("article")] == [
        "job4.result.yaml",
        "job3.result.yaml",
        "job2.result.yaml",
    ]
    assert result.texts["capped"] == ["Showing the newest 3; 2 older jobs are not shown."]
    assert "capped" not in page(outbox, limit=5).texts


def test_broken_sidecars_among_the_newest_do_not_take_a_place(outbox: Path) -> None:
    """A broken newest sidecar is skipped and the next good one fills the page."""
    for i in range(3):
        add_result(outbox, f"job{i}", minutes=i)
    (outbox / "zz.result.yaml").write_text(f"finished_at: '{T0 + timedelta(days=1)}'\nimages: [\n")
    result = page(outbox, limit=2)
    assert [a["id"] for a in result.all("article")] == ["job2.result.yaml", "job1.result.yaml"]
    assert result.texts["capped"] == ["Showing the newest 2; 1 older job is not shown."]


def _local_clock(moment: datetime, now: datetime) -> str:
    local = moment.astimezone()
    same_day = local.date() == now.astimezone().date()
    return f"{local:%H:%M}" if same_day else f"{local:%Y-%m-%d %H:%M}"


@pytest.mark.parametrize("later", [timedelta(minutes=65), timedelta(days=1, hours=2)])
def test_a_job_waiting_for_the_image_limit_says_the_queue_is_paused(
    outbox: Path, later: timedelta
) -> None:
    """A retrying image-limit sidecar whose reset is still to come puts "Queue paused: image
    limit until HH:MM." (with the date when it is not today, in local time) in the header."""
    add_error(
        outbox,
        "limited",
        code=5,
        error="image-limit",
        message="The ChatGPT plan's image limit is reached.",
        retrying=True,
        retry_at=(T0 + later).isoformat(),
    )
    add_error(outbox, "refused", minutes=-1)

    result = page(outbox, now=lambda: T0)

    expected = f"Queue paused: image limit until {_local_clock(T0 + later, T0)}."
    assert result.texts["paused"] == [expected]


def test_no_pause_is_shown_once_the_reset_has_passed_or_for_other_failures(outbox: Path) -> None:
    """A limit sidecar whose reset time is past, or a final refusal, shows no pause line."""
    add_error(
        outbox,
        "limited",
        code=5,
        error="image-limit",
        retrying=True,
        retry_at=(T0 - timedelta(minutes=1)).isoformat(),
    )
    add_error(outbox, "refused", minutes=-1, retry_at=(T0 + timedelta(hours=1)).isoformat())

    assert "paused" not in page(outbox, now=lambda: T0).texts


def test_failed_job_card_shows_message_hint_and_retry(outbox: Path) -> None:
    """A failure is its own kind of card with the sentence, the hint and whether it will retry."""
    add_error(
        outbox,
        "limit",
        code=5,
        error="codex",
        message="The usage limit is reached.",
        hint="Wait until the limit resets.",
        retrying=True,
        retry_at=(T0 + timedelta(hours=2)).isoformat(),
    )
    add_error(outbox, "refused", minutes=-1)
    result = page(outbox)
    assert [a["class"] for a in result.all("article")] == ["card failed", "card failed"]
    assert result.texts["badge"][0].startswith("Failed: codex failed")
    assert result.texts["retry"] == ["will retry after 2026-03-01 14:00"]
    assert result.texts["message"] == [
        "The usage limit is reached.",
        "codex refused to draw this picture.",
    ]
    refused_hint = "Rephrase the prompt; codex's reason is in `detail`."
    assert result.texts["hint"][1] == f"What to do: {refused_hint}"
    assert "Failed 2026-03-01 11:59" in result.texts["meta"][1]


@pytest.mark.parametrize(
    "content",
    [
        b"images: [\n  - {file: \n",  # YAML syntax error
        b"- just\n- a list\n",  # not a mapping
        b"\xff\xfe\x00garbage\x80",  # not text
        b"!!python/object/apply:os.system ['true']\n",  # unsafe tag
        b"name: someone else's file\nversion: 3\n",  # foreign mapping
        b"images: 12\nprompt: x\n",  # images of the wrong type
        b"finished_at: '2026-03-01T12:00:00+00:00'\nprompt: [\n",  # time line but broken
    ],
)
def test_broken_or_foreign_sidecars_are_skipped(outbox: Path, content: bytes) -> None:
    """A sidecar that is not ours or not readable is left out; the rest still shows."""
    add_result(outbox, "good")
    (outbox / "bad.result.yaml").write_bytes(content)
    (outbox / "bad.error.yaml").write_bytes(content if b"version" not in content else b"{}\n")
    assert [a["id"] for a in page(outbox).all("article")] == ["good.result.yaml"]


def test_odd_field_types_do_not_break_a_card(outbox: Path) -> None:
    """Wrong-typed optional fields are ignored rather than shown or crashing the build."""
    path = add_result(outbox, "odd")
    data = yaml.safe_load(path.read_text())
    data.update(
        prompt=12,
        seconds="fast",
        finished_at="yesterday",
        revised_prompt=None,
        images=[{"file": "odd.png", "width": "wide", "height": True}, "junk", {"x": 1}],
    )
    path.write_text(yaml.safe_dump(data))
    result = page(outbox)
    assert result.all("img") == [
        {"src": "odd.png", "alt": "odd.png", "loading": "lazy", "decoding": "async"}
    ]
    assert "prompt" not in result.texts


def test_empty_outbox_says_what_to_do(outbox: Path) -> None:
    """An outbox with no sidecars gets a page that explains where pictures come from."""
    text = build_gallery(outbox)
    assert "No results yet. Drop a prompt file into the inbox" in text
    assert "<article" not in text


def test_page_is_static_and_forbids_scripts(outbox: Path) -> None:
    """The page has a script-forbidding CSP, a phone viewport, dark-mode CSS and no script."""
    add_result(outbox, "cat")
    text = build_gallery(outbox)
    metas = Page(text).all("meta")
    csp = next(m["content"] for m in metas if m.get("http-equiv") == "Content-Security-Policy")
    assert csp is not None
    assert csp.startswith(
        "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'"
    )
    assert "script-src" not in csp  # default-src 'none' covers scripts
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas
    assert "prefers-color-scheme:dark" in text
    assert "<script" not in text.lower()


# ---------------------------------------------------------------- writing the file


def test_write_gallery_replaces_index_and_leaves_no_temp_files(outbox: Path) -> None:
    """index.html is replaced whole, readable by others, with no temporary file left behind."""
    (outbox / "index.html").write_text("old")
    add_result(outbox, "cat")
    path = write_gallery(outbox)
    assert path == outbox / "index.html"
    assert path.read_text("utf-8").startswith("<!DOCTYPE html>")
    assert path.stat().st_mode & 0o044 == 0o044
    add_result(outbox, "dog", minutes=1)
    write_gallery(outbox)
    assert sorted(p.name for p in outbox.iterdir() if not p.name.endswith((".png", ".yaml"))) == [
        "index.html"
    ]
    assert "dog.png" in path.read_text("utf-8")


def test_write_gallery_survives_a_lone_surrogate(outbox: Path) -> None:
    """A YAML escape for a lone surrogate does not stop the page; the other jobs still show."""
    add_result(outbox, "good", prompt="a good cat")
    add_result(outbox, "s", minutes=1)
    sidecar = outbox / "s.result.yaml"
    sidecar.write_text(sidecar.read_text().replace("prompt: a cat", 'prompt: "a \\ud800 cat"'))
    text = write_gallery(outbox).read_text("utf-8")
    # libyaml refuses the escape (the sidecar is skipped); the pure-Python loader accepts it.
    assert "a good cat" in text
    assert "\ud800" not in text
    assert "a ? cat" in text or 's.result.yaml"' not in text


def test_unwritable_outbox_raises_outbox_unwritable(tmp_path: Path) -> None:
    """A missing or read-only outbox gives the daemon's own error, not a bare OSError."""
    with pytest.raises(OutboxUnwritable, match="gallery could not be written"):
        write_gallery(tmp_path / "gone")
    assert list(tmp_path.iterdir()) == []


def test_five_thousand_sidecars_build_fast(outbox: Path) -> None:
    """5,000 sidecars build in well under a few seconds, capped at the newest 500."""
    base = yaml.safe_dump(
        {
            "images": [{"file": "x.png", "width": 1024, "height": 1024}],
            "prompt": "A watercolor cat\non a windowsill " * 20,
            "seconds": 40.0,
        }
    )
    for i in range(5000):
        finished = (T0 + timedelta(minutes=i)).isoformat()
        suffix = "error" if i % 10 == 0 else "result"
        key = "failed_at" if suffix == "error" else "finished_at"
        body = base if suffix == "result" else "code: 7\nmessage: No image.\n"
        (outbox / f"j{i:05}.{suffix}.yaml").write_text(f"{key}: '{finished}'\n{body}")
    started = time.perf_counter()
    text = build_gallery(outbox)
    elapsed = time.perf_counter() - started
    assert text.count("<article") == 500
    assert 'id="j04999.result.yaml"' in text
    assert "4500 older jobs are not shown" in text
    assert elapsed < 8, f"building took {elapsed:.2f} s"


# ---------------------------------------------------------------- rebuilding with a cache


def fixed_page(outbox: Path, cache: CardCache | None, **kw: Any) -> str:
    return build_gallery(outbox, tz=timezone.utc, now=lambda: T0, cache=cache, **kw)


def test_cached_rebuild_shows_edited_replaced_and_deleted_sidecars(outbox: Path) -> None:
    """A rebuild with a warm cache shows what is on disk now, as a build from scratch does."""
    cache = CardCache()
    for i in range(4):
        add_result(outbox, f"job{i}", prompt=f"prompt {i}", minutes=i)
    assert "prompt 3" in fixed_page(outbox, cache)
    edited = outbox / "job3.result.yaml"
    edited.write_text(edited.read_text().replace("prompt: prompt 3", "prompt: a new prompt 3"))
    (outbox / "job2.result.yaml").unlink()
    # Same size and mtime, new inode: an atomic replace by another writer.
    swapped = outbox / "job1.result.yaml"
    before = swapped.stat()
    fresh = outbox / "fresh.tmp"
    fresh.write_text(swapped.read_text().replace("prompt 1", "PROMPT 1"))
    os.utime(fresh, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(fresh, swapped)

    text = fixed_page(outbox, cache)
    prompts = Page(text).texts["prompt"]
    assert prompts == ["a new prompt 3", "PROMPT 1", "prompt 0"]
    assert "3 jobs: newest first." in text
    assert text == fixed_page(outbox, None)


def test_cached_rebuild_reads_only_the_new_sidecar(outbox: Path) -> None:
    """After one build, adding a sidecar makes the next build read that file, not the others."""
    cache = CardCache()
    opened: list[str] = []

    def counting_read(path: str | Path) -> tuple[bytes | None, os.stat_result | None]:
        opened.append(Path(path).name)
        return read_sidecar(path)

    for i in range(30):
        add_result(outbox, f"job{i:02}", minutes=i)
    read_cards(outbox, limit=10, cache=cache, read=counting_read)
    opened.clear()
    add_error(outbox, "newest", minutes=99)
    read_cards(outbox, limit=10, cache=cache, read=counting_read)
    # Its time line, then the whole card: no other sidecar is opened again.
    assert set(opened) == {"newest.error.yaml"}
    assert len(opened) <= 2
    text = fixed_page(outbox, cache, limit=10)
    assert Page(text).all("article")[0]["id"] == "newest.error.yaml"
    assert text == fixed_page(outbox, None, limit=10)


@pytest.mark.parametrize("bounds", [{"max_entries": 3}, {"max_card_bytes": 1500}])
def test_a_bounded_cache_gives_the_same_page(outbox: Path, bounds: dict[str, int]) -> None:
    """A cache too small for the outbox stays within its bounds and changes nothing on the page."""
    cache = CardCache(**bounds)
    for i in range(8):
        add_result(outbox, f"job{i}", minutes=i)
    (outbox / "zz.result.yaml").write_text("no time line: [\n")
    first = fixed_page(outbox, cache, limit=5)
    add_result(outbox, "job8", minutes=8)
    second = fixed_page(outbox, cache, limit=5)
    assert len(cache) <= bounds.get("max_entries", 100)
    assert second == fixed_page(outbox, None, limit=5)
    assert second != first
    assert [a["id"] for a in Page(second).all("article")][:2] == [
        "job8.result.yaml",
        "job7.result.yaml",
    ]


def test_a_fifo_named_like_a_sidecar_does_not_hang_the_build(outbox: Path) -> None:
    """A named pipe or a folder with a sidecar's name is skipped instead of blocking the build."""
    add_result(outbox, "good")
    os.mkfifo(outbox / "pipe.result.yaml")
    (outbox / "folder.error.yaml").mkdir()
    assert [a["id"] for a in page(outbox).all("article")] == ["good.result.yaml"]


def test_failure_card_says_its_layer_in_words_with_prompt_and_references(outbox: Path) -> None:
    """`error: reference` reads as words, not as `code 4`; the prompt and each reference (its
    thumbnail from outbox/references/, or its name alone) are on the card."""
    add_error(
        outbox,
        "fox",
        code=4,
        error="reference",
        message="fox.prompt.yaml: the reference 'gone.png' does not exist.",
        prompt="Style: ink, a fox",
        refs=["styles/ink.png", "gone.png"],
        ref_thumbnails=["references/fox.ref-1.jpg", None],
    )
    result = page(outbox)
    badge = result.texts["badge"][0]
    assert badge.startswith("Failed: a reference image is missing or not an image")
    assert "code" not in badge
    assert "exit code 4" in result.texts["meta"][0]
    assert result.texts["prompt"] == ["Style: ink, a fox"]
    assert [img["src"] for img in result.all("img")] == ["references/fox.ref-1.jpg"]
    assert [img["alt"] for img in result.all("img")] == ["styles/ink.png"]
    assert result.texts["ref"] == ["styles/ink.png", "no picturegone.png"]


def test_failure_card_without_a_prompt_says_none_is_known(outbox: Path) -> None:
    """A job file that did not parse has no prompt: the card says so instead of leaving a gap."""
    add_error(outbox, "broken", code=2, error="job", prompt=None, refs=["broken.png"])
    result = page(outbox)
    assert result.texts["badge"][0].startswith("Failed: the job file has a mistake")
    assert result.texts["noprompt"] == ["No prompt is known: the job file did not pass its checks."]
    assert result.texts["ref"] == ["no picturebroken.png"]


def test_result_card_shows_its_references(outbox: Path) -> None:
    """A result shows the references it was made from, below its prompt."""
    add_result(outbox, "pet", refs=["pet.png"], ref_thumbnails=["references/pet.ref-1.jpg"])
    result = page(outbox)
    assert [img["src"] for img in result.all("img")] == ["pet.png", "references/pet.ref-1.jpg"]


def test_a_thumbnail_path_leaving_the_outbox_is_not_linked(outbox: Path) -> None:
    """A sidecar's ref_thumbnails entry cannot point the page outside the outbox."""
    add_error(outbox, "x", refs=["a.png"], ref_thumbnails=["../inbox/done/a.png"])
    assert page(outbox).all("img") == []


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outbox of real images and failures, with its index.html written."""
    out = tmp_path_factory.mktemp("browser") / "outbox"
    out.mkdir()
    add_result(
        out,
        "sunset",
        prompt="A sunset over the sea,\n  in watercolour.",
        minutes=1,
        images=[("sunset.png", "PNG", (640, 400))],
        revised_prompt="A watercolour sunset over a calm sea.",
    )
    add_result(
        out,
        "pair",
        prompt="Two cats, one orange and one grey.",
        minutes=2,
        images=[("pair.jpg", "JPEG", (300, 300)), ("pair-2.webp", "WEBP", (300, 300))],
    )
    add_result(
        out,
        "odd name",
        prompt="File names with #, ? and ünïcode.",
        minutes=3,
        images=[("odd name #1?ü.png", "PNG", (320, 200))],
    )
    add_result(out, "evil", prompt=INJECTION, minutes=4, images=[("evil.png", "PNG", (200, 200))])
    add_error(
        out,
        "limit",
        minutes=5,
        code=5,
        error="codex",
        message="The usage limit is reached.",
        hint="Wait until the limit resets; jobs resume on their own.",
        retrying=True,
        prompt="A lighthouse at night.",
    )
    add_error(out, "refused", minutes=0)
    write_gallery(out)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(require_chromium()) as b:
        yield b


@pytest.fixture
def opened(browser: Browser, gallery: Path) -> Browser:
    browser.open((gallery / "index.html").as_uri())
    return browser


ALL_LOADED = "[...document.images].every(i => i.complete)"


@pytest.mark.browser
def test_browser_loads_every_image_from_file_url(opened: Browser) -> None:
    """Every image, including the oddly named one, loads over file:// under the page's CSP."""
    opened.wait_for(ALL_LOADED)
    sizes = opened.evaluate(
        "[...document.images].map(i => [decodeURIComponent(i.getAttribute('src')), i.naturalWidth])"
    )
    assert sorted(sizes) == [
        ["evil.png", 200],
        ["odd name #1?ü.png", 320],
        ["pair-2.webp", 300],
        ["pair.jpg", 300],
        ["sunset.png", 640],
    ]


@pytest.mark.browser
def test_browser_shows_prompts_as_written(opened: Browser) -> None:
    """The prompts read exactly as written, line breaks and indentation included."""
    prompts = opened.evaluate("[...document.querySelectorAll('.prompt')].map(p => p.innerText)")
    assert INJECTION in prompts
    assert "A sunset over the sea,\n  in watercolour." in prompts
    # codex's revised prompt is folded: hidden until its <details> is opened.
    assert "A watercolour sunset over a calm sea." not in prompts
    opened.evaluate("document.querySelectorAll('details.fold').forEach(d => d.open = true)")
    revised = opened.evaluate("document.querySelector('.prompt.revised').innerText")
    assert revised == "A watercolour sunset over a calm sea."


@pytest.mark.browser
def test_browser_injection_prompt_creates_no_elements(opened: Browser) -> None:
    """The HTML in a prompt creates no script, image, bold or handler in the live page."""
    found = opened.evaluate(
        "({scripts: document.scripts.length, imgs: document.images.length,"
        " bold: document.querySelectorAll('b').length,"
        " handlers: document.querySelectorAll('[onerror],[onload]').length,"
        " articles: document.querySelectorAll('article').length})"
    )
    assert found == {"scripts": 0, "imgs": 5, "bold": 0, "handlers": 0, "articles": 6}
    assert "<script>" not in opened.dom().split("<style>")[0]


@pytest.mark.browser
def test_browser_failure_shows_its_message_and_hint(opened: Browser) -> None:
    """The failed jobs' cards show their sentence, the hint and whether they will be retried."""
    cards = opened.evaluate("[...document.querySelectorAll('.card.failed')].map(c => c.innerText)")
    assert len(cards) == 2
    assert "The usage limit is reached." in cards[0]
    assert "WHAT TO DO: Wait until the limit resets; jobs resume on their own." in cards[0]
    assert "will retry" in cards[0]
    assert "will retry" not in cards[1]
    assert "Rephrase the prompt" in cards[1]


@pytest.mark.browser
def test_browser_puts_images_of_one_job_side_by_side(opened: Browser) -> None:
    """The two images of one job sit next to each other, scaled into the card."""
    opened.wait_for(ALL_LOADED)
    boxes = opened.evaluate(
        "[...document.querySelectorAll('#pair\\\\.result\\\\.yaml img')].map(i => {"
        " const r = i.getBoundingClientRect(), c = i.closest('article').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.right <= c.right + 0.5]; })"
    )
    assert len(boxes) == 2
    (left1, top1, width1, inside1), (left2, top2, _, inside2) = boxes
    assert top1 == top2
    assert left2 >= left1 + width1
    assert inside1
    assert inside2


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outbox made by the real pipeline parts: a failure for a missing reference beside an
    existing one, and a result made from a reference, each with thumbnails written for it."""
    from daemon.errors import ReferenceMissing
    from daemon.outbox.thumbs import write_thumbnails

    root = tmp_path_factory.mktemp("failures")
    out, refs = root / "outbox", root / "inbox"
    out.mkdir()
    refs.mkdir()
    (refs / "ink.png").write_bytes(image_bytes("PNG", (900, 600), (30, 60, 160)))
    (refs / "pet.jpg").write_bytes(image_bytes("JPEG", (480, 640), (200, 120, 40)))
    add_result(
        out,
        "pet",
        prompt="My cat, repainted as a woodcut.",
        minutes=2,
        images=[("pet.png", "PNG", (400, 400))],
        refs=["pet.jpg"],
        ref_thumbnails=write_thumbnails(out, "pet", [refs / "pet.jpg"]),
    )
    error = ReferenceMissing("fox.prompt.yaml: the reference 'gone.png' does not exist.")
    add_error(
        out,
        "fox",
        minutes=1,
        code=error.exit_code,
        error=error.layer,
        message=error.message,
        hint=error.hint,
        prompt="Style: ink, a fox in the snow",
        refs=["styles/ink.png", "gone.png"],
        ref_thumbnails=write_thumbnails(out, "fox", [refs / "ink.png", refs / "gone.png"]),
    )
    write_gallery(out)
    return out


@pytest.mark.browser
def test_browser_failure_card_shows_words_prompt_and_reference_thumbnails(
    browser: Browser, failures: Path
) -> None:
    """In Chromium the failed card reads `Failed: a reference image is missing…`, shows the
    prompt, and the existing reference as a loaded thumbnail next to the missing one's name."""
    browser.open((failures / "index.html").as_uri())
    browser.wait_for(ALL_LOADED)
    card = browser.evaluate("document.querySelector('.card.failed').innerText")
    assert card.startswith("Failed: a reference image is missing or not an image")
    assert "code 4" not in card.splitlines()[0]
    assert "Style: ink, a fox in the snow" in card
    assert "styles/ink.png" in card
    assert "gone.png" in card
    thumbs = browser.evaluate(
        "[...document.querySelectorAll('.refs img')].map(i => [i.alt, i.naturalWidth,"
        " i.getBoundingClientRect().width])"
    )
    assert [alt for alt, _, _ in thumbs] == ["pet.jpg", "styles/ink.png"]
    assert all(natural > 0 and 0 < shown <= 100 for _, natural, shown in thumbs)
    browser.screenshot(ARTIFACTS / "gallery-failure-refs.png")


@pytest.mark.browser
def test_browser_screenshots_light_dark_and_phone(browser: Browser, gallery: Path) -> None:
    """The page renders in light and dark mode and on a phone-sized screen; screenshots are kept."""
    url = (gallery / "index.html").as_uri()
    backgrounds = {}
    for name, kw in {
        "gallery": {},
        "gallery-dark": {"dark": True},
        "gallery-phone": {"width": 390, "height": 844},
    }.items():
        browser.open(url, **kw)
        browser.wait_for(ALL_LOADED)
        backgrounds[name] = browser.evaluate("getComputedStyle(document.body).backgroundColor")
        shot = browser.screenshot(ARTIFACTS / f"{name}.png")
        assert Image.open(shot).size[0] == kw.get("width", 1280)
    assert backgrounds["gallery"] != backgrounds["gallery-dark"]
    phone_columns = browser.evaluate(
        "getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length"
    )
    assert phone_columns == 1


# ---------------------------------------------------------------- the live page

IMAGE_LIMIT = RateLimit("image_gen", 80.0, 1440, T0 + timedelta(hours=5, minutes=46), None, T0)
WORKING = LiveState(
    "working",
    current_job="fox.prompt.yaml",
    job_started_at=T0 - timedelta(seconds=42),
    queue_length=2,
    rate_limits=(IMAGE_LIMIT,),
)
PAUSED = LiveState(
    "paused",
    queue_length=1,
    pause_summary="image limit until 17:46",
    pause_reason="You've hit your image limit.",
    resumes_at=T0 + timedelta(hours=5, minutes=46),
    rate_limits=(
        RateLimit("image_gen", 100.0, None, T0 + timedelta(hours=5, minutes=46), None, T0),
    ),
)
IDLE = LiveState("idle", rate_limits=(IMAGE_LIMIT,))
REFRESH = '<meta http-equiv="refresh" content="5">'


def live_page(outbox: Path, live: LiveState | None) -> str:
    return build_gallery(outbox, now=lambda: T0, cache=None, live=live)


def test_a_working_or_paused_page_refreshes_itself_and_an_idle_one_does_not(outbox: Path) -> None:
    """While a job runs, jobs wait or the queue is paused the page reloads every 5 s; the
    page built once the daemon is idle, or stopped, or outside the daemon, has no refresh."""
    add_result(outbox, "cat")
    assert REFRESH in live_page(outbox, WORKING)
    assert REFRESH in live_page(outbox, PAUSED)
    assert REFRESH in live_page(outbox, LiveState("idle", queue_length=1))  # a retry waits
    for live in (IDLE, LiveState("stopped", queue_length=3), None):
        assert 'http-equiv="refresh"' not in live_page(outbox, live)


def test_working_page_says_which_job_runs_since_when_and_the_queue(outbox: Path) -> None:
    """The header names the running job, when it started, how long it had run when the page
    was built, and how many jobs wait."""
    header = page_header(live_page(outbox, WORKING))
    started = (T0 - timedelta(seconds=42)).astimezone().strftime("%H:%M:%S")
    assert f"Working on fox.prompt.yaml since {started} (42 s when this page was built)." in header
    assert "2 jobs queued." in header
    assert "reloads every 5 s" in header


def test_paused_page_says_why_and_until_when(outbox: Path) -> None:
    """A pause shows its summary, the time it resumes and codex's reason."""
    header = page_header(live_page(outbox, PAUSED))
    assert "Queue paused: image limit until 17:46." in header
    assert "Reason: You&#x27;ve hit your image limit." in header
    assert "1 job queued." in header
    network = LiveState(
        "paused", pause_summary="waiting for network", resumes_at=T0 + timedelta(seconds=40)
    )
    resumes = _local_clock(T0 + timedelta(seconds=40), T0)
    assert f"Queue paused: waiting for network, resumes {resumes}." in live_page(outbox, network)


def test_header_shows_the_quota_snapshot(outbox: Path) -> None:
    """The newest snapshot of each limit is in the header: `image limit: 80 % used, resets …`."""
    resets = _local_clock(T0 + timedelta(hours=5, minutes=46), T0)
    header = page_header(live_page(outbox, IDLE))
    assert f'<p class="quota">image limit: 80 % used, resets {resets}</p>' in header
    assert "Working on" not in header
    assert "queued" not in header


def test_live_state_is_read_from_status_fields_and_escaped(outbox: Path) -> None:
    """The daemon's status fields become the header; a job name is text, never markup."""
    live = live_state(
        {
            "state": "working",
            "current_job": "<b>x</b>.prompt.yaml",
            "job_started_at": T0.isoformat(),
            "queue_length": 0,
            "paused": None,
            "rate_limits": [IMAGE_LIMIT.to_json(), {"limit_id": 3}],
        }
    )
    assert live.rate_limits == (IMAGE_LIMIT,)
    header = page_header(live_page(outbox, live))
    assert "&lt;b&gt;x&lt;/b&gt;.prompt.yaml" in header
    assert "<b>" not in header


def test_revised_prompt_is_folded_under_the_users_prompt(outbox: Path) -> None:
    """codex's revised prompt sits in a closed <details> after the person's own prompt."""
    add_result(outbox, "dog", prompt="a dog", revised_prompt="A photo of a dog, 35mm. " * 40)
    html_text = live_page(outbox, None)
    own = html_text.index('<p class="prompt">a dog</p>')
    fold = html_text.index('<details class="fold"><summary class="label">Revised prompt')
    assert own < fold
    assert '<details class="fold" open' not in html_text


def page_header(html_text: str) -> str:
    return html_text[html_text.index("<header>") : html_text.index("</header>")]


@pytest.fixture(scope="module")
def live_outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live") / "outbox"
    out.mkdir()
    add_result(
        out,
        "sunset",
        prompt="A sunset over the sea.",
        minutes=1,
        images=[("sunset.png", "PNG", (640, 400))],
        revised_prompt="A watercolour sunset over a calm sea, " * 30,
    )
    add_result(out, "pair", prompt="Two cats.", minutes=2, images=[("pair.png", "PNG", (300, 300))])
    return out


@pytest.mark.browser
def test_browser_live_pages_idle_working_and_paused(browser: Browser, live_outbox: Path) -> None:
    """In Chromium the working and paused pages show their state and the quota; the revised
    prompt is folded; screenshots of each are kept."""
    index = live_outbox / "index.html"
    for name, live in {"idle": IDLE, "working": WORKING, "paused": PAUSED}.items():
        write_gallery(live_outbox, now=lambda: T0, cache=None, live=live)
        browser.open(index.as_uri())
        browser.wait_for(ALL_LOADED)
        header = browser.evaluate("document.querySelector('header').innerText")
        assert "image limit:" in header
        assert ("Working on fox.prompt.yaml" in header) is (name == "working")
        assert ("Queue paused: image limit until 17:46" in header) is (name == "paused")
        refresh = browser.evaluate("!!document.querySelector('meta[http-equiv=refresh]')")
        assert refresh is (name != "idle")
        folded = browser.evaluate("!document.querySelector('.prompt.revised').checkVisibility()")
        assert folded
        browser.screenshot(ARTIFACTS / f"gallery-live-{name}.png")
    browser.open(index.as_uri(), width=390, height=844)
    browser.screenshot(ARTIFACTS / "gallery-live-paused-phone.png")


@pytest.mark.browser
def test_browser_meta_refresh_reloads_the_page_under_the_csp(
    browser: Browser, live_outbox: Path
) -> None:
    """The CSP lets http-equiv refresh work: a working page picks up the idle page written
    after it was opened, and that page has no refresh left."""
    index = live_outbox / "index.html"
    write_gallery(live_outbox, now=lambda: T0, cache=None, live=WORKING)
    browser.open(index.as_uri())
    assert "Working on" in browser.evaluate("document.querySelector('header').innerText")
    opened_at = time.monotonic()
    write_gallery(live_outbox, now=lambda: T0, cache=None, live=IDLE)
    browser.wait_for(
        "document.readyState === 'complete' && !!document.querySelector('header')"
        " && !document.querySelector('header').innerText.includes('Working on')"
    )
    assert 3.0 < time.monotonic() - opened_at < 30
    assert not browser.evaluate("!!document.querySelector('meta[http-equiv=refresh]')")


def test_an_incomplete_variants_result_says_how_many_are_still_to_come(outbox: Path) -> None:
    """A job of three variants that met the image limit after two: its card says 2 of 3."""
    add_result(
        outbox,
        "fox",
        images=[("fox.png", "PNG", (64, 48)), ("fox.2.png", "PNG", (64, 48))],
        variants=3,
        complete=False,
        missing=1,
    )
    add_result(outbox, "cat", minutes=-1, variants=1, complete=True, missing=0)
    badges = page(outbox).texts.get("partial", [])
    assert badges == ["2 of 3 images so far: the job waits in the inbox for the rest"]
