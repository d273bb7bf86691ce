"""Glob matching for protocol file lists (`fixed.files`, `variable.files`).

Paths and patterns are POSIX and relative (to the experiment directory). The dialect:

* ``*`` and ``?`` match within one path component (never ``/``); ``[abc]`` / ``[!abc]`` classes;
* ``**`` as a whole component matches zero or more directories (``src/**/*.py`` matches
  ``src/a.py`` and ``src/x/y/a.py``; ``**/*.py`` matches ``a.py``); a trailing ``**`` matches
  everything below (``src/**``);
* a pattern naming a directory matches everything under it: ``data/`` matches only paths below
  ``data``, while a pattern whose last component has no wildcard (``data``, ``conf/base``)
  matches that path itself and everything below it;
* a leading ``./`` (in patterns and paths) is ignored; ``.`` alone matches every path.

Python 3.11 has no ``PurePath.full_match``, hence the translation to one regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

__all__ = ["compile_globs", "match_path"]

_WILDCARDS = frozenset("*?[")
_EVERYTHING = ".+"


def _normalize(path: str) -> str:
    """Drop leading ``./`` and collapse repeated slashes."""
    path = re.sub(r"/{2,}", "/", path)
    while path.startswith("./"):
        path = path[2:]
    return path


def _class_end(segment: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1 if unclosed."""
    i = start + 1
    if i < len(segment) and segment[i] in "!^":
        i += 1
    if i < len(segment) and segment[i] == "]":
        i += 1
    end = segment.find("]", i)
    return end


def _translate_class(body: str) -> str:
    """Regex for a ``[...]`` class body; classes never match ``/``."""
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    body = body.replace("\\", "\\\\").replace("[", "\\[")
    return f"[^/{body}]" if negate else f"(?!/)[{body}]"


def _translate_segment(segment: str) -> str:
    """Regex for one path component that is not ``**``."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(segment, i)) > 0:
            out.append(_translate_class(segment[i + 1 : end]))
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _pattern_regex(pattern: str) -> str | None:
    """Regex source for one pattern, or None for an empty pattern (which matches nothing)."""
    pat = _normalize(pattern)
    dir_only = pat.endswith("/")
    segments = [s for s in pat.strip("/").split("/") if s not in ("", ".")]
    if not segments:
        return _EVERYTHING if pattern.strip() else None
    parts: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(_EVERYTHING if last else "(?:[^/]+/)*")
        else:
            parts.append(_translate_segment(segment) + ("" if last else "/"))
    body = "".join(parts)
    if dir_only:
        return body + "/.+"
    if not _WILDCARDS.intersection(segments[-1]):
        return body + "(?:/.+)?"
    return body


def compile_globs(patterns: Sequence[str] | str) -> Callable[[str], bool]:
    """Compile globs into one predicate over relative POSIX paths.

    Args:
        patterns: Glob patterns in the dialect described in this module's docstring; a single
            string is treated as a one-element list.

    Returns:
        A function that is True for a path matched by at least one pattern.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    sources = [src for src in (_pattern_regex(p) for p in patterns) if src is not None]
    if not sources:
        return lambda _path: False
    regex = re.compile("|".join(f"(?:{src})" for src in sources), re.DOTALL)

    def matches(path: str) -> bool:
        return regex.fullmatch(_normalize(path)) is not None

    return matches


@lru_cache(maxsize=256)
def _cached(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    return compile_globs(patterns)


def match_path(path: str, patterns: Sequence[str]) -> bool:
    """Whether a relative POSIX path matches any of the glob patterns.

    Args:
        path: A relative POSIX path such as ``src/model.py``.
        patterns: Glob patterns (see the module docstring).

    Returns:
        True if at least one pattern matches.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    return _cached(tuple(patterns))(path)
