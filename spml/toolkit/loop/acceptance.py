"""Auto Research's acceptance, where it needs the experiment's files: the noise measured so far
(`noise_for`), the significance test of a candidate's runs against the incumbent's
(`judge_runs`, also used while measuring to stop early), the `best:` line's pooled estimate
(`incumbent_estimate`) and the check of a baseline given in the protocol (`baseline_note`). The
policies themselves are in `spml.toolkit.loop.policies`.
"""

from __future__ import annotations

import math
import statistics

from scipy.stats import t as student_t

from spml.protocols.experiences import Estimate, Experiences
from spml.toolkit.loop.evidence import Comparison, Noise, compare, estimate, spread
from spml.toolkit.loop.incumbent import experiment_noise, measured_runs, pool_tree
from spml.toolkit.loop.measurement import Measurement
from spml.toolkit.loop.policies import acceptance_rule
from spml.toolkit.loop.session import LoopSession

# A baseline written in the protocol is rounded by its author: four significant digits agree.
BASELINE_ROUNDING = 5e-4


def noise_for(session: LoopSession, candidate: Measurement,
              runs: list[Measurement] | None = None) -> Noise:
    """The experiment's noise with ``candidate`` (all runs of its code) counted once."""
    runs = measured_runs(session.experiment, candidate.round) if runs is None else runs
    others = [m for m in runs if m.tree != candidate.tree]
    return experiment_noise(others, session.protocol.metric, extra=candidate)


def judged_candidate(session: LoopSession, measurement: Measurement,
                     runs: list[Measurement] | None = None) -> Measurement:
    """What the default acceptance judges: every run of the candidate's code, this round's and
    earlier rounds' (see `measure`), as one measurement."""
    if session.protocol.acceptance.greedy:
        return measurement
    runs = measured_runs(session.experiment, measurement.round) if runs is None else runs
    return pool_tree([*runs, measurement], measurement.tree) or measurement


def judge_runs(session: LoopSession, candidate: Measurement, incumbent: Measurement,
               runs: list[Measurement] | None = None) -> Comparison:
    """The significance test of ``candidate`` (its runs so far) against ``incumbent``."""
    return compare(candidate.values, incumbent.values, noise_for(session, candidate, runs),
                   acceptance_rule(session.protocol))


def baseline_note(session: LoopSession, measurement: Measurement) -> str:
    """A note when the protocol's `baseline` disagrees with round 0's runs beyond noise (and
    rounding): the measurement decides, the person learns their number was off."""
    given = getattr(session.protocol, "baseline", None)
    values = measurement.values
    if given is None or not values:
        return ""
    mean, sd = statistics.fmean(values), spread(values) or 0.0
    critical = float(student_t.ppf(0.975, len(values) - 1)) if len(values) > 1 else 0.0
    tolerance = critical * sd / math.sqrt(len(values)) + BASELINE_ROUNDING * abs(mean)
    if abs(mean - given) <= tolerance:
        return ""
    spread_words = "" if len(values) > 1 else " (one run: no spread measured)"
    return (f"the protocol's baseline {given:g} differs from the measured {estimate(values)} "
            f"beyond noise{spread_words}; rounds are judged against the measurement")


def incumbent_estimate(session: LoopSession, ledger: Experiences) -> Estimate | None:
    """The `best:` line of the default acceptance: every run of the kept code pooled (None in
    greedy mode, for ml-iteration, or while nothing is kept)."""
    acceptance = getattr(session.protocol, "acceptance", None)
    best = ledger.best
    if session.kind.name != "autoresearch" or acceptance is None or acceptance.greedy or \
            best is None:
        return None
    # HEAD's runs, pooled (the ledger on disk does not hold the row being recorded yet).
    runs = measured_runs(session.experiment, ledger.rounds_done + 1)
    incumbent = pool_tree(runs, session.workspace.head_tree())
    if incumbent is None or not incumbent.values:
        return None
    values = incumbent.values
    return Estimate(mean=statistics.fmean(values), sd=spread(values), n=len(values),
                    round=best.round)


def identical_runs_note(session: LoopSession, measurement: Measurement) -> str:
    """A note when the baseline's runs on different seeds are identical: the default acceptance
    then has no noise to measure, and any gain will count."""
    values = measurement.values
    if session.protocol.acceptance.greedy or len(values) < 2 or len(set(values)) > 1:
        return ""
    return (f"the baseline's {len(values)} runs (seeds 0..{len(values) - 1}) gave the same "
            "value: the training ignores SPML_SEED or is fully deterministic, so no noise can be "
            "measured and any gain will count; seed the training with SPML_SEED")
