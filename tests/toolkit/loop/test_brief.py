"""The round brief: what the researcher is told, and what it is not."""

from __future__ import annotations

from typing import Any

from spml.protocols.autoresearch import AutoresearchProtocol
from spml.protocols.experiences import ExperienceRow, Experiences
from spml.toolkit.loop.brief import BriefInputs, render_brief


def _protocol(**overrides: Any) -> AutoresearchProtocol:
    fields: dict[str, Any] = {
        "research_question": "Which optimiser settings minimise validation MSE?",
        "max_rounds": 10,
        "train_command": "python train.py --secret-flag",
        "fixed": {"files": ["train.py", "evaluate.py", "data/"], "time_limit": 120},
        "variable": {"files": ["params.yaml", "model_*.py"], "range": "lr, width"},
        "eval": {"command": "python evaluate.py --hidden", "metric": "val_mse",
                 "direction": "minimize"},
        "researcher": {"kind": "command", "command": "agent {prompt_file}"},
        "experiences_window": 3,
    }
    for key, value in overrides.items():
        fields[key] = {**fields.get(key, {}), **value} if isinstance(value, dict) else value
    return AutoresearchProtocol.model_validate(fields)


def _row(round_no: int, verdict: str, result: float | None, strategy: str = "",
         insight: str = "") -> ExperienceRow:
    return ExperienceRow(round=round_no, compliance="pass", result=result,
                         verdict=verdict, strategy=strategy or f"strategy of round {round_no}",
                         insight=insight)  # type: ignore[arg-type]


def _brief(protocol: AutoresearchProtocol | None = None, rows: list[ExperienceRow] | None = None,
           notes: list[str] | None = None, prose: str = "The model is a small MLP.",
           round_no: int = 4) -> str:
    ledger = Experiences(metric="val_mse", max_rounds=10, status="running", rows=rows or [])
    return render_brief(BriefInputs(protocol=protocol or _protocol(), prose=prose, ledger=ledger,
                                    round_no=round_no, max_rounds=10, notes=notes or []))


def test_goal_metric_and_direction() -> None:
    text = _brief()

    assert text.startswith("# Auto Research — round 4 of 10\n")
    assert "**Goal:** improve `val_mse` (minimize, lower is better)." in text
    assert "**Research question:** Which optimiser settings minimise validation MSE?" in text
    maximize = _brief(_protocol(eval={"direction": "maximize", "metric": "acc"}))
    assert "**Goal:** improve `acc` (maximize, higher is better)." in maximize


def test_rules_name_variable_and_fixed_globs() -> None:
    text = _brief()

    assert "- You may change or create ONLY files matching: `params.yaml`, `model_*.py`" in text
    assert "- What may be varied: lr, width" in text
    assert "- Never touch (fixed): `train.py`, `evaluate.py`, `data/`" in text
    assert "- Evaluation and metric code may not be created or changed, not even in new " \
           "files." in text
    assert "- Do not commit, reset, stash, or change git configuration or hooks." in text
    assert "- Training budget per run: 120 s." in text


def test_optional_rules() -> None:
    plain = _brief()
    assert "epochs" not in plain
    # The default acceptance: the researcher learns that noise is not progress.
    assert ("- A change is kept only if it beats the best beyond the run-to-run noise measured "
            "across seeds (up to 5 runs decide): a tweak within the noise is rolled back as "
            "inconclusive.") in plain

    text = _brief(_protocol(fixed={"epoch_limit": 7}, variable={"range": ""},
                            acceptance={"min_delta": 0.002, "mode": "greedy"}))

    assert "- Training budget per run: 120 s, at most 7 epochs." in text
    assert "- A change is kept only if it beats the best by more than 0.002." in text
    assert "noise" not in text
    assert "What may be varied" not in text
    significance = _brief(_protocol(acceptance={"min_delta": 0.002, "repeats": 3}))
    assert "beyond the run-to-run noise measured across seeds and by more than 0.002 (up to " \
        "3 runs decide)" in significance


def test_the_protocol_itself_is_not_shown() -> None:
    text = _brief()

    assert "--secret-flag" not in text
    assert "--hidden" not in text
    assert "agent {prompt_file}" not in text
    assert "max_rounds" not in text


def test_only_the_last_window_rows_are_shown() -> None:
    rows = [_row(0, "committed", 0.9, strategy="baseline")] + [
        _row(n, "rolled_back", 1.0 + n) for n in range(1, 6)]

    text = _brief(rows=rows)

    section = text.split("## Recent experiences\n")[1].split("\n\n")[0]
    assert section.splitlines()[0] == ("| Round | Compliance | Result | Verdict | Strategy | "
                                       "Insight | Note |")
    assert [line.split(" | ")[0] for line in section.splitlines()[2:]] == ["| 3", "| 4", "| 5"]
    assert "strategy of round 2" not in text
    assert "baseline" not in section


def test_no_rounds_yet() -> None:
    text = _brief()

    assert "## Recent experiences\n(no rounds yet)" in text
    assert "**Current best:** none yet." in text


def test_current_best_and_plateau_hint() -> None:
    rows = [_row(0, "committed", 0.9), _row(1, "committed", 0.5), _row(2, "rolled_back", 0.6),
            _row(3, "rolled_back", 0.7)]

    two_misses = _brief(rows=rows)
    three_misses = _brief(rows=[*rows, _row(4, "rolled_back", 0.8)])

    assert "**Current best:** 0.5 (round 1)." in two_misses
    assert "No improvement" not in two_misses
    assert ("**Current best:** 0.5 (round 1). No improvement in the last 3 rounds: try "
            "something different.") in three_misses


def test_human_notes_are_listed() -> None:
    text = _brief(notes=["try a cosine schedule", "keep width <= 256"])

    assert ("## Notes from the person on the loop\n- try a cosine schedule\n"
            "- keep width <= 256") in text
    assert "## Notes from the person on the loop\n(none)" in _brief()


def test_background_prose_comes_before_the_rules() -> None:
    text = _brief(prose="\n\n# Background notes\nThe noise floor is 0.0025.\n\n")

    assert "## Background\n# Background notes\nThe noise floor is 0.0025.\n\n## Your role" in text
    assert text.index("## Background") < text.index("## Rules")
    assert "## Background" not in _brief(prose="  \n")


def test_closing_instructions() -> None:
    text = _brief()

    assert "$SPML_STRATEGY_FILE" in text
    assert "do not use git" in text
    assert text.endswith("then exit 0.\n")
