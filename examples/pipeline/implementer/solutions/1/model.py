"""Shared helpers for the regression example: params validation, data loading, model builder.

Fixed file (Subtask 1, model core): the researcher edits only params.yaml.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

# name -> (type, minimum allowed value, maximum allowed value)
NUMERIC_PARAMS: dict[str, tuple[type, float, float]] = {
    "lr": (float, 1e-7, 10.0),
    "weight_decay": (float, 0.0, 10.0),
    "hidden": (int, 1, 1024),
    "layers": (int, 1, 8),
    "batch_size": (int, 1, 4096),
}
REQUIRED_PARAMS = (*NUMERIC_PARAMS, "activation")


class ParamsError(ValueError):
    """Raised when params.yaml (or a checkpoint's params) is missing or invalid."""


def _check_number(name: str, value: Any) -> float | int:
    """Validate one numeric param against NUMERIC_PARAMS and return it with the right type."""
    kind, low, high = NUMERIC_PARAMS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamsError(f"{name} must be a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise ParamsError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ParamsError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return kind(value)


def validate_params(raw: Any) -> dict[str, Any]:
    """Check that raw is a mapping with exactly the known keys and valid values."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params must be a mapping, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_PARAMS if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED_PARAMS))
    if missing or unknown:
        raise ParamsError(f"missing params {missing}, unknown params {unknown}")
    params: dict[str, Any] = {name: _check_number(name, raw[name]) for name in NUMERIC_PARAMS}
    if raw["activation"] not in ACTIVATIONS:
        raise ParamsError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {raw['activation']!r}"
        )
    params["activation"] = raw["activation"]
    return params


def load_params(path: Path) -> dict[str, Any]:
    """Read and validate params.yaml."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"cannot read {path}: {exc}") from exc
    return validate_params(raw)


def load_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a CSV whose last column is the target; return (features, targets) as float32."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    data = torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32)
    return data[:, :-1], data[:, -1:]


def build_model(params: dict[str, Any], n_features: int) -> nn.Sequential:
    """Build an MLP: `layers` hidden layers of width `hidden`, then a linear output."""
    act = ACTIVATIONS[params["activation"]]
    modules: list[nn.Module] = []
    width = n_features
    for _ in range(params["layers"]):
        modules += [nn.Linear(width, params["hidden"]), act()]
        width = params["hidden"]
    modules.append(nn.Linear(width, 1))
    return nn.Sequential(*modules)
