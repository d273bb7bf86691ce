"""`iteration-protocol.md`: loading, defaults, locked fields, errors with their line, schema."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import problem_rows

from spml.errors import ProtocolError
from spml.protocols.frontmatter import read_front_matter
from spml.protocols.iteration import (
    LOCKED_FIELDS,
    PROTOCOL_FILENAME,
    IterationProtocol,
    load_protocol,
    locked_changes,
    protocol_json_schema,
    read_protocol_body,
)
from spml.protocols.researchers import CommandResearcherSpec, OptunaResearcherSpec
from spml.protocols.review_criteria import Criterion, criteria_names

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "spml" / "protocols" / "schemas" / "iteration.schema.json"
GENERATOR = ROOT / "scripts" / "gen_schemas.py"

VALID = """\
---
goal: Reach 90% validation accuracy in a 5-minute budget, with clean per-step logs.
max_rounds: 8
train_command: python train.py --config config.yaml
fixed:
  files: [evaluate.py, data.py]
  time_limit: 5min
focused_files: [model.py, train.py]
eval:
  command: python evaluate.py --checkpoint outputs/best.pt
  timeout: 2min
researcher:
  kind: command
  command: my-agent --prompt-file {prompt_file} --round {round} --dir {workdir}
acceptance: {repeats: 2, noise: 0.02}
experiences_window: 4
review_criteria:
  metrics:
    - {name: acc, op: ">=", threshold: 0.9}
    - {name: val_loss, op: "<", threshold: 1.5}
  performance:
    - {name: train_time_s, op: "<=", threshold: 300}
    - "first_step_time <= 30s"
    - "mfu >= 0.30"
  observability: {required_keys: [loss, grad_norm]}
  stability: {no_nan: true, forbid_patterns: ["UserWarning: .*autograd"]}
  custom:
    - {name: hf_loadable, command: python check_hf.py, timeout: 2min}
---
# Initial hints

Try a cosine learning-rate schedule first.
"""

MINIMAL = """\
---
goal: Lower the validation loss.
train_command: python train.py
fixed: {files: [evaluate.py, data.py], time_limit: 90}
eval: {command: python evaluate.py}
researcher:
  kind: command
  command: my-agent {prompt_file}
review_criteria:
  metrics: [{name: val_loss, op: "<=", threshold: 1.5}]
---
"""

OPTUNA = """\
researcher:
  kind: optuna
  params_file: params.yaml
  space:
    lr: {type: float, low: 1e-4, high: 1e-1, log: true}
"""


def _write(directory: Path, text: str = VALID, **replace: str) -> Path:
    """Write the protocol, each ``old=new`` pair of ``replace`` applied (old must occur)."""
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PROTOCOL_FILENAME
    path.write_text(text, encoding="utf-8")
    return path


def _optuna(text: str = MINIMAL) -> str:
    command = "researcher:\n  kind: command\n  command: my-agent {prompt_file}\n"
    assert command in text
    return text.replace(command, OPTUNA)


def _line(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _rows(path: Path) -> list[str]:
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    return problem_rows(str(info.value))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- valid protocols -------------------------------------------------------------------------


def test_full_protocol_loads(tmp_path: Path) -> None:
    protocol = load_protocol(_write(tmp_path))

    assert protocol.goal.startswith("Reach 90% validation accuracy")
    assert protocol.max_rounds == 8
    assert protocol.train_command == "python train.py --config config.yaml"
    assert protocol.fixed.files == ["evaluate.py", "data.py"]
    assert protocol.fixed.time_limit == 300.0
    assert protocol.focused_files == ["model.py", "train.py"]
    assert protocol.editable_files == ["**"]
    assert protocol.eval.command == "python evaluate.py --checkpoint outputs/best.pt"
    assert isinstance(protocol.researcher, CommandResearcherSpec)
    assert protocol.acceptance.repeats == 2
    assert protocol.acceptance.noise == 0.02
    assert protocol.experiences_window == 4
    assert protocol.train_timeout_s == 330.0
    assert protocol.eval_timeout_s == 120.0
    assert protocol.researcher_timeout_s == 600.0
    criteria = protocol.review_criteria
    assert criteria.performance[1] == Criterion(name="first_step_time_s", op="<=",
                                                threshold=30)
    assert criteria.custom[0].timeout == 120.0
    assert criteria_names(criteria) == [
        "metrics.acc", "metrics.val_loss", "performance.train_time_s",
        "performance.first_step_time_s", "performance.mfu", "observability", "stability",
        "custom.hf_loadable"]
    assert protocol.objective == Criterion(name="acc", op=">=", threshold=0.9)
    assert (protocol.metric, protocol.direction) == ("acc", "maximize")


def test_defaults(tmp_path: Path) -> None:
    protocol = load_protocol(_write(tmp_path, MINIMAL))

    assert protocol.schema_version == 1
    assert protocol.max_rounds == 10
    assert protocol.focused_files == []
    assert protocol.fixed.epoch_limit is None
    assert protocol.eval.timeout is None
    assert protocol.acceptance.repeats == 1
    assert protocol.acceptance.noise is None
    assert protocol.experiences_window == 5
    assert protocol.train_timeout_s == 120.0
    assert protocol.eval_timeout_s == 120.0
    assert protocol.researcher_timeout_s == 180.0
    assert (protocol.metric, protocol.direction) == ("val_loss", "minimize")


def test_body_is_the_prose_below_the_front_matter(tmp_path: Path) -> None:
    assert read_protocol_body(_write(tmp_path)) == (
        "# Initial hints\n\nTry a cosine learning-rate schedule first.")


def test_protocol_is_frozen(tmp_path: Path) -> None:
    protocol = load_protocol(_write(tmp_path))

    with pytest.raises(ValueError, match="frozen"):
        protocol.max_rounds = 3  # type: ignore[misc]


@pytest.mark.parametrize(("metrics", "metric", "direction"), [
    ('[{name: acc, op: ">", threshold: 0.9}]', "acc", "maximize"),
    ('["loss < 2", "acc >= 0.9"]', "loss", "minimize"),
    ('["loss == 0", "acc >= 0.9"]', "acc", "maximize"),  # '==' is not a scalar objective
    ('["loss == 0"]', "loss", "minimize"),
    ("[]", None, None),
])
def test_objective_is_the_first_metrics_criterion(tmp_path: Path, metrics: str,
                                                  metric: str | None,
                                                  direction: str | None) -> None:
    text = MINIMAL.replace('[{name: val_loss, op: "<=", threshold: 1.5}]',
                           f"{metrics}\n  custom: [{{name: ok, command: 'true'}}]")

    protocol = load_protocol(_write(tmp_path, text))

    assert (protocol.metric, protocol.direction) == (metric, direction)


def test_optuna_researcher_with_a_scalar_objective_loads(tmp_path: Path) -> None:
    protocol = load_protocol(_write(tmp_path, _optuna()))

    assert isinstance(protocol.researcher, OptunaResearcherSpec)
    assert protocol.metric == "val_loss"


@pytest.mark.parametrize("criteria", [
    '  metrics: ["acc == 1"]',
    "  custom: [{name: ok, command: 'true'}]",
    "  performance: [\"mfu >= 0.3\"]",
])
def test_optuna_researcher_without_a_scalar_metric_is_refused(tmp_path: Path,
                                                              criteria: str) -> None:
    path = _write(tmp_path, _optuna(), **{
        '  metrics: [{name: val_loss, op: "<=", threshold: 1.5}]': criteria})

    assert _rows(path) == [
        f"- review_criteria (line {_line(path, 'review_criteria:')}): Value error, researcher "
        "kind 'optuna' needs a scalar objective: add a metrics criterion with op >=, >, <= or "
        "< (e.g. {name: val_loss, op: '<=', threshold: 1.5}); '==' criteria cannot be "
        "optimised"]


# --- errors name the field and its line ------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "line_of", "words"), [
    ('    - "mfu >= 0.30"', '    - "tqdm progress bar per phase"',
     "review_criteria.performance.2", "tqdm", 'write it as "name op value"'),
    ('    - {name: val_loss, op: "<", threshold: 1.5}', '    - "no NaN / Inf"',
     "review_criteria.metrics.1", "no NaN", "stability.no_nan"),
    ('    - {name: val_loss, op: "<", threshold: 1.5}',
     '    - {name: val_loss, op: "<", threshold: one}',
     "review_criteria.metrics.1.threshold", "threshold: one", "valid number"),
    ('    - {name: val_loss, op: "<", threshold: 1.5}', '    - {name: acc, op: "<", threshold: 1}',
     "review_criteria.metrics", "metrics:", "metrics names must be unique, got acc"),
    ("  observability: {required_keys: [loss, grad_norm]}",
     "  observability: [per-step loss, grad_norm]", "review_criteria.observability",
     "observability:", "{required_keys: [loss, grad_norm]}"),
    ('forbid_patterns: ["UserWarning: .*autograd"]', 'forbid_patterns: ["ok", "[a-"]',
     "review_criteria.stability.forbid_patterns.1", "forbid_patterns", "got '[a-'"),
    ("goal: Reach", "goal: ''\nold_goal: Reach", "goal", "goal: ''", "at least 1 character"),
    ("max_rounds: 8", "max_rounds: -1", "max_rounds", "max_rounds:", "greater than or equal"),
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {repeats: 21}",
     "acceptance.repeats", "acceptance:", "less than or equal to 20"),
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {noise: 0}", "acceptance.noise",
     "acceptance:", "greater than 0"),
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {noise: 1.5}", "acceptance.noise",
     "acceptance:", "less than or equal to 1"),
    ("experiences_window: 4", "experiences_window: 0", "experiences_window",
     "experiences_window:", "greater than or equal to 1"),
    ("focused_files: [model.py, train.py]", "focused_files: [../model.py]", "focused_files",
     "focused_files:", "relative to the experiment directory, got '../model.py'"),
    ("  timeout: 2min\nresearcher", "  metric: acc\nresearcher", "eval.metric", "metric: acc",
     "Extra inputs are not permitted"),
    ("  time_limit: 5min", "  time_limit: 5 minutes", "fixed.time_limit", "time_limit:",
     "'5min'"),
    ("  time_limit: 5min", "  time_limit: 1e400", "fixed.time_limit", "time_limit:",
     "must be a finite duration"),
    ("  timeout: 2min\nresearcher", "  timeout: 1e9\nresearcher", "eval.timeout", "timeout:",
     "at most 30 days"),
    ("max_rounds: 8", "max_rounds: 8\nmode: iteration", "mode", "mode:", "Extra inputs"),
])
def test_each_error_names_the_field_and_its_line(tmp_path: Path, old: str, new: str, field: str,
                                                 line_of: str, words: str) -> None:
    path = _write(tmp_path, **{old: new})

    rows = _rows(path)

    expected = f"- {field} (line {_line(path, line_of)}): "
    assert any(row.startswith(expected) and words in row for row in rows), rows


def test_missing_review_criteria_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL, **{
        'review_criteria:\n  metrics: [{name: val_loss, op: "<=", threshold: 1.5}]\n': ""})

    assert _rows(path) == ["- review_criteria (line 1): Field required — add this field"]


def test_empty_review_criteria_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL, **{
        '  metrics: [{name: val_loss, op: "<=", threshold: 1.5}]': "  metrics: []"})

    rows = _rows(path)

    assert len(rows) == 1
    assert rows[0].startswith(f"- review_criteria (line {_line(path, 'review_criteria:')}): ")
    assert "nothing to check: add at least one of metrics" in rows[0]


# --- locked fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "locked"), [
    ("train_command: python train.py --config config.yaml", "train_command: python t.py",
     "train_command"),
    ("  time_limit: 5min", "  time_limit: 6min", "fixed"),
    ("  files: [evaluate.py, data.py]", "  files: [evaluate.py]", "fixed"),
    ("  timeout: 2min\nresearcher", "  timeout: 3min\nresearcher", "eval"),
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {repeats: 3, noise: 0.02}",
     "acceptance"),
    # The noise margin too: a best kept under one margin is no yardstick under another.
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {repeats: 2, noise: 0.05}",
     "acceptance"),
])
def test_locked_changes_detects_edits_that_break_comparability(tmp_path: Path, old: str,
                                                               new: str, locked: str) -> None:
    before = load_protocol(_write(tmp_path / "before"))
    after = load_protocol(_write(tmp_path / "after", **{old: new}))

    assert locked_changes(before, after) == [locked]
    assert locked_changes(before, before) == []


def test_locked_changes_detects_a_different_researcher_kind(tmp_path: Path) -> None:
    command = load_protocol(_write(tmp_path / "command", MINIMAL))
    optuna = load_protocol(_write(tmp_path / "optuna", _optuna()))

    assert locked_changes(command, optuna) == ["researcher.kind"]
    assert LOCKED_FIELDS == ("train_command", "fixed", "eval", "researcher.kind", "acceptance")


def test_locked_changes_ignores_fields_safe_to_edit_mid_run(tmp_path: Path) -> None:
    before = load_protocol(_write(tmp_path / "before"))
    after = load_protocol(_write(tmp_path / "after", **{
        "max_rounds: 8": "max_rounds: 20",
        "goal: Reach": "goal: Now reach",
        "focused_files: [model.py, train.py]": "focused_files: [model.py]",
        "experiences_window: 4": "experiences_window: 3",
        "threshold: 0.9}": "threshold: 0.95}",
        "--dir {workdir}": "--dir {workdir} --verbose",
    }))

    assert before != after
    assert locked_changes(before, after) == []


# --- JSON Schema -----------------------------------------------------------------------------


def test_committed_schema_is_current() -> None:
    expected = _generator().render_schema(protocol_json_schema())

    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "the iteration protocol models changed: regenerate spml/protocols/schemas/"
        "iteration.schema.json (scripts/gen_schemas.py) and commit it")


def test_schema_names_the_protocol_and_its_required_fields() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    assert schema["title"] == "spml ml-iteration protocol (YAML front matter)"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"goal", "train_command", "fixed", "eval", "researcher",
                                       "review_criteria"}
    assert schema == IterationProtocol.model_json_schema() | {"title": schema["title"]}


def _front_matter(tmp_path: Path, text: str) -> dict[str, Any]:
    return read_front_matter(_write(tmp_path, text)).data


def test_schema_accepts_the_valid_protocols(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    for name, text in {"full": VALID, "minimal": MINIMAL, "optuna": _optuna()}.items():
        jsonschema.validate(_front_matter(tmp_path / name, text), schema)


@pytest.mark.parametrize(("old", "new"), [
    ('op: ">=", threshold: 0.9', 'op: "=>", threshold: 0.9'),
    ('"mfu >= 0.30"', '"tqdm progress bar per phase"'),
    ("{required_keys: [loss, grad_norm]}", "[loss, grad_norm]"),
    ("{no_nan: true,", "{no_nan: yes please,"),
    ("max_rounds: 8", "max_round: 8"),
    ("acceptance: {repeats: 2, noise: 0.02}", "acceptance: {repeats: 2, noise: 2}"),
])
def test_schema_rejects_what_the_loader_rejects(tmp_path: Path, old: str, new: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    path = _write(tmp_path, **{old: new})

    with pytest.raises(ProtocolError):
        load_protocol(path)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(read_front_matter(path).data, schema)
