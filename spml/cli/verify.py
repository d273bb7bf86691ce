"""`spml verify`: the verdict on results someone already has (two CSVs of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.errors import ProtocolError


def verify(
    baseline: Annotated[Path, typer.Option(help="CSV: one row per baseline run.")],
    treatment: Annotated[Path, typer.Option(help="CSV: one row per treatment run.")],
    metric: Annotated[str, typer.Option(help="The column holding the metric.")],
    direction: Annotated[str, typer.Option(help="maximize or minimize.")],
    min_effect: Annotated[float, typer.Option(
        help="Smallest improvement that counts (in the metric's units).")] = 0.0,
    confidence: Annotated[float, typer.Option(help="Two-sided interval level.")] = 0.95,
    method: Annotated[str, typer.Option(help="welch (default) or bootstrap.")] = "welch",
    accept_single_run: Annotated[bool, typer.Option(
        help="Judge one run per arm by its point estimate (no protection against luck).")
    ] = False,
) -> None:
    """Print the verdict (effective / ineffective / inconclusive) on its own first line, then
    the improvement, its interval, n per arm and the method."""
    from spml.toolkit.verification.arms import read_arm
    from spml.toolkit.verification.statistics import VerifyRule, verify_arms

    if direction not in ("maximize", "minimize"):
        raise ProtocolError(f"--direction must be maximize or minimize, got {direction!r}.")
    if method not in ("welch", "bootstrap"):
        raise ProtocolError(f"--method must be welch or bootstrap, got {method!r}.")
    if not 0.5 < confidence < 1:
        raise ProtocolError(f"--confidence must be between 0.5 and 1, got {confidence}.")
    rule = VerifyRule(direction, min_effect, confidence, method,  # type: ignore[arg-type]
                      accept_single_run)
    result = verify_arms(read_arm(baseline, metric), read_arm(treatment, metric), rule)
    typer.echo("\n".join(result.lines()))
