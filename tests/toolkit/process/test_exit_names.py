"""The shell's "never ran" exit codes are named in a command's one-line description."""

from __future__ import annotations

from pathlib import Path

from spml.toolkit.process.runner import ExitKind, run_command


def test_exit_127_and_126_say_the_command_never_ran(tmp_path: Path) -> None:
    missing = run_command("pyhton train.py", cwd=tmp_path, log_dir=tmp_path / "logs",
                          name="missing")
    (tmp_path / "script.sh").write_text("#!/bin/sh\necho hi\n")  # no +x
    not_executable = run_command("./script.sh", cwd=tmp_path, log_dir=tmp_path / "logs",
                                 name="noexec")

    assert missing.kind is ExitKind.FAILED
    assert missing.describe().startswith("exit 127 (command not found): ")
    assert "pyhton" in missing.describe()
    assert not_executable.describe().startswith("exit 126 (command not executable): ")


def test_other_exit_codes_keep_their_plain_description(tmp_path: Path) -> None:
    result = run_command("echo boom >&2; exit 3", cwd=tmp_path, log_dir=tmp_path / "logs",
                         name="three")

    assert result.describe() == "exit 3: boom"
