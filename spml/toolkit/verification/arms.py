"""One arm of a comparison from a CSV: one row per run (seed), the metric in a named column.

Every problem is refused with the file and the row (as a spreadsheet numbers it: the header is
row 1), so `spml verify` exits 2 with one line and never a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path

from spml.errors import ProtocolError


def read_arm(path: Path, metric: str) -> list[float]:
    """The ``metric`` column of ``path`` as floats.

    Raises:
        ProtocolError: the file is missing, unreadable or empty, has no ``metric`` column, or a
            row holds a non-numeric or non-finite value.
    """
    import pandas as pd

    if not path.is_file():
        raise ProtocolError(f"{path}: no such file; pass a CSV with one row per run.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProtocolError(f"{path}: not a readable CSV ({first}).") from None
    if metric not in frame.columns:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise ProtocolError(f"{path}: no column {metric!r} (columns: {columns}); name the "
                            "metric column with --metric.")
    if frame.empty:
        raise ProtocolError(f"{path}: no runs (the file has a header and no rows).")
    return [_value(path, metric, row + 2, text) for row, text in enumerate(frame[metric])]


def _value(path: Path, metric: str, row: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError(f"{path} (row {row}): {metric} must be a number, got "
                            f"{text!r}.") from None
    if not math.isfinite(value):
        raise ProtocolError(f"{path} (row {row}): {metric} must be finite, got {text!r}; a "
                            "diverged run is a result to report, not a number to average.")
    return value
