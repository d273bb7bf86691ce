"""What a verification compares: the loop's baseline commit and the commit it chose.

An experiment directory that ran a loop (Auto Research or ml-iteration) names both: round 0
measured the baseline commit (its git snapshot), the loop's branch HEAD is its best. The
metric, its direction and the minimum effect come from the loop's accepted protocol (Auto
Research's ``acceptance.min_delta``; ml-iteration has none, so 0), the review criteria from the
design doc when there is one (else the protocol's).

A watchdog-route experiment trained one version and compared nothing: there is no second arm
to re-measure, so it is refused with the command that judges runs someone already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git

from spml.errors import ProtocolError
from spml.protocols.design import find_design, load_design
from spml.protocols.experiences import Experiences
from spml.protocols.review_criteria import ReviewCriteria
from spml.toolkit.loop.confirm import baseline_commit
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import KINDS, LoopKind
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.session import LoopSession

Direction = Literal["maximize", "minimize"]
FINISHED = ("completed", "target_reached", "stopped")


@dataclass(frozen=True)
class Subject:
    """The two commits and how they are judged."""

    session: LoopSession
    ledger: Experiences
    baseline_commit: str
    chosen_commit: str
    metric: str
    direction: Direction
    min_effect: float
    criteria: ReviewCriteria | None
    design_path: Path | None

    @property
    def exp_dir(self) -> Path:
        """The experiment directory (the person's checkout, not the loop's worktree)."""
        return self.session.experiment.exp_dir

    @property
    def changed(self) -> bool:
        """Whether the loop kept any change (else its best is the baseline itself)."""
        return self.baseline_commit != self.chosen_commit


def loop_kind_in(exp_dir: Path) -> LoopKind | None:
    """The loop whose protocol lies in ``exp_dir`` (None: no loop protocol)."""
    return next((k for k in KINDS.values() if (exp_dir / k.protocol_filename).is_file()), None)


def find_subject(exp_dir: Path) -> Subject:
    """The verification subject of ``exp_dir``.

    Raises:
        ProtocolError: no finished loop to verify, or one without a numeric metric.
    """
    kind = loop_kind_in(exp_dir)
    if kind is None:
        raise ProtocolError(_no_loop_message(exp_dir))
    _require_loop_branch(exp_dir, kind)
    session = LoopSession.load(exp_dir, kind)
    ledger = read_ledger(session.experiment)
    if ledger is None or ledger.status not in FINISHED:
        state = "never started" if ledger is None else ledger.status
        raise ProtocolError(f"the {kind.title} loop in {exp_dir} is {state}: verification "
                            f"judges a finished loop; run `spml {kind.cli_group} run "
                            f"{exp_dir}` to the end (or `spml {kind.cli_group} stop`) first")
    metric, direction = session.protocol.metric, session.protocol.direction
    if metric is None or direction is None:
        raise ProtocolError(f"{kind.protocol_filename} names no numeric metric to re-measure: "
                            "add a metrics criterion with op >=, >, <= or <")
    base = baseline_commit(session)
    if base is None:
        raise ProtocolError(f"round 0's git snapshot is missing in {session.experiment.state_dir}"
                            ": the baseline commit is unknown")
    design_path = find_design(exp_dir)
    criteria = load_design(design_path).review_criteria if design_path else \
        getattr(session.protocol, "review_criteria", None)
    return Subject(session, ledger, base, session.workspace.head(), metric, direction,
                   _min_effect(session), criteria, design_path)


def _require_loop_branch(exp_dir: Path, kind: LoopKind) -> None:
    """The loop's branch holds its best; opening the session would recreate a deleted one at
    the checkout's HEAD, and the best would silently become the baseline."""
    experiment = Experiment.locate(exp_dir, kind.protocol_filename)
    if not experiment.opened_before():
        return  # loading says "no loop was opened"
    branch = experiment.branch(kind.name)
    try:
        git.Repo(experiment.repo_root).git.rev_parse("--verify", "--quiet",
                                                     f"refs/heads/{branch}")
    except git.GitCommandError:
        raise ProtocolError(f"the loop's branch {branch} is gone, so its best commit cannot be "
                            "re-measured; restore the branch (git reflog) or run the loop "
                            "again") from None


def _min_effect(session: LoopSession) -> float:
    return float(getattr(session.protocol.acceptance, "min_delta", 0.0))


def _no_loop_message(exp_dir: Path) -> str:
    if (exp_dir / "experiment-context.md").is_file():
        return (f"{exp_dir} ran under the watchdog: one training run, no second version to "
                "re-measure against. Judge its runs against a baseline's with `spml verify "
                "--baseline A.csv --treatment B.csv --metric M --direction maximize|minimize`")
    names = " or ".join(k.protocol_filename for k in KINDS.values())
    return (f"{exp_dir} holds no loop protocol ({names}): nothing to verify yet; "
            f"`spml experiment next {exp_dir}` says what comes first")
