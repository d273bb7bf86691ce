"""The committed JSON Schema matches the protocol models (regenerate: scripts/gen_schemas.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from spml.cli import app
from spml.protocols.autoresearch import load_protocol, protocol_json_schema
from spml.protocols.frontmatter import read_front_matter

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "spml" / "protocols" / "schemas" / "autoresearch.schema.json"
GENERATOR = ROOT / "scripts" / "gen_schemas.py"
REQUIRED = {"research_question", "max_rounds", "train_command", "fixed", "variable", "eval",
            "researcher"}

PROTOCOL = """\
---
research_question: Which settings minimise val_mse?
max_rounds: 8
target: null
train_command: python train.py
fixed: {files: [train.py, data/], time_limit: 5min, epoch_limit: null}
variable: {files: [params.yaml], range: lr}
eval: {command: python evaluate.py, metric: val_mse, direction: minimize, timeout: 90s}
researcher:
  kind: optuna
  params_file: params.yaml
  timeout: 10min
  space:
    lr: {type: float, low: 1e-4, high: 0.1, log: true}
    layers: {type: int, low: 1, high: 4}
    act: {type: categorical, choices: [relu, tanh]}
acceptance: {min_delta: 0.0, repeats: 1}
---
prose
"""


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _front_matter(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "autoresearch-protocol.md"
    path.write_text(text)
    return read_front_matter(path).data


def test_committed_schema_is_current() -> None:
    expected = json.dumps(protocol_json_schema(), indent=2, sort_keys=True,
                          ensure_ascii=False) + "\n"

    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "the protocol models changed: run `python scripts/gen_schemas.py` and commit the schema")


def test_generator_renders_the_committed_text() -> None:
    generator = _generator()

    names = ("autoresearch", "iteration", "design", "plan")
    assert generator.expected_files() == {
        f"{name}.schema.json": SCHEMA_FILE.with_name(f"{name}.schema.json").read_text(
            encoding="utf-8") for name in names}
    assert generator.main(["--check"]) == 0


def test_rendered_schema_is_sorted_indented_and_ends_with_a_newline() -> None:
    text = _generator().render_schema({"b": {"d": 1, "c": 2}, "a": []})

    assert text == '{\n  "a": [],\n  "b": {\n    "c": 2,\n    "d": 1\n  }\n}\n'


def test_schema_requires_the_core_fields() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    assert REQUIRED <= set(schema["required"])
    assert schema["additionalProperties"] is False
    assert schema["title"] == "spml autoresearch protocol (YAML front matter)"
    assert set(schema["properties"]) >= REQUIRED | {"target", "baseline", "acceptance"}


def test_cli_prints_the_same_schema() -> None:
    result = CliRunner().invoke(app, ["schema", "autoresearch"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_cli_refuses_an_unknown_kind() -> None:
    result = CliRunner().invoke(app, ["schema", "nonsense"])

    assert result.exit_code == 2
    assert "kind must be one of autoresearch, iteration, design, plan" in result.output


def test_schema_accepts_a_valid_protocol_with_duration_strings(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    # '5min', '90s' and '10min' are valid durations: an editor must not flag them.
    jsonschema.validate(_front_matter(tmp_path, PROTOCOL), schema)
    protocol = load_protocol(tmp_path / "autoresearch-protocol.md")  # and the loader agrees
    assert protocol.fixed.time_limit == 300.0
    assert protocol.eval_timeout_s == 90.0
    assert protocol.researcher_timeout_s == 600.0


@pytest.mark.parametrize(("old", "new"), [
    ("direction: minimize", "direction: up"),
    ("max_rounds: 8", "max_rounds: ten"),
    ("max_rounds: 8", "max_round: 8"),
    ("time_limit: 5min", "time_limit: 5 minutes"),
    ("time_limit: 5min", "time_limit: 0"),
    ("kind: optuna", "kind: llm"),
    ("type: int, low: 1", "type: integer, low: 1"),
])
def test_schema_rejects_what_the_loader_rejects(tmp_path: Path, old: str, new: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert old in PROTOCOL

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_front_matter(tmp_path, PROTOCOL.replace(old, new)), schema)
