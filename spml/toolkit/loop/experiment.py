"""Where an experiment's files live, and the lock that keeps one supervisor per experiment.

An experiment directory holds `autoresearch-protocol.md` inside a git repository. Beside the
protocol the supervisor writes `experiences.md` (the ledger) and `.spml/` (its private state:
journal, notes, logs, the Optuna study). The loop's worktree lives inside the repository's git
directory (`.git/spml/worktrees/<name>`), so no tool that walks the user's checkout (pytest,
ruff, an IDE) ever sees a second copy of the code, and no rollback can reach the ledger.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import git

from spml.errors import GitStateError, SpmlError
from spml.toolkit.loop.kind import KINDS

STATE_DIRNAME = ".spml"
LEDGER_FILENAME = "experiences.md"
# The loop kind (stage) each protocol file starts; its state lives in `.spml/<stage>/`.
STAGE_OF_PROTOCOL = {k.protocol_filename: k.name for k in KINDS.values()}


class LoopAlreadyRunning(SpmlError, RuntimeError):
    """Another supervisor holds this experiment's lock."""


@dataclass(frozen=True)
class Experiment:
    """Resolved paths of one experiment (all absolute)."""

    exp_dir: Path
    repo_root: Path
    git_dir: Path
    protocol_filename: str

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
        return cls(exp_dir=path, repo_root=root, git_dir=common,
                   protocol_filename=protocol_filename)

    @property
    def exp_rel(self) -> str:
        """The experiment directory relative to the repository root, POSIX style."""
        return self.exp_dir.relative_to(self.repo_root).as_posix()

    @property
    def name(self) -> str:
        """A slug naming the experiment (branch and worktree names use it)."""
        raw = self.exp_rel if self.exp_rel != "." else self.repo_root.name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.").lower() or "experiment"

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


class ExperimentLock:
    """An exclusive advisory lock on the experiment; the kernel releases it if we are killed."""

    def __init__(self, experiment: Experiment) -> None:
        self._path = experiment.state_root / "supervisor.lock"
        self._fd: int | None = None

    def __enter__(self) -> ExperimentLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise LoopAlreadyRunning(
                f"another supervisor is already running this experiment ({holder or 'unknown'})."
                " Wait for it, or stop it with `spml autoresearch stop`."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def hold_experiment(experiment_dir: str | Path, protocol_filename: str = "") -> ExperimentLock:
    """The lock of the experiment in ``experiment_dir`` (use as a context manager)."""
    from spml.protocols.autoresearch import PROTOCOL_FILENAME

    name = protocol_filename or PROTOCOL_FILENAME
    return ExperimentLock(Experiment.locate(experiment_dir, name))
