"""A job file (`<name>.prompt.yaml`) read safely and validated into a `Job`.

Everything a person can get wrong is reported at once, naming the file, the key and the fix;
references are checked to be real images that stay inside the inbox.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from daemon import files as disk
from daemon.errors import JobError, ReferenceMissing
from daemon.images import (
    IMAGE_EXTENSIONS,
    MAX_REFERENCE_BYTES,
    ImageFormat,
    ImageTooLarge,
    inspect,
    sniff_format,
)
from daemon.job.look import ASPECT_FIX, RATIO_PATTERN, BadAspect, parse_aspect
from daemon.suggest import did_you_mean, unknown_key_message

try:  # libyaml's parser is several times faster; the pure-Python one behaves the same.
    from yaml._yaml import CParser

    _PARSER_BASES: tuple[type, ...] = (CParser,)

    def _init_parser(loader: Any, stream: str) -> None:
        CParser.__init__(loader, stream)

except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    _PARSER_BASES = (Reader, Scanner, Parser)

    def _init_parser(loader: Any, stream: str) -> None:
        Reader.__init__(loader, stream)
        Scanner.__init__(loader)
        Parser.__init__(loader)


MAX_JOB_BYTES = 1024 * 1024
JOB_SUFFIX = ".prompt.yaml"
KEYS = (
    "prompt",
    "refs",
    "out",
    "timeout_sec",
    "model",
    "format",
    "transparent",
    "aspect",
    "variants",
)
MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200  # leaves room for "-12.result.yaml" under the usual 255-byte name limit
MAX_TIMEOUT_SEC = 86_400.0
MAX_DEPTH = 16  # a job file nests two levels; anything deeper is not a job file
MAX_VARIANTS = 8

# Words people write for a key, mapped to the key they mean.
_ALIASES = {
    "image": "refs",
    "images": "refs",
    "reference": "refs",
    "references": "refs",
    "output": "out",
    "name": "out",
    "timeout": "timeout_sec",
    "text": "prompt",
    "aspect_ratio": "aspect",
    "transparency": "transparent",
}
# The same patterns as job.schema.json, used with re.search so both agree on every string.
_HAS_TEXT = re.compile(r"\S")
_OUT_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")
_MODEL_FIRST = re.compile(r"^[A-Za-z0-9]")
_MODEL_FORBIDDEN = re.compile(r"[^A-Za-z0-9._:@/+-]")
_ASPECT_RATIO = re.compile(RATIO_PATTERN)


def _near_miss_pattern() -> str:
    """A regular expression for keys that are job keys or near misses of one.

    A near miss is a job key in any case, or one typo away from one (a letter missing, added,
    changed, or two swapped), or one of the words people write for a key, in lower case. The
    same pattern is in job.schema.json (propertyNames of a whole-file prompt), so the schema
    and the daemon agree on which files are prompts written as `Key: value` lines.
    """

    def exact(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)

    alternatives = []
    for key in KEYS:
        n = len(key)
        alternatives.append(exact(key))
        alternatives += [exact(key[:i]) + ".?" + exact(key[i + 1 :]) for i in range(n)]
        alternatives += [exact(key[:i]) + "." + exact(key[i:]) for i in range(n + 1)]
        alternatives += [
            exact(key[:i]) + exact(key[i + 1]) + exact(key[i]) + exact(key[i + 2 :])
            for i in range(n - 1)
        ]
    alternatives += [re.escape(alias) for alias in sorted(_ALIASES)]
    return r"^\s*(?:" + "|".join(dict.fromkeys(alternatives)) + r")\s*$"


# The schema's copy of the rule; the daemon checks keys with is_near_miss, the same rule in
# code: compiling this 6 KB pattern cost every command ~45 ms at start-up.
NEAR_MISS_PATTERN = _near_miss_pattern()


def is_near_miss(key: str) -> bool:
    """Whether `key` is a job key or a near miss of one (what NEAR_MISS_PATTERN matches)."""
    word = key.strip()
    if word in _ALIASES:
        return True
    return any(_one_typo_from(word, target) for target in KEYS)


def _one_typo_from(word: str, key: str) -> bool:
    """`word` is `key` (letters in any case), or `key` with one character changed, removed or
    added, or two neighbours swapped; a changed or added character is never a line break."""

    def same(c: str, k: str) -> bool:
        return c == k or (k.isalpha() and c in (k, k.upper()))

    if len(word) == len(key):
        differ = [i for i, (c, k) in enumerate(zip(word, key, strict=True)) if not same(c, k)]
        if len(differ) <= 1:
            return not differ or word[differ[0]] != "\n"
        i, j = differ[0], differ[-1]
        return len(differ) == 2 and j == i + 1 and same(word[i], key[j]) and same(word[j], key[i])
    if len(word) == len(key) - 1:  # one removed
        return any(all(map(same, word, key[:i] + key[i + 1 :])) for i in range(len(key)))
    if len(word) == len(key) + 1:  # one added
        return any(
            word[i] != "\n" and all(map(same, word[:i] + word[i + 1 :], key))
            for i in range(len(word))
        )
    return False


_FORMATS = {
    "png": ImageFormat.PNG,
    "jpeg": ImageFormat.JPEG,
    "jpg": ImageFormat.JPEG,
    "webp": ImageFormat.WEBP,
}


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


def is_job_file(name: str) -> bool:
    """True for `<name>.prompt.yaml` with a non-empty name that is not a dotfile."""
    return name.endswith(JOB_SUFFIX) and len(name) > len(JOB_SUFFIX) and not name.startswith(".")


def job_name(path: Path) -> str:
    """The job's name: the file name without `.prompt.yaml`."""
    if not is_job_file(path.name):
        raise ValueError(f"{path.name!r} is not a job file name (<name>{JOB_SUFFIX})")
    return path.name[: -len(JOB_SUFFIX)]


def sibling_references(job_path: Path) -> list[Path]:
    """`<name>.png|jpg|jpeg|webp` and `<name>.<anything>.<ext>` beside the job, sorted by name."""
    name = job_name(job_path)
    try:
        entries = os.listdir(job_path.parent)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        stem, dot, ext = entry.rpartition(".")
        ours = stem == name or stem.startswith(name + ".")
        if dot and ours and ext.lower() in IMAGE_EXTENSIONS:
            found.append(entry)
    return [job_path.parent / entry for entry in sorted(found)]


def load_job_schema() -> dict[str, Any]:
    """The JSON Schema of job files shipped with the package (daemon/job/job.schema.json)."""
    import json
    from importlib import resources

    text = resources.files("daemon.job").joinpath("job.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_job(path: Path, *, inbox: Path) -> Job:
    """Read and validate the job file at `path`; raises JobError or ReferenceMissing.

    References are resolved against the job file's folder and must stay inside `inbox`.
    """
    label = path.name
    text = _read_text(path, inbox)
    node, data = _load_yaml(text, label)
    fields = _validate(node, data, text, label)
    name = job_name(path)
    if fields["refs"] is None:
        siblings = tuple(Path(os.path.abspath(p)) for p in sibling_references(path))
        named = [(p.name, p) for p in siblings]
    else:
        siblings = ()
        named = _join_refs(fields["refs"], path)
    try:
        refs = _check_references(named, inbox, label)
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
    if not disk.inside(path, inbox):
        # The inbox may be a synced folder others write into: a link must not make the daemon
        # send a file from elsewhere to codex, into a sidecar or onto the gallery page.
        raise JobError(
            f"{label}: is a symbolic link to a file outside the inbox, so it is not read.",
            hint="Copy the job file into the inbox instead of linking to it.",
        )
    try:
        data = disk.read_regular(path, limit=MAX_JOB_BYTES)
    except disk.NotRegularFile:
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
        # utf-8-sig drops a byte-order mark, which some editors write.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[line_start : e.start].decode("utf-8", errors="replace")) + 1
        raise JobError(
            f"{label}: is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, "
            f"column {column} (byte offset {e.start}).",
            hint="Save the file with the UTF-8 encoding.",
        ) from e


# --- safe YAML -------------------------------------------------------------------------------


class _Refused(yaml.MarkedYAMLError):
    """A YAML feature job files do not allow (tags, anchors, aliases, duplicate keys)."""


class _StrictComposer(Composer):
    """Builds nodes like PyYAML but refuses tags, anchors and aliases, and deep nesting.

    Refusing anchors outright is what stops alias bombs ("billion laughs"): a job file has no
    use for them, so nothing is ever expanded.
    """

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # the parser beside provides it
        if isinstance(event, AliasEvent) or event.anchor is not None:
            raise _Refused(
                None,
                None,
                "anchors (&name) and aliases (*name) are not allowed in a job file",
                event.start_mark,
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise _Refused(
                None, None, f"the tag {shown} is not allowed in a job file", event.start_mark
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(
                None, None, f"values nested more than {MAX_DEPTH} levels deep", event.start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _StrictConstructor(SafeConstructor):
    """SafeConstructor that refuses duplicate keys and non-scalar keys (PyYAML keeps the last)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Refused(None, None, "a key must be a plain word", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in mapping:
                raise _Refused(
                    None,
                    None,
                    f"the key {key!r} appears twice (first at line {first_line[key]})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


class _JobLoader(_StrictComposer, *_PARSER_BASES, _StrictConstructor, Resolver):  # type: ignore[misc]
    def __init__(self, stream: str) -> None:
        _init_parser(self, stream)
        _StrictComposer.__init__(self)
        _StrictConstructor.__init__(self)
        Resolver.__init__(self)


# Dates stay text (no key wants one, and `prompt: 2024-13-45` must not crash), and `<<` is an
# ordinary, unknown key rather than a merge.
_JobLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:merge")
    ]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str, label: str) -> tuple[Node | None, Any]:
    """The root node and its Python value, or JobError with line and column."""
    loader = _JobLoader(text)
    try:
        node = loader.get_single_node()
        # Prose written as `Key: value` lines is never built into a mapping: its text is the
        # prompt, so a key it repeats is no mistake.
        data = None if node is None or _is_prose(node) else loader.construct_document(node)
    except _Refused as e:
        raise JobError(
            f"{label}: {_where(e, text)}: {e.problem}.",
            hint="Job files use plain YAML: write each key once, without "
            "&anchors, *aliases or !tags.",
        ) from e
    except yaml.YAMLError as e:
        raise JobError(
            f"{label}: YAML syntax error at {_where(e, text)}: {_explain(e)}.",
            hint="Fix the YAML there. A prompt that contains ': ' or starts with "
            "a quote, '-', '[' or '{' must be quoted, or written as "
            "`prompt: |` followed by the text indented on the next lines.",
            detail=str(e),
        ) from e
    finally:
        loader.dispose()
    return node, data


def _explain(error: yaml.YAMLError) -> str:
    """PyYAML's problem on one line, with what it was reading and where that started."""
    if isinstance(error, ReaderError) and isinstance(error.character, str):
        return f"the character U+{ord(error.character):04X} is not allowed ({error.reason})"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and mark is not None:
        return f"{problem} ({context} at line {mark.line + 1}, column {mark.column + 1})"
    return f"{problem} ({context})" if context else problem


def _where(error: yaml.YAMLError, text: str) -> str:
    """`line L, column C` of the error (a reader error gives only its character offset)."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(error, "position", None)
    if not isinstance(position, int):
        return "an unknown place"
    line_start = text.rfind("\n", 0, position) + 1
    return f"line {text.count(chr(10), 0, position) + 1}, column {position - line_start + 1}"


# --- validation ------------------------------------------------------------------------------


class _Problems:
    """Collects what is wrong with a job file, then raises one error listing all of it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[tuple[str, str]] = []

    def add(self, what: str, fix: str) -> None:
        self.items.append((what, fix))

    def raise_if_any(self, error: type[JobError] | type[ReferenceMissing] = JobError) -> None:
        if not self.items:
            return
        whats = [what for what, _ in self.items]
        fixes = list(dict.fromkeys(fix for _, fix in self.items))
        if len(whats) == 1:
            message = f"{self.label}: {whats[0]}."
        else:
            message = f"{self.label} has {len(whats)} problems: " + "; ".join(whats) + "."
        raise error(message, hint=" ".join(fixes))


def _validate(node: Node | None, data: Any, text: str, label: str) -> dict[str, Any]:
    """Every key's checked value (None when absent), or JobError listing every problem.

    `prompt_source` says where the prompt came from (a PromptSource).
    """
    problems = _Problems(label)
    fields: dict[str, Any] = dict.fromkeys(KEYS)
    fields["prompt_source"] = PromptSource.PROMPT_KEY
    if isinstance(data, str):
        fields["prompt"] = _bare_prompt(node, data, text)
        fields["prompt_source"] = PromptSource.YAML_STRING
        if not _HAS_TEXT.search(data):
            problems.add("the file holds no prompt text", "Write what the picture should show.")
    elif isinstance(node, MappingNode) and _is_prose(node):
        fields["prompt"] = _whole_file_prompt(node, text)
        fields["prompt_source"] = PromptSource.WHOLE_FILE
    elif isinstance(data, dict):
        _validate_mapping(_aspect_as_written(node, data), fields, problems)
    elif data is None:
        problems.add("the file is empty", "Write the prompt, or `prompt: <text>`, in the file.")
    else:
        problems.add(
            f"the whole file reads as {_kind(data)}, not as a prompt",
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


def _is_prose(node: Node) -> bool:
    """A mapping none of whose keys, at any depth, is a job key or a near miss of one."""
    return isinstance(node, MappingNode) and bool(node.value) and not _names_a_job_key(node)


def _names_a_job_key(node: Node) -> bool:
    """True when a key anywhere in the document is a job key or a near miss of one."""
    if isinstance(node, MappingNode):
        return any(
            (isinstance(k, ScalarNode) and is_near_miss(str(k.value)))
            or _names_a_job_key(k)
            or _names_a_job_key(v)
            for k, v in node.value
        )
    if isinstance(node, SequenceNode):
        return any(_names_a_job_key(item) for item in node.value)
    return False


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


def _validate_mapping(data: dict[Any, Any], fields: dict[str, Any], problems: _Problems) -> None:
    guesses = set()
    for key in data:
        if not isinstance(key, str) or key not in KEYS:
            shown = str(key)
            guess = did_you_mean(shown, KEYS, aliases=_ALIASES)
            guesses.add(guess)
            fix = f"Rename `{shown}` to `{guess}`." if guess else f"Remove `{shown}`."
            problems.add(unknown_key_message(shown, KEYS, guess), fix)
    if "prompt" not in data and "prompt" not in guesses:  # a misspelt prompt is reported once
        problems.add(
            "the key `prompt` is missing",
            "Add `prompt: <what the picture shows>`; for text of your own with `Key:` words in "
            "it, write `prompt: |` and the text indented on the lines below.",
        )
    for key, check in _CHECKS.items():
        if key in data:
            try:
                fields[key] = check(data[key])
            except _Bad as bad:
                problems.add(f"`{key}` {bad.what}", bad.fix)
    if fields["transparent"] and fields["format"] is ImageFormat.JPEG:
        problems.add(
            "`transparent: true` cannot be kept with `format: jpeg`: JPEG has no alpha channel",
            "Write `format: png` or `format: webp`, or remove `transparent: true`.",
        )


class _Bad(Exception):
    """One key's value is wrong: what is wrong and how to fix it."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


def _kind(value: Any) -> str:
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
        raise _Bad(
            f"must be text, not {_kind(value)}", 'Put the prompt in quotes, e.g. `prompt: "..."`.'
        )
    if not _HAS_TEXT.search(value):
        raise _Bad("is empty", "Write what the picture should show after `prompt:`.")
    return value


def _check_refs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(
            f"must be a list of image paths, not {_kind(value)}",
            "Write `refs: [photo.png]`, or `refs: []` for no reference images.",
        )
    for item in value:
        if not isinstance(item, str) or not _HAS_TEXT.search(item):
            raise _Bad(
                f"must list image paths as text, not {_kind(item)}",
                "Write each reference as a file name, e.g. `refs: [photo.png]`.",
            )
        if item.startswith(("/", "~")):
            raise _Bad(
                f"names {item!r}, which is not relative to the job file",
                "Put the image in the inbox and name it relative to the job file.",
            )
    return tuple(value)


def _check_out(value: Any) -> str:
    fix = "Write a plain file name without folders or extension, e.g. `out: sunset`."
    if not isinstance(value, str):
        raise _Bad(f"must be a file name, not {_kind(value)}", fix)
    if not value:
        raise _Bad("is empty", fix)
    if _OUT_FORBIDDEN.search(value):
        raise _Bad(f"{value!r} contains a path separator or a control character", fix)
    if value.startswith("."):
        raise _Bad(f"{value!r} starts with a dot, which would hide the file", fix)
    if len(value) > MAX_NAME_CHARS or len(value.encode()) > MAX_NAME_BYTES:
        raise _Bad(f"is longer than {MAX_NAME_CHARS} characters ({MAX_NAME_BYTES} bytes)", fix)
    # The extension follows the image's real format: `out: sunset.png` means "sunset".
    stem, dot, ext = value.rpartition(".")
    return stem if dot and stem and ext.lower() in IMAGE_EXTENSIONS else value


def _check_timeout(value: Any) -> float:
    fix = "Write the number of seconds, e.g. `timeout_sec: 600`."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"must be a number of seconds, not {_kind(value)}", fix)
    if not 0 < value <= MAX_TIMEOUT_SEC:  # also refuses .nan and .inf
        raise _Bad(
            f"must be more than 0 and at most {MAX_TIMEOUT_SEC:.0f} seconds, not {value}", fix
        )
    return float(value)


def _check_model(value: Any) -> str:
    fix = "Write a model name such as `model: gpt-5.4`, or leave the key out."
    if not isinstance(value, str):
        raise _Bad(f"must be a model name, not {_kind(value)}", fix)
    if not value:
        raise _Bad("is empty", fix)
    bad = not _MODEL_FIRST.search(value) or _MODEL_FORBIDDEN.search(value)
    if bad or len(value) > MAX_NAME_CHARS:
        raise _Bad(
            f"{value!r} is not a model name (letters, digits and . _ : @ / + - only, "
            "starting with a letter or digit)",
            fix,
        )
    return value


def _check_format(value: Any) -> ImageFormat:
    if not isinstance(value, str) or value not in _FORMATS:
        shown = repr(value) if isinstance(value, str) else _kind(value)
        raise _Bad(
            f"must be png, jpeg (or jpg) or webp, not {shown}",
            "Write `format: png`, `format: jpeg` or `format: webp`.",
        )
    return _FORMATS[value]


def _check_transparent(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(
            f"must be true or false, not {_kind(value)}",
            "Write `transparent: true` for a transparent background, or leave the key out.",
        )
    return value


def _check_aspect(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a shape or a width:height ratio, not {_kind(value)}", ASPECT_FIX)
    try:
        return parse_aspect(value).asked
    except BadAspect as bad:
        raise _Bad(str(bad), ASPECT_FIX) from None


def _check_variants(value: Any) -> int:
    fix = f"Write how many images to make, from 1 to {MAX_VARIANTS}, e.g. `variants: 3`."
    # JSON Schema's "integer" takes 3.0 too; the daemon agrees with it.
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise _Bad(f"must be a whole number, not {_kind(value)}", fix)
    if not 1 <= value <= MAX_VARIANTS:
        raise _Bad(f"must be from 1 to {MAX_VARIANTS}, not {value:g}", fix)
    return int(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
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


# --- references ------------------------------------------------------------------------------


def _join_refs(names: tuple[str, ...], job_path: Path) -> list[tuple[str, Path]]:
    """Each explicit reference as written, with its absolute path relative to the job's folder."""
    folder = Path(os.path.abspath(job_path.parent))
    return [(name, Path(os.path.normpath(folder / name))) for name in names]


def _check_references(refs: list[tuple[str, Path]], inbox: Path, label: str) -> tuple[Path, ...]:
    """The absolute paths; JobError if one leads out of the inbox, else ReferenceMissing."""
    inbox_real = Path(os.path.realpath(inbox))
    escapes, missing = _Problems(label), _Problems(label)
    for shown, path in refs:
        # realpath, not resolve(): it never raises, a symlink loop just fails the check below.
        if not Path(os.path.realpath(path)).is_relative_to(inbox_real):
            how = "'..'" if ".." in PurePosixPath(shown).parts else "a symbolic link"
            escapes.add(
                f"the reference {shown!r} leads out of the inbox through {how}",
                "Copy the image into the inbox and name it relative to the job file.",
            )
        else:
            _check_image(path, shown, missing)
    escapes.raise_if_any(JobError)
    missing.raise_if_any(ReferenceMissing)
    return tuple(path for _, path in refs)


def _check_image(path: Path, shown: str, problems: _Problems) -> None:
    """Adds a problem unless `path` is a regular file holding a whole PNG, JPEG or WebP image.

    The image is decoded, not only sniffed: a truncated file would otherwise reach codex and
    come back as a puzzling "no image".
    """
    try:
        data = disk.read_regular(path, limit=MAX_REFERENCE_BYTES)
    except FileNotFoundError:
        problems.add(
            f"the reference {shown!r} does not exist",
            "Put the image next to the job file, or fix its name under `refs`.",
        )
        return
    except (disk.NotRegularFile, IsADirectoryError):
        what = "a folder" if path.is_dir() else "not a regular file (a pipe or a device)"
        problems.add(
            f"the reference {shown!r} is {what}, not an image", "Name an image file under `refs`."
        )
        return
    except OSError as e:
        problems.add(
            f"the reference {shown!r} cannot be read: {e.strerror}",
            "Check that you may read the image.",
        )
        return
    if len(data) > MAX_REFERENCE_BYTES:
        problems.add(
            f"the reference {shown!r} is over {MAX_REFERENCE_BYTES >> 20} MiB",
            "Use a smaller reference image.",
        )
        return
    if sniff_format(data[:16]) is None:
        problems.add(
            f"the reference {shown!r} is not a PNG, JPEG or WebP image",
            "Use a PNG, JPEG or WebP image as the reference.",
        )
        return
    try:
        whole = inspect(data, decode=True) is not None
    except ImageTooLarge as error:
        problems.add(f"the reference {shown!r} {error}", "Use a smaller reference image.")
        return
    if not whole:
        problems.add(
            f"the reference {shown!r} does not decode as an image (it may be cut short)",
            "Save or copy the reference image again, whole, and then the job.",
        )
