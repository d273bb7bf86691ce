"""The incumbent: the measured state of the code HEAD holds now.

A round's measurement records the git tree it trained and evaluated. The incumbent is the newest
measurement of a kept round (committed, committed with a note, or re-applied by a person's
override) whose tree is HEAD's tree — what judging "better than the best" must compare with.
When HEAD holds code nobody measured (a person reverted a commit that later rounds built on),
there is no incumbent until the next round measures one.
"""

from __future__ import annotations

import logging

from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.measurement import Measurement, SeedRecord, load_measurement
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)


def find_incumbent(session: LoopSession) -> Measurement | None:
    """HEAD's measured state (see the module docstring), or None."""
    ledger = read_ledger(session.experiment)
    if ledger is None:
        return None
    head_tree = session.workspace.head_tree()
    found_any = False
    for round_no in reversed(ledger.kept_rounds()):
        measurement = load_measurement(session.experiment.round_dir(round_no))
        found_any = found_any or measurement is not None
        if measurement is not None and measurement.tree == head_tree and not measurement.cause:
            return measurement
    # HEAD holds code nobody measured: no incumbent. Only when every measurement is gone (a
    # lost `.spml/`) does Auto Research fall back to the ledger's exact best value.
    return None if found_any else _from_ledger(session, ledger.best)


def _from_ledger(session: LoopSession, best: object) -> Measurement | None:
    """Last resort when `.spml/` was lost: the ledger's exact value of the best round."""
    metric = session.protocol.metric
    value = getattr(best, "result", None)
    if value is None or metric is None or session.kind.name != "autoresearch":
        return None
    log.warning("no measurement file matches HEAD; judging against the ledger's best %r", value)
    return Measurement(round=getattr(best, "round", 0), primary=metric, source="ledger",
                       seeds=(SeedRecord(seed=0, metrics={metric: value}),))
