"""The plan: text-preserving parse/render, the edits (only their lines change), render_plan,
structural errors with lines, test targets and the JSON Schema."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from helpers import FIXTURES

from spml.errors import ProtocolError
from spml.protocols.plan import (
    HEADER_FIELDS,
    PlanDoc,
    PlanStructure,
    SubtaskDraft,
    load_plan,
    parse_plan,
    plan_json_schema,
    render_plan,
)

GOOD = FIXTURES / "plan" / "good-plan.md"
EDITED = FIXTURES / "plan" / "edited-plan.md"


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _good(newline: str = "\n") -> PlanDoc:
    return parse_plan(_text(GOOD).replace("\n", newline), "good-plan.md")


def _lines(text: str) -> list[str]:
    """Lines split at '\\n' only, endings kept (`str.splitlines` also splits at U+2028)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _changes(old: str, new: str) -> list[tuple[list[str], list[str]]]:
    """(removed lines, added lines) of every change between two texts, line endings kept."""
    a, b = _lines(old), _lines(new)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [(a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"]


def _only_change(old: str, new: str) -> tuple[list[str], list[str]]:
    changes = _changes(old, new)
    assert len(changes) == 1, changes
    return changes[0]


# Round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GOOD, EDITED], ids=["good", "person-edited"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("final_newline", [True, False], ids=["final-newline", "no-final"])
def test_unedited_plan_renders_byte_for_byte(path: Path, newline: str,
                                             final_newline: bool) -> None:
    text = _text(path).rstrip("\n").replace("\n", newline) + (newline if final_newline else "")

    doc = parse_plan(text, path.name)

    assert doc.render() == text
    assert doc.newline == newline


def test_load_plan_keeps_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    text = "\ufeff" + _text(GOOD).replace("\n", "\r\n")
    path = tmp_path / "2024-05-01-mlp.md"
    path.write_bytes(text.encode("utf-8"))

    doc = load_plan(path)

    assert doc.render() == text
    assert doc.title == "MLP regression Implementation Plan"
    assert doc.name == "2024-05-01-mlp.md"


def test_load_plan_refuses_a_missing_or_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="must exist"):
        load_plan(tmp_path / "absent.md")
    (tmp_path / "latin.md").write_bytes("# Caf\xe9\n".encode("latin-1"))
    with pytest.raises(ProtocolError, match=r"latin.md \(byte 5\): is not UTF-8"):
        load_plan(tmp_path / "latin.md")


# Structure --------------------------------------------------------------------------------


def test_good_plan_structure() -> None:
    doc = _good()

    assert doc.title == "MLP regression Implementation Plan"
    assert tuple(doc.header) == HEADER_FIELDS
    assert doc.header["Experiment directory"] == "experiments/mlp"
    assert doc.header_lines["Goal"] == 5
    assert doc.scaffold.startswith("Existing infra (don't touch, advise if problems):")
    assert [(s.number, s.title, s.status, s.integration) for s in doc.subtasks] == [
        (1, "Model core", "todo", False), (2, "Evaluator core", "todo", False),
        (3, "Training pipeline [INTEGRATION]", "todo", True)]
    model = doc.subtask(1)
    assert model.line == 16
    assert model.field_lines == {"Role": 17, "Implementation": 18, "Unit Tests": 19,
                                 "Expected Conclusion": 21}
    assert model.fields["Expected Conclusion"] == "implemented + 3 unit tests passing"
    assert model.conclusion is None
    assert doc.integration is doc.subtask(3)
    contract = doc.subtask(3).fields["Evaluation Contract"]
    assert contract.splitlines()[0] == "- cadence: every 200 steps"
    assert doc.removed == []


def test_steps_after_a_blank_line_are_not_part_of_the_last_field() -> None:
    doc = _good()

    assert "Steps" not in doc.subtask(1).fields["Expected Conclusion"]
    assert doc.field_text(doc.subtask(1), "Unit Tests") == [
        (19, "**Unit Tests:**"),
        (20, "- `tests/test_model.py` — output shape (batch, 1); parameter count for width 64, "
             "depth 3; depth 1 has no hidden block")]


def test_person_edited_plan_structure() -> None:
    doc = load_plan(EDITED)

    assert doc.header["Goal"].endswith("目标 ✓")  # `**Goal**:` reads like `**Goal:**`
    assert doc.header["Validation scope"] == ("L0 (profile spml) + L1 (mock overfit, 5min),\n"
                                              "  baselines: none")
    assert [(s.number, s.status) for s in doc.subtasks] == [
        (1, "done"), (2, "revised"), (5, "new"), (3, "todo")]
    model = doc.subtask(1)
    # A blank line between a label and its list belongs to the field; unknown labels are prose.
    assert model.fields["Unit Tests"].startswith("- `tests/test_model.py` — shape\n  continued")
    assert "Note" not in model.fields
    assert model.conclusion == {
        "Role": "The MLP.", "Result": "implemented",
        "Evidence": "2 tests passing (tests/test_model.py); files: model.py\n"
                    "Reviewer's note: fine."}
    assert model.conclusion_line == 43
    # The fenced `## [ ] Subtask 9` / `**Role:** fake` / `## Conclusion` are prose.
    assert 9 not in [s.number for s in doc.subtasks]
    assert [(r.number, r.title, r.reason, r.line) for r in doc.removed] == [
        (4, "Data augmentation", "out of scope after the design revision (2024-05-02)", 64)]
    assert doc.integration is not None
    assert doc.integration.number == 3


def test_tests_are_the_backticked_test_files_and_node_ids() -> None:
    edited = load_plan(EDITED)

    assert _good().subtask(2).tests == [
        "tests/test_evaluate.py::test_val_mse_of_a_constant_model",
        "tests/test_evaluate.py::test_missing_checkpoint_exits_1",
        "tests/test_evaluate.py::test_non_finite_metric_raises"]
    assert edited.subtask(1).tests == ["tests/test_model.py",
                                       "tests/test_model.py::test_depth_one"]
    # `evaluate.py` is the module under test, not a test file: not a pytest target.
    assert edited.subtask(2).tests == ["tests/test_evaluate.py"]
    assert edited.subtask(3).tests == ["tests/test_pipeline.py"]


def test_subtask_lookup_names_the_active_ones() -> None:
    doc = load_plan(EDITED)

    with pytest.raises(ProtocolError, match=r"Subtask 4 is REMOVED \(line 64\).*1, 2, 5, 3"):
        doc.subtask(4)
    with pytest.raises(ProtocolError, match="Subtask 7 does not exist"):
        doc.subtask(7)


# Edits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "heading"), [
    ("done", "## [x] Subtask 2: Evaluator core"),
    ("revised", "## [ ] REVISED Subtask 2: Evaluator core"),
    ("new", "## [ ] NEW Subtask 2: Evaluator core"),
    ("todo", "## [ ] Subtask 2: Evaluator core"),
])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_mark_rewrites_only_the_heading(status: str, heading: str, newline: str) -> None:
    doc = _good(newline)

    marked = doc.mark(2, status)  # type: ignore[arg-type]

    assert marked.subtask(2).status == status
    assert doc.subtask(2).status == "todo"  # edits return a new PlanDoc
    if status != "todo":
        assert _only_change(doc.render(), marked.render()) == (
            ["## [ ] Subtask 2: Evaluator core" + newline], [heading + newline])
    else:
        assert marked.render() == doc.render()


def test_mark_refuses_an_unknown_status() -> None:
    with pytest.raises(ProtocolError, match="status must be one of todo, done, revised, new"):
        _good().mark(1, "finished")  # type: ignore[arg-type]


def test_set_conclusion_inserts_then_replaces() -> None:
    doc = _good()
    first = {"Role": "The MLP.", "Result": "implemented",
             "Evidence": "3 tests passing (tests/test_model.py); files: model.py"}

    inserted = doc.set_conclusion(1, first)

    removed, added = _only_change(doc.render(), inserted.render())
    assert removed == []
    assert added == ["\n", "## Conclusion\n", "**Role:** The MLP.\n", "**Result:** implemented\n",
                     "**Evidence:** 3 tests passing (tests/test_model.py); files: model.py\n"]
    assert inserted.subtask(1).conclusion == first
    assert "5. Commit: `experiment: model core`.\n\n## Conclusion\n" in inserted.render()

    replaced = inserted.set_conclusion(1, {"Result": "implemented", "Evidence": "4 tests"})

    assert replaced.render().count("## Conclusion") == 1
    assert replaced.subtask(1).conclusion == {"Result": "implemented", "Evidence": "4 tests"}
    assert all(not r or r[0].startswith("**") for r, _ in
               _changes(inserted.render(), replaced.render()))
    assert replaced.subtask(2).fields == doc.subtask(2).fields


def test_set_conclusion_keeps_a_persons_prose_in_the_conclusion() -> None:
    doc = load_plan(EDITED)

    done = doc.set_conclusion(1, {"Result": "implemented", "Evidence": "2 tests passing"})

    text = done.render()
    assert text.count("## Conclusion") == 2  # the subtask's one and the fenced one
    assert done.subtask(1).conclusion == {"Result": "implemented", "Evidence": "2 tests passing"}
    assert "\n## Conclusion\n**Result:** implemented\n**Evidence:** 2 tests passing\n\n" in text


def test_set_conclusion_at_the_end_of_a_file_without_final_newline() -> None:
    text = _text(GOOD).rstrip("\n")
    doc = parse_plan(text)

    done = doc.set_conclusion(3, {"Hypothesis": "Doing a search ... val_mse < 0.02",
                                  "Result": "effective",
                                  "Evidence": "val_mse: 0.018 (expected: <= 0.05)",
                                  "Anomalies": "none", "Recommendation": "proceed"})

    new = done.render()
    assert new.startswith(text + "\n\n## Conclusion\n**Hypothesis:**")
    assert new.endswith("**Recommendation:** proceed")
    assert done.subtask(3).conclusion is not None
    assert done.subtask(3).conclusion["Result"] == "effective"


def test_edits_on_a_person_edited_plan_keep_its_missing_final_newline() -> None:
    doc = load_plan(EDITED)

    done = doc.mark(3, "done").set_conclusion(3, {"Result": "effective"})

    old, new = doc.render(), done.render()
    assert new.endswith("(a line separator in prose)\n\n## Conclusion\n**Result:** effective")
    assert [removed for removed, _ in _changes(old, new)] == [
        ["## [ ] Subtask 3: Training pipeline [INTEGRATION]\n"],
        ["Last line without a final newline \u2028 (a line separator in prose)"]]
    assert done.subtask(3).conclusion == {"Result": "effective"}


def test_set_conclusion_refuses_an_unknown_field() -> None:
    with pytest.raises(ProtocolError, match=r"\*\*Verdict:\*\* is not a known field"):
        _good().set_conclusion(1, {"Verdict": "fine"})


def test_remove_replaces_the_subtask_with_its_removed_line() -> None:
    doc = load_plan(EDITED)

    cut = doc.remove(5, "folded into the training pipeline")

    removed, added = _only_change(doc.render(), cut.render())
    assert removed[0] == "## [ ] NEW Subtask 5: Seed utilities\n"
    assert added == ["## REMOVED: Subtask 5: Seed utilities — folded into the training "
                     "pipeline\n"]
    assert [r.number for r in cut.removed] == [4, 5]
    assert [s.number for s in cut.subtasks] == [1, 2, 3]
    with pytest.raises(ProtocolError, match="one non-empty line"):
        doc.remove(1, " ")


def test_remove_takes_the_conclusion_with_the_subtask() -> None:
    cut = load_plan(EDITED).remove(1, "replaced by a library model")

    assert "**Reviewer's note" not in cut.render()
    assert "## Notes\n" in cut.render()


def test_add_subtask_goes_before_the_integration_subtask() -> None:
    doc = load_plan(EDITED)
    fields = {"Role": "Logging helpers.", "Implementation": "`log.py`",
              "Unit Tests": "- `tests/test_log.py` — one line per step",
              "Expected Conclusion": "implemented + 1 unit test passing"}

    added = doc.add_subtask("Logging", fields)

    removed, new = _only_change(doc.render(), added.render())
    assert removed == []
    assert new[0] == "## [ ] NEW Subtask 6: Logging\n"  # 6: above every number, removed 4 too
    assert new[-1] == "\n"
    assert [s.number for s in added.subtasks] == [1, 2, 5, 6, 3]
    assert added.subtask(6).fields == {k: v for k, v in fields.items()}
    assert added.subtask(6).status == "new"


def test_add_integration_subtask_goes_after_the_last_subtask() -> None:
    text = _text(GOOD)
    doc = parse_plan(text).remove(3, "rewritten").add_subtask(
        "Trainer", {"Role": "r"}, integration=True, steps=["Write the tests.", "Implement."])

    assert doc.subtasks[-1].title == "Trainer [INTEGRATION]"
    assert doc.subtasks[-1].number == 4
    assert doc.render().endswith("## REMOVED: Subtask 3: Training pipeline [INTEGRATION] — "
                                 "rewritten\n\n## [ ] NEW Subtask 4: Trainer [INTEGRATION]\n"
                                 "**Role:** r\n\nSteps:\n1. Write the tests.\n2. Implement.\n")


def test_revise_replaces_the_given_fields_and_marks_revised() -> None:
    doc = _good("\r\n")

    revised = doc.revise(1, {"Implementation": "`model.py` — `MLP` with dropout",
                             "Hypothesis": "Doing dropout is expected to cause lower val_mse"})

    assert revised.subtask(1).status == "revised"
    assert revised.subtask(1).fields["Implementation"] == "`model.py` — `MLP` with dropout"
    changes = _changes(doc.render(), revised.render())
    assert changes == [
        (["## [ ] Subtask 1: Model core\r\n"], ["## [ ] REVISED Subtask 1: Model core\r\n"]),
        ([doc.lines[17]], ["**Implementation:** `model.py` — `MLP` with dropout\r\n"]),
        ([], ["**Hypothesis:** Doing dropout is expected to cause lower val_mse\r\n"]),
    ]
    # Added after the last field: before the blank line and the steps.
    assert revised.subtask(1).field_lines["Hypothesis"] == 22


def test_revise_keeps_a_new_subtask_new_and_refuses_unknown_fields() -> None:
    doc = load_plan(EDITED)

    assert doc.revise(5, {"Role": "Seeds."}).subtask(5).status == "new"
    with pytest.raises(ProtocolError, match=r"\*\*Owner:\*\* is not a known field"):
        doc.revise(5, {"Owner": "me"})
    with pytest.raises(ProtocolError, match="cannot be written as one plan field"):
        doc.revise(5, {"Role": "one\n\ntwo"})


def test_update_header_replaces_or_adds_one_field() -> None:
    doc = load_plan(EDITED)

    updated = doc.update_header("validation scope", "L0 + L1 (real data, 10min)")

    removed, added = _only_change(doc.render(), updated.render())
    assert removed == ["**Validation scope:** L0 (profile spml) + L1 (mock overfit, 5min),\n",
                       "  baselines: none\n"]
    assert added == ["**Validation scope:** L0 + L1 (real data, 10min)\n"]

    extra = updated.update_header("Owner", "Anna")
    assert _only_change(updated.render(), extra.render()) == ([], ["**Owner:** Anna\n"])
    assert extra.header["Owner"] == "Anna"
    assert extra.header_lines["Owner"] == 12  # after Architecture, line 11


def test_update_header_on_a_plan_without_header_fields() -> None:
    doc = parse_plan("# Plan\n## Shared Scaffold\n")

    updated = doc.update_header("Goal", "g")

    assert updated.render() == "# Plan\n\n**Goal:** g\n\n## Shared Scaffold\n"


# render_plan ------------------------------------------------------------------------------


def test_render_plan_reads_back_the_same_structure() -> None:
    good = _good()
    drafts = [SubtaskDraft(title=s.title, fields=s.fields) for s in good.subtasks]

    text = render_plan(good.title, good.header, good.scaffold, drafts)

    back = parse_plan(text)
    assert back.render() == text
    expected = good.structure().model_dump(exclude={"subtasks": {"__all__": {"line"}}})
    assert back.structure().model_dump(exclude={"subtasks": {"__all__": {"line"}}}) == expected
    assert text.startswith("# MLP regression Implementation Plan\n\n> Executor: `spml develop "
                           "experiments/mlp` runs each subtask's tests")


def test_render_plan_accepts_mappings_and_marks_the_integration_subtask() -> None:
    text = render_plan("T", {"goal": "g"}, "", [
        {"title": "Core", "fields": {"Role": "r"}, "steps": ["Write the tests."]},
        {"title": "Pipeline", "fields": {"Components": "Subtask 1"}, "integration": True}])

    doc = parse_plan(text)
    assert doc.header == {"Goal": "g"}
    assert [s.title for s in doc.subtasks] == ["Core", "Pipeline [INTEGRATION]"]
    assert "## [ ] Subtask 1: Core\n**Role:** r\n\nSteps:\n1. Write the tests.\n" in text


@pytest.mark.parametrize(("title", "header", "fields", "message"), [
    ("T", {"Goal": "a\n\nb"}, {}, "cannot be written as one plan field"),
    ("T", {}, {"Role": "x\n**Implementation:** y"}, "cannot be written as one plan field"),
    ("T", {}, {"Role": "x\nSteps:"}, "cannot be written as one plan field"),
    ("T", {}, {"Owner": "me"}, "not a known field"),
    ("two\nlines", {}, {}, "title does not read back"),
])
def test_render_plan_refuses_what_would_not_read_back(title: str, header: dict[str, str],
                                                      fields: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        render_plan(title, header, "", [SubtaskDraft(title="Core", fields=fields)])


# Structural errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "row"), [
    ("## [ ] Subtask 2: Evaluator core", "## Subtask 2: Evaluator core",
     r"heading \(line 30\): '## Subtask 2: Evaluator core' is not a valid subtask heading — "
     r"write '## \[ \] Subtask N: <title>'"),
    ("## [ ] Subtask 2: Evaluator core", "## [ ] Subtask two: Evaluator core",
     r"heading \(line 30\)"),
    ("## [ ] Subtask 2: Evaluator core", "## [~] Subtask 2: Evaluator core",
     r"heading \(line 30\)"),
    ("## [ ] Subtask 2: Evaluator core", "## [x] REVISED Subtask 2: Evaluator core",
     r"heading \(line 30\)"),
    ("## [ ] Subtask 2: Evaluator core", "## Subtask 2 [ ]: Evaluator core",
     r"heading \(line 30\)"),
    ("## [ ] Subtask 2: Evaluator core", "## REMOVED: Subtask 2: Evaluator core",
     r"heading \(line 30\)"),
    ("## [ ] Subtask 2: Evaluator core", "## [ ] Subtask 1: Evaluator core",
     r"Subtask 1 \(line 30\): the number 1 is already used on line 16 — renumber one of them"),
    ("## Shared Scaffold", "## Conclusion",
     r"## Conclusion \(line 12\): has no subtask directly above it — move it"),
    ("**Expected Conclusion:** implemented + 3 unit tests passing\n\nSteps:\n1. Write `tests/"
     "test_model.py`", "**Role:** again\n\nSteps:\n1. Write `tests/test_model.py`",
     r"Subtask 1 \(line 21\): \*\*Role:\*\* is given twice \(first on line 17\) — keep one"),
])
def test_structural_errors_name_the_line_and_the_fix(old: str, new: str, row: str) -> None:
    text = _text(GOOD)
    assert old in text

    with pytest.raises(ProtocolError, match=row):
        parse_plan(text.replace(old, new, 1), "p.md")


def test_a_conclusion_after_a_conclusion_or_a_removed_subtask_has_no_owner() -> None:
    text = _text(GOOD).replace("\nSteps:\n1. Write `tests/test_model.py`",
                               "\n## Conclusion\n**Result:** x\n\n## Conclusion\n"
                               "**Result:** y\n\nSteps:\n1. Write `tests/test_model.py`", 1)
    text += "\n## REMOVED: Subtask 9: Old — gone\n## Conclusion\n"

    with pytest.raises(ProtocolError) as caught:
        parse_plan(text, "p.md")

    message = str(caught.value)
    assert message.startswith("p.md is not a valid plan (2 problems; all below): ")
    assert "  - ## Conclusion (line 26): has no subtask directly above it" in message
    assert "  - ## Conclusion (line 80): has no subtask directly above it" in message


# Schema -----------------------------------------------------------------------------------


def test_plan_json_schema_describes_the_parsed_structure() -> None:
    schema = plan_json_schema()
    doc = load_plan(EDITED)

    assert set(schema["properties"]) == {"title", "header", "scaffold", "subtasks", "removed"}
    defs = schema["$defs"]
    assert set(defs["SubtaskStructure"]["properties"]) == {
        "number", "title", "integration", "status", "line", "fields", "conclusion"}
    assert "Evaluation design" in defs["PlanHeader"]["properties"]
    assert defs["SubtaskStructure"]["properties"]["status"]["enum"] == [
        "todo", "done", "revised", "new"]
    dumped = doc.structure().model_dump(mode="json", by_alias=True)
    assert PlanStructure.model_validate(dumped) == doc.structure()
    assert dumped["subtasks"][0]["conclusion"]["Result"] == "implemented"
