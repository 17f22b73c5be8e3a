"""A job file (`<name>.prompt.yaml`) read safely and validated into a `Job`.

Everything a person can get wrong is reported at once, naming the file, the key and the fix;
references are checked to be real images that stay inside the inbox.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode

from daemon import files, yaml_text
from daemon.errors import JobError, ReferenceMissing
from daemon.images import ImageFormat
from daemon.job.keys import ALIASES, KEYS, is_prose
from daemon.job.look import RATIO_PATTERN
from daemon.job.names import job_name, sibling_references
from daemon.job.plain_yaml import load_plain_yaml
from daemon.job.problems import Problems
from daemon.job.references import check_references, join_references
from daemon.job.values import CHECKS, HAS_TEXT, BadValue, kind_of
from daemon.suggest import did_you_mean, unknown_key_message

MAX_JOB_BYTES = 1024 * 1024
_ASPECT_RATIO = re.compile(RATIO_PATTERN)


class PromptSource(enum.Enum):
    """Where a job's prompt came from: written to the result sidecar as `prompt_source`."""

    PROMPT_KEY = "prompt-key"
    """The `prompt:` key of a job mapping."""

    YAML_STRING = "yaml-string"
    """The file is one YAML string (a bare prompt, or a quoted or block one)."""

    WHOLE_FILE = "whole-file"
    """The file reads as `Key: value` lines none of which is a job key: its whole text."""


@dataclass(frozen=True, slots=True)
class Job:
    path: Path  # the job file where it is now
    name: str  # file name minus ".prompt.yaml"
    prompt: str  # exactly as written (never stripped or rewritten)
    refs: tuple[Path, ...]  # absolute paths of reference images, in order
    siblings: tuple[Path, ...]  # sibling references that travel with the job (empty with `refs`)
    out: str | None
    timeout_sec: float | None
    model: str | None
    format: ImageFormat | None
    prompt_source: PromptSource = PromptSource.PROMPT_KEY
    transparent: bool = False  # ask the image tool for a transparent background
    aspect: str | None = None  # as written: square, portrait, landscape or W:H
    variants: int = 1  # how many images the job must yield, over as many codex runs as it takes


def parse_job(path: Path, *, inbox: Path) -> Job:
    """Read and validate the job file at `path`; raises JobError or ReferenceMissing.

    References are resolved against the job file's folder and must stay inside `inbox`.
    """
    label = path.name
    text = _read_text(path, inbox)
    node, data = load_plain_yaml(text, label)
    fields = _validate(node, data, text, label)
    name = job_name(path)
    if fields["refs"] is None:
        siblings = tuple(Path(os.path.abspath(p)) for p in sibling_references(path))
        named = [(p.name, p) for p in siblings]
    else:
        siblings = ()
        named = join_references(fields["refs"], path)
    try:
        refs = check_references(named, inbox, label)
    except ReferenceMissing as missing:
        # The job itself is fine: its error sidecar shows its prompt and references.
        missing.prompt = fields["prompt"]
        missing.references = tuple(p for _, p in named)
        raise
    return Job(
        path=path,
        name=name,
        prompt=fields["prompt"],
        refs=refs,
        siblings=siblings,
        out=fields["out"],
        timeout_sec=fields["timeout_sec"],
        model=fields["model"],
        format=fields["format"],
        prompt_source=fields["prompt_source"],
        transparent=bool(fields["transparent"]),
        aspect=fields["aspect"],
        variants=fields["variants"] or 1,
    )


# --- reading ---------------------------------------------------------------------------------


def _read_text(path: Path, inbox: Path) -> str:
    """The file's text, refusing links out of the inbox, non-regular files, files over
    MAX_JOB_BYTES and non-UTF-8."""
    label = path.name
    if not files.inside(path, inbox):
        # The inbox may be a synced folder others write into: a link must not make the daemon
        # send a file from elsewhere to codex, into a sidecar or onto the gallery page.
        raise JobError(
            f"{label}: is a symbolic link to a file outside the inbox, so it is not read.",
            hint="Copy the job file into the inbox instead of linking to it.",
        )
    try:
        data = files.read_regular(path, limit=MAX_JOB_BYTES)
    except files.NotRegularFile:
        raise JobError(
            f"{label}: is not a regular file.", hint="Save the prompt as an ordinary text file."
        ) from None
    except OSError as e:
        raise JobError(
            f"{label}: cannot be read: {e.strerror}.",
            hint="Check that the file exists and that you may read it.",
        ) from e
    if len(data) > MAX_JOB_BYTES:
        raise _too_big(label, len(data))
    return _decode(data, label)


def _too_big(label: str, size: int) -> JobError:
    return JobError(
        f"{label}: is {size} bytes, over the limit of {MAX_JOB_BYTES} bytes (1 MiB) for a job "
        "file.",
        hint="Shorten the prompt; put reference images beside the job instead of inside it.",
    )


def _decode(data: bytes, label: str) -> str:
    try:
        return yaml_text.decode_utf8(data)
    except yaml_text.NotUtf8 as e:
        raise JobError(
            f"{label}: is not UTF-8 text: {e.place}.", hint="Save the file with the UTF-8 encoding."
        ) from e


def _validate(node: Node | None, data: Any, text: str, label: str) -> dict[str, Any]:
    """Every key's checked value (None when absent), or JobError listing every problem.

    `prompt_source` says where the prompt came from (a PromptSource).
    """
    problems = Problems(label)
    fields: dict[str, Any] = dict.fromkeys(KEYS)
    fields["prompt_source"] = PromptSource.PROMPT_KEY
    if isinstance(data, str):
        fields["prompt"] = _bare_prompt(node, data, text)
        fields["prompt_source"] = PromptSource.YAML_STRING
        if not HAS_TEXT.search(data):
            problems.add("the file holds no prompt text", "Write what the picture should show.")
    elif isinstance(node, MappingNode) and is_prose(node):
        fields["prompt"] = _whole_file_prompt(node, text)
        fields["prompt_source"] = PromptSource.WHOLE_FILE
    elif isinstance(data, dict):
        _validate_mapping(_aspect_as_written(node, data), fields, problems)
    elif data is None:
        problems.add("the file is empty", "Write the prompt, or `prompt: <text>`, in the file.")
    else:
        problems.add(
            f"the whole file reads as {kind_of(data)}, not as a prompt",
            "Put the prompt in quotes, or write `prompt: <text>`.",
        )
    problems.raise_if_any()
    return fields


def _bare_prompt(node: Node | None, value: str, text: str) -> str:
    """The prompt of a file that is one YAML string.

    A plain (unquoted) scalar is taken exactly as written from its first to its last character:
    YAML would fold its line breaks into spaces, which rewrites a prompt typed as plain text.
    Only line endings become "\\n", as in every YAML string. Quoted and block scalars (`|`, `>`)
    follow YAML, since choosing one is asking for YAML's escapes and folding.
    """
    if node is None or getattr(node, "style", None) not in (None, ""):
        return value
    raw = text[node.start_mark.index : node.end_mark.index]
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def _whole_file_prompt(node: MappingNode, text: str) -> str:
    """The text of a file of `Key: value` lines that is no job mapping: its prompt, as written.

    Kept as the bare-prompt rule keeps a plain string: from the first key to the end of the last
    value (comments and blank lines around it left out), only line endings made "\\n".
    """
    raw = text[node.start_mark.index : _end_index(node)].rstrip()
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def _end_index(node: Node) -> int:
    """Where a node's own text ends: a block collection's end mark lies past what follows it."""
    if isinstance(node, CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _end_index(last[1] if isinstance(last, tuple) else last)
    return int(node.end_mark.index)


def _aspect_as_written(node: Node | None, data: dict[Any, Any]) -> dict[Any, Any]:
    """`data` with a plain `aspect: 16:9` as the text written: YAML 1.1 reads it as the
    base-60 number 969, YAML 1.2 (and so an editor checking the schema) as the text."""
    if not isinstance(node, MappingNode) or isinstance(data.get("aspect"), (str, bool)):
        return data
    for key_node, value_node in node.value:
        plain = isinstance(value_node, ScalarNode) and not value_node.style
        if key_node.value == "aspect" and plain and _ASPECT_RATIO.search(value_node.value):
            return {**data, "aspect": value_node.value}
    return data


def _validate_mapping(data: dict[Any, Any], fields: dict[str, Any], problems: Problems) -> None:
    guesses = set()
    for key in data:
        if not isinstance(key, str) or key not in KEYS:
            shown = str(key)
            guess = did_you_mean(shown, KEYS, aliases=ALIASES)
            guesses.add(guess)
            fix = f"Rename `{shown}` to `{guess}`." if guess else f"Remove `{shown}`."
            problems.add(unknown_key_message(shown, KEYS, guess), fix)
    if "prompt" not in data and "prompt" not in guesses:  # a misspelt prompt is reported once
        problems.add(
            "the key `prompt` is missing",
            "Add `prompt: <what the picture shows>`; for text of your own with `Key:` words in "
            "it, write `prompt: |` and the text indented on the lines below.",
        )
    for key, check in CHECKS.items():
        if key in data:
            try:
                fields[key] = check(data[key])
            except BadValue as bad:
                problems.add(f"`{key}` {bad.what}", bad.fix)
    if fields["transparent"] and fields["format"] is ImageFormat.JPEG:
        problems.add(
            "`transparent: true` cannot be kept with `format: jpeg`: JPEG has no alpha channel",
            "Write `format: png` or `format: webp`, or remove `transparent: true`.",
        )
