"""Pull metric values out of the free-form text that training and evaluation commands print.

Accepted forms for a metric ``val_mse``, anywhere in a line:

* ``val_mse=0.12``, ``val_mse: 0.12``, ``val_mse = 1e-3`` (also ``'val_mse': 0.12`` as in a
  printed dict); the key must not be part of a longer identifier (``my_val_mse``,
  ``val_mse_std`` do not count); the LAST occurrence in the text wins;
* a JSON object on the LAST non-empty line (a log prefix before its ``{`` is allowed) with
  ``"val_mse": <number>`` at top level (booleans are not numbers); it wins over everything else.

Numbers are ints, floats, exponents, with an optional sign, and ``nan``/``inf``/``infinity``
(any case); they come back as ``float`` (nan/inf included: the caller decides).
"""

from __future__ import annotations

import json
import logging
import re

from spml.errors import MetricNotFound

logger = logging.getLogger(__name__)

# `(?!,\d)`: "1,234.5" is refused rather than read as 1.
# The atomic group keeps the regex from backtracking into a shorter number ("12,3" -> 1).
_NUMBER = (r"[-+]?(?:(?>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?!,\d)"
           r"|(?i:nan|inf(?:inity)?)(?!\w))")
# A key may not continue an identifier on its left (its right side is the `:`/`=` anyway).
_KEY_START = r"(?<![\w.\-/])"
_GENERIC_KEY = r"[A-Za-z_][\w.\-/]*"
_SUMMARY_START = re.compile(r"^[ \t]*-{3}[ \t]*$", re.MULTILINE)
_SUMMARY_PAIR = re.compile(
    _KEY_START + r"(?P<q>['\"]?)(?P<key>" + _GENERIC_KEY + r")(?P=q)[ \t]*[:=][ \t]*"
    r"(?P<num>" + _NUMBER + r")"
)
ACCEPTED_FORMATS = "`{m}=<number>`, `{m}: <number>`, or a JSON object on the last line"


def find_metric(text: str, metric: str) -> float | None:
    """Return the value of ``metric`` in ``text``, or None if it is not there.

    Args:
        text: Command output (stdout, possibly with stderr mixed in).
        metric: The key, e.g. ``val_mse`` or ``eval/acc``.

    Returns:
        The value from a JSON object on the last non-empty line if it has the key, else the
        last ``key=value`` / ``key: value`` occurrence, else None.
    """
    from_json = _from_last_line_json(text, metric)
    if from_json is not None:
        return from_json
    last = None
    for match in _pair_pattern(metric).finditer(text):
        last = match
    return float(last.group("num")) if last is not None else None


def parse_metric(text: str, metric: str, *, where: str = "command output") -> float:
    """Return the value of ``metric`` in ``text``; raise if it is not there.

    Args:
        text: Command output to search.
        metric: The key, e.g. ``val_mse``.
        where: Where the text came from, for the error message (e.g. a log path).

    Returns:
        The metric value as a float (may be nan or inf).

    Raises:
        MetricNotFound: No accepted form of ``metric`` with a numeric value is in ``text``;
            the message names the accepted formats and quotes the last 3 non-empty lines.
    """
    value = find_metric(text, metric)
    if value is not None:
        return value
    lines = [line.strip() for line in text.splitlines() if line.strip()][-3:]
    quoted = " | ".join(repr(_clip(line, 160)) for line in lines) or "(empty output)"
    hint = f" ({metric!r} is mentioned, but never with a numeric value)" if metric in text else ""
    raise MetricNotFound(
        f"metric {metric!r} must appear as {ACCEPTED_FORMATS.format(m=metric)}, got no "
        f"match{hint} ({where}; last lines: {quoted}). Make the command print e.g. "
        f"'{metric}: 0.123' at the end of its run."
    )


def parse_summary(text: str) -> dict[str, float]:
    """Return the numeric pairs of the last run-summary block (lines after the last ``---``).

    The block is karpathy/autoresearch style: a line ``---`` followed by ``key: value`` lines.
    Several ``key=value`` pairs on one line all count; for a repeated key the last value wins.

    Args:
        text: Command output.

    Returns:
        ``{key: value}`` for every numeric pair in the block; ``{}`` without a ``---`` line.
    """
    starts = list(_SUMMARY_START.finditer(text))
    if not starts:
        return {}
    return find_pairs(text[starts[-1].end() :])


def find_pairs(text: str) -> dict[str, float]:
    """Return every numeric ``key=value`` / ``key: value`` pair in ``text``.

    Keys are identifiers that may contain ``.``, ``-`` and ``/`` (``train/loss``) and may be
    quoted as in a printed dict; numbers follow the module's number rules.

    Args:
        text: Any text (one line or many).

    Returns:
        ``{key: value}`` in order of first appearance; for a repeated key the last value wins.
    """
    return {m.group("key"): float(m.group("num")) for m in _SUMMARY_PAIR.finditer(text)}


def _pair_pattern(metric: str) -> re.Pattern[str]:
    return re.compile(
        _KEY_START + r"(?P<q>['\"]?)" + re.escape(metric) + r"(?P=q)[ \t]*[:=][ \t]*"
        r"(?P<num>" + _NUMBER + r")"
    )


def _from_last_line_json(text: str, metric: str) -> float | None:
    last_line = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    brace = last_line.find("{")
    if brace < 0 or not last_line.endswith("}"):
        return None
    try:
        obj = json.loads(last_line[brace:])
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _clip(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
