"""The end-of-loop report."""

from __future__ import annotations

import math

from spml.protocols.experiences import ExperienceRow, Experiences
from spml.toolkit.loop.summary import LoopSummary, render_summary, summarize


def _row(round_no: int, verdict: str, result: float | None, strategy: str = "",
         insight: str = "") -> ExperienceRow:
    return ExperienceRow(round=round_no, compliance="pass", result=result, verdict=verdict,
                         strategy=strategy, insight=insight)  # type: ignore[arg-type]


def _ledger(*rows: ExperienceRow, status: str = "completed") -> Experiences:
    return Experiences(metric="val_mse", max_rounds=5, status=status,  # type: ignore[arg-type]
                       rows=list(rows))


def test_summarize_a_loop_that_improved() -> None:
    ledger = _ledger(_row(0, "committed", 0.8, "baseline", "measured on the base commit"),
                     _row(1, "committed", 0.5, "lr 1e-3", "improved on best 0.8 by 0.3"),
                     _row(2, "rolled_back", 0.6, "width 256", "not better"),
                     _row(3, "committed", 0.4, "cosine schedule", "improved on best 0.5 by 0.1"),
                     _row(4, "rolled_back", None, "crashed", "exit 1"))

    summary = summarize(ledger, reason="max_rounds done")

    assert summary.metric == "val_mse"
    assert summary.status == "completed"
    assert summary.reason == "max_rounds done"
    assert summary.baseline == 0.8
    assert summary.best == 0.4
    assert summary.best_round == 3
    assert summary.rounds_done == 4
    assert summary.max_rounds == 5
    assert summary.commits == 2  # the baseline is not a commit of the loop
    assert summary.insights == ["R1: lr 1e-3 — improved on best 0.8 by 0.3",
                                "R3: cosine schedule — improved on best 0.5 by 0.1"]
    assert summary.improvement is not None
    assert abs(summary.improvement - -0.4) < 1e-12
    assert summary.headline() == "val_mse: baseline 0.8 -> best 0.4 (R3) (-50.0%)"


def test_insights_keep_the_last_five_commits() -> None:
    rows = [_row(0, "committed", 100.0)] + [
        _row(n, "committed", 100.0 - n, f"s{n}", f"i{n}") for n in range(1, 8)]

    summary = summarize(_ledger(*rows))

    assert summary.commits == 7
    assert summary.insights == [f"R{n}: s{n} — i{n}" for n in range(3, 8)]


def test_summarize_when_nothing_beat_the_baseline() -> None:
    ledger = _ledger(_row(0, "committed", 0.8), _row(1, "rolled_back", 0.9),
                     status="stopped")

    summary = summarize(ledger)

    assert summary.best == 0.8
    assert summary.best_round == 0
    assert summary.commits == 0
    assert summary.insights == []
    assert summary.improvement == 0.0
    assert summary.headline() == "val_mse: no change kept; baseline 0.8 (R0)"
    text = render_summary(summary, ledger)
    assert "- (no round beat the baseline)" in text
    assert "- **Ended because:** stopped" in text


def test_summarize_an_empty_ledger() -> None:
    summary = summarize(_ledger(status="not_started"))

    assert summary.baseline is None
    assert summary.best is None
    assert summary.best_round is None
    assert summary.improvement is None
    assert summary.headline() == "val_mse: no measured result"


def test_headline_for_a_maximised_metric_and_a_zero_baseline() -> None:
    grew = LoopSummary(metric="acc", status="target_reached", baseline=0.5, best=0.75,
                       best_round=2, rounds_done=2, max_rounds=5, commits=1, insights=[])
    from_zero = grew.model_copy(update={"baseline": 0.0})

    assert grew.headline() == "acc: baseline 0.5 -> best 0.75 (R2) (+50.0%)"
    assert from_zero.headline() == "acc: baseline 0 -> best 0.75 (R2)"  # no % of zero
    tiny = grew.model_copy(update={"baseline": -5e-324, "best": 1e308})  # was "-inf%"
    assert tiny.headline().endswith("(R2)")
    infinite = grew.model_copy(update={"baseline": -math.inf})
    assert "%" not in infinite.headline()
    assert "nan" not in infinite.headline()


def test_render_summary() -> None:
    ledger = _ledger(_row(0, "committed", 0.8, "baseline"),
                     _row(1, "committed", 0.5, "lr 1e-3", "better"))
    summary = summarize(ledger, reason="target reached")

    lines = render_summary(summary, ledger).splitlines()

    assert lines[0] == "# Auto Research: completed"
    assert "- **Result:** val_mse: baseline 0.8 -> best 0.5 (R1) (-37.5%)" in lines
    assert "- **Rounds:** 1 / 5, 1 committed" in lines
    assert "- **Ended because:** target reached" in lines
    assert "- R1: lr 1e-3 — better" in lines
    assert lines[-3:] == ["|---|---|---|---|---|---|---|",
                          "| 0 | pass | 0.8 | committed | baseline |  |  |",
                          "| 1 | pass | 0.5 | committed | lr 1e-3 | better |  |"]


def test_a_baseline_that_moved_with_more_runs_is_not_reported_as_progress() -> None:
    summary = LoopSummary(metric="val_mse", status="completed", baseline=0.258103,
                          best=0.254352, best_round=0, rounds_done=3, max_rounds=3, commits=0,
                          insights=[])
    assert summary.headline() == ("val_mse: no change kept; baseline 0.254352 (R0) (pooled "
                                  "over its runs; first measured 0.258103)")
