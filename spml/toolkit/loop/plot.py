"""A picture of the ledger: `experiences.png`, the metric per round, drawn with matplotlib.

One figure, 800x450 px: every round's value (committed rounds filled green, rolled-back ones
hollow grey, rounds without a finite value as red crosses on the bottom edge), the best-so-far
step line, the baseline (round 0) as a dotted line, and the spread of repeated measurements
(``mean ± std (n=k)`` in the Result cell) as error bars: the ledger keeps no per-seed values,
those live in each round's `measurement.json`. A ledger without a numeric metric (ml-iteration
judged on criteria alone) gets a strip of verdicts per round instead.

Drawn with the Agg canvas on a `Figure` of its own, never pyplot: no display, no global state,
safe in a worker thread.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spml.protocols.experiences import ExperienceRow, Experiences, format_value
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import PLOT_FILENAME

__all__ = ["PLOT_FILENAME", "draw_ledger", "ledger_figure", "plot_ledger", "plot_png"]

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 100
_KEPT_COLOUR = "#2e7d32"     # green: on the branch
_ROLLED_COLOUR = "#9e9e9e"   # grey: rolled back
_FAILED_COLOUR = "#c62828"   # red: no value
_BEST_COLOUR = "#1565c0"
_SPREAD = re.compile(r"±\s*(?P<std>\S+)\s*\(n=(?P<n>\d+)\)")


def plot_ledger(ledger: Experiences, path: Path) -> Path:
    """Write the ledger's plot to ``path`` as a PNG (atomically: a reader never sees half a
    file); returns ``path``."""
    write_atomic(path, plot_png(ledger))
    return path


def plot_png(ledger: Experiences) -> bytes:
    """The ledger's plot as PNG bytes."""
    buffer = io.BytesIO()
    ledger_figure(ledger).savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def ledger_figure(ledger: Experiences) -> Figure:
    """The ledger drawn on a new figure (attached to an Agg canvas, so it can be saved)."""
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    draw_ledger(figure.add_subplot(), ledger)
    return figure


def draw_ledger(axes: Axes, ledger: Experiences) -> None:
    """The ledger's rounds on ``axes`` (also the left panel of the verification plot)."""
    rounds = [row for row in ledger.rows if not row.is_override]
    kept = set(ledger.kept_rounds())  # overrides applied: what is on the branch now
    if not rounds:
        _draw_message(axes, "no rounds yet")
    elif not any(_value(row) is not None for row in rounds):
        _draw_verdicts(axes, rounds, kept)
    else:
        _draw_metric(axes, ledger, rounds, kept)
    axes.set_title(f"{ledger.metric}: {ledger.rounds_done} / {ledger.max_rounds} rounds "
                   f"({ledger.status})")


def _value(row: ExperienceRow) -> float | None:
    """The row's value if it can be drawn (NaN and inf are failures, like a missing value)."""
    return row.result if row.result is not None and math.isfinite(row.result) else None


def _spread(row: ExperienceRow) -> float:
    """The standard deviation of repeated measurements (``± std (n=k)``), else 0."""
    match = _SPREAD.search(row.result_text)
    if match is None:
        return 0.0
    try:
        std = float(match.group("std"))
    except ValueError:  # a hand-edited cell
        return 0.0
    return std if math.isfinite(std) else 0.0


def _draw_message(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center",
              fontsize=14, color="#616161")
    axes.set_xlabel("round")
    axes.set_xticks([])
    axes.set_yticks([])


def _draw_metric(axes: Axes, ledger: Experiences, rounds: list[ExperienceRow],
                 kept: set[int]) -> None:
    measured = [row for row in rounds if _value(row) is not None]
    _draw_points(axes, [r for r in measured if r.round in kept], "committed", filled=True)
    _draw_points(axes, [r for r in measured if r.round not in kept], "rolled back",
                 filled=False)
    _draw_best_line(axes, ledger, rounds, kept)
    _draw_baseline(axes, rounds)
    _draw_failed(axes, [row for row in rounds if _value(row) is None])
    axes.set_xlabel("round")
    axes.set_ylabel(_metric_label(ledger))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")


def _metric_label(ledger: Experiences) -> str:
    if ledger.direction is None:
        return ledger.metric
    better = "lower" if ledger.direction == "minimize" else "higher"
    return f"{ledger.metric} ({better} is better)"


def _draw_points(axes: Axes, rows: list[ExperienceRow], label: str, filled: bool) -> None:
    if not rows:
        return
    colour = _KEPT_COLOUR if filled else _ROLLED_COLOUR
    axes.errorbar([r.round for r in rows], [_value(r) for r in rows],
                  yerr=[_spread(r) for r in rows], fmt="o", color=colour, ecolor=colour,
                  markerfacecolor=colour if filled else "white", markersize=7, capsize=3,
                  label=f"{label} ({len(rows)})", zorder=3)


def _draw_best_line(axes: Axes, ledger: Experiences, rounds: list[ExperienceRow],
                    kept: set[int]) -> None:
    """The best kept value so far, stepping at each kept round (the value to beat); a ledger
    without a direction (written before directions were recorded) shows the latest kept one."""
    xs: list[int] = []
    ys: list[float] = []
    for row in rounds:
        value = _value(row)
        if row.round not in kept or value is None:
            continue
        if ys and ledger.direction is not None:  # without a direction: the incumbent
            value = min(ys[-1], value) if ledger.direction == "minimize" else max(ys[-1], value)
        xs.append(row.round)
        ys.append(value)
    if not xs:
        return
    last_round = max(row.round for row in rounds)
    label = "best so far" if ledger.direction is not None else "latest kept"
    axes.step([*xs, last_round], [*ys, ys[-1]], where="post", color=_BEST_COLOUR,
              linewidth=1.5, label=f"{label} ({format_value(ys[-1])})", zorder=2)


def _draw_baseline(axes: Axes, rounds: list[ExperienceRow]) -> None:
    baseline = next((row for row in rounds if row.round == 0), None)
    value = _value(baseline) if baseline is not None else None
    if value is None:
        return
    axes.axhline(value, color=_ROLLED_COLOUR, linestyle=":", linewidth=1,
                 label=f"baseline R0 ({format_value(value)})", zorder=1)


def _draw_failed(axes: Axes, rows: list[ExperienceRow]) -> None:
    """Rounds without a value, on the bottom edge: x in data, y in axes coordinates, so they
    never stretch the metric's scale."""
    if not rows:
        return
    axes.scatter([r.round for r in rows], [0.03] * len(rows), marker="x",
                 color=_FAILED_COLOUR, transform=axes.get_xaxis_transform(), clip_on=False,
                 label=f"failed / no value ({len(rows)})", zorder=3)


def _draw_verdicts(axes: Axes, rounds: list[ExperienceRow], kept: set[int]) -> None:
    """No numeric metric: one marker per round on a single strip, coloured by its verdict."""
    committed = [r.round for r in rounds if r.round in kept]
    rolled = [r.round for r in rounds if r.round not in kept]
    if committed:
        axes.scatter(committed, [0] * len(committed), s=80, color=_KEPT_COLOUR,
                     label=f"committed ({len(committed)})", zorder=3)
    if rolled:
        axes.scatter(rolled, [0] * len(rolled), s=80, facecolors="white",
                     edgecolors=_ROLLED_COLOUR, label=f"rolled back ({len(rolled)})", zorder=3)
    axes.text(0.5, 0.8, "no numeric metric: the verdict of each round", ha="center",
              transform=axes.transAxes, color="#616161")
    axes.set_xlabel("round")
    axes.set_yticks([])
    axes.set_ylim(-1, 1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="lower right", fontsize="small")
