"""Where an experiment's files live, and the lock that keeps one supervisor per experiment.

An experiment directory holds `autoresearch-protocol.md` inside a git repository. Beside the
protocol the supervisor writes `experiences.md` (the ledger) and `.spml/` (its private state:
journal, notes, logs, the Optuna study). The loop's worktree lives inside the repository's git
directory (`.git/spml/worktrees/<name>`), so no tool that walks the user's checkout (pytest,
ruff, an IDE) ever sees a second copy of the code, and no rollback can reach the ledger.
An experiment's name and ledger generation come from `spml.toolkit.loop.identity`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import git

from spml.errors import GitStateError, SpmlError
from spml.toolkit.loop.identity import (
    Identity,
    claim_name,
    fresh_name,
    legacy_name,
    read_identity,
    write_identity,
)
from spml.toolkit.loop.kind import KINDS
from spml.toolkit.process.lock import SupervisorLock, is_held

log = logging.getLogger(__name__)
STATE_DIRNAME = ".spml"
LEDGER_FILENAME = "experiences.md"
PLOT_FILENAME = "experiences.png"  # the ledger drawn (`spml.toolkit.loop.plot`)
# The loop kind (stage) each protocol file starts; its state lives in `.spml/<stage>/`.
STAGE_OF_PROTOCOL = {k.protocol_filename: k.name for k in KINDS.values()}
ATTEMPTS_REF_PREFIX = "refs/spml/attempts/"
LOCK_FILENAME = "supervisor.lock"


class LoopAlreadyRunning(SpmlError, RuntimeError):
    """Another supervisor holds this experiment's lock."""


@dataclass(frozen=True)
class Experiment:
    """Resolved paths of one experiment (all absolute), its name and ledger generation."""

    exp_dir: Path
    repo_root: Path
    git_dir: Path
    protocol_filename: str
    name: str = "experiment"  # branch, worktree and refs (see `identity`)
    generation: str = ""      # the ledger's generation ("" before generations existed)

    @property
    def stage(self) -> str:
        """The loop kind this experiment runs (`autoresearch`, `ml-iteration`)."""
        return STAGE_OF_PROTOCOL.get(self.protocol_filename, "autoresearch")

    @classmethod
    def locate(cls, exp_dir: Path | str, protocol_filename: str) -> Experiment:
        """Resolve ``exp_dir`` and the git repository that contains it.

        Raises:
            GitStateError: the directory is not inside a git repository with a commit.
        """
        path = Path(exp_dir).expanduser().resolve()
        if not path.is_dir():
            raise GitStateError(f"experiment directory must exist, got {str(path)!r}.")
        try:
            repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitStateError(
                f"experiment directory must be inside a git repository, got {str(path)!r}. "
                "Run `git init` and commit the experiment's files first."
            ) from None
        if not repo.head.is_valid():
            raise GitStateError(f"repository {repo.working_dir!r} must have at least one "
                                "commit. Commit the experiment's files first.")
        root = Path(repo.working_dir).resolve()
        common = Path(repo.common_dir).resolve()
        bare = cls(exp_dir=path, repo_root=root, git_dir=common,
                   protocol_filename=protocol_filename)
        return bare._with_identity()

    def _with_identity(self) -> Experiment:
        recorded = read_identity(self.state_dir, self.exp_rel)
        if recorded is not None:
            return replace(self, name=recorded.name, generation=recorded.generation)
        naming = legacy_name if self.opened_before() else fresh_name
        return replace(self, name=naming(self.exp_rel, self.repo_root.name), generation="")

    def opened_before(self) -> bool:
        """Whether a loop of this kind was opened here (a session is on disk)."""
        flat = self.stage == "autoresearch" and (self.state_root / "session.json").is_file()
        return flat or (self.state_dir / "session.json").is_file()

    def claim(self) -> Experiment:
        """Record this experiment's name (claimed in the repository) and generation.

        A directory without a recorded identity claims its name now; one that never ran may
        not take a name whose branch an older, unclaimed experiment left behind.
        """
        recorded = read_identity(self.state_dir, self.exp_rel) is not None
        owns_history = recorded or self.opened_before()

        def taken(candidate: str) -> bool:
            return not owns_history and self._branch_exists(candidate)

        name = claim_name(self.git_dir, self.name, self.exp_rel, taken)
        if name != self.name and owns_history:
            log.warning("branch %s belongs to another experiment directory (an older spml gave "
                        "both one name): this one goes on as %s", self.branch(self.stage),
                        replace(self, name=name).branch(self.stage))
        return self.with_identity(name, self.generation)

    def with_identity(self, name: str, generation: str) -> Experiment:
        """Record ``name`` and ``generation`` on disk; the experiment that has them."""
        write_identity(self.state_dir, Identity(name, generation, self.exp_rel))
        return replace(self, name=name, generation=generation)

    def _branch_exists(self, name: str) -> bool:
        repo = git.Repo(self.repo_root)
        try:
            return bool(repo.git.for_each_ref(f"refs/heads/spml/{self.stage}/{name}"))
        finally:
            repo.close()

    @property
    def exp_rel(self) -> str:
        """The experiment directory relative to the repository root, POSIX style."""
        return self.exp_dir.relative_to(self.repo_root).as_posix()

    @property
    def protocol_path(self) -> Path:
        """The protocol file."""
        return self.exp_dir / self.protocol_filename

    @property
    def ledger_path(self) -> Path:
        """`experiences.md`, beside the protocol and outside the worktree."""
        return self.exp_dir / LEDGER_FILENAME

    @property
    def state_root(self) -> Path:
        """`.spml/`: every loop kind's state, and the supervisor lock."""
        return self.exp_dir / STATE_DIRNAME

    @property
    def state_dir(self) -> Path:
        """The supervisor's private state directory of this loop kind (`.spml/<stage>/`)."""
        return self.state_root / self.stage

    def round_dir(self, round_no: int) -> Path:
        """Per-round files: brief, strategy, logs."""
        return self.state_dir / "rounds" / f"{round_no:04d}"

    def worktree_dir(self, stage: str) -> Path:
        """The dedicated worktree of a loop of kind ``stage`` (e.g. ``autoresearch``)."""
        return self.git_dir / "spml" / "worktrees" / f"{stage}-{self.name}"

    def branch(self, stage: str) -> str:
        """The branch the loop commits to."""
        return f"spml/{stage}/{self.name}"

    def candidate_worktree_dir(self, stage: str, slot: int) -> Path:
        """The worktree of candidate ``slot`` of a batch (`spml.toolkit.loop.batch`)."""
        return self.git_dir / "spml" / "candidates" / f"{stage}-{self.name}" / str(slot)

    def candidate_branch(self, stage: str, slot: int) -> str:
        """The branch candidate ``slot``'s worktree stays on (never the loop's own branch)."""
        return f"spml-candidates/{stage}/{self.name}/{slot}"

    def attempt_ref(self, round_no: int) -> str:
        """Where round ``round_no``'s rejected attempt is archived (this generation's)."""
        parts = (self.stage, self.name, self.generation, str(round_no))
        return ATTEMPTS_REF_PREFIX + "/".join(p for p in parts if p)

    def legacy_attempt_ref(self, round_no: int) -> str | None:
        """Where spml archived attempts before they were kept per experiment (generation ""
        only: a later generation never made one)."""
        return None if self.generation else f"{ATTEMPTS_REF_PREFIX}{round_no}"


class ExperimentLock(SupervisorLock):
    """An exclusive advisory lock on the experiment; the kernel releases it if we are killed."""

    def __init__(self, experiment: Experiment) -> None:
        group = KINDS[experiment.stage].cli_group
        super().__init__(
            experiment.state_root / LOCK_FILENAME, LoopAlreadyRunning,
            "another supervisor is already running this experiment ({holder})."
            f" Wait for it, or stop it with `spml {group} stop {experiment.exp_dir}`.")


def is_running(experiment: Experiment) -> bool:
    """Whether a supervisor holds this experiment's lock now (the kernel drops the lock of a
    killed one, so a journal left without a lock holder is an interrupted round)."""
    return is_held(experiment.state_root / LOCK_FILENAME)


def hold_experiment(experiment_dir: str | Path, protocol_filename: str = "") -> ExperimentLock:
    """The lock of the experiment in ``experiment_dir`` (use as a context manager)."""
    from spml.protocols.autoresearch import PROTOCOL_FILENAME

    name = protocol_filename or PROTOCOL_FILENAME
    return ExperimentLock(Experiment.locate(experiment_dir, name))
