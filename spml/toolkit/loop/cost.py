"""What a loop cost: per round and in total, researcher time, training and evaluation time,
GPU-seconds, and the tokens and dollars a researcher reports.

Sources, all in the round's folder (`.spml/<kind>/rounds/NNNN/`):

* `researcher.json`, written by the supervisor after the researcher step (`record_researcher`):
  its wall seconds, and what the researcher reported in ``$SPML_COST_FILE`` — one JSON object
  with ``tokens`` (an integer) and/or ``usd`` (a number). A coding agent's wrapper writes it,
  e.g. ``{"tokens": 48210, "usd": 0.31}``; anything else there is ignored with a warning.
* `measurement.json` and `incumbent.json`: each run's train and eval seconds.

GPU-seconds are the train and eval seconds times the GPUs the commands held (`gpus_held`:
``CUDA_VISIBLE_DEVICES``, else every GPU NVML sees), recorded with each round.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from pydantic import BaseModel

from spml.toolkit.files import write_atomic
from spml.toolkit.loop.measurement import (
    INCUMBENT_FILENAME,
    MEASUREMENT_FILENAME,
    load_measurement,
)

log = logging.getLogger(__name__)
COST_FILE_VAR = "SPML_COST_FILE"
COST_FILENAME = "researcher-cost.json"     # what the researcher writes
RESEARCHER_FILENAME = "researcher.json"    # what the supervisor records


class Cost(BaseModel):
    """Seconds, GPU-seconds, tokens and dollars (None: nobody reported any)."""

    researcher_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    gpu_s: float = 0.0
    tokens: int | None = None
    usd: float | None = None

    def __add__(self, other: Cost) -> Cost:
        return Cost(researcher_s=self.researcher_s + other.researcher_s,
                    train_s=self.train_s + other.train_s, eval_s=self.eval_s + other.eval_s,
                    gpu_s=self.gpu_s + other.gpu_s, tokens=_add(self.tokens, other.tokens),
                    usd=_add(self.usd, other.usd))

    def render(self) -> str:
        """`researcher 12.0 s, training 40.1 s, evaluation 3.2 s, 0 GPU-s, 48210 tokens, $0.31`."""
        parts = [f"researcher {self.researcher_s:.1f} s", f"training {self.train_s:.1f} s",
                 f"evaluation {self.eval_s:.1f} s", f"{self.gpu_s:.0f} GPU-s"]
        if self.tokens is not None:
            parts.append(f"{self.tokens} tokens")
        if self.usd is not None:
            parts.append(f"${self.usd:.2f}")
        return ", ".join(parts)


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def record_researcher(round_dir: Path, seconds: float, gpus: int) -> None:
    """Save the researcher step's seconds, its reported tokens/dollars, and the GPUs held."""
    reported = read_reported(round_dir / COST_FILENAME)
    record = {"seconds": seconds, "gpus": gpus, **reported}
    write_atomic(round_dir / RESEARCHER_FILENAME, json.dumps(record) + "\n")


def read_reported(path: Path) -> dict[str, float | int]:
    """``tokens`` and ``usd`` from the researcher's cost file (untrusted: checked, bounded)."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size == 0:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8")[:10_000])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring %s: not JSON (%s)", path, exc)
        return {}
    out: dict[str, float | int] = {}
    if isinstance(data, dict):
        if isinstance(data.get("tokens"), int) and not isinstance(data["tokens"], bool) \
                and data["tokens"] >= 0:
            out["tokens"] = data["tokens"]
        usd = data.get("usd")
        if isinstance(usd, int | float) and not isinstance(usd, bool) and math.isfinite(usd) \
                and usd >= 0:
            out["usd"] = float(usd)
    if not out:
        log.warning("ignoring %s: expected {\"tokens\": <int>, \"usd\": <number>}", path)
    return out


def round_cost(round_dir: Path) -> Cost:
    """One round's cost from its folder (missing files cost nothing)."""
    try:
        researcher = json.loads((round_dir / RESEARCHER_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        researcher = {}
    gpus = int(researcher.get("gpus", 0) or 0)
    train = evaluation = 0.0
    for name in (MEASUREMENT_FILENAME, INCUMBENT_FILENAME):
        measured = load_measurement(round_dir, name)
        if measured is not None:
            train += measured.train_s
            evaluation += measured.eval_s
    return Cost(researcher_s=float(researcher.get("seconds", 0.0)), train_s=train,
                eval_s=evaluation, gpu_s=(train + evaluation) * gpus,
                tokens=researcher.get("tokens"), usd=researcher.get("usd"))


def loop_cost(rounds_dir: Path) -> Cost:
    """Every round's cost, summed (`.spml/<kind>/rounds/`)."""
    total = Cost()
    for round_dir in sorted(rounds_dir.glob("[0-9][0-9][0-9][0-9]")):
        total = total + round_cost(round_dir)
    return total
