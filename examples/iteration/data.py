"""Load data/points.csv (two interleaved spirals) and split it into train and val.

Fixed file. The split is deterministic and uses no randomness: every third row (rows were
shuffled once when the CSV was generated) is a validation row, giving 400 train / 200 val.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA_FILE = HERE / "data" / "points.csv"
N_FEATURES = 2
N_CLASSES = 2
VAL_EVERY = 3  # row i is a validation row when i % VAL_EVERY == 0

Split = tuple[torch.Tensor, torch.Tensor]


def load_points(path: Path = DATA_FILE) -> Split:
    """Return all rows as (features float32 [n, 2], labels int64 [n])."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    x = torch.tensor([[float(a), float(b)] for a, b, _ in rows], dtype=torch.float32)
    y = torch.tensor([int(label) for _, _, label in rows], dtype=torch.int64)
    return x, y


def load_split() -> tuple[Split, Split]:
    """Return ((x_train, y_train), (x_val, y_val))."""
    x, y = load_points()
    is_val = torch.arange(len(x)) % VAL_EVERY == 0
    return (x[~is_val], y[~is_val]), (x[is_val], y[is_val])
