"""Generate data/train.csv and data/val.csv for the regression example (run once; seed fixed).

The target is a smooth but clearly nonlinear function of three inputs plus Gaussian noise:

    y = sin(3*x1) * cos(2*x2) + 0.5 * x3**2 - 0.6 * x1 * x3 + noise,  x ~ U(-1.5, 1.5)^3

The noise floor (the best achievable MSE) is NOISE_STD**2 = 0.0025.
This script is kept for provenance only; the training loop never runs it.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

SEED = 20240601
NOISE_STD = 0.05
N_TRAIN = 1500
N_VAL = 1000
HEADER = ["x1", "x2", "x3", "y"]


def target(x1: float, x2: float, x3: float) -> float:
    """Noise-free regression target."""
    return math.sin(3 * x1) * math.cos(2 * x2) + 0.5 * x3**2 - 0.6 * x1 * x3


def make_rows(rng: random.Random, n: int) -> list[list[str]]:
    """Draw n noisy samples, formatted as CSV fields with 6 decimals."""
    rows = []
    for _ in range(n):
        x = [rng.uniform(-1.5, 1.5) for _ in range(3)]
        y = target(*x) + rng.gauss(0.0, NOISE_STD)
        rows.append([f"{v:.6f}" for v in (*x, y)])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """Write rows under the standard header."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)


def main() -> None:
    """Write train.csv and val.csv next to this script."""
    rng = random.Random(SEED)
    here = Path(__file__).resolve().parent
    write_csv(here / "train.csv", make_rows(rng, N_TRAIN))
    write_csv(here / "val.csv", make_rows(rng, N_VAL))


if __name__ == "__main__":
    main()
