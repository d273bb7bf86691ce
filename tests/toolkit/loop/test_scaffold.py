"""`spml autoresearch create`: a starting search space and a protocol that loads back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.autoresearch import PROTOCOL_FILENAME, load_protocol, read_protocol_body
from spml.protocols.researchers import OptunaResearcherSpec
from spml.toolkit.loop.scaffold import BODY, researcher_settings, suggest_space, write_protocol


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "research_question": "Which lr minimises the loss?", "max_rounds": 10, "target": None,
        "baseline": None, "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": "5min"},
        "variable": {"files": ["params.yaml"], "range": "lr"},
        "eval": {"command": "python evaluate.py", "metric": "loss", "direction": "minimize"},
        "researcher": {"kind": "command", "command": "agent --prompt {prompt_file}"},
        "experiences_window": 5, "acceptance": {"min_delta": 0.0, "repeats": 1},
    }
    fields.update(overrides)
    return fields


def test_suggest_space_around_current_values() -> None:
    space = suggest_space({"lr": 0.001, "width": 64, "layers": 1, "shuffle": True,
                           "name": "mlp", "offset": -3, "zero": 0, "momentum": 0.0,
                           "sizes": [1, 2]})

    assert space["width"] == {"type": "int", "low": 16, "high": 256}
    assert space["layers"] == {"type": "int", "low": 1, "high": 4}
    assert space["shuffle"] == {"type": "categorical", "choices": [True, False]}
    assert space["lr"]["type"] == "float"
    assert space["lr"]["log"] is True
    assert space["lr"]["low"] == pytest.approx(1e-4)
    assert space["lr"]["high"] == pytest.approx(1e-2)
    assert set(space) == {"lr", "width", "layers", "shuffle"}  # others are left alone


def test_suggested_space_is_a_valid_optuna_space() -> None:
    space = suggest_space({"lr": 3e-4, "width": 1, "flag": False, "wd": 1e-6})

    spec = OptunaResearcherSpec.model_validate(
        {"kind": "optuna", "params_file": "params.yaml", "space": space})

    assert set(spec.space) == {"lr", "width", "flag", "wd"}


def test_researcher_settings(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("lr: 0.01\nepochs: 3\nname: x\n")

    assert researcher_settings("command", tmp_path, "agent {prompt_file}", None) == {
        "kind": "command", "command": "agent {prompt_file}"}
    optuna = researcher_settings("optuna", tmp_path, None, "params.yaml")
    assert optuna["kind"] == "optuna"
    assert optuna["params_file"] == "params.yaml"
    assert optuna["seed"] == 0
    assert set(optuna["space"]) == {"lr", "epochs"}


@pytest.mark.parametrize(("kind", "command", "params_file", "words"), [
    ("command", None, None, "researcher.command must be given"),
    ("optuna", None, None, "researcher.params_file must be given"),
    ("optuna", None, "params.yaml", "must hold numeric parameters"),
])
def test_researcher_settings_refuses_incomplete_input(tmp_path: Path, kind: str,
                                                      command: str | None,
                                                      params_file: str | None,
                                                      words: str) -> None:
    (tmp_path / "params.yaml").write_text("name: only-text\n")

    with pytest.raises(ProtocolError, match=words):
        researcher_settings(kind, tmp_path, command, params_file)


def test_write_protocol_writes_a_file_that_loads_back(tmp_path: Path) -> None:
    path = write_protocol(tmp_path, _fields())

    protocol = load_protocol(path)
    assert path == tmp_path / PROTOCOL_FILENAME
    assert protocol.research_question == "Which lr minimises the loss?"
    assert protocol.fixed.time_limit == 300.0
    assert protocol.researcher.kind == "command"
    assert read_protocol_body(path) == BODY.strip("\n")
    assert path.read_text().startswith("---\nresearch_question: Which lr minimises the loss?\n")


def test_write_protocol_with_an_optuna_space_loads_back(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("lr: 1.0e-05\nwidth: 32\nuse_bn: true\n")
    researcher = researcher_settings("optuna", tmp_path, None, "params.yaml")

    protocol = load_protocol(write_protocol(tmp_path, _fields(researcher=researcher)))

    assert isinstance(protocol.researcher, OptunaResearcherSpec)
    assert protocol.researcher.space["lr"].low == pytest.approx(1e-6)  # type: ignore[union-attr]
    assert protocol.researcher.space["width"].high == 128  # type: ignore[union-attr]


@pytest.mark.parametrize("question", [
    "1e-4",                        # a string YAML 1.2 would read as a number
    "What about\n---\nthis?",      # a '---' line inside a multi-line string
    "Größe | 学习率: \"quoted\" # not a comment",
])
def test_awkward_strings_survive_the_round_trip(tmp_path: Path, question: str) -> None:
    path = write_protocol(tmp_path, _fields(research_question=question))

    assert load_protocol(path).research_question == question


def test_write_protocol_refuses_to_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / PROTOCOL_FILENAME
    existing.write_text("my hand-written protocol\n")

    with pytest.raises(ProtocolError, match="already exists"):
        write_protocol(tmp_path, _fields())

    assert existing.read_text() == "my hand-written protocol\n"


def test_write_protocol_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        write_protocol(tmp_path, _fields(max_rounds="ten"))

    assert not (tmp_path / PROTOCOL_FILENAME).exists()
