"""The plan gate: the good plan passes; each single defect fails with its own row."""

from __future__ import annotations

import pytest
from helpers import FIXTURES

from spml.protocols.plan import SubtaskDraft, load_plan, parse_plan, render_plan
from spml.protocols.plan_gate import check_plan, evaluation_in_scope

GOOD = FIXTURES / "plan" / "good-plan.md"
PIPELINE = "Subtask 3 'Training pipeline [INTEGRATION]'"
CONTRACT_AT = f"  - {PIPELINE} (line 54): **Evaluation Contract:**"
CONTRACT_LINES = ["- cadence: every 200 steps\n", "- scope: full validation\n",
                  "- entry_modes: checkpoint, in_memory\n",
                  "- shared_core: evaluate.py:evaluate (Subtask 2)\n",
                  "- progress: phase start/end lines, a tqdm bar per evaluation, a result and "
                  "efficiency summary\n"]


def _text() -> str:
    return GOOD.read_text(encoding="utf-8")


def _rows(old: str, new: str) -> list[str]:
    """The gate's rows for the good plan with one defect: ``old`` replaced by ``new``."""
    text = _text()
    assert old in text, old
    return check_plan(parse_plan(text.replace(old, new, 1), "plan.md"))


def test_the_good_plan_passes() -> None:
    doc = load_plan(GOOD)

    assert evaluation_in_scope(doc)
    assert check_plan(doc) == []


def test_the_person_edited_plan_passes() -> None:
    # `entry modes` spelt with a space, failure handling as a nested list, REVISED/NEW/REMOVED.
    assert check_plan(load_plan(FIXTURES / "plan" / "edited-plan.md")) == []


def test_a_plan_written_by_render_plan_passes() -> None:
    good = load_plan(GOOD)
    drafts = [SubtaskDraft(title=s.title, fields=s.fields) for s in good.subtasks]

    text = render_plan(good.title, good.header, good.scaffold, drafts)

    assert check_plan(parse_plan(text)) == []


# Plan shape ------------------------------------------------------------------------------


def test_no_integration_subtask() -> None:
    rows = _rows("Training pipeline [INTEGRATION]", "Training pipeline")

    assert rows[0] == ("  - plan (line 46): no subtask title ends with [INTEGRATION] — mark the "
                       "one subtask that assembles the delivered training script, e.g. '## [ ] "
                       "Subtask N: Training pipeline [INTEGRATION]'")


def test_two_integration_subtasks() -> None:
    rows = _rows("## [ ] Subtask 2: Evaluator core", "## [ ] Subtask 2: Evaluator [INTEGRATION]")

    assert rows[0] == ("  - plan (line 46): 2 subtasks are marked [INTEGRATION]: Subtask 2 "
                       "'Evaluator [INTEGRATION]' (line 30), Subtask 3 'Training pipeline "
                       "[INTEGRATION]' (line 46) — keep exactly one; the others are code "
                       "subtasks it consumes")


def test_integration_before_a_code_subtask() -> None:
    text = _text()
    start, end = text.index("## [ ] Subtask 1:"), text.index("## [ ] Subtask 2:")
    moved = text[:start] + text[end:] + "\n" + text[start:end]

    rows = check_plan(parse_plan(moved))

    assert rows == [f"  - Subtask 1 'Model core' (line 59): comes after the [INTEGRATION] "
                    f"subtask ({PIPELINE}, line 32) — move it above: the integration subtask "
                    "assembles every code subtask, so it comes last"]


def test_no_active_subtask() -> None:
    text = _text()

    rows = check_plan(parse_plan(text[:text.index("## [ ] Subtask 1:")]))

    assert rows == ["  - plan (line 1): has no active subtask — add '## [ ] Subtask 1: <title>' "
                    "sections: the code subtasks, then one '## [ ] Subtask N: <title> "
                    "[INTEGRATION]'"]


# Header ----------------------------------------------------------------------------------


def test_missing_header_field() -> None:
    text = _text()
    line = next(line for line in text.splitlines(keepends=True)
                if line.startswith("**Architecture:**"))

    rows = _rows(line, "")

    assert rows == ["  - header **Architecture:** (line 1): is missing — add '**Architecture:** "
                    "<2-3 sentences>' below the title"]


def test_empty_header_field() -> None:
    rows = _rows("**Experiment directory:** experiments/mlp", "**Experiment directory:**")

    assert rows == ["  - header **Experiment directory:** (line 6): is empty — write "
                    "'**Experiment directory:** <path, e.g. experiments/mlp>'"]


def test_missing_title() -> None:
    rows = _rows("# MLP regression Implementation Plan\n", "")

    assert rows == ["  - title (line 1): the plan has no '# <title>' line — add '# <experiment> "
                    "Implementation Plan' as its first line"]


# Code subtasks ---------------------------------------------------------------------------


def test_missing_field_in_a_code_subtask() -> None:
    rows = _rows("**Role:** The MLP whose width and depth are two of the independent "
                 "variables.\n", "")

    assert rows == ["  - Subtask 1 'Model core' (line 16): **Role:** is missing — add "
                    "'**Role:** <what this unit does in the experiment>'"]


def test_empty_field_in_a_code_subtask() -> None:
    rows = _rows("**Expected Conclusion:** implemented + 3 unit tests passing\n\nSteps:\n1. "
                 "Write `tests/test_model.py`", "**Expected Conclusion:**\n\nSteps:\n1. Write "
                 "`tests/test_model.py`")

    assert rows == ["  - Subtask 1 'Model core' (line 21): **Expected Conclusion:** is empty — "
                    "write '**Expected Conclusion:** implemented + N unit tests passing' "
                    "(integration: 'L0 + L1 pass; <metric> reported')"]


def test_unit_tests_naming_no_test_file() -> None:
    rows = _rows("- `tests/test_model.py` — output shape", "- `model.py` — output shape")

    assert rows == ["  - Subtask 1 'Model core' (line 19): **Unit Tests:** names no test file "
                    "— name each as a backticked path, e.g. '- `tests/test_<unit>.py` — <what "
                    "it checks>' (or a node id `tests/test_<unit>.py::test_<case>`)"]


# Integration subtask ---------------------------------------------------------------------


def test_components_naming_an_unknown_subtask() -> None:
    rows = _rows("Subtask 2 (evaluator core)", "Subtask 7 (evaluator core)")

    assert rows == [f"  - {PIPELINE} (line 49): **Components:** names Subtask 7, which does not "
                    "exist — name only the plan's subtasks (Subtask 1, Subtask 2)"]


def test_components_naming_a_removed_subtask() -> None:
    doc = load_plan(GOOD).remove(1, "a library model instead")

    rows = check_plan(doc)

    assert rows == [f"  - {PIPELINE} (line 37): **Components:** names Subtask 1, which is "
                    "REMOVED (line 16) — drop it from Components or restore the subtask"]


def test_components_naming_no_subtask() -> None:
    rows = _rows("Subtask 1 (model core), Subtask 2 (evaluator core)",
                 "the model core and the evaluator core")

    assert rows == [f"  - {PIPELINE} (line 49): **Components:** names no subtask — write "
                    "'**Components:** Subtask 1 (<name>), Subtask 2 (<name>)'"]


def test_validation_pyramid_missing_l1() -> None:
    rows = _rows("L0 (profile spml) then L1 (command mode, real data, 5min)", "L0 (profile spml)")

    assert rows == [f"  - {PIPELINE} (line 53): **Validation Pyramid:** does not mention L1 — "
                    "write 'L0 (profile spml) then L1 (command mode, <duration>)': both levels "
                    "are mandatory for the integration subtask"]


def test_missing_field_in_the_integration_subtask() -> None:
    rows = _rows("**Role:** The delivered training script", "The delivered training script")

    assert rows == [f"  - {PIPELINE} (line 46): **Role:** is missing — add '**Role:** <what "
                    "this unit does in the experiment>'"]


def test_integration_tests_naming_no_test_file() -> None:
    rows = _rows("- `tests/test_pipeline.py` — tiny-shape", "- tiny-shape")

    assert rows == [f"  - {PIPELINE} (line 51): **Integration Tests:** names no test file — "
                    "name each as a backticked path, e.g. '- `tests/test_<unit>.py` — <what "
                    "it checks>' (or a node id `tests/test_<unit>.py::test_<case>`)"]


# Evaluation ------------------------------------------------------------------------------


def test_no_evaluator_subtask() -> None:
    rows = _rows("## [ ] Subtask 2: Evaluator core", "## [ ] Subtask 2: Metrics core")

    assert rows == ["  - plan (line 9): evaluation is in scope but no code subtask evaluates "
                    "(none has 'evaluat' in its title) — add a code subtask such as 'Evaluator "
                    "core': one evaluation core for the checkpoint and in-memory entry modes "
                    "(with no evaluation in scope, write '**Evaluation design:** none' and drop "
                    "any Evaluation Contract)"]


def test_evaluation_design_none_needs_no_evaluator_and_no_contract() -> None:
    text = _text()
    design = next(line for line in text.splitlines() if line.startswith("**Evaluation design:**"))
    start = text.index("**Evaluation Contract:**")
    end = text.index("**Expected Conclusion:** L0 + L1 pass")
    text = (text[:start] + text[end:]).replace(design, "**Evaluation design:** none (L1 only "
                                               "reports the training loss)")
    doc = parse_plan(text.replace("Subtask 2: Evaluator core", "Subtask 2: Metrics core"))

    assert not evaluation_in_scope(doc)
    assert check_plan(doc) == []


def test_an_evaluation_contract_puts_evaluation_in_scope_even_when_the_design_says_none() -> None:
    text = _text()
    design = next(line for line in text.splitlines() if line.startswith("**Evaluation design:**"))

    doc = parse_plan(text.replace(design, "**Evaluation design:** not in scope"))

    assert evaluation_in_scope(doc)
    assert check_plan(doc) == []


def test_missing_evaluation_contract() -> None:
    text = _text()
    start = text.index("**Evaluation Contract:**")
    end = text.index("**Expected Conclusion:** L0 + L1 pass")

    rows = check_plan(parse_plan(text[:start] + text[end:]))

    assert len(rows) == 1
    assert rows[0].startswith(f"  - {PIPELINE} (line 46): **Evaluation Contract:** is missing "
                              "(evaluation is in scope) — add '**Evaluation Contract:**' with "
                              "the lines '- cadence: every N steps'")


@pytest.mark.parametrize(("line", "row"), [
    (CONTRACT_LINES[0], f"{CONTRACT_AT} has no cadence — add '- cadence: every N steps' "
                        "(final-epoch-only evaluation is not acceptable)"),
    (CONTRACT_LINES[1], f"{CONTRACT_AT} has no scope — add '- scope: full validation' (or the "
                        "subset evaluated)"),
    (CONTRACT_LINES[3], f"{CONTRACT_AT} has no shared_core — add '- shared_core: "
                        "<file>:<function> (Subtask N)': one evaluation core for both entry "
                        "modes"),
    (CONTRACT_LINES[4], f"{CONTRACT_AT} has no progress — add '- progress: phase start/end "
                        "messages, a progress bar, a result and efficiency summary'"),
], ids=["cadence", "scope", "shared_core", "progress"])
def test_missing_contract_entry(line: str, row: str) -> None:
    assert _rows(line, "") == [row]


def test_empty_contract_entry() -> None:
    rows = _rows("- scope: full validation", "- scope:")

    assert rows == [f"  - {PIPELINE} (line 56): **Evaluation Contract:** has an empty scope — "
                    "add '- scope: full validation' (or the subset evaluated)"]


@pytest.mark.parametrize(("cadence", "problem"), [
    ("final epoch only", "cadence 'final epoch only' evaluates only at the end of training — "
                         "write '- cadence: every N steps' (final-epoch-only evaluation is not "
                         "acceptable)"),
    ("once at the end of training", "cadence 'once at the end of training' evaluates only at "
                                    "the end of training"),
    ("every epoch", "cadence 'every epoch' is not a step cadence — write '- cadence: every N "
                    "steps' (N >= 1; final-epoch-only evaluation is not acceptable)"),
    ("every 0 steps", "cadence 'every 0 steps' is not a step cadence"),
])
def test_cadence_must_be_every_n_steps(cadence: str, problem: str) -> None:
    rows = _rows("- cadence: every 200 steps", f"- cadence: {cadence}")

    assert len(rows) == 1
    assert rows[0].startswith(f"  - {PIPELINE} (line 55): **Evaluation Contract:** {problem}")


def test_cadence_every_n_steps_plus_the_final_epoch_is_accepted() -> None:
    assert _rows("- cadence: every 200 steps",
                 "- cadence: every 200 optimizer steps and after the final epoch") == []


def test_one_entry_mode_only() -> None:
    rows = _rows("- entry_modes: checkpoint, in_memory", "- entry_modes: checkpoint")

    assert rows == [f"  - {PIPELINE} (line 57): **Evaluation Contract:** entry_modes names no "
                    "in_memory mode — list both: '- entry_modes: checkpoint, in_memory' (one "
                    "shared evaluation core)"]


def test_failure_handling_covering_one_mode() -> None:
    rows = _rows("- failure_handling: checkpoint: missing or unreadable file exits 1 naming it, "
                 "a restore failure names the missing keys; in_memory: an empty val loader, a "
                 "failed aggregation or a non-finite metric raises with the step",
                 "- failure_handling: checkpoint: missing or unreadable file exits 1 naming it")

    assert rows == [f"  - {PIPELINE} (line 60): **Evaluation Contract:** failure_handling covers "
                    "no in_memory mode — say what the in_memory mode does on failure too"]


def test_integration_tests_not_checking_the_cadence_fires() -> None:
    rows = _rows("the eval cadence fires at steps 2 and 4 with `--eval-every 2`; ", "")

    assert rows == [f"  - {PIPELINE} (line 51): **Integration Tests:** do not check that the "
                    "evaluation cadence fires — add a test that the evaluation runs at step N "
                    "(say 'the eval cadence fires at step N')"]


def test_integration_tests_not_checking_the_mode_reporting() -> None:
    rows = _rows("; each entry mode reports its mode (checkpoint, in_memory)", "")

    assert rows == [f"  - {PIPELINE} (line 51): **Integration Tests:** do not check that each "
                    "entry mode reports its mode — add a test that the checkpoint and in_memory "
                    "runs each report their mode"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("- entry_modes: checkpoint, in_memory",
     "- entry_modes: checkpoint only (in_memory is not supported)", "restricts or negates"),
    ("- cadence: every 200 steps", "- cadence: never every 200 steps; final epoch",
     "says there is none"),
    ("- cadence: every 200 steps", "- cadence: at the final epoch", "evaluates only at the end"),
    ("- cadence: every 200 steps", "- cadence: every 0 steps", "not a step cadence"),
    ("- shared_core: evaluate.py", "- shared_core: none, each mode has its own evaluate.py",
     "says there is none"),
])
def test_a_contract_entry_that_denies_itself_fails(old, new, expected):
    text = GOOD.read_text(encoding="utf-8")
    assert old in text
    rows = check_plan(parse_plan(text.replace(old, new, 1)))
    assert any(expected in row for row in rows), rows


@pytest.mark.parametrize("cadence", ["every 1,000 steps", "every 2k steps",
                                     "every 200 training iterations"])
def test_reasonable_cadences_pass(cadence):
    text = GOOD.read_text(encoding="utf-8").replace("- cadence: every 200 steps",
                                                    f"- cadence: {cadence}", 1)
    assert check_plan(parse_plan(text)) == []


def test_a_skipped_level_fails():
    text = GOOD.read_text(encoding="utf-8")
    pyramid = next(line for line in text.splitlines() if line.startswith("**Validation Pyramid"))
    rows = check_plan(parse_plan(text.replace(pyramid, "**Validation Pyramid:** L0 skipped; "
                                                      "L1 skipped")))
    assert sum("skips L" in row for row in rows) == 2
