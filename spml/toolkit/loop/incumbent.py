"""The incumbent: the measured state of the code HEAD holds now, pooled over every run of it.

A round's measurement records the git tree it trained and evaluated. HEAD's code is measured
when it is a candidate (`rounds/NNNN/measurement.json`) and again when it is topped up as the
incumbent at the start of a later round (`rounds/NNNN/incumbent.json`): the incumbent is every
run of HEAD's tree, in any of these files, provided a kept round (committed, committed with a
note, or re-applied by a person's override) measured that tree. When HEAD holds code nobody
measured (a person reverted a commit that later rounds built on), there is no incumbent until
the next round measures one.

The same files give the noise: `experiment_noise` pools the within-version spread of every
version measured more than once (see `spml.toolkit.loop.evidence`).
"""

from __future__ import annotations

import logging

from spml.toolkit.loop.evidence import Noise
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.measurement import (
    INCUMBENT_FILENAME,
    MEASUREMENT_FILENAME,
    Measurement,
    SeedRecord,
    load_measurement,
)
from spml.toolkit.loop.policies import INCONCLUSIVE
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)
MAX_TOP_UP_FACTOR = 4  # a noisy incumbent's runs grow to at most this many times `repeats`
NO_CHANGE = "no change: the code is HEAD's"  # a round whose code is HEAD's is not measured


def find_incumbent(session: LoopSession,
                   runs: list[Measurement] | None = None) -> Measurement | None:
    """HEAD's measured state (see the module docstring), or None.

    Args:
        session: The loop.
        runs: `measured_runs` of the experiment, when the caller has read them already.
    """
    ledger = read_ledger(session.experiment)
    if ledger is None:
        return None
    head_tree = session.workspace.head_tree()
    found_any = False
    for round_no in reversed(ledger.kept_rounds()):
        measurement = load_measurement(session.experiment.round_dir(round_no))
        found_any = found_any or measurement is not None
        if measurement is not None and measurement.tree == head_tree and not measurement.cause:
            if runs is None:
                runs = measured_runs(session.experiment, ledger.rounds_done + 1)
            return pool_tree(runs, head_tree) or measurement
    # HEAD holds code nobody measured: no incumbent. Only when every measurement is gone (a
    # lost `.spml/`) does Auto Research fall back to the ledger's exact best value.
    return None if found_any else _from_ledger(session, ledger.best)


def measured_runs(experiment: Experiment, before: int) -> list[Measurement]:
    """Every usable measurement of this generation, oldest round first: the candidates and
    incumbent top-ups of the rounds before ``before``, and round ``before``'s top-ups. Only
    rounds the supervisor has reached are read (and protected from the researcher: see
    `begin.supervisor_files`); a measurement that broke the rules is not evidence."""
    found = []
    for round_no in range(before + 1):
        round_dir = experiment.round_dir(round_no)
        names = (INCUMBENT_FILENAME, MEASUREMENT_FILENAME) if round_no < before else \
            (INCUMBENT_FILENAME,)
        for name in names:
            measurement = load_measurement(round_dir, name)
            if measurement is not None and not measurement.violations and \
                    measurement.source == "measured":
                found.append(measurement)
    return found


def pool_tree(runs: list[Measurement], tree: str) -> Measurement | None:
    """All runs of ``tree`` as one measurement (named after the newest round), or None."""
    of_tree = [m for m in runs if m.tree == tree and m.seeds]
    if not of_tree:
        return None
    seeds = tuple(seed for m in of_tree for seed in m.seeds)
    return of_tree[-1].model_copy(update={"seeds": seeds, "cause": ""})


def experiment_noise(runs: list[Measurement], metric: str,
                     extra: Measurement | None = None) -> Noise:
    """The run-to-run noise of ``metric``, pooled over every version measured (plus
    ``extra``, a candidate still being measured)."""
    groups: dict[str | None, list[float]] = {}
    for measurement in [*runs, *([extra] if extra is not None else [])]:
        groups.setdefault(measurement.tree, []).extend(measurement.samples("metrics", metric))
    return Noise.pooled(groups.values())


def _from_ledger(session: LoopSession, best: object) -> Measurement | None:
    """Last resort when `.spml/` was lost: the ledger's exact value of the best round."""
    metric = session.protocol.metric
    value = getattr(best, "result", None)
    if value is None or metric is None or session.kind.name != "autoresearch":
        return None
    log.warning("no measurement file matches HEAD; judging against the ledger's best %r", value)
    return Measurement(round=getattr(best, "round", 0), primary=metric, source="ledger",
                       seeds=(SeedRecord(seed=0, metrics={metric: value}),))


def top_up_seeds(session: LoopSession, incumbent: Measurement | None,
                 runs: list[Measurement]) -> tuple[int, ...]:
    """The seeds HEAD's code still needs before a candidate is compared with it (new seeds
    only). Auto Research's default measures the incumbent ``acceptance.incumbent_runs`` times,
    and once more after every comparison with it that ended inconclusive (a noisy incumbent
    blurs every comparison; its pooled runs sharpen it), up to `MAX_TOP_UP_FACTOR` times that.
    None once a run of that code failed (retrying each round would cost a run for nothing)."""
    acceptance = getattr(session.protocol, "acceptance", None)
    if session.kind.name != "autoresearch" or acceptance is None or acceptance.greedy or \
            incumbent is None or incumbent.source != "measured":
        return ()
    if any(m.cause for m in runs if m.tree == incumbent.tree):
        return ()
    wanted = min(acceptance.incumbent_runs + _inconclusive_since_kept(session),
                 MAX_TOP_UP_FACTOR * acceptance.incumbent_runs)
    used = {seed.seed for seed in incumbent.seeds}
    missing = max(wanted - len(incumbent.seeds), 0)
    free = (seed for seed in range(len(used) + missing + 1) if seed not in used)
    return tuple(next(free) for _ in range(missing))


def _inconclusive_since_kept(session: LoopSession) -> int:
    """Rounds judged against the current best that could not tell (its Insight says so)."""
    ledger = read_ledger(session.experiment)
    best = ledger.best if ledger is not None else None
    if ledger is None or best is None:
        return 0
    return sum(1 for row in ledger.rows if row.round > best.round and not row.is_override
               and row.insight.startswith(INCONCLUSIVE))
