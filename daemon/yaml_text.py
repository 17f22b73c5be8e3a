"""YAML text as every reader here takes it: one safe loader, and where in the text a problem lies.

libyaml's parser is several times faster than the pure-Python one and gives the same results, so
it is used whenever PyYAML was built with it. Messages name a line and a column, counted from 1.
"""

from __future__ import annotations

from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _SafeLoader
    from yaml._yaml import CParser

    PARSER_BASES: tuple[type, ...] = (CParser,)
    """The parser classes a loader with its own composer and constructor builds on."""

    def init_parser(loader: Any, stream: str) -> None:
        """Set up the parser part of a loader built on PARSER_BASES."""
        CParser.__init__(loader, stream)

except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    PARSER_BASES = (Reader, Scanner, Parser)

    def init_parser(loader: Any, stream: str) -> None:
        """Set up the parser part of a loader built on PARSER_BASES."""
        Reader.__init__(loader, stream)
        Scanner.__init__(loader)
        Parser.__init__(loader)


class SafeLoader(_SafeLoader):
    """PyYAML's safe loader, libyaml's when PyYAML was built with it."""


def load(data: bytes | str) -> Any:
    """The one document in `data`, read with the safe loader; raises yaml.YAMLError."""
    return yaml.load(data, Loader=SafeLoader)


def error_place(error: yaml.YAMLError, text: str) -> str | None:
    """`line L, column C` of a YAML error in `text`, or None when it tells no place.

    A reader error (a control character) gives only its character offset, not a mark.
    """
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(error, "position", None)
    if not isinstance(position, int):
        return None
    line_start = text.rfind("\n", 0, position) + 1
    return f"line {text.count(chr(10), 0, position) + 1}, column {position - line_start + 1}"


class NotUtf8(ValueError):
    """The bytes are not UTF-8 text; `place` says which byte and where it is."""

    def __init__(self, data: bytes, error: UnicodeDecodeError) -> None:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8", errors="replace")) + 1
        self.place = (
            f"byte 0x{data[error.start]:02x} at line {line}, column {column} "
            f"(byte offset {error.start})"
        )
        super().__init__(self.place)


def decode_utf8(data: bytes) -> str:
    """The text of UTF-8 bytes, without the byte-order mark some editors write; raises NotUtf8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise NotUtf8(data, error) from error
