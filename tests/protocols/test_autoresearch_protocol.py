"""`autoresearch-protocol.md`: loading, defaults, and errors that name the field and its line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import problem_rows

from spml.errors import ProtocolError
from spml.protocols.autoresearch import (
    AutoresearchProtocol,
    load_protocol,
    locked_changes,
    read_protocol_body,
)
from spml.protocols.researchers import (
    CategoricalParam,
    CommandResearcherSpec,
    FloatParam,
    IntParam,
    OptunaResearcherSpec,
)

VALID = """\
---
research_question: Which learning rate minimises the validation MSE?
max_rounds: 10
train_command: python train.py
fixed:
  files: [train.py, evaluate.py, data/]
  time_limit: 5min
variable:
  files: [params.yaml]
  range: lr
eval:
  command: python evaluate.py
  metric: val_mse
  direction: minimize
researcher:
  kind: command
  command: my-agent --prompt-file {prompt_file} --round {round} --dir {workdir}
---
# Background

The model is a small MLP.
"""

OPTUNA_RESEARCHER = """\
researcher:
  kind: optuna
  params_file: params.yaml
  sampler: random
  seed: 7
  space:
    lr: {type: float, low: 1e-4, high: 1e-1, log: true}
    width: {type: int, low: 8, high: 128, step: 8}
    act: {type: categorical, choices: [relu, tanh]}
"""


def _protocol(tmp_path: Path, text: str = VALID, **replace: str) -> Path:
    """Write the protocol, each ``old=new`` pair of ``replace`` applied (old must occur)."""
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "autoresearch-protocol.md"
    path.write_text(text, encoding="utf-8")
    return path


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def _optuna_text(**space_edits: str) -> str:
    """VALID with the optuna researcher instead of the command one."""
    text = (VALID[:VALID.index("researcher:")] + OPTUNA_RESEARCHER
            + VALID[VALID.index("\n---\n#") + 1:])
    for old, new in space_edits.items():
        text = _swap(text, old, new)
    return text


def _line(path: Path, startswith: str) -> int:
    """1-based number of the first line of ``path`` that starts with ``startswith``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip().startswith(startswith):
            return number
    raise AssertionError(f"{startswith!r} not in {path}")


def _error(path: Path) -> str:
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    return str(info.value)


def _error_lines(message: str) -> list[str]:
    return problem_rows(message)


# --- a valid protocol ------------------------------------------------------------------------


def test_valid_protocol_loads_with_defaults(tmp_path: Path) -> None:
    protocol = load_protocol(_protocol(tmp_path))

    assert protocol.research_question == "Which learning rate minimises the validation MSE?"
    assert protocol.max_rounds == 10
    assert protocol.target is None
    assert protocol.baseline is None
    assert protocol.train_command == "python train.py"
    assert protocol.fixed.files == ["train.py", "evaluate.py", "data/"]
    assert protocol.fixed.time_limit == 300.0
    assert protocol.fixed.epoch_limit is None
    assert protocol.variable.files == ["params.yaml"]
    assert protocol.variable.range == "lr"
    assert protocol.eval.metric == "val_mse"
    assert protocol.eval.direction == "minimize"
    assert isinstance(protocol.researcher, CommandResearcherSpec)
    assert protocol.experiences_window == 5
    assert protocol.acceptance.min_delta == 0.0
    # The safe default: gains must clear the measured noise; up to 5 runs a candidate.
    assert (protocol.acceptance.mode, protocol.acceptance.repeats) == ("significance", None)
    assert (protocol.acceptance.runs, protocol.acceptance.incumbent_runs,
            protocol.acceptance.confirm_runs, protocol.acceptance.confidence) == (5, 5, 5, 0.95)
    assert protocol.schema_version == 1
    # Timeouts default from the training budget.
    assert protocol.train_timeout_s == 330.0
    assert protocol.eval_timeout_s == 330.0
    assert protocol.researcher_timeout_s == 600.0


def test_body_is_the_prose_below_the_front_matter(tmp_path: Path) -> None:
    assert read_protocol_body(_protocol(tmp_path)) == "# Background\n\nThe model is a small MLP."


def test_explicit_numbers_and_durations(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{
        "  time_limit: 5min": "  time_limit: 90\n  epoch_limit: 3",
        "  direction: minimize": "  direction: minimize\n  timeout: 2min",
        "--dir {workdir}": "--dir {workdir}\n  timeout: 1h",
        "max_rounds: 10": "max_rounds: 0\ntarget: 1e-3\nbaseline: 0.25\nexperiences_window: 2\n"
                          "acceptance: {min_delta: 0.001, repeats: 3}",
    })

    protocol = load_protocol(path)

    assert protocol.max_rounds == 0
    assert protocol.target == 0.001
    assert protocol.baseline == 0.25
    assert protocol.fixed.time_limit == 90.0
    assert protocol.fixed.epoch_limit == 3
    assert protocol.train_timeout_s == 120.0
    assert protocol.eval_timeout_s == 120.0
    assert protocol.researcher_timeout_s == 3600.0
    assert protocol.experiences_window == 2
    assert protocol.acceptance.min_delta == 0.001
    assert protocol.acceptance.repeats == 3


def test_optuna_researcher_loads_its_space(tmp_path: Path) -> None:
    protocol = load_protocol(_protocol(tmp_path, _optuna_text()))

    researcher = protocol.researcher
    assert isinstance(researcher, OptunaResearcherSpec)
    assert researcher.params_file == "params.yaml"
    assert researcher.sampler == "random"
    assert researcher.seed == 7
    assert researcher.space["lr"] == FloatParam(type="float", low=1e-4, high=0.1, log=True)
    assert researcher.space["width"] == IntParam(type="int", low=8, high=128, step=8)
    assert researcher.space["act"] == CategoricalParam(type="categorical",
                                                       choices=["relu", "tanh"])


def test_protocol_models_are_frozen(tmp_path: Path) -> None:
    protocol = load_protocol(_protocol(tmp_path))

    with pytest.raises(ValueError, match="frozen"):
        protocol.max_rounds = 3  # type: ignore[misc]


# --- every error names the field and its line ------------------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "line_of", "words"), [
    ("max_rounds: 10", "max_rounds: ten", "max_rounds", "max_rounds:",
     "valid integer, got 'ten'"),
    ("max_rounds: 10", "max_rounds: -1", "max_rounds", "max_rounds:", "greater than or equal"),
    ("max_rounds: 10", "max_rounds: 10\nmax_round: 3", "max_round", "max_round:",
     "Extra inputs are not permitted — remove it or check its spelling"),
    ("  direction: minimize", "  direction: up", "eval.direction", "direction:",
     "'maximize' or 'minimize', got 'up'"),
    ("  metric: val_mse", "  metric: val mse", "eval.metric", "metric:", "pattern"),
    ("  time_limit: 5min", "  time_limit: 5 minutes", "fixed.time_limit", "time_limit:",
     "'5min'"),
    ("  time_limit: 5min", "  time_limit: 0", "fixed.time_limit", "time_limit:",
     "greater than 0"),
    # An infinite limit would never kill the run; an absurd one overflows the timers.
    ("  time_limit: 5min", "  time_limit: 1e400", "fixed.time_limit", "time_limit:",
     "must be a finite duration, got inf (a number too large for a float reads as infinity); "
     "write seconds (3600) or a duration ('1h')"),
    ("  time_limit: 5min", "  time_limit: .inf", "fixed.time_limit", "time_limit:", "finite"),
    ("  time_limit: 5min", "  time_limit: 1e300", "fixed.time_limit", "time_limit:",
     "must be at most 30 days (2592000 s), got 1e+300"),
    ("  time_limit: 5min", "  time_limit: 1000000h", "fixed.time_limit", "time_limit:",
     "at most 30 days"),
    ("--dir {workdir}", "--dir {workdir}\n  timeout: 1e12", "researcher.timeout", "timeout:",
     "at most 30 days"),
    ("  files: [params.yaml]", "  files: params.yaml", "variable.files", "files: params",
     "valid list"),
    ("  files: [params.yaml]", "  files: []", "variable.files", "files: []", "at least 1"),
    ("  files: [train.py, evaluate.py, data/]", "  files: [train.py, /etc/passwd]",
     "fixed.files", "files: [train.py", "relative to the experiment directory, got '/etc/passwd'"),
    ("  files: [params.yaml]", "  files: [../params.yaml]", "variable.files", "files: [..",
     "relative to the experiment directory, got '../params.yaml'"),
    ("  files: [params.yaml]", "  files: ['  ']", "variable.files", "files: ['", "relative"),
    ("  range: lr", "  range: lr\n  extra: 1", "variable.extra", "extra:", "Extra inputs"),
    ("--dir {workdir}", "--dir {workdir} {foo}", "researcher.command", "command: my-agent",
     "placeholders {prompt_file}, {round}, {workdir}"),
    ("--dir {workdir}", "--dir {workdir} {0}", "researcher.command", "command: my-agent",
     "placeholders"),
    ("  kind: command", "  kind: llm", "researcher", "researcher:",
     "must be one of 'command', 'optuna', got 'llm'"),
    ("  kind: command\n", "", "researcher", "researcher:", "Unable to extract tag using "
     "discriminator 'kind'"),
    ("--dir {workdir}", "--dir {workdir}\n  timeout: -5", "researcher.timeout", "timeout:",
     "greater than 0"),
    ("max_rounds: 10", "max_rounds: 10\nbaseline: .nan", "baseline", "baseline:", "finite"),
    ("max_rounds: 10", "max_rounds: 10\ntarget: .inf", "target", "target:", "finite"),
    ("max_rounds: 10", "max_rounds: 10\nacceptance: {repeats: 0}", "acceptance.repeats",
     "acceptance:", "greater than or equal to 1"),
    ("max_rounds: 10", "max_rounds: 10\nschema_version: 2", "schema_version",
     "schema_version:", "Input should be 1"),
])
def test_each_error_names_the_field_and_its_line(tmp_path: Path, old: str, new: str, field: str,
                                                 line_of: str, words: str) -> None:
    path = _protocol(tmp_path, **{old: new})

    rows = _error_lines(_error(path))

    expected = f"- {field} (line {_line(path, line_of)}): "
    assert any(row.startswith(expected) and words in row for row in rows), rows


def test_missing_field_names_the_field_and_where_to_add_it(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{"train_command: python train.py\n": ""})

    message = _error(path)

    assert message == ("autoresearch-protocol.md is not a valid protocol: train_command "
                       "(line 1): Field required — add this field")  # one line: all a log shows
    assert _error_lines(message) == ["- train_command (line 1): Field required — add this field"]


def test_missing_nested_field_points_at_its_section(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{"  metric: val_mse\n": ""})

    assert _error_lines(_error(path)) == [
        f"- eval.metric (line {_line(path, 'eval:')}): Field required — add this field"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{"max_rounds: 10": "max_rounds: ten\nmax_round: 3",
                                  "train_command: python train.py\n": "",
                                  "  direction: minimize": "  direction: up"})

    message = _error(path)

    assert message.splitlines()[0].startswith(
        "autoresearch-protocol.md is not a valid protocol (4 problems; all below): ")
    fields = [row.split(" (")[0] for row in _error_lines(message)]
    assert sorted(fields) == ["- eval.direction", "- max_round", "- max_rounds",
                              "- train_command"]


@pytest.mark.parametrize(("old", "new", "param", "words"), [
    ("lr: {type: float, low: 1e-4, high: 1e-1, log: true}",
     "lr: {type: float, low: 1.0, high: 0.1}", "lr", "low must be <= high, got low=1.0 high=0.1"),
    ("lr: {type: float, low: 1e-4, high: 1e-1, log: true}",
     "lr: {type: float, low: 0, high: 0.1, log: true}", "lr", "low must be > 0 when log: true"),
    ("lr: {type: float, low: 1e-4, high: 1e-1, log: true}",
     "lr: {type: float, low: 1e-4, high: 1e-1, log: true, step: 0.01}", "lr",
     "step cannot be combined with log"),
    ("width: {type: int, low: 8, high: 128, step: 8}",
     "width: {type: int, low: 128, high: 8}", "width", "low must be <= high"),
    ("width: {type: int, low: 8, high: 128, step: 8}",
     "width: {type: int, low: 8, high: 128, step: 8, log: true}", "width",
     "step must be 1 when log: true"),
    ("width: {type: int, low: 8, high: 128, step: 8}",
     "width: {type: int, low: 8, high: 128, step: 0}", "width.step", "greater than or equal"),
    ("width: {type: int, low: 8, high: 128, step: 8}",
     "width: {type: int, low: 8.5, high: 128}", "width.low", "valid integer"),
    ("act: {type: categorical, choices: [relu, tanh]}",
     "act: {type: categorical, choices: []}", "act.choices", "at least 1"),
    ("act: {type: categorical, choices: [relu, tanh]}",
     "act: {type: categorical, choices: [relu, tanh], low: 1}", "act.low", "Extra inputs"),
    ("act: {type: categorical, choices: [relu, tanh]}", "act: {type: choice, choices: [relu]}",
     "act", "must be one of 'float', 'int', 'categorical', got 'choice'"),
])
def test_space_errors_name_the_parameter_without_union_tags(tmp_path: Path, old: str, new: str,
                                                            param: str, words: str) -> None:
    path = _protocol(tmp_path, _optuna_text(**{old: new}))

    rows = _error_lines(_error(path))

    expected = f"- researcher.space.{param} (line {_line(path, new.split(':')[0] + ':')}): "
    assert any(row.startswith(expected) and words in row for row in rows), rows


def test_researcher_field_named_like_its_kind_is_reported_once_by_its_name(
        tmp_path: Path) -> None:
    # The union tag ('command') and the field ('command') share a name: the path must be
    # researcher.command, not researcher.command.command.
    path = _protocol(tmp_path, **{"--dir {workdir}": "--dir {oops}"})

    rows = _error_lines(_error(path))

    assert len(rows) == 1
    assert rows[0].startswith(f"- researcher.command (line {_line(path, 'command: my-')}): ")


@pytest.mark.parametrize(("params_file", "ok"), [
    ("params.yaml", True), ("conf/params.yml", True), ("params.json", True),
    ("params.txt", False), ("params.yaml.bak", False), ("params", False),
])
def test_params_file_must_be_yaml_or_json(tmp_path: Path, params_file: str, ok: bool) -> None:
    path = _protocol(tmp_path, _optuna_text(**{"params_file: params.yaml":
                                               f"params_file: {params_file}"}))

    if ok:
        assert load_protocol(path).researcher.params_file == params_file  # type: ignore[union-attr]
    else:
        assert any(row.startswith(f"- researcher.params_file (line {_line(path, 'params_file')})")
                   for row in _error_lines(_error(path)))


def test_optuna_researcher_needs_a_space(tmp_path: Path) -> None:
    text = _optuna_text()
    text = text[:text.index("  space:")] + "---\nprose\n"
    path = _protocol(tmp_path, text)

    assert _error_lines(_error(path)) == [
        f"- researcher.space (line {_line(path, 'researcher:')}): Field required — add this field"]


def test_literal_braces_are_allowed_in_a_command(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{"--dir {workdir}": "--dir {workdir} --set={{x}}"})

    command = load_protocol(path).researcher.command  # type: ignore[union-attr]
    assert command.endswith("--set={{x}}")
    assert command.format(prompt_file="p", round=1, workdir="w").endswith("--dir w --set={x}")


@pytest.mark.parametrize(("text", "words"), [
    ("research_question: x\n---\n", "must start with a '---' line"),
    ("---\nresearch_question: x\n", "second '---' line"),
    ("---\n- research_question\n- max_rounds\n---\n", "(line 2): the front matter must be a "
                                                     "mapping"),
    ("---\nresearch_question: [x\nmax_rounds: 3\n---\n", "(line 3): the YAML front matter is "
                                                        "malformed"),
])
def test_file_level_problems(tmp_path: Path, text: str, words: str) -> None:
    assert words in _error(_protocol(tmp_path, text))


# --- locked fields ---------------------------------------------------------------------------


def _variant(tmp_path: Path, name: str, **replace: str) -> AutoresearchProtocol:
    directory = tmp_path / name
    directory.mkdir()
    return load_protocol(_protocol(directory, **replace))


@pytest.mark.parametrize(("old", "new", "locked"), [
    ("train_command: python train.py", "train_command: python train.py --fast", "train_command"),
    ("  time_limit: 5min", "  time_limit: 6min", "fixed"),
    ("  files: [train.py, evaluate.py, data/]", "  files: [train.py, evaluate.py]", "fixed"),
    ("  metric: val_mse", "  metric: val_mae", "eval"),
    ("  direction: minimize", "  direction: maximize", "eval"),
    ("max_rounds: 10", "max_rounds: 10\nbaseline: 0.5", "baseline"),
])
def test_locked_changes_detects_edits_that_break_comparability(tmp_path: Path, old: str,
                                                               new: str, locked: str) -> None:
    before = _variant(tmp_path, "before")
    after = _variant(tmp_path, "after", **{old: new})

    assert locked_changes(before, after) == [locked]
    assert locked_changes(before, before) == []


def test_locked_changes_detects_a_different_researcher_kind(tmp_path: Path) -> None:
    command = _variant(tmp_path, "command")
    (tmp_path / "optuna").mkdir()
    optuna = load_protocol(_protocol(tmp_path / "optuna", _optuna_text()))

    assert locked_changes(command, optuna) == ["researcher.kind"]


def test_locked_changes_reports_every_locked_field(tmp_path: Path) -> None:
    before = _variant(tmp_path, "before")
    after = _variant(tmp_path, "after", **{
        "train_command: python train.py": "train_command: python train2.py",
        "  metric: val_mse": "  metric: loss"})

    assert locked_changes(before, after) == ["train_command", "eval"]


def test_locked_changes_ignores_fields_safe_to_edit_mid_run(tmp_path: Path) -> None:
    before = _variant(tmp_path, "before")
    after = _variant(tmp_path, "after", **{
        "max_rounds: 10": "max_rounds: 20\ntarget: 0.01\nexperiences_window: 3",
        "  range: lr": "  range: lr and width",
        "research_question: Which": "research_question: Now, which",
        "--dir {workdir}": "--dir {workdir} --verbose\n  timeout: 30",
    })

    assert locked_changes(before, after) == []


def test_non_finite_values_never_slip_in_as_numbers(tmp_path: Path) -> None:
    protocol = load_protocol(_protocol(tmp_path, **{"max_rounds: 10": "max_rounds: 10\n"
                                                                      "target: -1.5e-2"}))

    assert protocol.target == -0.015
    assert math.isfinite(protocol.target)


def test_a_misspelt_required_field_is_one_problem_with_its_likely_name(tmp_path: Path) -> None:
    path = _protocol(tmp_path, **{"max_rounds: 10": "max_round: 10"})

    assert _error(path) == ("autoresearch-protocol.md is not a valid protocol: max_round "
                            f"(line {_line(path, 'max_round:')}): Extra inputs are not "
                            "permitted — did you mean 'max_rounds'?")
