"""Score outputs/model.pt on the validation split; the last line is `val_acc: <value>`.

Fixed file. The network is rebuilt from the `model_kwargs` stored in the checkpoint, so
editing config.py after training cannot change the score. Deterministic: no randomness.
"""

from __future__ import annotations

from pathlib import Path

import torch
from data import load_split
from model import build_model
from torch import nn

CHECKPOINT = Path(__file__).resolve().parent / "outputs" / "model.pt"


def load_model(path: Path = CHECKPOINT) -> nn.Module:
    """Rebuild the trained network from its checkpoint (weights only, no pickled code)."""
    if not path.is_file():
        raise SystemExit(f"ERROR: checkpoint {path} not found; run train.py first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(**ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def main() -> None:
    """Print the validation accuracy with 4 decimals."""
    torch.set_num_threads(1)
    model = load_model()
    _, (x_val, y_val) = load_split()
    with torch.no_grad():
        correct = (model(x_val).argmax(dim=1) == y_val).sum().item()
    print(f"val_acc: {correct / len(y_val):.4f}")


if __name__ == "__main__":
    main()
