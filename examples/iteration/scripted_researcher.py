"""A scripted stand-in for a coding agent: one fixed change per round, chosen by the round.

Usage: `python scripted_researcher.py ROUND` (run with cwd = the experiment directory).

Round 1: log the gradient norm on the per-step line (train.py); training is unchanged.
Round 2: cut the step budget to a quarter (config.py): 4x faster, clearly worse (rolled back).
Round 3: the real fix, a larger learning rate and a wider hidden layer (config.py).
Round 4+: a harmless comment only (the target should already be reached).

Each round edits the files as the previous *committed* rounds left them (round 3 expects
round 2 to have been rolled back). An edit replaces one exact piece of text; when that text
is missing the script prints `ERROR: ...` and exits 1. Only train.py, model.py and config.py
are ever touched. The one-line strategy goes to $SPML_STRATEGY_FILE (if set) and is printed
last.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EDITABLE = ("train.py", "model.py", "config.py")
Edit = tuple[str, str, str]  # (file, old text, new text)

LOG_LINE = '            print(f"step={step} loss={loss.item():.4f}", flush=True)\n'
LOG_WITH_GRAD_NORM = (
    "            grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]\n"
    "            grad_norm = torch.linalg.vector_norm(torch.stack(grads)).item()\n"
    '            print(f"step={step} loss={loss.item():.4f} grad_norm={grad_norm:.4f}",'
    " flush=True)\n"
)

ROUNDS: dict[int, tuple[str, list[Edit]]] = {
    1: (
        "log grad_norm on every per-step line (read-only, training unchanged)",
        [("train.py", LOG_LINE, LOG_WITH_GRAD_NORM)],
    ),
    2: (
        "train 4x faster: cut STEPS from 600 to 150",
        [("config.py", "STEPS = 600 ", "STEPS = 150 ")],
    ),
    3: (
        "fix underfitting: raise LR from 0.01 to 0.02 and HIDDEN from 16 to 64",
        [("config.py", "LR = 0.01 ", "LR = 0.02 "), ("config.py", "HIDDEN = 16 ", "HIDDEN = 64 ")],
    ),
}


def apply_edit(workdir: Path, edit: Edit) -> None:
    """Replace the one occurrence of `old` by `new` in workdir/file, or exit 1."""
    name, old, new = edit
    if name not in EDITABLE:
        raise SystemExit(f"ERROR: refusing to edit {name}: only {EDITABLE} may change")
    path = workdir / name
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text.count(old) != 1:
        raise SystemExit(
            f"ERROR: expected exactly one {old.strip()!r} in {path}, found {text.count(old)}"
            " (was the file changed, or an earlier round not rolled back?)"
        )
    path.write_text(text.replace(old, new), encoding="utf-8")


def no_op(workdir: Path, round_no: int) -> str:
    """Round 4+: append a comment to config.py; behaviour is unchanged."""
    path = workdir / "config.py"
    if not path.is_file():
        raise SystemExit(f"ERROR: {path} not found")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"# round {round_no}: no further idea, settings kept\n")
    return f"no further idea: settings kept (round {round_no} adds a comment only)"


def main() -> None:
    """Apply this round's change in the current directory and report the strategy."""
    try:
        round_no = int(sys.argv[1])
    except (IndexError, ValueError):
        raise SystemExit("ERROR: usage: python scripted_researcher.py ROUND") from None
    if round_no < 1:
        raise SystemExit(f"ERROR: round must be >= 1, got {round_no}")
    workdir = Path.cwd()
    if round_no in ROUNDS:
        strategy, edits = ROUNDS[round_no]
        for edit in edits:
            apply_edit(workdir, edit)
    else:
        strategy = no_op(workdir, round_no)
    if os.environ.get("SPML_STRATEGY_FILE"):
        Path(os.environ["SPML_STRATEGY_FILE"]).write_text(strategy + "\n", encoding="utf-8")
    print(f"round {round_no}: {strategy}")


if __name__ == "__main__":
    main()
