"""Subtask 3 (training pipeline, [INTEGRATION]): the assembled pieces on tiny shapes."""

import subprocess
import sys
from pathlib import Path

import torch
import train
from model import build_model, validate_params

HERE = Path(__file__).resolve().parents[1]
PARAMS = validate_params({"lr": 0.01, "hidden": 4, "layers": 1, "activation": "relu",
                          "batch_size": 4, "weight_decay": 0.0})


def test_data_model_loss_backward_step_moves_the_weights():
    torch.manual_seed(0)
    model = build_model(PARAMS, 3)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    limits = {"time_limit": 30.0, "epoch_limit": 1, "seed": 0, "max_steps": 2}
    epochs, steps = train.train(model, PARAMS, (x, y, x, y), limits, None)
    assert steps == 2
    assert epochs == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False))


def test_the_eval_cadence_fires_in_memory(monkeypatch, capsys):
    monkeypatch.setattr(train, "EVAL_EVERY", 2)
    model = build_model(PARAMS, 3)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    limits = {"time_limit": 30.0, "epoch_limit": None, "seed": 0, "max_steps": 4}
    train.train(model, PARAMS, (x, y, x, y), limits, None)
    out = capsys.readouterr().out
    assert "eval step=2 mode=in_memory" in out
    assert "eval step=4 mode=in_memory" in out


def test_checkpoint_mode_reports_its_mode(tmp_path):
    model = build_model(PARAMS, 3)
    checkpoint = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "params": PARAMS, "n_features": 3},
               checkpoint)
    run = subprocess.run([sys.executable, str(HERE / "evaluate.py"), str(checkpoint)],
                         capture_output=True, text=True, cwd=HERE)
    assert run.returncode == 0, run.stderr
    assert "mode=checkpoint" in run.stderr
    assert run.stdout.startswith("val_mse=")
