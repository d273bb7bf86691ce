"""A loop session: the accepted protocol, the worktree and the ledger, rebuilt from disk.

Every step of a loop (each a Prefect task in `spml.flows`) calls `LoopSession.load`, so steps
share nothing in memory and can run in any process: a killed supervisor resumes from disk.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.autoresearch import (
    PROTOCOL_FILENAME,
    AutoresearchProtocol,
    load_protocol,
    locked_changes,
    read_protocol_body,
)
from spml.toolkit.files import write_atomic
from spml.toolkit.git.workspace import Workspace
from spml.toolkit.globs import compile_globs
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_json
from spml.toolkit.loop.researchers import Researcher, make_researcher

log = logging.getLogger(__name__)
STAGE = "autoresearch"


@dataclass(frozen=True)
class LoopSession:
    """What every step of the loop needs."""

    experiment: Experiment
    protocol: AutoresearchProtocol
    workspace: Workspace
    max_rounds_override: int | None = None

    @classmethod
    def load(cls, experiment_dir: str | Path) -> LoopSession:
        """Rebuild the session of a loop that was opened before (see `open_session`)."""
        experiment = Experiment.locate(experiment_dir, PROTOCOL_FILENAME)
        state = read_json(_session_path(experiment), None)
        if state is None:
            raise ProtocolError(f"no loop was opened in {experiment.exp_dir}; run "
                                "`spml autoresearch run` first.")
        protocol = AutoresearchProtocol.model_validate(state["accepted_protocol"])
        workspace = Workspace.open_or_create(experiment.repo_root,
                                             experiment.worktree_dir(STAGE),
                                             experiment.branch(STAGE))
        return cls(experiment, protocol, workspace, state.get("max_rounds_override"))

    @property
    def max_rounds(self) -> int:
        """Rounds this run may reach: the CLI/deployment override, else the protocol's."""
        if self.max_rounds_override is not None:
            return self.max_rounds_override
        return self.protocol.max_rounds

    @property
    def workdir(self) -> Path:
        """The experiment directory inside the worktree (where commands run)."""
        return self.workspace.path / self.experiment.exp_rel

    def prose(self) -> str:
        """The protocol's prose body, read fresh (edits apply at the next round)."""
        return read_protocol_body(self.experiment.protocol_path)

    def researcher(self) -> Researcher:
        """The protocol's researcher, bound to this experiment's state directory."""
        return make_researcher(self.protocol.researcher, state_dir=self.experiment.state_dir,
                               direction=self.protocol.eval.direction, workdir=self.workdir)

    def in_experiment(self, repo_path: str) -> str | None:
        """``repo_path`` relative to the experiment dir, or None if outside it."""
        rel = self.experiment.exp_rel
        if rel == ".":
            return repo_path
        prefix = rel + "/"
        return repo_path[len(prefix):] if repo_path.startswith(prefix) else None

    def fixed_paths(self, commit: str) -> dict[str, str]:
        """Repo path -> blob id of every fixed file in ``commit``."""
        is_fixed = compile_globs(self.protocol.fixed.files)

        def pred(path: str) -> bool:
            inner = self.in_experiment(path)
            return inner is not None and is_fixed(inner)

        return self.workspace.tree_blob_ids(commit, pred)


def preflight(session: LoopSession) -> None:
    """Check the protocol against the committed files before any round runs."""
    p = session.protocol
    head = session.workspace.head()
    committed = [session.in_experiment(path) for path in session.workspace.tree_blob_ids(
        head, lambda path: session.in_experiment(path) is not None)]
    files = [path for path in committed if path is not None]
    for glob in p.fixed.files:
        if not any(compile_globs([glob])(f) for f in files):
            raise ProtocolError(f"fixed.files pattern {glob!r} must match a committed file, "
                                "matches none. Commit the file or fix the pattern.")
    is_variable, is_fixed = compile_globs(p.variable.files), compile_globs(p.fixed.files)
    overlap = [f for f in files if is_variable(f) and is_fixed(f)]
    if overlap:
        raise ProtocolError(f"{overlap[0]!r} matches both fixed.files and variable.files; a "
                            "file is either fixed or variable.")
    params_file = getattr(p.researcher, "params_file", None)
    if params_file is not None and not is_variable(params_file):
        raise ProtocolError(f"researcher.params_file must be a variable file, got "
                            f"{params_file!r}. Add it to variable.files.")


def _session_path(experiment: Experiment) -> Path:
    return experiment.state_dir / "session.json"


def save_session(experiment: Experiment, protocol: AutoresearchProtocol,
                 max_rounds_override: int | None) -> None:
    """Record the accepted protocol and this run's overrides."""
    state: dict[str, Any] = {"accepted_protocol": protocol.model_dump(mode="json"),
                             "max_rounds_override": max_rounds_override}
    write_atomic(_session_path(experiment), json.dumps(state, indent=2, sort_keys=True))


def accepted_protocol(experiment: Experiment) -> AutoresearchProtocol | None:
    """The protocol the loop last accepted, if it ever ran."""
    state = read_json(_session_path(experiment), None)
    return None if state is None else AutoresearchProtocol.model_validate(
        state["accepted_protocol"])


def reload_protocol(session: LoopSession) -> tuple[LoopSession, str]:
    """Apply mid-run edits of the protocol file; refuse edits of locked fields.

    Returns:
        The session to use for the next round, and a note for the ledger ("" if nothing to say).
    """
    try:
        fresh = load_protocol(session.experiment.protocol_path)
    except ProtocolError as exc:
        first = str(exc).splitlines()[-1].strip()
        log.warning("protocol edit ignored, the file is invalid: %s", exc)
        return session, f"protocol edit ignored (invalid: {first})"
    if fresh == session.protocol:
        return session, ""
    locked = locked_changes(session.protocol, fresh)
    if locked:
        message = (f"protocol edit refused: {', '.join(locked)} cannot change mid-run "
                   "(restore it, or stop and start a new experiment)")
        log.warning(message)
        return session, message
    candidate = LoopSession(session.experiment, fresh, session.workspace,
                            session.max_rounds_override)
    try:
        preflight(candidate)
    except ProtocolError as exc:
        log.warning("protocol edit refused: %s", exc)
        return session, f"protocol edit refused: {exc}"
    save_session(session.experiment, fresh, session.max_rounds_override)
    changed = [k for k in type(fresh).model_fields if getattr(fresh, k) != getattr(
        session.protocol, k)]
    log.info("protocol edit applied: %s", ", ".join(changed))
    return candidate, f"protocol edit applied: {', '.join(changed)}"

