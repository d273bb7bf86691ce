"""SPML's L1 judgement thresholds (spml-reference section 2.4) as one typed default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Defaults are SPML's; every one can be overridden in ``[tool.spml.validate.runtime]``."""

    grad_vanishing: float = 1e-7  # total grad norm below this on every step: vanishing
    grad_exploding: float = 1e3   # total grad norm above this on any step: exploding
    loss_drop_min: float = 0.0    # relative drop first -> last window that counts as "down"
    loss_spike_factor: float = 10.0  # a loss > 10x the mean of the previous 10 steps
    drift_min: float = 0.0        # relative parameter drift ||θ-θ0||/||θ0|| must exceed this
    drift_max: float = 10.0       # ... and stay below this
    mfu_anomaly: float = 0.01     # MFU below 1 % is an anomaly (GPU runs only)
    fragmentation: float = 0.20   # reserved-but-unusable share flagged as extreme
    allclose_rtol: float = 1e-5   # checkpoint reload and inference determinism
    allclose_atol: float = 1e-6
    inference_passes: int = 3
