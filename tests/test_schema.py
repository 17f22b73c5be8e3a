"""The shipped JSON Schema and parse_job agree on the same good and bad job files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from daemon.errors import JobError
from daemon.job.parse import parse_job
from daemon.job.schema import load_job_schema

# Only what a schema can express: types, required keys, enums, unknown keys, lengths and
# patterns. Filesystem checks (references inside the inbox, real images, file size, UTF-8)
# belong to parse_job alone and are tested in test_job.py.
GOOD: list[Any] = [
    "a cat",
    "Un chat 🐈 sur un toit",
    "42",
    "line one\nline two\n",
    {"prompt": "a cat"},
    {"prompt": "  spaced, never stripped  "},
    {"prompt": "x", "refs": []},
    {"prompt": "x", "refs": ["a.png", "sub/b.jpg", "sub/../a.png"]},
    {"prompt": "x", "out": "sunset"},
    {"prompt": "x", "out": "v1.2 final"},
    {"prompt": "x", "out": "sunset.png"},
    {"prompt": "x", "out": "a" * 100},
    {"prompt": "x", "timeout_sec": 1},
    {"prompt": "x", "timeout_sec": 0.5},
    {"prompt": "x", "timeout_sec": 86400},
    {"prompt": "x", "model": "gpt-5.4"},
    {"prompt": "x", "model": "openai/gpt-image-1"},
    {"prompt": "x", "model": "o3"},
    {"prompt": "x", "format": "png"},
    {"prompt": "x", "format": "jpeg"},
    {"prompt": "x", "format": "jpg"},
    {"prompt": "x", "format": "webp"},
    {"prompt": "x", "transparent": True},
    {"prompt": "x", "transparent": False},
    {"prompt": "x", "transparent": True, "format": "webp"},
    {"prompt": "x", "transparent": True, "format": "png"},
    {"prompt": "x", "transparent": False, "format": "jpeg"},
    {"prompt": "x", "aspect": "square"},
    {"prompt": "x", "aspect": "portrait"},
    {"prompt": "x", "aspect": "landscape"},
    {"prompt": "x", "aspect": "16:9"},
    {"prompt": "x", "aspect": "9:16"},
    {"prompt": "x", "aspect": "1:1"},
    {"prompt": "x", "aspect": "1:4"},
    {"prompt": "x", "aspect": "4000:1000"},
    {"prompt": "x", "variants": 1},
    {"prompt": "x", "variants": 3},
    {"prompt": "x", "variants": 8},
    {"prompt": "x", "variants": 2.0},
    {"Style": "watercolor, a fox in the snow"},
    {"while you were away": "a moonlit pond"},
    {"Mood": "quiet", "Image": "a fox", "Scene": None},
    {"Characters": {"Fox": "red", "Owl": "white"}, "Palette": ["ochre", {"Sky": "slate"}]},
    {
        "prompt": "a fox",
        "refs": ["a.png"],
        "out": "fox",
        "timeout_sec": 90,
        "model": "gpt-5.4",
        "format": "webp",
        "transparent": True,
        "aspect": "3:2",
    },
]

BAD: list[Any] = [
    "",
    "   ",
    "\n\t\n",
    "\u00a0",
    42,
    3.5,
    True,
    None,
    [],
    ["a cat"],
    {},
    {"prompt": ""},
    {"prompt": "  \n "},
    {"prompt": 1},
    {"prompt": None},
    {"prompt": ["a"]},
    {"prompt": {"text": "a"}},
    {"promt": "x"},
    {"Prompt": "x"},
    {"Mode": "night"},
    {"timeout_secs": 60},
    {"image": "a.png"},
    {"job": {"prompt": "x"}},
    {"Notes": [{"refs": ["a.png"]}]},
    {"Style": "ink", "format": "png"},
    {"prompt": "x", "extra": 1},
    {"refs": []},
    {"prompt": "x", "refs": "a.png"},
    {"prompt": "x", "refs": None},
    {"prompt": "x", "refs": [1]},
    {"prompt": "x", "refs": [""]},
    {"prompt": "x", "refs": ["  "]},
    {"prompt": "x", "refs": ["/etc/a.png"]},
    {"prompt": "x", "refs": ["~/a.png"]},
    {"prompt": "x", "refs": [["a.png"]]},
    {"prompt": "x", "out": ""},
    {"prompt": "x", "out": "a/b"},
    {"prompt": "x", "out": "a\\b"},
    {"prompt": "x", "out": ".hidden"},
    {"prompt": "x", "out": ".."},
    {"prompt": "x", "out": "a\tb"},
    {"prompt": "x", "out": "name\n"},
    {"prompt": "x", "out": 7},
    {"prompt": "x", "out": None},
    {"prompt": "x", "out": "a" * 101},
    {"prompt": "x", "timeout_sec": 0},
    {"prompt": "x", "timeout_sec": -1},
    {"prompt": "x", "timeout_sec": True},
    {"prompt": "x", "timeout_sec": "10"},
    {"prompt": "x", "timeout_sec": None},
    {"prompt": "x", "timeout_sec": 86401},
    {"prompt": "x", "model": ""},
    {"prompt": "x", "model": "--dangerously-bypass-approvals"},
    {"prompt": "x", "model": "gpt 5"},
    {"prompt": "x", "model": "gpt-5\n"},
    {"prompt": "x", "model": 5},
    {"prompt": "x", "model": None},
    {"prompt": "x", "model": "a" * 101},
    {"prompt": "x", "format": "gif"},
    {"prompt": "x", "format": "PNG"},
    {"prompt": "x", "format": None},
    {"prompt": "x", "format": 1},
    {"prompt": "x", "transparent": "yes"},
    {"prompt": "x", "transparent": 1},
    {"prompt": "x", "transparent": None},
    {"prompt": "x", "transparent": True, "format": "jpeg"},
    {"prompt": "x", "transparent": True, "format": "jpg"},
    {"prompt": "x", "aspect": "wide"},
    {"prompt": "x", "aspect": "Square"},
    {"prompt": "x", "aspect": ""},
    {"prompt": "x", "aspect": "16:0"},
    {"prompt": "x", "aspect": "0:9"},
    {"prompt": "x", "aspect": "16/9"},
    {"prompt": "x", "aspect": "16 : 9"},
    {"prompt": "x", "aspect": "16:9\n"},
    {"prompt": "x", "aspect": "1.5:1"},
    {"prompt": "x", "aspect": "-16:9"},
    {"prompt": "x", "aspect": "10000:9999"},
    {"prompt": "x", "aspect": 969},
    {"prompt": "x", "aspect": 1.5},
    {"prompt": "x", "aspect": None},
    {"prompt": "x", "aspect": ["16:9"]},
    {"transparency": True},
    {"aspect_ratio": "16:9"},
    {"prompt": "x", "variants": 0},
    {"prompt": "x", "variants": 9},
    {"prompt": "x", "variants": -1},
    {"prompt": "x", "variants": 2.5},
    {"prompt": "x", "variants": "3"},
    {"prompt": "x", "variants": True},
    {"prompt": "x", "variants": None},
    {"prompt": "x", "variants": [2]},
    {"variant": 2, "prompt": "x"},
]

# What the schema accepts but the daemon refuses: a W:H ratio beyond 1:4 to 4:1 (a schema
# cannot compare two numbers inside a string). Its description says so.
SCHEMA_ONLY: list[Any] = [
    {"prompt": "x", "aspect": "5:1"},
    {"prompt": "x", "aspect": "1:5"},
    {"prompt": "x", "aspect": "16:1"},
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_job_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def parses(tmp_path: Path, data: Any) -> bool:
    """Write `data` as a job file (with any references it names) and report if parse_job took it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=False)
    assert yaml.safe_load(text) == data  # the file says exactly what the schema is shown
    path = inbox / "job.prompt.yaml"
    path.write_text(text, encoding="utf-8")
    if isinstance(data, dict) and isinstance(data.get("refs"), list):
        for ref in data["refs"]:
            target = inbox / str(ref)
            if isinstance(ref, str) and ref.strip() and not ref.startswith(("/", "~")):
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (2, 2)).save(target, format="PNG")
    try:
        parse_job(path, inbox=inbox)
    except JobError:
        return False
    return True


@pytest.mark.parametrize("data", GOOD, ids=repr)
def test_good_examples_pass_both(tmp_path: Path, validator: Any, data: Any) -> None:
    """A job the schema accepts is accepted by parse_job, and the other way round."""
    assert list(validator.iter_errors(data)) == []
    assert parses(tmp_path, data)


@pytest.mark.parametrize("data", BAD, ids=repr)
def test_bad_examples_fail_both(tmp_path: Path, validator: Any, data: Any) -> None:
    """A job the schema refuses is refused by parse_job, and the other way round."""
    assert not validator.is_valid(data)
    assert not parses(tmp_path, data)


@pytest.mark.parametrize("data", SCHEMA_ONLY, ids=repr)
def test_an_aspect_beyond_4_to_1_is_refused_by_the_daemon_alone(
    tmp_path: Path, validator: Any, data: Any
) -> None:
    """A ratio out of range passes the schema's pattern, and parse_job refuses it; the schema's
    description of `aspect` names the range."""
    assert validator.is_valid(data)
    assert not parses(tmp_path, data)
    description = load_job_schema()["$defs"]["job"]["properties"]["aspect"]["description"]
    assert "1:4 or 4:1" in description


def test_every_key_is_described() -> None:
    """Each key of the job mapping has a description an editor can show, and no others pass."""
    job = load_job_schema()["$defs"]["job"]
    assert job["additionalProperties"] is False
    assert job["required"] == ["prompt"]
    for key, spec in job["properties"].items():
        assert len(spec.get("description", "")) > 20, key


def test_schema_documents_the_bare_string_rule() -> None:
    """The schema says that a bare string is the prompt and how its text is kept."""
    schema = load_job_schema()
    assert "whole file is the prompt" in schema["description"]
    assert "exactly as written" in schema["oneOf"][0]["description"]


def test_schema_and_daemon_share_one_rule_for_job_keys() -> None:
    """The schema's "no job key here" pattern is the one parse_job uses, character for character."""
    from daemon.job.keys import NEAR_MISS_PATTERN

    rule = load_job_schema()["$defs"]["notAJobKey"]
    assert rule["not"]["pattern"] == NEAR_MISS_PATTERN
    assert "whole-file" in load_job_schema()["oneOf"][2]["description"]


# Edits of job keys: the near misses and the far ones, and the characters that are tricky.
_EDIT_CHARS = st.sampled_from(list("aeiopstxz_PTMAR 9\n\tİ\u00e9."))


@st.composite
def _edited_keys(draw: st.DrawFn) -> str:
    from daemon.job.keys import KEYS

    word = list(draw(st.sampled_from([*KEYS, "image", "references", "name", "Style"])))
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.integers(0, len(word)))
        kind = draw(st.sampled_from(["change", "remove", "add", "swap", "case"]))
        if kind == "add" or not word:
            word.insert(where, draw(_EDIT_CHARS))
        elif where < len(word) and kind == "change":
            word[where] = draw(_EDIT_CHARS)
        elif where < len(word) and kind == "remove":
            del word[where]
        elif where < len(word) - 1 and kind == "swap":
            word[where], word[where + 1] = word[where + 1], word[where]
        elif where < len(word):
            word[where] = word[where].swapcase()
    pad = draw(st.sampled_from(["", " ", "  ", "\t", "\n"]))
    return pad + "".join(word) + draw(st.sampled_from(["", " ", "\n"]))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_edited_keys(), st.text(max_size=14)))
def test_the_daemons_near_miss_rule_is_the_schemas_pattern(key: str) -> None:
    """parse_job decides in code what the schema's pattern says; both agree on every key."""
    import re

    from daemon.job.keys import NEAR_MISS_PATTERN, is_near_miss

    assert is_near_miss(key) == (re.search(NEAR_MISS_PATTERN, key) is not None), repr(key)
