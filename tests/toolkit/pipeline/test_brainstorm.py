"""The brainstorm stage's writing: a new design, revision mode, the brief, the questions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from spml.errors import ProtocolError
from spml.protocols.design import check_design, read_design
from spml.toolkit.pipeline.brainstorm import IMPACT, write_design
from spml.toolkit.pipeline.brief import load_brief
from spml.toolkit.pipeline.context import collect_context
from spml.toolkit.pipeline.questions import QUESTIONS, ask_all

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pipeline"
DAY = date(2026, 12, 5)


def brief() -> dict:
    return load_brief(EXAMPLE / "brief.yaml")


def test_a_new_design_is_written_to_plans_and_passes_its_check(tmp_path):
    written = write_design(tmp_path, brief(), {"python": "3.11"}, DAY)
    assert written.path == tmp_path / "plans" / \
        "2026-12-05-mlp-regression-under-a-fixed-step-budget-design.md"
    assert not written.revised
    assert check_design(written.path) == []
    design, body = read_design(written.path)
    assert design.context == {"python": "3.11"}
    assert body.startswith("# MLP regression")


def test_revision_edits_the_same_file_keeps_the_prose_and_says_what_changed(tmp_path):
    first = write_design(tmp_path, brief(), {}, DAY)
    person_prose = "\n## Notes from the team\n\nWe tried SGD in 2025; it diverged.\n"
    with first.path.open("a", encoding="utf-8") as fh:
        fh.write(person_prose)
    changed = {**brief(), "evaluation": {**brief()["evaluation"], "cadence": "every 100 steps"}}
    again = write_design(tmp_path, changed, {}, date(2026, 12, 6))
    assert again.path == first.path
    assert again.revised
    assert again.changed == ["evaluation"]
    assert len(list((tmp_path / "plans").glob("*-design.md"))) == 1
    design, body = read_design(again.path)
    assert design.evaluation.cadence == "every 100 steps"
    assert person_prose.strip() in body
    assert IMPACT in body
    assert "- 2026-12-06: evaluation changed." in body
    third = write_design(tmp_path, {**changed, "topic": "MLP regression, revised"}, {}, DAY)
    body = read_design(third.path)[1]
    assert body.count(IMPACT) == 1
    assert "- 2026-12-05: topic changed." in body
    assert "- 2026-12-06: evaluation changed." in body  # earlier entries are kept
    assert write_design(tmp_path, {**changed, "topic": "MLP regression, revised"}, {},
                        DAY).changed == []


def test_a_malformed_brief_names_each_field_and_its_line(tmp_path):
    bad = tmp_path / "brief.yaml"
    text = (EXAMPLE / "brief.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("scale: cpu", "scale: tpu").replace(
        "task_type: regression", "task_typ: regression"), encoding="utf-8")
    with pytest.raises(ProtocolError) as err:
        load_brief(bad)
    message = str(err.value)
    lines = text.splitlines()
    scale_line = next(i for i, line in enumerate(lines, 1) if line.startswith("scale:"))
    assert f"scale (line {scale_line})" in message
    assert "did you mean 'task_type'" in message
    bad.write_text("topic: [unclosed\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"malformed.*begins on line 1"):
        load_brief(bad)
    with pytest.raises(ProtocolError, match="must be an existing YAML file"):
        load_brief(tmp_path / "missing.yaml")


def test_the_questions_come_one_at_a_time_and_a_bad_answer_is_asked_again():
    data = yaml.safe_load((EXAMPLE / "brief.yaml").read_text(encoding="utf-8"))
    answers = {"topic": data["topic"], "task_type": "regression", "architecture": "An MLP.",
               "scale": "cpu", "evaluation.required": "yes", "evaluation.metrics": "val_mse",
               "evaluation.direction": "minimize", "evaluation.failure_handling": "exit 1",
               "hypothesis": data["hypothesis"], "independent_variables": "lr, width",
               "dependent_variables": "val_mse", "control_variables": "data, steps"}
    asked, bad_once = [], {"review_criteria": "val_mse is small"}
    problems = []

    def ask(question, problem):
        asked.append(question.key)
        if problem:
            problems.append(problem)
        if question.key in bad_once:
            return bad_once.pop(question.key)
        if question.key == "review_criteria":
            return "val_mse <= 0.05"
        return answers.get(question.key, question.default)

    nested = ask_all(ask)
    assert asked[: len(QUESTIONS)] == [q.key for q in QUESTIONS][: len(asked[: len(QUESTIONS)])]
    assert asked.count("review_criteria") == 2
    assert "name op value" in problems[0]
    assert nested["evaluation"]["entry_modes"] == ["checkpoint", "in_memory"]
    assert nested["review_criteria"] == {"metrics": [
        {"name": "val_mse", "op": "<=", "threshold": 0.05}]}
    assert nested["independent_variables"] == ["lr", "width"]


def test_no_evaluation_skips_its_questions():
    def ask(question, _problem):
        return "no" if question.key == "evaluation.required" else (question.default or "x")

    nested_keys = []

    def recording(question, problem):
        nested_keys.append(question.key)
        return ask(question, problem) if question.key != "review_criteria" else "a <= 1"

    ask_all(recording)
    asked_evaluation = [k for k in nested_keys if k.startswith("evaluation.")]
    assert asked_evaluation == ["evaluation.required"]


def test_the_context_names_git_versions_gpus_and_the_datasets(tmp_path):
    import subprocess

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a,b,y\n1,2,3\n4,,6\n")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "ignored.csv").write_text("x\n1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    context = collect_context(tmp_path)
    assert context["git"]["repository"] == str(tmp_path)
    assert context["python"].count(".") == 2
    assert context["torch"]
    assert context["gpus"]  # a list of names, or "none (<why>)" on this CPU machine
    [dataset] = context["datasets"]
    assert dataset["path"] == "data/rows.csv"
    assert dataset["rows"] == 2
    assert dataset["missing_values"] == 1
    assert set(dataset["columns"]) == {"a", "b", "y"}


def test_a_revision_keeps_fields_the_brief_does_not_give_and_crlf(tmp_path):
    first = write_design(tmp_path, brief(), {}, DAY)
    first.path.write_bytes(first.path.read_bytes().replace(b"\n", b"\r\n"))
    partial = {"topic": brief()["topic"], "scale": "single_gpu"}
    again = write_design(tmp_path, partial, {}, DAY)
    assert again.changed == ["scale"]
    design, _ = read_design(again.path)
    assert design.autoresearch is not None
    assert design.evaluation.cadence == "every 200 steps"
    raw = again.path.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")  # still CRLF throughout
    nested = write_design(tmp_path, {"review_criteria": {"metrics": [
        {"name": "val_mse", "op": "<=", "threshold": 0.1}]}}, {}, DAY, merge="deep")
    assert nested.changed == ["review_criteria"]
    kept = read_design(nested.path)[0].review_criteria
    assert kept.performance
    assert kept.metrics[0].threshold == 0.1


def test_a_design_that_fails_its_check_is_not_written(tmp_path):
    bad = {**brief(), "hypothesis": "More data helps"}
    with pytest.raises(ProtocolError, match="would fail its self-review"):
        write_design(tmp_path, bad, {}, DAY)
    assert not list(tmp_path.rglob("*-design.md"))
    first = write_design(tmp_path, brief(), {}, DAY)
    before = first.path.read_bytes()
    with pytest.raises(ProtocolError, match="hypothesis"):
        write_design(tmp_path, bad, {}, DAY)
    assert first.path.read_bytes() == before
