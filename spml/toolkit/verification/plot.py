"""`verification.png`: the loop's metric per round beside the fresh runs of both arms.

Left: the ledger as `experiences.png` draws it (`spml.toolkit.loop.plot.draw_ledger`). Right:
each fresh run of the baseline and of the chosen commit as a point (labelled by seed), each
arm's mean as a bar, and the verdict with its interval in the title. Agg canvas, no pyplot.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spml.protocols.experiences import Experiences
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.plot import DPI, draw_ledger

WIDTH_IN, HEIGHT_IN = 12.0, 4.5
CHOSEN_COLOUR, BASELINE_COLOUR = "#1565c0", "#757575"
PLOT_FILENAME = "verification.png"


def plot_verification(ledger: Experiences, arms: dict[str, Sequence[tuple[int, float]]],
                      metric: str, title: str, path: Path) -> Path:
    """Write the two panels to ``path`` (atomically). ``arms`` maps ``baseline`` and
    ``chosen`` to their ``(seed, value)`` runs."""
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    rounds, seeds = figure.subplots(1, 2, width_ratios=[3, 2])
    draw_ledger(rounds, ledger)
    _draw_arms(seeds, arms, metric, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path


def _draw_arms(axes: Axes, arms: dict[str, Sequence[tuple[int, float]]], metric: str,
               title: str) -> None:
    for x, (side, colour) in enumerate((("baseline", BASELINE_COLOUR),
                                        ("chosen", CHOSEN_COLOUR))):
        runs = list(arms.get(side, ()))
        if not runs:
            axes.text(x, 0.5, "not measured", transform=axes.get_xaxis_transform(),
                      ha="center", color="#c62828")
            continue
        count = len(runs)
        xs = [x + 0.25 * (i - (count - 1) / 2) / max(count, 1) for i in range(count)]
        values = [value for _, value in runs]
        axes.scatter(xs, values, color=colour, s=36, zorder=3,
                     label=f"{side} (n={count})")
        for px, (seed, value) in zip(xs, runs, strict=True):
            axes.annotate(str(seed), (px, value), textcoords="offset points", xytext=(4, 2),
                          fontsize=6, color="#616161")
        mean = statistics.fmean(values)
        axes.hlines(mean, x - 0.2, x + 0.2, color=colour, linewidth=2, zorder=2)
    axes.set_xticks([0, 1], ["baseline", "chosen"])
    axes.set_xlim(-0.6, 1.6)
    axes.set_ylabel(f"{metric} per fresh seed")
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_title(title, fontsize=10)
    if any(arms.values()):
        axes.legend(loc="best", fontsize="small")
