"""The plain YAML job files are written in: no tags, anchors, aliases or repeated keys.

Read into nodes first, so a prompt written as `Key: value` lines keeps its text as written.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from daemon import yaml_text
from daemon.errors import JobError
from daemon.job.keys import is_prose

MAX_DEPTH = 16  # a job file nests two levels; anything deeper is not a job file


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


class _JobLoader(_StrictComposer, *yaml_text.PARSER_BASES, _StrictConstructor, Resolver):  # type: ignore[misc]
    def __init__(self, stream: str) -> None:
        yaml_text.init_parser(self, stream)
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


def load_plain_yaml(text: str, label: str) -> tuple[Node | None, Any]:
    """The root node and its Python value, or JobError with line and column.

    Prose written as `Key: value` lines is never built into a mapping (its value is None): its
    text is the prompt, so a key it repeats is no mistake.
    """
    loader = _JobLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None or is_prose(node) else loader.construct_document(node)
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


def _where(error: yaml.YAMLError, text: str) -> str:
    return yaml_text.error_place(error, text) or "an unknown place"


def _explain(error: yaml.YAMLError) -> str:
    """PyYAML's problem on one line, with what it was reading and where that started."""
    if isinstance(error, ReaderError) and isinstance(error.character, str):
        return f"the character U+{ord(error.character):04X} is not allowed ({error.reason})"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and mark is not None:
        return f"{problem} ({context} at line {mark.line + 1}, column {mark.column + 1})"
    return f"{problem} ({context})" if context else problem
