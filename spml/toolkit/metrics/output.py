"""Pull metric values out of the free-form text that training and evaluation commands print.

Accepted forms for a metric ``val_mse``, anywhere in a line:

* ``val_mse=0.12``, ``val_mse: 0.12``, ``val_mse = 1e-3`` (also ``'val_mse': 0.12`` as in a
  printed dict); the key must not be part of a longer identifier (``my_val_mse``,
  ``val_mse_std`` do not count); the LAST occurrence in the text decides, also when its value
  is not a number (then there is no value: an earlier one is not the result);
* a JSON object on the LAST non-empty line (a log prefix before its ``{`` is allowed) with
  ``"val_mse": <number>`` at top level (booleans are not numbers); it wins over everything else.

Numbers are ints, floats, exponents, with an optional sign, and ``nan``/``inf``/``infinity``
(any case); they come back as ``float`` (nan/inf included: the caller decides). A number must
end where the token ends: ``0x10``, ``1_000``, ``1.2.3``, ``5e`` and ``1,000`` are not numbers
(never read as 0, 1, 1.2, 5 or 1); a unit written after it (``12.5s``, ``2678M``, ``95%``) is
allowed. When a metric has no value, :func:`missing_reason` says why in one line.
"""

from __future__ import annotations

import json
import logging
import re

from spml.errors import MetricNotFound

logger = logging.getLogger(__name__)

# Where a number may end: not before an exponent that has no digits ("5e"), letters or `_`
# leading to a digit ("0x10", "1_000"), or another group of digits ("1.2.3", "1,234.5",
# "45/50", "2024-01-05", "12:30", "1+2"), so a prefix of a longer token is never read as the
# value; a unit ("12.5s", "2678M") may follow.
_NUMBER_END = r"(?![eE]|[A-Za-z_]*\d|[.,/:+\-]\d)"
# ASCII digits only: float() would read "٣" or "１" as 3 and 1. The atomic group keeps the
# regex from backtracking into a shorter number ("12,3" -> 1).
_NUMBER = (r"[-+]?(?:(?>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)" + _NUMBER_END
           + r"|(?i:nan|inf(?:inity)?)(?!\w))")
# The whole value token after `key:` / `key=` (up to whitespace), to quote a refused one.
_RAW_VALUE = r"(?P<raw>[^\s]+)"
_RAW_TRIM = ",;)]}'\""
_NUMBER_AT = re.compile(_NUMBER)
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
    for match in _raw_pattern(metric).finditer(text):
        last = match
    if last is None:
        return None
    # The last value decides even when it is not a number: an earlier one is not the result.
    number = _NUMBER_AT.match(text, last.start("raw"))
    return float(number.group()) if number is not None else None


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
    reason = missing_reason(text, metric)
    hint = f" ({reason})" if mentions(text, metric) else ""
    raise MetricNotFound(
        f"metric {metric!r} must appear as {ACCEPTED_FORMATS.format(m=metric)}, got no "
        f"match{hint} ({where}; last lines: {quoted}). Make the command print e.g. "
        f"'{metric}: 0.123' at the end of its run.", reason=reason,
    )


def missing_reason(text: str, metric: str) -> str:
    """Why ``text`` gives no value for ``metric``, in one line (for a ledger or a record).

    Args:
        text: Command output in which :func:`find_metric` found no value.
        metric: The key.

    Returns:
        The refused value if the metric is printed with one (``'score' is mentioned, but never
        with a numeric value: '0x10' is not a number``), a JSON value of the wrong type, a
        mention without ``:``/``=``, or ``no 'score' in the output``.
    """
    refused = _refused_value(text, metric)
    if refused:
        return f"{metric!r} is mentioned, but never with a numeric value: {refused}"
    if mentions(text, metric):
        return (f"{metric!r} is mentioned, but never with a numeric value (never as "
                f"'{metric}=<number>' or '{metric}: <number>')")
    return f"no {metric!r} in the output"


def mentions(text: str, metric: str) -> bool:
    """Whether ``metric`` appears as a word of its own (``acc`` is not in ``accuracy``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(metric)}(?![A-Za-z0-9_])", text) is not None


def _refused_value(text: str, metric: str) -> str:
    """What ``metric`` is printed with instead of a number ("" if it is never given a value)."""
    json_value = _last_line_json(text).get(metric, _ABSENT)
    if json_value is not _ABSENT:
        return (f"the JSON object on the last line has {_clip(json.dumps(json_value), 40)} "
                f"({_json_type(json_value)}), not a number")
    raw = None
    for match in _raw_pattern(metric).finditer(text):  # the last one decides, as in find_metric
        raw = match.group("raw").rstrip(_RAW_TRIM) or match.group("raw")
    return "" if raw is None else f"{_clip(raw, 40)!r} is not a number"


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


def _raw_pattern(metric: str) -> re.Pattern[str]:
    return re.compile(_key_prefix(metric) + _RAW_VALUE)


def _key_prefix(metric: str) -> str:
    """``metric`` (maybe quoted, not part of a longer identifier) and its `:` / `=`."""
    return (_KEY_START + r"(?P<q>['\"]?)" + re.escape(metric) + r"(?P=q)[ \t]*[:=][ \t]*")


_ABSENT = object()


def _from_last_line_json(text: str, metric: str) -> float | None:
    value = _last_line_json(text).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _last_line_json(text: str) -> dict[str, object]:
    """The JSON object on the last non-empty line (after any log prefix), else ``{}``."""
    last_line = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    brace = last_line.find("{")
    if brace < 0 or not last_line.endswith("}"):
        return {}
    try:
        obj = json.loads(last_line[brace:])
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "not a number")


def _clip(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
