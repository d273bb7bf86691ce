"""Hyperparameter search on examples/regression WITHOUT the spml engine.

Copies the example into a temp dir, runs the baseline (params.yaml as shipped), then N optuna
trials; each trial writes params.yaml, runs train.py and evaluate.py as subprocesses with
SPML_TIME_LIMIT set, and parses `val_mse=` from evaluate's stdout. Prints the baseline, every
trial, the best result, the median round wall time and the recommended search space as YAML.

    python benchmarks/example_search.py --rounds 8 --seed 0 --sampler tpe
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "regression"
METRIC = re.compile(r"^val_mse=(\S+)$", re.MULTILINE)

# The search space recommended for the demo protocol (printed as YAML at the end).
SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
    "hidden": {"type": "int", "low": 8, "high": 128, "step": 8},
    "layers": {"type": "int", "low": 1, "high": 4},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu", "silu"]},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    "weight_decay": {"type": "float", "low": 0.000001, "high": 0.1, "log": True},
}


def distribution(spec: dict[str, Any]) -> BaseDistribution:
    """Turn one SPACE entry into an optuna distribution."""
    if spec["type"] == "float":
        return FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False))
    if spec["type"] == "int":
        return IntDistribution(spec["low"], spec["high"], step=spec.get("step", 1))
    return CategoricalDistribution(spec["choices"])


def run_round(workdir: Path, params: dict[str, Any], env: dict[str, str]) -> tuple[float, float]:
    """Write params.yaml, train, evaluate; return (val_mse or nan on failure, wall seconds)."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(workdir / "outputs", ignore_errors=True)
    start = time.perf_counter()
    value = float("nan")
    for script in ("train.py", "evaluate.py"):
        proc = subprocess.run(
            [sys.executable, script], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
            print(f"    {script} failed (rc={proc.returncode}): {tail}")
            return value, time.perf_counter() - start
    match = METRIC.search(proc.stdout)
    if match:
        value = float(match.group(1))
    return value, time.perf_counter() - start


def yaml_number(value: float | int) -> str:
    """Format a number so that PyYAML reads it back as the same int/float (no bare 1e-06)."""
    return str(value) if isinstance(value, int) else f"{value:.10f}".rstrip("0")


def space_yaml(space: dict[str, dict[str, Any]]) -> str:
    """Render the space in the protocol's flow style, one parameter per line."""
    lines = ["space:"]
    for name, spec in space.items():
        fields = []
        for key, val in spec.items():
            if isinstance(val, bool):
                text = str(val).lower()
            elif isinstance(val, list):
                text = "[" + ", ".join(str(v) for v in val) + "]"
            else:
                text = yaml_number(val) if isinstance(val, int | float) else str(val)
            fields.append(f"{key}: {text}")
        lines.append(f"  {name}: {{{', '.join(fields)}}}")
    text = "\n".join(lines)
    assert yaml.safe_load(text) == {"space": space}, "space YAML does not round-trip"
    return text


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="optuna trials after baseline")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    parser.add_argument("--time-limit", type=float, default=5.0, help="safety stop (s)")
    parser.add_argument("--train-seed", type=int, default=0, help="SPML_SEED for train.py")
    return parser.parse_args()


def main() -> None:
    """Baseline, then --rounds trials; print a summary."""
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = os.environ | {
        "SPML_TIME_LIMIT": str(args.time_limit),
        "SPML_SEED": str(args.train_seed),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("SPML_EPOCH_LIMIT", None)
    dists = {name: distribution(spec) for name, spec in SPACE.items()}
    sampler_cls = (
        optuna.samplers.TPESampler if args.sampler == "tpe" else optuna.samplers.RandomSampler
    )
    study = optuna.create_study(direction="minimize", sampler=sampler_cls(seed=args.seed))
    with tempfile.TemporaryDirectory(prefix="spml-example-") as tmp:
        workdir = Path(tmp) / "regression"
        shutil.copytree(EXAMPLE, workdir, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
        defaults = yaml.safe_load((workdir / "params.yaml").read_text())
        baseline, seconds = run_round(workdir, defaults, env)
        walls = [seconds]
        print(f"baseline  val_mse={baseline:.6g}  ({seconds:.1f}s)  {defaults}")
        study.add_trial(
            create_trial(
                params={k: defaults[k] for k in SPACE}, distributions=dists, value=baseline
            )
        )
        for i in range(1, args.rounds + 1):
            trial = study.ask(dists)
            value, seconds = run_round(workdir, defaults | trial.params, env)
            walls.append(seconds)
            if value != value:  # nan: failed round
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
            best = study.best_value
            print(f"round {i:2d}  val_mse={value:.6g}  best={best:.6g}  ({seconds:.1f}s)  "
                  f"{trial.params}")  # fmt: skip
    best = study.best_trial
    gain = 100 * (1 - best.value / baseline)
    print(f"\nsampler={args.sampler} seed={args.seed} rounds={args.rounds} "
          f"time_limit={args.time_limit}s")  # fmt: skip
    print(f"baseline val_mse={baseline:.6g}")
    print(f"best     val_mse={best.value:.6g}  ({gain:.1f}% lower)  {best.params}")
    print(f"round wall time median={statistics.median(walls):.2f}s  max={max(walls):.2f}s")
    print("\nRecommended search space:\n```yaml\n" + space_yaml(SPACE) + "\n```")


if __name__ == "__main__":
    main()
