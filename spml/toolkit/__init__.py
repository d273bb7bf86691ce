"""spml.toolkit: plain-Python logic under the flows (never imports Prefect).

``spml.toolkit.Monitor`` is the per-step metrics logger a training script adds (see
``spml.toolkit.monitor``); it is imported lazily so ``import spml.toolkit`` stays free of torch.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from spml.toolkit.monitor import Monitor

        return Monitor
    raise AttributeError(f"module 'spml.toolkit' has no attribute {name!r}")
