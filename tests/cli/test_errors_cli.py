"""Every expected error: one clean message, exit 2, no traceback (unless `spml -v`), nothing
created. These fail before Prefect starts (typer's CliRunner, real repositories)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import git
from typer.testing import CliRunner

from spml.cli import app
from spml.toolkit.examples import DEMO_EXAMPLE, copy_example, is_example_copy
from spml.toolkit.loop.experiment import hold_experiment

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of `spml ARGS`, asserting no traceback."""
    result = runner.invoke(app, list(args), terminal_width=200)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def first_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.strip())


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    """A git repository with a commit and a folder that holds no experiment."""
    folder = tmp_path / "repo" / "sub"
    folder.mkdir(parents=True)
    git(folder.parent, "init", "-q", "-b", "main")
    git(folder.parent, "-c", "user.name=T", "-c", "user.email=t@e.invalid", "commit", "-q",
        "--allow-empty", "-m", "x")
    return folder


@pytest.mark.parametrize("command", [["note", "hello"], ["stop"], ["status"]])
def test_controls_without_an_experiment_are_refused_and_create_nothing(
        plain_repo: Path, command: list[str]) -> None:
    code, output = invoke("autoresearch", command[0], str(plain_repo), *command[1:])

    assert code == 2
    assert first_line(output).startswith(
        f"error: {plain_repo} must hold autoresearch-protocol.md, found none")
    assert "spml autoresearch create" in output
    assert list(plain_repo.iterdir()) == []


def test_iteration_note_without_an_experiment_names_the_iteration_command(
        plain_repo: Path) -> None:
    code, output = invoke("iteration", "note", str(plain_repo), "hello")

    assert code == 2
    assert "spml iteration create" in output
    assert list(plain_repo.iterdir()) == []


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_note_is_refused(toy_experiment, text: str) -> None:
    exp = toy_experiment()
    code, output = invoke("autoresearch", "note", str(exp), text)

    assert code == 2
    assert first_line(output) == "error: a note must say something, got an empty text."
    assert not (exp / ".spml").exists()


def test_negative_max_rounds_is_refused_before_prefect(toy_experiment) -> None:
    exp = toy_experiment()
    code, output = invoke("autoresearch", "run", str(exp), "--max-rounds", "-1")

    assert code == 2
    assert output.splitlines() == ["error: --max-rounds must be >= 0, got -1."]


def test_a_second_run_stops_before_prefect_and_prints_no_rows(toy_experiment) -> None:
    exp = toy_experiment()
    (exp / "experiences.md").write_text(
        "# Experiences\n\nbest: loss = 9 (R0)\nrounds: 0 / 3\nstatus: running\n\n"
        "| Round | Compliance | Result | Verdict | Strategy | Insight | Note |\n"
        "|---|---|---|---|---|---|---|\n| 0 | pass | 9 | committed | baseline | b |  |\n")
    with hold_experiment(exp):  # the running loop's supervisor
        code, output = invoke("autoresearch", "run", str(exp))

    assert code == 2
    assert " ".join(output.split()) == (
        f"error: another supervisor is already running this experiment (pid {os.getpid()}). "
        f"Wait for it, or stop it with `spml autoresearch stop {exp}`.")
    assert "R0" not in output
    assert "Prefect starts" not in output


def test_a_broken_ledger_is_named_before_prefect(toy_experiment) -> None:
    exp = toy_experiment()
    (exp / "experiences.md").write_text("# Experiences\n\ngarbage | | |\n")
    code, output = invoke("autoresearch", "run", str(exp))

    assert code == 2
    assert first_line(output).startswith(f"error: {exp / 'experiences.md'} must have a 'best:")


def test_an_unknown_researcher_names_the_researchers_and_creates_nothing(
        tmp_path: Path) -> None:
    exp = tmp_path / "new"
    code, output = invoke("autoresearch", "create", str(exp), "--question", "q",
                          "--train-command", "t", "--eval-command", "e", "--metric", "m",
                          "--direction", "minimize", "--fixed", "a", "--variable", "b",
                          "--time-limit", "5", "--researcher", "claude")

    assert code == 2
    assert first_line(output).startswith(
        "error: --researcher must be one of command, optuna, got 'claude'.")
    assert "--researcher command --researcher-command" in output
    assert not exp.exists()


def test_a_failed_create_leaves_no_directory(tmp_path: Path) -> None:
    exp = tmp_path / "new"
    code, output = invoke("iteration", "create", str(exp), "--goal", "g", "--train-command",
                          "t", "--eval-command", "e", "--fixed", "e.py", "--criterion",
                          "acc >= nope", "--time-limit", "5", "--researcher-command", "x")

    assert code == 2
    assert first_line(output).startswith("error:")
    assert not exp.exists()


def test_demo_into_a_file_or_with_negative_rounds_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, output = invoke("demo", str(tmp_path / "afile"))
    assert code == 2
    assert first_line(output) == f"error: {tmp_path / 'afile'} must be a directory, got a file." \
        " Pick a new directory."

    code, output = invoke("demo", str(tmp_path / "new"), "--rounds", "-1")
    assert (code, first_line(output)) == (2, "error: --rounds must be >= 0, got -1.")
    assert not (tmp_path / "new").exists()


def test_a_demo_copy_is_recognised_so_a_failed_demo_can_run_again(tmp_path: Path) -> None:
    target = copy_example(DEMO_EXAMPLE, tmp_path / "demo")

    assert is_example_copy(target, DEMO_EXAMPLE)
    assert not is_example_copy(target, "iteration")
    assert not is_example_copy(target / "data", DEMO_EXAMPLE)  # a folder inside it
    assert not is_example_copy(tmp_path, DEMO_EXAMPLE)


def test_schema_of_an_unknown_kind(tmp_path: Path) -> None:
    code, output = invoke("schema", "foo")

    assert (code, output) == (2, "error: kind must be one of autoresearch, iteration, design, "
                                 "plan, got 'foo'.\n")


def test_verbose_adds_the_traceback_to_the_same_message(toy_experiment) -> None:
    exp = toy_experiment()
    result = runner.invoke(app, ["-v", "autoresearch", "note", str(exp), ""])

    assert result.exit_code == 2
    assert result.output.startswith("Traceback (most recent call last):")
    assert "spml.errors.ProtocolError: a note must say something" in result.output
    assert result.output.splitlines()[-1] == "error: a note must say something, got an empty " \
        "text."


def test_static_json_errors_are_json(tmp_path: Path) -> None:
    code, output = invoke("validate", "static", str(tmp_path / "missing"), "--format", "json")

    assert code == 2
    error = json.loads(output)["error"]
    assert error["message"] == f"{tmp_path / 'missing'}: no such file or directory"
    assert error["exit_code"] == 2


def test_runtime_json_errors_are_json(tmp_path: Path) -> None:
    code, output = invoke("validate", "runtime", str(tmp_path), "--format", "json")

    assert code == 2
    assert json.loads(output)["error"]["message"].startswith("L1 is not configured")


def test_runtime_blames_the_flag_or_the_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spml.validate.runtime]\ntrain-command = "python t.py"\ntime-limit = "soon"\n')
    code, output = invoke("validate", "runtime", str(tmp_path), "--no-static",
                          "--max-steps", "-5")

    assert code == 2
    message = output.replace("\n", " ")
    assert "--max-steps -5: Input should be greater than 0 (command line)" in message
    assert (f"[tool.spml.validate.runtime] in {tmp_path / 'pyproject.toml'}: time-limit: "
            in message)


def test_runtime_with_an_entry_module_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.spml.validate.runtime]\nentry = "nomod:f"\n')
    code, output = invoke("validate", "runtime", str(tmp_path), "--no-static")

    assert code == 2
    assert first_line(output).startswith("error: [tool.spml.validate.runtime] entry 'nomod:f' "
                                         "names module 'nomod', which is not in the project")
    code, output = invoke("validate", "runtime", str(tmp_path), "--no-static", "--entry",
                          "other.mod:f")
    assert first_line(output).startswith("error: --entry 'other.mod:f' names module 'other'")


def test_a_note_for_a_researcher_that_reads_none_is_queued_with_a_warning(tmp_path: Path,
                                                                         toy_experiment) -> None:
    demo = copy_example(DEMO_EXAMPLE, tmp_path / "demo")  # its researcher is Optuna's sampler
    git(demo, "init", "-q")
    code, output = invoke("autoresearch", "note", str(demo), "try a cosine schedule")
    assert code == 0
    assert output.splitlines()[0] == "note queued for the next round"
    assert "warning: the optuna researcher does not read notes" in output
    code, output = invoke("autoresearch", "note", str(toy_experiment()), "try x = 3")
    assert (code, output.strip()) == (0, "note queued for the next round")  # an agent reads it


def test_create_without_its_flags_and_no_terminal_to_ask_is_bad_input(tmp_path: Path) -> None:
    code, output = invoke("autoresearch", "create", str(tmp_path / "exp"))  # stdin: empty
    assert code == 2
    assert "error: a required value was not given and cannot be prompted for (standard input " \
        "is not a terminal)" in " ".join(output.split())
    assert not (tmp_path / "exp").exists()
