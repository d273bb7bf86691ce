"""The evaluator (Subtask 2): one core, two entry modes.

* checkpoint mode: `python evaluate.py [CHECKPOINT]` loads a checkpoint (default
  outputs/model.pt), scores it on data/val.csv and prints `val_mse=<value>`;
* in-memory mode: the trainer calls `evaluate_model(model, x, y)` every N steps.

Both go through `evaluate_model`, so the two modes cannot drift apart. Deterministic: single
thread, no randomness. Failures say what failed and exit 1 (checkpoint mode) or raise
EvaluationError (in-memory mode), never a silent zero.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from model import ParamsError, build_model, load_csv, validate_params

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "outputs" / "model.pt"


class EvaluationError(RuntimeError):
    """The evaluation could not produce a finite metric."""


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The shared core: full-validation MSE of ``model`` on (x, y)."""
    if len(x) == 0:
        raise EvaluationError("the validation set is empty")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        mse = torch.mean((model(x).double() - y.double()) ** 2).item()
    model.train(was_training)
    if not math.isfinite(mse):
        raise EvaluationError(f"val_mse is not finite ({mse})")
    return {"val_mse": mse}


def load_model(path: Path) -> torch.nn.Module:
    """Rebuild the trained model from its checkpoint (exit 1 naming the file on failure)."""
    if not path.is_file():
        raise SystemExit(f"ERROR: checkpoint {path} not found; run train.py first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(validate_params(ckpt["params"]), int(ckpt["n_features"]))
        model.load_state_dict(ckpt["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError, ParamsError) as exc:
        raise SystemExit(f"ERROR: cannot load checkpoint {path}: {exc}") from exc
    return model.eval()


def main() -> None:
    """Checkpoint mode: print the phase, the result and the time it took."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = load_model(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT)
    x, y = load_csv(HERE / "data" / "val.csv")
    print(f"eval start: mode=checkpoint rows={len(x)}", file=sys.stderr)
    try:
        metrics = evaluate_model(model, x, y)
    except EvaluationError as exc:
        raise SystemExit(f"ERROR: {exc}") from exc
    print(f"eval done: {time.perf_counter() - started:.2f}s", file=sys.stderr)
    print(f"val_mse={metrics['val_mse']:.8g}")


if __name__ == "__main__":
    main()
