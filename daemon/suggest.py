"""Did-you-mean suggestions for misspelt keys in job files and the configuration."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def did_you_mean(
    word: str, choices: Iterable[str], *, aliases: Mapping[str, str] | None = None
) -> str | None:
    """The known choice `word` most likely stands for, or None when nothing is close enough.

    `aliases` maps words people commonly write (`images`) to the key they mean (`refs`); it is
    checked first because a synonym looks nothing like the key it stands for.
    """
    lowered = word.strip().lower()
    if aliases and lowered in aliases:
        return aliases[lowered]
    options = list(choices)
    for choice in options:
        if choice.lower() == lowered:
            return choice
    # difflib is only needed when a key is wrong: keep it off the start-up path.
    import difflib

    close = difflib.get_close_matches(lowered, options, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(key: str, choices: Iterable[str], suggestion: str | None) -> str:
    """`unknown key 'promt' (did you mean 'prompt'?)`, or the same with the known keys."""
    if suggestion is not None:
        return f"unknown key {key!r} (did you mean {suggestion!r}?)"
    known = ", ".join(sorted(choices))
    return f"unknown key {key!r} (known keys: {known})"
