"""Read metrics out of a growing training log: one parser, one tail, one bounded history.

A log line carries metrics in any of these forms (values are numbers only; nan/inf are kept):

* ``key=value`` / ``key: value`` pairs anywhere in the line (``step=120 loss=0.53 lr=3e-4``,
  ``train/loss: 0.53``, a printed dict ``{'loss': 0.53}``, a tqdm postfix ``loss=0.53``);
  keys are identifiers that may contain ``/``, ``.`` and ``-``; clock times such as
  ``eta: 0:10:35`` are not read as numbers;
* a step word followed by an integer (``step 120 | loss: 0.53``, ``Iter [120/1000]``), used
  only when no pair already names the step;
* a JSON object (``{"step": 120, "loss": 0.53}``, optionally after a log prefix); nested
  objects flatten to ``outer/inner`` keys; booleans and strings are not numbers.

:class:`LogFollower` tails the file by byte offset (surviving creation, truncation and
rotation); :class:`MetricHistory` turns new lines into :class:`MetricPoint` s and keeps the
heartbeat (time of the last new line). ``loss_of`` & co. pick a known metric out of a line's
values by its usual aliases (case-insensitive).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from spml.toolkit.metrics.output import find_pairs

__all__ = ["GRAD_NORM_KEYS", "LOSS_KEYS", "MFU_KEYS", "SAMPLES_KEYS", "STEP_KEYS",
           "STEP_TIME_KEYS", "TOKENS_KEYS", "LogFollower", "MetricHistory", "MetricPoint",
           "find_key", "find_value", "grad_norm_of", "loss_of", "mfu_of", "parse_log_line",
           "throughput_of"]

STEP_KEYS = ("step", "global_step", "iter", "iteration", "train/step", "train/global_step",
             "trainer/global_step")
LOSS_KEYS = ("loss", "train/loss", "train_loss", "lm_loss", "total_loss", "loss/train")
GRAD_NORM_KEYS = ("grad_norm", "train/grad_norm", "gradient_norm", "grad-norm", "gnorm",
                  "grad_norm/total")
MFU_KEYS = ("mfu", "train/mfu")
TOKENS_KEYS = ("tokens_per_s", "tokens_per_sec", "tokens_per_second", "tokens/s", "tok/s")
SAMPLES_KEYS = ("samples_per_s", "samples_per_sec", "samples_per_second", "samples/s",
                "train_samples_per_second")
STEP_TIME_KEYS = ("step_time", "step_time_s", "time_per_step", "iter_time", "batch_time")
_PERCENT_MFU_KEYS = ("mfu_pct", "mfu_percent")

# A clock time (`0:10:35`, `12:30:01.5`) would otherwise read as `eta: 0`.
_CLOCK = re.compile(r"(?<![\w.])\d+(?::\d{2})+(?:\.\d+)?(?![\w.:])")
_STEP_WORD = re.compile(
    r"(?i)(?<![\w.\-/])(?P<key>global_step|step|iteration|iter)\b[ \t]*[\[(#]?[ \t]*"
    r"(?P<num>\d+)(?![\w.])"
)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEAD_BYTES = 256


def parse_log_line(line: str) -> dict[str, float] | None:
    """Return the numeric metrics one log line carries.

    Args:
        line: One line of a training log (line ending optional).

    Returns:
        ``{key: value}`` (a JSON object's numbers if the line holds one, else its pairs, plus
        ``step`` from a step word when no pair names the step), or None without any metric.
    """
    values = _json_values(line)
    if values is None:
        values = find_pairs(_CLOCK.sub("~", line))
        if find_key(values, STEP_KEYS) is None:
            word = _STEP_WORD.search(line)
            if word is not None:
                values = {word.group("key").lower(): float(word.group("num")), **values}
    return values or None


def find_key(values: dict[str, float], aliases: Sequence[str]) -> str | None:
    """Return the first key of ``values`` that is one of ``aliases`` (case-insensitive).

    Args:
        values: Parsed metrics of one line.
        aliases: Accepted names, most preferred first (e.g. :data:`LOSS_KEYS`).

    Returns:
        The key as it appears in ``values``, or None.
    """
    if aliases and aliases[0] in values:  # the common case, without building `lowered`
        return aliases[0]
    lowered = {key.lower(): key for key in values}
    for alias in aliases:
        key = alias if alias in values else lowered.get(alias.lower())
        if key is not None:
            return key
    return None


def find_value(values: dict[str, float], aliases: Sequence[str]) -> float | None:
    """Return the value under the first of ``aliases`` present in ``values``, or None."""
    key = find_key(values, aliases)
    return None if key is None else values[key]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def loss_of(values: dict[str, float]) -> float | None:
    """The finite loss of a line, or None."""
    return _finite(find_value(values, LOSS_KEYS))


def grad_norm_of(values: dict[str, float]) -> float | None:
    """The finite gradient norm of a line, or None."""
    return _finite(find_value(values, GRAD_NORM_KEYS))


def mfu_of(values: dict[str, float]) -> float | None:
    """The finite MFU of a line as a fraction, or None."""
    percent = _finite(find_value(values, _PERCENT_MFU_KEYS))
    if percent is not None:
        return percent / 100
    mfu = _finite(find_value(values, MFU_KEYS))
    return mfu / 100 if mfu is not None and mfu > 1 else mfu


def throughput_of(values: dict[str, float]) -> float | None:
    """Tokens/s, else samples/s, else ``1 / step_time`` of a line (finite), or None."""
    for keys in (TOKENS_KEYS, SAMPLES_KEYS):
        value = _finite(find_value(values, keys))
        if value is not None:
            return value
    step_time = _finite(find_value(values, STEP_TIME_KEYS))
    return 1 / step_time if step_time is not None and step_time > 0 else None


def _json_values(line: str) -> dict[str, float] | None:
    text = line.strip()
    brace = text.find("{")
    if brace < 0 or not text.endswith("}"):
        return None
    try:
        obj = json.loads(text[brace:])
    except ValueError:
        return None
    return _flatten(obj, "") if isinstance(obj, dict) else None


def _flatten(obj: dict[object, object], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


@dataclass
class LogFollower:
    """Incremental tail of a growing log file, by byte offset.

    Attributes:
        path: The log file; it need not exist yet.
        max_bytes: At most this many bytes are read per :meth:`poll` (the rest comes at the
            next poll); a line longer than this is returned in pieces.
    """

    path: Path
    max_bytes: int = 16 << 20
    _offset: int = field(default=0, init=False, repr=False)
    _partial: bytes = field(default=b"", init=False, repr=False)
    _identity: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _head: bytes = field(default=b"", init=False, repr=False)

    def poll(self) -> list[str]:
        """Return the complete lines written since the last poll.

        A trailing line without its line ending (``\\n``, ``\\r\\n`` or a lone ``\\r`` as
        progress bars write) is kept for the next poll. A missing file gives ``[]``; a file
        that was truncated or replaced (new inode, different first bytes) is read from 0 and
        an unfinished line of the old file is dropped. Bytes are decoded as UTF-8 with
        replacement.

        Returns:
            The new lines, without line endings.

        Raises:
            OSError: The file exists but cannot be read (other than vanishing meanwhile).
        """
        try:
            with self.path.open("rb") as fh:
                stat = os.fstat(fh.fileno())
                if self._replaced(fh, stat):
                    self._offset, self._partial, self._head = 0, b"", b""
                self._identity = (stat.st_dev, stat.st_ino)
                fh.seek(self._offset)
                data = fh.read(self.max_bytes)
        except FileNotFoundError:
            return []
        if self._offset < _HEAD_BYTES:
            self._head = (self._head + data)[:_HEAD_BYTES]
        self._offset += len(data)
        return self._split(data)

    def _replaced(self, fh: BinaryIO, stat: os.stat_result) -> bool:
        if self._identity is not None and self._identity != (stat.st_dev, stat.st_ino):
            return True
        if stat.st_size < self._offset:
            return True
        fh.seek(0)
        return fh.read(len(self._head)) != self._head

    def _split(self, data: bytes) -> list[str]:
        buffer = self._partial + data
        pieces = _LINE_END.split(buffer)
        rest = pieces.pop()
        if buffer.endswith(b"\r") and pieces:  # maybe the first half of "\r\n": wait
            rest = pieces.pop() + b"\r"
        if len(rest) > self.max_bytes:
            pieces.append(rest)
            rest = b""
        self._partial = rest
        return [piece.decode("utf-8", "replace") for piece in pieces]


@dataclass(frozen=True)
class MetricPoint:
    """The metrics of one log line.

    Attributes:
        step: The training step the line names, if any (its key is not in ``values``).
        values: The other numeric metrics, keys as logged.
        at: When the line was read (the clock the caller passed, e.g. ``time.time()``).
    """

    step: int | None
    values: dict[str, float]
    at: float


class MetricHistory:
    """Bounded history of the metric points parsed from new log lines, plus the heartbeat.

    Attributes:
        last_step: Step of the latest point that names one (it can go down after a resume).
        last_beat: ``now`` of the latest :meth:`add_lines` call that brought any line.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        """Keep at most ``maxlen`` points (the oldest are dropped)."""
        self._points: deque[MetricPoint] = deque(maxlen=maxlen)
        self.last_step: int | None = None
        self.last_beat: float | None = None

    @property
    def points(self) -> list[MetricPoint]:
        """The kept points, oldest first."""
        return list(self._points)

    def add_lines(self, lines: Iterable[str], now: float) -> list[MetricPoint]:
        """Parse new log lines; every line (metric or not) counts as a heartbeat at ``now``.

        Args:
            lines: New complete lines, e.g. from :meth:`LogFollower.poll`.
            now: The current time, stamped on the points and the heartbeat.

        Returns:
            The new points, in line order (lines without metrics give none).
        """
        new: list[MetricPoint] = []
        for line in lines:
            self.last_beat = now
            values = parse_log_line(line)
            if values is not None:
                new.append(_point(values, now))
        for point in new:
            self._points.append(point)
            if point.step is not None:
                self.last_step = point.step
        return new


def _point(values: dict[str, float], now: float) -> MetricPoint:
    key = find_key(values, STEP_KEYS)
    step = values[key] if key is not None else None
    if step is None or not step.is_integer():  # nan/inf/1.5 are no step: keep as a value
        return MetricPoint(None, values, now)
    rest = {k: v for k, v in values.items() if k != key}
    return MetricPoint(int(step), rest, now)
