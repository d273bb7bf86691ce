"""The design doc: round trip, `spml design check` rules with their line, file naming, schema."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from spml.errors import ProtocolError
from spml.protocols.autoresearch import AutoresearchProtocol
from spml.protocols.design import (
    DESIGN_SUFFIX,
    DesignDoc,
    autoresearch_protocol_fields,
    check_design,
    design_filename,
    design_json_schema,
    find_design,
    load_design,
    read_design,
    render_design,
)
from spml.protocols.frontmatter import read_front_matter

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "design" / "good-design.md"
GOOD_TEXT = GOOD.read_text(encoding="utf-8")
ODD_BODY = """\

# Notes   \n\
<details><summary>Raw log</summary>

```python
def f(x: list[int]) -> dict<str, int>:  # `<...>` in code is syntax, not a placeholder
    return {}
```

| a | b |
|---|:-:|
| 1 | <br> |

---
Trailing *emphasis*, a link <https://example.com> and no final newline"""


def write(tmp_path: Path, text: str, name: str = "2024-05-01-mlp-design.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """The good design with one defect: ``old`` (which must occur once) replaced by ``new``."""
    assert GOOD_TEXT.count(old) == 1, old
    return write(tmp_path, GOOD_TEXT.replace(old, new))


def line_of(path: Path, start: str) -> int:
    """1-based number of the first line of ``path`` starting (once indented) with ``start``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith(start))


def only_row(path: Path) -> str:
    rows = check_design(path)
    assert len(rows) == 1, rows
    assert rows[0].startswith("  - "), rows[0]
    assert " — " in rows[0], rows[0]  # every row says how to fix it
    return rows[0]


# --- round trip ------------------------------------------------------------------------------

def test_parse_render_parse_is_the_identity(tmp_path: Path) -> None:
    doc, body = read_design(GOOD)
    again = write(tmp_path, render_design(doc, body))
    doc2, body2 = read_design(again)
    assert doc2 == doc
    assert body2 == body
    assert render_design(doc2, body2) == again.read_text(encoding="utf-8")


def test_a_person_edited_body_is_kept_byte_for_byte(tmp_path: Path) -> None:
    front = GOOD_TEXT.split("\n---\n", 1)[0] + "\n---\n"
    path = write(tmp_path, front + ODD_BODY)
    doc, body = read_design(path)
    assert body == ODD_BODY
    rendered = write(tmp_path, render_design(doc, body), "again-design.md")
    assert read_design(rendered) == (doc, ODD_BODY)
    assert rendered.read_text(encoding="utf-8").endswith(ODD_BODY)
    assert check_design(path) == []  # code, HTML tags and links are not placeholders


def test_a_built_doc_renders_and_reads_back(tmp_path: Path) -> None:
    data = read_front_matter(GOOD).data
    doc = DesignDoc.model_validate({**data, "autoresearch": None, "context": {}})
    path = write(tmp_path, render_design(doc, "# Design\n"))
    assert read_design(path) == (doc, "# Design\n")
    assert check_design(path) == []


def test_the_good_design_loads() -> None:
    doc = load_design(GOOD)
    assert doc.evaluation.metrics == ["val_mse"]
    assert doc.evaluation.direction == "minimize"
    assert doc.validation_scope.training_volume == 300.0
    assert doc.review_criteria.metrics[0].name == "val_mse"
    assert doc.autoresearch is not None
    assert doc.autoresearch["researcher"]["kind"] == "optuna"


# --- design check ----------------------------------------------------------------------------

def test_a_good_design_passes() -> None:
    assert check_design(GOOD) == []


def test_a_placeholder_in_a_field_names_the_field_and_line(tmp_path: Path) -> None:
    path = edited(tmp_path, "scope: full validation", "scope: TBD")
    row = only_row(path)
    assert row.startswith(f"  - evaluation.scope (line {line_of(path, 'scope:')}): ")
    assert "holds the placeholder 'TBD' — replace it" in row


def test_an_angle_bracket_template_in_a_field_is_a_placeholder(tmp_path: Path) -> None:
    path = edited(tmp_path, "  - seed (SPML_SEED)", "  - <the seed>")
    row = only_row(path)
    assert row.startswith(f"  - control_variables.2 (line {line_of(path, '- <the seed>')}): ")
    assert "'<the seed>'" in row


def test_a_placeholder_in_the_autoresearch_section_names_its_field(tmp_path: Path) -> None:
    path = edited(tmp_path, "time_limit: 5", "time_limit: 5\n    epoch_limit: 3  # ???")
    assert check_design(path) == []  # a YAML comment is not content
    path = edited(tmp_path, "range: lr,", "range: TODO lr,")
    assert only_row(path).startswith(
        f"  - autoresearch.variable.range (line {line_of(path, 'range:')}): ")


def test_the_context_mapping_is_not_checked_for_placeholders(tmp_path: Path) -> None:
    path = edited(tmp_path, "branch: main", "branch: main, message: 'TODO: tidy <branch>'")
    assert check_design(path) == []


def test_a_placeholder_in_the_prose_names_the_line(tmp_path: Path) -> None:
    path = edited(tmp_path, "## Risks\n", "## Risks\n\n- FIXME: size of <dataset>\n")
    row = only_row(path)
    assert row.startswith(f"  - prose (line {line_of(path, '- FIXME')}): ")
    assert "'FIXME', '<dataset>'" in row


def test_the_hypothesis_must_read_doing_x_is_expected_to_cause_y(tmp_path: Path) -> None:
    path = edited(tmp_path, "  Doing a search over", "  We search over")
    row = only_row(path)
    assert row.startswith(f"  - hypothesis (line {line_of(path, 'hypothesis:')}): ")
    assert 'must read "doing X is expected to cause Y", got \'We search over' in row
    assert "rewrite it as" in row


def test_a_final_epoch_cadence_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, "cadence: every 200 steps", "cadence: final epoch")
    row = only_row(path)
    assert row.startswith(f"  - evaluation.cadence (line {line_of(path, 'cadence:')}): ")
    assert "must read \"every N steps\" (N >= 1), got 'final epoch'" in row
    assert "final-epoch-only evaluation is not acceptable" in row


@pytest.mark.parametrize("cadence", ["every 0 steps", "every few steps", "200"])
def test_a_cadence_must_be_every_n_steps_with_n_at_least_1(tmp_path: Path, cadence: str) -> None:
    path = edited(tmp_path, "cadence: every 200 steps", f"cadence: {cadence}")
    assert "evaluation.cadence" in only_row(path)


def test_a_required_evaluation_needs_its_shape(tmp_path: Path) -> None:
    path = edited(tmp_path, "  entry_modes: [checkpoint, in_memory]\n", "  entry_modes: []\n")
    assert only_row(path).startswith(
        f"  - evaluation.entry_modes (line {line_of(path, 'entry_modes:')}): is missing or empty")
    path = edited(tmp_path, "  direction: minimize\n  cadence", "  cadence")
    assert only_row(path).startswith(
        f"  - evaluation.direction (line {line_of(path, 'evaluation:')}): is missing or empty")


def test_a_criterion_the_evaluation_does_not_measure_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, '[{name: val_mse, op: "<="', '[{name: val_loss, op: "<="')
    row = only_row(path)
    line = line_of(path, "metrics: [{name: val_loss")
    assert row.startswith(f"  - review_criteria.metrics.0 (line {line}): ")
    assert "'val_loss' is not one of evaluation.metrics ['val_mse']" in row


def test_a_criterion_without_an_evaluation_design_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, "required: true", "required: false")
    rows = check_design(path)
    # autoresearch then optimises a metric no evaluation measures: a second, separate row
    assert len(rows) == 2, rows
    assert rows[0].startswith("  - review_criteria.metrics.0 (line ")
    assert "no evaluation design measures it" in rows[0]
    assert rows[1].startswith("  - autoresearch.eval.metric (line ")


def test_an_evaluation_metric_must_be_a_dependent_variable(tmp_path: Path) -> None:
    path = edited(tmp_path, "[val_mse (validation mean squared error)]", "[validation error]")
    row = only_row(path)
    line = line_of(path, "dependent_variables:")
    assert row.startswith(f"  - dependent_variables (line {line}): does not name the "
                          "evaluation metric 'val_mse' — add val_mse")


@pytest.mark.parametrize(("old", "new", "field", "message"), [
    ("max_rounds: 8", "max_rounds: -1", "autoresearch.max_rounds",
     "greater than or equal to 0, got -1"),
    ("max_rounds: 8", "max_rounds: 8\n  rounds_cap: 3", "autoresearch.rounds_cap",
     "Extra inputs are not permitted — remove it or check its spelling"),
    ("max_rounds: 8", "max_round: 8", "autoresearch.max_round", "did you mean 'max_rounds'?"),
    ("time_limit: 5", "time_limit: forever", "autoresearch.fixed.time_limit", "duration"),
])
def test_an_invalid_autoresearch_field_is_named_with_its_line(
        tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    path = edited(tmp_path, old, new)
    key = field.rsplit(".", 1)[1]
    row = only_row(path)
    assert row.startswith(f"  - {field} (line {line_of(path, key + ':')}): "), row
    assert message in row
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        load_design(path)


def test_the_autoresearch_metric_must_be_an_evaluation_metric(tmp_path: Path) -> None:
    path = edited(tmp_path, "metric: val_mse,", "metric: train_mse,")
    row = only_row(path)
    assert row.startswith(f"  - autoresearch.eval.metric (line {line_of(path, 'eval:')}): "
                          "'train_mse' is not one of evaluation.metrics ['val_mse']")


def test_the_autoresearch_direction_must_match_the_evaluation(tmp_path: Path) -> None:
    path = edited(tmp_path, "direction: minimize}", "direction: maximize}")
    row = only_row(path)
    assert row.startswith(f"  - autoresearch.eval.direction (line {line_of(path, 'eval:')}): "
                          "'maximize' differs from evaluation.direction 'minimize'")


def test_an_unknown_top_level_field_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = edited(tmp_path, "hypothesis: >-", "hypotesis: >-")
    row = only_row(path)
    assert row.startswith(f"  - hypotesis (line {line_of(path, 'hypotesis:')}): ")
    assert "did you mean 'hypothesis'?" in row


def test_a_schema_error_is_a_row_and_load_design_raises(tmp_path: Path) -> None:
    path = edited(tmp_path, "task_type: regression", "task_type: nlp")
    assert only_row(path).startswith(f"  - task_type (line {line_of(path, 'task_type:')}): ")
    with pytest.raises(ProtocolError, match=r"^2024-05-01-mlp-design\.md is not a valid design"):
        load_design(path)


def test_a_missing_file_or_malformed_yaml_raises(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="must exist"):
        check_design(tmp_path / "nowhere-design.md")
    path = edited(tmp_path, "scale: cpu", "scale: [cpu")
    with pytest.raises(ProtocolError, match=r"line \d+\): the YAML front matter is malformed"):
        check_design(path)


# --- files and schema ------------------------------------------------------------------------

@pytest.mark.parametrize(("topic", "name"), [
    ("MLP regression under a fixed step budget",
     "2024-05-01-mlp-regression-under-a-fixed-step-budget-design.md"),
    ("  Café: LR/width sweep (v2)!  ", "2024-05-01-cafe-lr-width-sweep-v2-design.md"),
    ("自动研究", "2024-05-01-experiment-design.md"),
    ("word " * 30, "2024-05-01-" + "-".join(["word"] * 12) + DESIGN_SUFFIX),
])
def test_design_filename_slugs_the_topic(topic: str, name: str) -> None:
    assert design_filename(topic, date(2024, 5, 1)) == name


def test_find_design_finds_none_one_or_refuses_two(tmp_path: Path) -> None:
    assert find_design(tmp_path) is None
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "2024-05-01-mlp.md").write_text("# a plan\n", encoding="utf-8")
    assert find_design(tmp_path) is None
    first = write(plans, GOOD_TEXT, "2024-05-01-mlp-design.md")
    assert find_design(tmp_path) == first
    write(plans, GOOD_TEXT, "2024-05-02-mlp-v2-design.md")
    with pytest.raises(ProtocolError, match=r"holds 2 design docs \(2024-05-01-mlp-design\.md, "):
        find_design(tmp_path)


def test_design_json_schema_is_a_valid_schema_of_the_good_design() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = design_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) >= {
        "topic", "hypothesis", "independent_variables", "dependent_variables",
        "control_variables", "task_type", "architecture", "scale", "evaluation",
        "validation_scope", "review_criteria", "autoresearch", "context"}
    assert "train_command" not in schema["$defs"]["AutoresearchSection"]["required"]
    jsonschema.validate(read_front_matter(GOOD).data, schema)
    bad = yaml.safe_load(yaml.safe_dump(read_front_matter(GOOD).data))
    bad["autoresearch"]["max_rounds"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_autoresearch_protocol_fields_validate_as_the_protocol() -> None:
    doc = load_design(GOOD)
    fields = autoresearch_protocol_fields(doc, "python train.py")
    protocol = AutoresearchProtocol.model_validate(fields)
    assert protocol.train_command == "python train.py"
    assert (protocol.metric, protocol.researcher.kind) == ("val_mse", "optuna")
    fields["fixed"]["files"].append("changed.py")  # a copy: the design is not touched
    assert "changed.py" not in doc.autoresearch["fixed"]["files"]  # type: ignore[index]


def test_autoresearch_protocol_fields_refuse_a_design_without_the_section() -> None:
    doc = load_design(GOOD).model_copy(update={"autoresearch": None})
    with pytest.raises(ProtocolError, match="no autoresearch section"):
        autoresearch_protocol_fields(doc, "python train.py")
    with pytest.raises(ProtocolError, match=r"autoresearch\.train_command"):
        autoresearch_protocol_fields(load_design(GOOD), "")
