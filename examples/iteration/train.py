"""Train the spiral classifier on CPU and save outputs/model.pt.

Hyper-parameters come from config.py. Training is full-batch Adam for a fixed number of steps,
so a result depends on the settings and the seed only, never on how busy the machine is.
Every LOG_EVERY steps one line `step=<n> loss=<value>` goes to stdout.

Environment:
  SPML_SEED        random seed (int, default 0)
  SPML_TIME_LIMIT  safety stop in seconds (float, default 60); training stops before it
Writes outputs/model.pt: {"state_dict", "model_kwargs", "steps"} (tensors and plain values
only, so it loads with `torch.load(..., weights_only=True)`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import config
import torch
from data import load_split
from model import build_model
from torch import nn

CHECKPOINT = Path(__file__).resolve().parent / "outputs" / "model.pt"


def read_env() -> tuple[int, float]:
    """Return (seed, time limit in seconds) from SPML_SEED and SPML_TIME_LIMIT."""
    try:
        seed = int(os.environ.get("SPML_SEED", "0"))
        time_limit = float(os.environ.get("SPML_TIME_LIMIT", "60"))
    except ValueError as exc:
        raise SystemExit(f"ERROR: bad SPML_* environment variable: {exc}") from exc
    return seed, time_limit


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, time_limit: float) -> int:
    """Run up to config.STEPS full-batch Adam steps; return the number of steps taken."""
    opt = torch.optim.Adam(model.parameters(), lr=config.LR)
    deadline = time.perf_counter() + time_limit
    step = 0
    while step < config.STEPS and time.perf_counter() < deadline:
        step += 1
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            print(f"FAIL: loss is nan at step {step}")
            raise SystemExit(1)
        if step % config.LOG_EVERY == 0:
            print(f"step={step} loss={loss.item():.4f}", flush=True)
    if step < config.STEPS:
        print(f"stopped by the {time_limit:g}s safety limit after {step} steps")
    return step


def main() -> None:
    """Seed, train, save the checkpoint."""
    seed, time_limit = read_env()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    (x_train, y_train), _ = load_split()
    model_kwargs = {"hidden": config.HIDDEN, "layers": config.LAYERS}
    model = build_model(**model_kwargs)
    start = time.perf_counter()
    steps = train(model, x_train, y_train, time_limit)
    seconds = time.perf_counter() - start
    CHECKPOINT.parent.mkdir(exist_ok=True)
    ckpt = {"state_dict": model.state_dict(), "model_kwargs": model_kwargs, "steps": steps}
    torch.save(ckpt, CHECKPOINT)
    print(f"saved outputs/model.pt after {steps} steps ({seconds:.2f} s of training)")


if __name__ == "__main__":
    main()
