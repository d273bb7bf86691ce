"""Compute the validation MSE of outputs/model.pt on data/val.csv and print `val_mse=<value>`.

`python evaluate.py [CHECKPOINT]` scores another checkpoint file (default outputs/model.pt).

Fixed file. The model is rebuilt from the params stored IN the checkpoint (not params.yaml),
so editing params.yaml after training cannot change the score. Deterministic: single thread,
no randomness.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from model import ParamsError, build_model, load_csv, validate_params

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "outputs" / "model.pt"


def load_model(path: Path) -> torch.nn.Module:
    """Rebuild the trained model from its checkpoint."""
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
    """Entry point: print val_mse with 8 significant digits."""
    torch.set_num_threads(1)
    model = load_model(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT)
    x, y = load_csv(HERE / "data" / "val.csv")
    with torch.no_grad():
        mse = torch.mean((model(x).double() - y.double()) ** 2).item()
    if not math.isfinite(mse):
        raise SystemExit(f"ERROR: val_mse is not finite ({mse})")
    print(f"val_mse={mse:.8g}")


if __name__ == "__main__":
    main()
