"""Custom review check: exit 0 if outputs/model.pt is a loadable, weights-only checkpoint.

Fixed file. The checkpoint must load with `torch.load(..., weights_only=True)`, hold exactly
the keys train.py documents, and its state dict must fit `build_model(**model_kwargs)`
strictly. Any failure prints `FAIL: <reason>` and exits 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from model import build_model

CHECKPOINT = Path(__file__).resolve().parent / "outputs" / "model.pt"
EXPECTED_KEYS = {"state_dict", "model_kwargs", "steps"}


def check(path: Path = CHECKPOINT) -> str | None:
    """Return None when the checkpoint is fine, else the reason it is not."""
    if not path.is_file():
        return f"{path} not found"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any load error fails the check
        return f"weights-only load failed: {exc}"
    if not isinstance(ckpt, dict) or set(ckpt) != EXPECTED_KEYS:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        return f"expected keys {sorted(EXPECTED_KEYS)}, got {keys}"
    try:
        build_model(**ckpt["model_kwargs"]).load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, RuntimeError) as exc:
        return f"state dict does not fit the model: {exc}"
    return None


def main() -> None:
    """Run the check and exit 0 (ok) or 1 (failed)."""
    reason = check()
    if reason is not None:
        print(f"FAIL: {reason}")
        raise SystemExit(1)
    print(f"ok: {CHECKPOINT.name} loads weights-only into the model")


if __name__ == "__main__":
    main()
