"""Train the MLP described by params.yaml for a fixed budget of optimizer steps (Subtask 3).

The training pipeline assembles the model core (model.py) and the evaluator core
(evaluate.py): the trainer decides WHEN to evaluate (every EVAL_EVERY steps, in memory), the
evaluator HOW. The budget is MAX_STEPS optimizer steps, so a run's result depends on the params
and the seed only; the wall clock is a safety stop.

Environment (spml's contract):
  SPML_TIME_LIMIT   safety stop in seconds (default 20)
  SPML_EPOCH_LIMIT  optional maximum number of epochs
  SPML_SEED         random seed (default 0)
  SPML_MAX_STEPS    optional cap on the step budget; the run prints `max_steps=N` first
  SPML_CHECKPOINT_DIR  optional: the checkpoint is saved there too
  SPML_METRICS_FILE optional: one JSON record per optimizer step
Writes outputs/train.log (one line per logged step: loss, grad norm, lr, step time),
outputs/model.pt, and ends with a summary block.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from evaluate import EvaluationError, evaluate_model
from model import ParamsError, build_model, load_csv, load_params
from torch import nn

HERE = Path(__file__).resolve().parent
OUTPUTS = HERE / "outputs"
CHECKPOINT = OUTPUTS / "model.pt"
LOG_FILE = OUTPUTS / "train.log"
MAX_STEPS = 1200   # optimizer steps per run: the fixed training budget
EVAL_EVERY = 200   # in-memory evaluation cadence, in optimizer steps
LOG_EVERY = 10     # a line in train.log every N steps


def env_int(name: str, default: int | None) -> int | None:
    """An integer SPML_* variable (exit with the name on a bad value)."""
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"ERROR: {name} must be an integer, got {raw!r}") from None


def budget() -> dict[str, Any]:
    """Time limit, epoch limit, seed and step budget from the environment."""
    try:
        time_limit = float(os.environ.get("SPML_TIME_LIMIT", "20"))
    except ValueError:
        raise SystemExit("ERROR: SPML_TIME_LIMIT must be a number of seconds") from None
    steps = min(env_int("SPML_MAX_STEPS", MAX_STEPS) or MAX_STEPS, MAX_STEPS)
    return {"time_limit": time_limit, "epoch_limit": env_int("SPML_EPOCH_LIMIT", None),
            "seed": env_int("SPML_SEED", 0) or 0, "max_steps": max(steps, 1)}


def seed_everything(seed: int) -> None:
    """Fix every random source the run uses."""
    random.seed(seed)
    torch.manual_seed(seed)


LOG = logging.getLogger("train")


def open_logs() -> Any:
    """train.log gets every logged step (and the console the milestones); returns the
    SPML_METRICS_FILE handle (one JSON record per step) or None."""
    OUTPUTS.mkdir(exist_ok=True)
    handler = logging.FileHandler(LOG_FILE, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    metrics = os.environ.get("SPML_METRICS_FILE")
    return open(metrics, "a", encoding="utf-8") if metrics else None  # noqa: SIM115


def say(text: str) -> None:
    """A milestone: on the console and in train.log."""
    print(text, flush=True)
    LOG.info(text)


def grad_norm_of(model: nn.Module) -> float:
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def train(model: nn.Module, params: dict[str, Any], data: tuple, limits: dict[str, Any],
          metrics_file: Any) -> tuple[int, int]:
    """Train until the step, epoch or time budget is spent; return (epochs, steps)."""
    x, y, x_val, y_val = data
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"],
                            weight_decay=params["weight_decay"])
    deadline = time.perf_counter() + limits["time_limit"]
    epochs = steps = 0
    while limits["epoch_limit"] is None or epochs < limits["epoch_limit"]:
        order = torch.randperm(len(x))
        for start in range(0, len(x), params["batch_size"]):
            idx = order[start:start + params["batch_size"]]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                say(f"FAIL: loss is {loss_value} at step {steps}")
                raise SystemExit(1)
            if steps % EVAL_EVERY == 0:
                print(f"step {steps}/{limits['max_steps']} loss={loss_value:.6g}", flush=True)
                evaluate_in_memory(model, x_val, y_val, steps)
            if steps >= limits["max_steps"]:
                return epochs + 1, steps
            if time.perf_counter() >= deadline:
                say(f"stopped by the {limits['time_limit']:g}s safety limit at step {steps}")
                return epochs + 1, steps
        epochs += 1
    return epochs, steps


def evaluate_in_memory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
    """The cadence's evaluation: the evaluator core on the live model (mode=in_memory)."""
    try:
        metrics = evaluate_model(model, x, y)
    except EvaluationError as exc:
        say(f"FAIL: in-memory evaluation at step {step}: {exc}")
        raise SystemExit(1) from exc
    say(f"eval step={step} mode=in_memory val_mse={metrics['val_mse']:.6g}")


def save_checkpoint(model: nn.Module, params: dict[str, Any], n_features: int) -> None:
    checkpoint = {"state_dict": model.state_dict(), "params": params, "n_features": n_features}
    torch.save(checkpoint, CHECKPOINT)
    if os.environ.get("SPML_CHECKPOINT_DIR"):
        spml_dir = Path(os.environ["SPML_CHECKPOINT_DIR"])
        spml_dir.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, spml_dir / "model.pt")


def main() -> None:
    limits = budget()
    print(f"max_steps={limits['max_steps']}", flush=True)
    try:
        params = load_params(HERE / "params.yaml")
    except ParamsError as exc:
        raise SystemExit(f"ERROR: invalid params.yaml: {exc}") from exc
    torch.set_num_threads(1)
    seed_everything(limits["seed"])
    x, y = load_csv(HERE / "data" / "train.csv")
    x_val, y_val = load_csv(HERE / "data" / "val.csv")
    model = build_model(params, x.shape[1])
    metrics_file = open_logs()
    say(f"params: {params}")
    started = time.perf_counter()
    try:
        epochs, steps = train(model, params, (x, y, x_val, y_val), limits, metrics_file)
    finally:
        if metrics_file:
            metrics_file.close()
    save_checkpoint(model, params, x.shape[1])
    print("---")
    print(f"training_seconds: {time.perf_counter() - started:.2f}")
    print(f"epochs: {epochs}")
    print(f"steps: {steps}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
