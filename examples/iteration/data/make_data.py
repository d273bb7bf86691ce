"""Generate data/points.csv for the iteration example (run once; seed fixed).

Two interleaved spirals (classes 0 and 1), 300 points each, with Gaussian jitter. Each arm
turns 1.75 times around the origin, so a linear model scores about 50% and a small MLP needs a
sensible learning rate and enough steps to separate them. Rows are shuffled before writing.
This script is kept for provenance only; nothing runs it during training.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

SEED = 20240607
N_PER_CLASS = 300
TURNS = 1.75
NOISE_STD = 0.04
HEADER = ["x1", "x2", "label"]


def spiral_point(rng: random.Random, label: int) -> list[str]:
    """One jittered point on the arm of class `label` (arm 1 is arm 0 rotated by pi)."""
    t = math.sqrt(rng.random())  # sqrt: spread points evenly along the arm
    angle = 2 * math.pi * TURNS * t + math.pi * label
    radius = 0.1 + 0.9 * t
    x1 = radius * math.cos(angle) + rng.gauss(0.0, NOISE_STD)
    x2 = radius * math.sin(angle) + rng.gauss(0.0, NOISE_STD)
    return [f"{x1:.5f}", f"{x2:.5f}", str(label)]


def main() -> None:
    """Write points.csv next to this script."""
    rng = random.Random(SEED)
    rows = [spiral_point(rng, label) for label in (0, 1) for _ in range(N_PER_CLASS)]
    rng.shuffle(rows)
    with (Path(__file__).resolve().parent / "points.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)


if __name__ == "__main__":
    main()
