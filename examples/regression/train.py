"""Train the MLP described by params.yaml on data/train.csv for a fixed budget of steps.

The budget is MAX_STEPS optimizer steps, so a run's result depends on the params and the seed
only, never on how busy the machine is (a wall-clock budget would let the same settings score
differently from run to run, and a search would "win" on that noise). The wall clock is a
safety stop.

Fixed file. Environment:
  SPML_TIME_LIMIT  safety stop in seconds (float, default 20); training stops before it
  SPML_EPOCH_LIMIT optional maximum number of epochs (int)
  SPML_SEED        random seed (int, default 0)
  SPML_MAX_STEPS   optional cap on the step budget (spml's L1 check); when set, the run prints
                   `max_steps=N` first and also saves the checkpoint to SPML_CHECKPOINT_DIR
  SPML_METRICS_FILE  optional: one JSON record per optimizer step is appended there
Writes outputs/model.pt (model state + the params used) and ends with a summary block.
Without the optional variables the run (output, checkpoint, scores) is exactly as before.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from model import ParamsError, build_model, load_csv, load_params
from torch import nn

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "outputs" / "model.pt"
MAX_STEPS = 1200  # optimizer steps per run: the fixed training budget
METRICS_FILE = os.environ.get("SPML_METRICS_FILE")
_STEP_COUNTER = itertools.count(1)


def env_budget() -> tuple[float, int | None, int]:
    """Read (time limit, epoch limit or None, seed) from the environment."""
    try:
        time_limit = float(os.environ.get("SPML_TIME_LIMIT", "20"))
        epochs = os.environ.get("SPML_EPOCH_LIMIT")
        epoch_limit = int(epochs) if epochs else None
        seed = int(os.environ.get("SPML_SEED", "0"))
    except ValueError as exc:
        raise SystemExit(f"ERROR: bad SPML_* environment variable: {exc}") from exc
    if not time_limit > 0 or (epoch_limit is not None and epoch_limit < 1):
        raise SystemExit("ERROR: SPML_TIME_LIMIT must be > 0 and SPML_EPOCH_LIMIT >= 1")
    return time_limit, epoch_limit, seed


def env_max_steps() -> int:
    """The step budget: MAX_STEPS, capped by SPML_MAX_STEPS when that is set."""
    try:
        cap = int(os.environ.get("SPML_MAX_STEPS") or MAX_STEPS)
    except ValueError as exc:
        raise SystemExit(f"ERROR: bad SPML_MAX_STEPS: {exc}") from exc
    if cap < 1:
        raise SystemExit("ERROR: SPML_MAX_STEPS must be >= 1")
    return min(cap, MAX_STEPS)


def log_step(model: nn.Module, loss: float, seconds: float) -> None:
    """Append one step record to SPML_METRICS_FILE (reads the gradients, changes nothing)."""
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0
    record = {"step": next(_STEP_COUNTER), "loss": loss, "grad_norm": grad_norm,
              "step_time_s": seconds}
    with open(METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def run_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    limits: tuple[float, int],
) -> tuple[float, int]:
    """One shuffled pass over data, cut short at the deadline or the step budget.

    Returns the mean batch loss and the number of steps taken.
    """
    deadline, steps_left = limits
    x, y = data
    order = torch.randperm(len(x))
    total, steps = 0.0, 0
    for start in range(0, len(x), batch_size):
        step_start = time.perf_counter()
        idx = order[start : start + batch_size]
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, steps = total + loss.item(), steps + 1
        if METRICS_FILE:
            log_step(model, loss.item(), time.perf_counter() - step_start)
        if not math.isfinite(total):
            print("FAIL: loss is nan")
            raise SystemExit(1)
        if time.perf_counter() >= deadline or steps >= steps_left:
            break
    return total / steps, steps


def train(model: nn.Module, params: dict[str, Any], data: tuple, budget: tuple) -> tuple:
    """Run epochs until the step, epoch or time budget is spent; return (epochs, steps, s)."""
    time_limit, epoch_limit, _, max_steps = budget
    opt = torch.optim.AdamW(
        model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"]
    )
    start = time.perf_counter()
    deadline = start + time_limit
    epochs, steps, last_epoch_s = 0, 0, 0.0
    while (epoch_limit is None or epochs < epoch_limit) and steps < max_steps:
        epoch_start = time.perf_counter()
        if epoch_start + last_epoch_s >= deadline:  # the next epoch would overrun the budget
            print(f"stopped by the {time_limit:g}s safety limit after {steps} steps")
            break
        loss, taken = run_epoch(model, opt, data, params["batch_size"],
                                (deadline, max_steps - steps))
        epochs, steps = epochs + 1, steps + taken
        last_epoch_s = time.perf_counter() - epoch_start
        if epochs == 1 or epochs % 25 == 0:
            print(f"epoch {epochs:4d}  loss {loss:.6f}  elapsed {epoch_start - start:.2f}s")
    return epochs, steps, time.perf_counter() - start


def main() -> None:
    """Entry point: validate params, train, save the checkpoint, print the summary."""
    budget = (*env_budget(), env_max_steps())
    if os.environ.get("SPML_MAX_STEPS"):
        print(f"max_steps={budget[3]}", flush=True)
    try:
        params = load_params(HERE / "params.yaml")
    except ParamsError as exc:
        raise SystemExit(f"ERROR: invalid params.yaml: {exc}") from exc
    torch.set_num_threads(1)
    torch.manual_seed(budget[2])
    x, y = load_csv(HERE / "data" / "train.csv")
    model = build_model(params, x.shape[1])
    print(f"params: {params}")
    epochs, steps, seconds = train(model, params, (x, y), budget)
    model.eval()
    with torch.no_grad():
        train_mse = nn.functional.mse_loss(model(x), y).item()
    if not math.isfinite(train_mse):
        print("FAIL: loss is nan")
        raise SystemExit(1)
    CHECKPOINT.parent.mkdir(exist_ok=True)
    checkpoint = {"state_dict": model.state_dict(), "params": params, "n_features": x.shape[1]}
    torch.save(checkpoint, CHECKPOINT)
    if os.environ.get("SPML_CHECKPOINT_DIR"):
        spml_dir = Path(os.environ["SPML_CHECKPOINT_DIR"])
        spml_dir.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, spml_dir / "model.pt")
    print("---")
    print(f"train_mse: {train_mse:.6f}")
    print(f"training_seconds: {seconds:.2f}")
    print(f"epochs: {epochs}")
    print(f"steps: {steps}")
    print(f"num_params: {sum(p.numel() for p in model.parameters())}")


if __name__ == "__main__":
    main()
