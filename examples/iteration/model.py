"""The classifier: a small MLP from 2-D points to class logits.

Focused file: the researcher may change the architecture. `build_model(**model_kwargs)` must
rebuild the same network from the keyword arguments train.py stores in the checkpoint.
"""

from __future__ import annotations

from data import N_CLASSES, N_FEATURES
from torch import nn


def build_model(hidden: int, layers: int) -> nn.Sequential:
    """`layers` hidden layers of width `hidden` with tanh, then a linear layer to the logits."""
    modules: list[nn.Module] = []
    width = N_FEATURES
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    modules.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*modules)
