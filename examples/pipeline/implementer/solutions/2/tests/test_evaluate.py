"""Subtask 2 (evaluator core): one core for both entry modes, failures named."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from evaluate import EvaluationError, evaluate_model

HERE = Path(__file__).resolve().parents[1]


def test_core_returns_the_mse_and_restores_training_mode():
    model = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    x, y = torch.ones(4, 3), torch.full((4, 1), 2.0)
    model.train()
    assert math.isclose(evaluate_model(model, x, y)["val_mse"], 4.0)
    assert model.training


def test_empty_or_nonfinite_is_an_error():
    model = torch.nn.Linear(3, 1)
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_model(model, torch.zeros(0, 3), torch.zeros(0, 1))
    with pytest.raises(EvaluationError, match="not finite"):
        evaluate_model(model, torch.full((2, 3), math.nan), torch.zeros(2, 1))


def test_checkpoint_mode_names_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, str(HERE / "evaluate.py"), str(tmp_path / "no.pt")],
                         capture_output=True, text=True, cwd=HERE)
    assert run.returncode == 1
    assert "no.pt not found" in run.stderr
