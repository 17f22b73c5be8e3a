"""The keys of a job file, the words people write for them, and what counts as a near miss.

A file none of whose keys is a job key or a near miss of one is a prompt written as `Key: value`
lines; job.schema.json carries the same rule as a pattern (NEAR_MISS_PATTERN).
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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

# Words people write for a key, mapped to the key they mean.
ALIASES = {
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
    alternatives += [re.escape(alias) for alias in sorted(ALIASES)]
    return r"^\s*(?:" + "|".join(dict.fromkeys(alternatives)) + r")\s*$"


# The schema's copy of the rule; the daemon checks keys with is_near_miss, the same rule in
# code: compiling this 6 KB pattern cost every command ~45 ms at start-up.
NEAR_MISS_PATTERN = _near_miss_pattern()


def is_near_miss(key: str) -> bool:
    """Whether `key` is a job key or a near miss of one (what NEAR_MISS_PATTERN matches)."""
    word = key.strip()
    if word in ALIASES:
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


def is_prose(node: Node) -> bool:
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
