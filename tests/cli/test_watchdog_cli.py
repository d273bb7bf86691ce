"""`spml watchdog` flags checked before Prefect starts (typer CliRunner; no Prefect needed)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from spml.cli import app

runner = CliRunner()
def flat(output: str) -> str:
    """The output without the terminal's line wrapping and rich's box borders."""
    return re.sub(r"[\s│]+", " ", output)


REQUIRED = ["--train-command", "python train.py", "--checkpoint-glob", "ckpt/*.pt",
            "--log-file", "train.log"]


def test_negative_startup_grace_and_restart_delay_exit_2_naming_the_flags(tmp_path: Path) -> None:
    result = runner.invoke(app, ["watchdog", "run", str(tmp_path), *REQUIRED,
                                 "--startup-grace", "-1", "--restart-delay", "-1"],
                           terminal_width=200)
    assert result.exit_code == 2
    assert ("startup_grace (--startup-grace): Input should be greater than or equal to 0"
            in flat(result.output))
    assert "restart_delay (--restart-delay)" in flat(result.output)


def test_a_checkpoint_check_with_an_unknown_placeholder_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["watchdog", "run", str(tmp_path), *REQUIRED,
                                 "--checkpoint-check", "python check.py {path}"],
                           terminal_width=200)
    assert result.exit_code == 2
    assert "checkpoint_check (--checkpoint-check)" in flat(result.output)
    assert "may only use the placeholder {checkpoint}" in flat(result.output)


def test_help_documents_zero_and_the_new_flags() -> None:
    result = runner.invoke(app, ["watchdog", "run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("--checkpoint-check", "--checkpoint-interval", "(0 = none)",
                 "(0 = restart at once)"):
        assert text in flat(result.output)
