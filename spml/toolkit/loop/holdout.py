"""When the loop ends: the baseline and the final best, measured on the sealed holdout.

During every round the holdout paths (the protocol's `holdout.paths`, untracked files of the
person's checkout) are sealed inside the sandbox (`spml.toolkit.loop.sandboxing`), so no
candidate can be selected on them. Once the loop ends, both commits are trained again and
evaluated by `holdout.command` instead of `eval.command`, on seeds no round used
(`HOLDOUT_SEED0` on), as many as the confirmation runs (`acceptance.confirm_runs`, at least
one), in a scratch worktree. The holdout command may read the holdout then (training stays sealed);
writes stay confined.
The result is the ledger header's `holdout:` line and a line of the summary.

The runs are never resumed from files: without the sandbox the trained code could write them.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from pathlib import Path
from statistics import fmean

from spml.toolkit.loop.confirm import (
    CONFIRMED_ENDINGS,
    Bench,
    baseline_commit,
    confirmation_text,
)
from spml.toolkit.loop.handedits import load_ledger
from spml.toolkit.loop.ledger import write_ledger
from spml.toolkit.loop.measurement import Measurement
from spml.toolkit.loop.sandboxing import confines, sandbox_spec
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)
HOLDOUT_SEED0 = 30_000   # apart from rounds, confirmation (10 000) and verification (20 000)
HOLDOUT_DIR_VAR = "SPML_HOLDOUT_DIR"


def holdout_dir(session: LoopSession) -> Path:
    """Where the holdout runs' logs live."""
    return session.experiment.state_dir / "holdout"


def wants_holdout(session: LoopSession, status: str) -> bool:
    """A protocol with a holdout, a loop that ended (not one interrupted: it resumes)."""
    return getattr(session.protocol, "holdout", None) is not None and status in CONFIRMED_ENDINGS


def holdout_session(session: LoopSession) -> LoopSession:
    """The session whose evaluation is the holdout command (which finds the data through
    ``SPML_HOLDOUT_DIR``); only that evaluation may read the holdout, training stays sealed."""
    protocol = session.protocol
    command = (f"export {HOLDOUT_DIR_VAR}={shlex.quote(str(session.experiment.exp_dir))}; "
               f"{protocol.holdout.command}")
    swapped = protocol.model_copy(update={
        "eval": protocol.eval.model_copy(update={"command": command})})
    return replace(session, protocol=swapped, reads_holdout=True)


def measure_holdout(session: LoopSession, status: str) -> str:
    """Measure both commits on the holdout; write and return the `holdout:` sentence."""
    if not wants_holdout(session, status):
        return ""
    best, base = session.workspace.head(), baseline_commit(session)
    if base is None:
        return ""
    runs = max(1, getattr(session.protocol.acceptance, "confirm_runs", 1))
    seeds = [HOLDOUT_SEED0 + i for i in range(runs)]
    for stale in holdout_dir(session).glob("*.json"):
        stale.unlink()
    bench = Bench(holdout_session(session), "holdout", holdout_dir(session))
    measured = {"best": bench.measure("best", best, seeds, None)}
    measured["baseline"] = measured["best"] if base == best else \
        bench.measure("baseline", base, seeds, None)
    bench.remove()
    text = holdout_text(session, measured["best"], measured["baseline"], same=base == best)
    if not confines(sandbox_spec(session.protocol)):
        text = f"NOT sealed during the rounds (no sandbox): {text}"
    ledger = load_ledger(session.experiment)
    write_ledger(session.experiment, ledger.model_copy(update={"holdout": text}))
    log.info("holdout: %s", text)
    return text


def holdout_text(session: LoopSession, best: Measurement, base: Measurement,
                 same: bool = False) -> str:
    """`best ... vs baseline ...: gain ..., interval [...], confirmed` on the holdout."""
    if same or not best.values:  # the loop kept nothing: one version
        if not best.values:
            return f"could not be measured: {best.cause or 'no value'}"
        return (f"the loop kept no change; the baseline measures {fmean(best.values):.6g} "
                f"(n={len(best.values)})")
    return confirmation_text(session, best, base)
