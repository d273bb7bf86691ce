"""Watchdog settings: defaults, layers (context front matter < watchdog.yaml < flags), errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.watchdog import BaselineSpec, WatchdogSettings, load_watchdog_settings

REQUIRED = {"train_command": "python train.py --resume", "checkpoint_glob": "ckpt/*.pt",
            "log_file": "logs/train.log"}


def _write(exp: Path, name: str, text: str) -> Path:
    path = exp / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(exp: Path, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ProtocolError) as info:
        load_watchdog_settings(exp, overrides or {})
    return str(info.value)


def test_defaults() -> None:
    settings = WatchdogSettings.model_validate(REQUIRED)

    assert (settings.hang_timeout, settings.startup_grace, settings.restart_delay) == (
        600, 900, 30)
    # Issue 11: no restart budgets by default; a run that keeps progressing is never given up.
    assert (settings.restart_cap, settings.max_restarts, settings.max_restarts_per_hour) == (
        600, None, None)
    assert (settings.poll_interval, settings.checkpoint_stable) == (1, 5)
    assert settings.eval_command is None
    assert settings.checkpoint_check is None
    assert settings.checkpoint_check_timeout == 300
    assert settings.checkpoint_interval is None
    assert settings.max_no_progress == 10  # the crash-loop backstop (policy docstring)
    assert settings.total_steps is None
    assert settings.baseline is None


def test_zero_startup_grace_and_restart_delay_mean_none_and_budgets_may_be_off() -> None:
    settings = WatchdogSettings.model_validate(
        {**REQUIRED, "startup_grace": 0, "restart_delay": 0, "max_restarts": None,
         "max_restarts_per_hour": 0, "checkpoint_check": "python check.py {checkpoint}",
         "checkpoint_interval": 100, "max_no_progress": None})

    assert (settings.startup_grace, settings.restart_delay) == (0, 0)
    assert (settings.max_restarts, settings.max_restarts_per_hour) == (None, 0)
    assert settings.max_no_progress is None  # null turns the backstop off
    assert settings.checkpoint_check == "python check.py {checkpoint}"


def test_zero_startup_grace_from_the_command_line(tmp_path: Path) -> None:
    settings = load_watchdog_settings(tmp_path, {**REQUIRED, "startup_grace": 0.0,
                                                 "restart_delay": 0.0})
    assert (settings.startup_grace, settings.restart_delay) == (0, 0)


def test_checkpoint_check_placeholders_are_validated() -> None:
    with pytest.raises(ValidationError, match="placeholder {checkpoint}"):
        WatchdogSettings.model_validate({**REQUIRED, "checkpoint_check": "check {path}"})


def test_durations_accept_unit_strings_and_restart_delay_may_be_zero() -> None:
    settings = WatchdogSettings.model_validate(
        {**REQUIRED, "hang_timeout": "10min", "startup_grace": "1h", "restart_delay": 0,
         "restart_cap": "90s"})

    assert (settings.hang_timeout, settings.startup_grace) == (600, 3600)
    assert (settings.restart_delay, settings.restart_cap) == (0, 90)


@pytest.mark.parametrize(("field", "value"), [
    ("hang_timeout", 0), ("restart_delay", -1), ("max_restarts", -1), ("total_steps", 0),
    ("startup_grace", -1), ("max_restarts_per_hour", -1), ("checkpoint_interval", 0),
    ("checkpoint_check_timeout", 0), ("checkpoint_check", ""), ("max_no_progress", 0),
    ("max_restarts", "3"), ("poll_interval", True), ("log_file", "/var/log/train.log"),
    ("checkpoint_glob", "../other/*.pt"), ("train_command", ""), ("frequency", 3),
    # infinite or absurd durations would disable the kill or the grace they bound
    ("hang_timeout", "inf"), ("hang_timeout", 1e400), ("startup_grace", "1e400"),
    ("restart_delay", float("inf")), ("restart_cap", 1e9),
])
def test_invalid_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        WatchdogSettings.model_validate({**REQUIRED, field: value})

    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("command", [
    "python eval.py --ckpt {checkpoint}", "python eval.py", "echo '{{literal}}' {checkpoint}",
])
def test_eval_command_placeholders_accepted(command: str) -> None:
    assert WatchdogSettings.model_validate({**REQUIRED, "eval_command": command}).eval_command


@pytest.mark.parametrize(("command", "problem"), [
    ("python eval.py {checkpoint_path}", "{checkpoint_path}"),
    ("python eval.py {checkpoint} {step}", "{step}"),
    ("python eval.py {}", "{}"),
    ("python eval.py {checkpoint", "expected '}'"),
])
def test_eval_command_unknown_placeholders_refused(command: str, problem: str) -> None:
    with pytest.raises(ValidationError, match="placeholder {checkpoint}") as info:
        WatchdogSettings.model_validate({**REQUIRED, "eval_command": command})

    assert problem in str(info.value)


def test_baseline_mfu_is_a_fraction() -> None:
    assert BaselineSpec(mfu=0.42).mfu == 0.42
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        BaselineSpec(mfu=42)


def test_settings_are_frozen() -> None:
    settings = WatchdogSettings.model_validate(REQUIRED)

    with pytest.raises(ValidationError):
        settings.max_restarts = 1  # type: ignore[misc]


def test_context_front_matter_alone(tmp_path: Path) -> None:
    _write(tmp_path, "experiment-context.md",
           "---\ntrain_command: python train.py\ncheckpoint_glob: ckpt/*.pt\n"
           "log_file: train.log\nbaseline:\n  loss: 2.5\n---\n# Experiment Context\n")

    settings = load_watchdog_settings(tmp_path, {})

    assert settings.train_command == "python train.py"
    assert settings.baseline == BaselineSpec(loss=2.5)


def test_yaml_wins_over_context_and_flags_win_over_both(tmp_path: Path) -> None:
    _write(tmp_path, "experiment-context.md",
           "---\ntrain_command: python old.py\ncheckpoint_glob: a/*.pt\nlog_file: a.log\n"
           "hang_timeout: 100\nbaseline:\n  loss: 2.5\n  mfu: 0.3\n---\nbody\n")
    _write(tmp_path, "watchdog.yaml",
           "train_command: python new.py\nhang_timeout: 200\nbaseline:\n  mfu: 0.4\n")

    settings = load_watchdog_settings(
        tmp_path, {"hang_timeout": 300.0, "log_file": None, "max_restarts": 0})

    assert settings.train_command == "python new.py"
    assert settings.checkpoint_glob == "a/*.pt"
    assert settings.log_file == "a.log"  # a None override changes nothing
    assert settings.hang_timeout == 300
    assert settings.max_restarts == 0
    assert settings.baseline == BaselineSpec(loss=2.5, mfu=0.4)  # merged key by key


def test_context_without_front_matter_and_no_yaml_need_flags(tmp_path: Path) -> None:
    _write(tmp_path, "experiment-context.md", "# Experiment Context\n\n## Design\n")

    settings = load_watchdog_settings(tmp_path, dict(REQUIRED))
    message = _error(tmp_path)

    assert settings.log_file == "logs/train.log"
    assert "(3 problems; all below)" in message.splitlines()[0]
    assert ("train_command: missing — add it to watchdog.yaml (or the front matter of "
            "experiment-context.md) or pass --train-command") in message
    assert "pass --checkpoint-glob" in message
    assert "pass --log-file" in message


def test_errors_name_the_field_and_the_file_line_or_flag(tmp_path: Path) -> None:
    _write(tmp_path, "experiment-context.md",
           "---\ntrain_command: python train.py\nhang_timeout: -3\n---\n")
    _write(tmp_path, "watchdog.yaml",
           "checkpoint_glob: ckpt/*.pt\n\nlog_file: /abs/train.log\nbaseline:\n  bogus: 1\n")

    message = _error(tmp_path, {"max_restarts": -1})

    assert "hang_timeout (experiment-context.md line 3): Input should be greater than 0" in message
    assert "log_file (watchdog.yaml line 3): Value error, must be a path relative" in message
    assert "baseline.bogus (watchdog.yaml line 5): Extra inputs are not permitted" in message
    assert "max_restarts (--max-restarts): Input should be greater than or equal to 0" in message


def test_overridden_bad_value_is_not_reported(tmp_path: Path) -> None:
    _write(tmp_path, "watchdog.yaml", "\n".join(f"{k}: {v}" for k, v in REQUIRED.items())
           + "\nmax_restarts: many\n")

    assert load_watchdog_settings(tmp_path, {"max_restarts": 4}).max_restarts == 4
    assert "max_restarts (watchdog.yaml line 4)" in _error(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("train_command: [unclosed\n", "watchdog.yaml (line 2): the YAML is malformed"),
    ("- a\n- b\n", "watchdog.yaml (line 1): must be a mapping of fields"),
])
def test_malformed_watchdog_yaml(tmp_path: Path, text: str, expected: str) -> None:
    _write(tmp_path, "watchdog.yaml", text)

    assert expected in _error(tmp_path)


def test_empty_watchdog_yaml_is_no_settings(tmp_path: Path) -> None:
    _write(tmp_path, "watchdog.yaml", "# nothing yet\n")

    assert load_watchdog_settings(tmp_path, dict(REQUIRED)).train_command == REQUIRED[
        "train_command"]


def test_unclosed_context_front_matter_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "experiment-context.md", "---\ntrain_command: x\n")

    assert "second '---' line" in _error(tmp_path)


def test_missing_experiment_dir(tmp_path: Path) -> None:
    assert "experiment directory must exist" in _error(tmp_path / "absent")
