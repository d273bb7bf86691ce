"""A loop session: the accepted protocol, the worktree and the ledger, rebuilt from disk.

Every step of a loop (each a Prefect task in `spml.flows`) calls `LoopSession.load`, so steps
share nothing in memory and can run in any process: a killed supervisor resumes from disk.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spml.errors import GitStateError, ProtocolError
from spml.toolkit.files import write_atomic
from spml.toolkit.git.workspace import Workspace, uncommitted_files
from spml.toolkit.globs import compile_globs
from spml.toolkit.loop.experiment import (
    LEDGER_FILENAME,
    PLOT_FILENAME,
    STATE_DIRNAME,
    Experiment,
)
from spml.toolkit.loop.kind import AUTORESEARCH, LoopKind
from spml.toolkit.loop.ledger import read_json
from spml.toolkit.loop.researchers import Researcher, make_researcher
from spml.toolkit.loop.sandboxing import check_holdout, check_sandbox

log = logging.getLogger(__name__)
STAGE = AUTORESEARCH.name  # kept for callers that name Auto Research's branch


@dataclass(frozen=True)
class LoopSession:
    """What every step of the loop needs."""

    experiment: Experiment
    protocol: Any  # the kind's protocol model (AutoresearchProtocol, IterationProtocol)
    workspace: Workspace
    max_rounds_override: int | None = None
    kind: LoopKind = AUTORESEARCH
    reads_holdout: bool = False  # its evaluation is the holdout's (`spml.toolkit.loop.holdout`)
    # A candidate of a batch (`spml.toolkit.loop.batch`): its slot, which names its pid files,
    # and the GPUs its commands see (None: whatever the supervisor sees).
    slot: int | None = None
    gpus: tuple[str, ...] | None = None
    # What its commands may not read besides the holdout: a candidate's siblings' worktrees
    # and round folders (it could otherwise copy a sibling's idea and take its credit).
    sealed_extra: tuple[Path, ...] = ()

    @classmethod
    def load(cls, experiment_dir: str | Path, kind: LoopKind = AUTORESEARCH) -> LoopSession:
        """Rebuild the session of a loop that was opened before (see `open_loop`)."""
        experiment = Experiment.locate(experiment_dir, kind.protocol_filename)
        state = read_json(_session_path(experiment), None)
        if state is None:
            raise ProtocolError(f"no loop was opened in {experiment.exp_dir}; run "
                                f"`spml {kind.cli_group} run` first.")
        protocol = kind.protocol_model.model_validate(state["accepted_protocol"])
        workspace = Workspace.open_or_create(experiment.repo_root,
                                             experiment.worktree_dir(kind.name),
                                             experiment.branch(kind.name))
        return cls(experiment, protocol, workspace, state.get("max_rounds_override"), kind)

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

    def pid_file(self, command: str) -> Path:
        """Where the running ``command`` (train, eval) keeps its process group id: one file
        per candidate slot, so that concurrent candidates never overwrite each other's."""
        suffix = "" if self.slot is None else f"-c{self.slot}"
        return self.experiment.state_dir / f"{command}{suffix}.pid"

    def prose(self) -> str:
        """The protocol's prose body, read fresh (edits apply at the next round). A protocol
        that a person is editing (half-saved, or deleted for a moment) costs no round: the
        last prose that could be read is used, and the problem logged."""
        kept = self.experiment.state_dir / "protocol-prose.md"
        try:
            body = self.kind.read_body(self.experiment.protocol_path)
        except (ProtocolError, OSError) as exc:
            log.warning("the protocol cannot be read (%s); this round's brief uses its last "
                        "readable prose", " ".join(str(exc).split()))
            return kept.read_text(encoding="utf-8") if kept.is_file() else ""
        if not kept.is_file() or kept.read_text(encoding="utf-8") != body:
            write_atomic(kept, body)
        return body

    @property
    def fixed_globs(self) -> list[str]:
        """What the researcher may never touch: fixed.files and the kind's implicit locks."""
        return [*self.protocol.fixed.files, *self.kind.implicit_fixed]

    def researcher(self) -> Researcher:
        """The protocol's researcher, bound to this experiment's state directory."""
        return make_researcher(self.protocol.researcher, state_dir=self.experiment.state_dir,
                               direction=self.protocol.direction or "maximize",
                               workdir=self.workdir)

    def in_experiment(self, repo_path: str) -> str | None:
        """``repo_path`` relative to the experiment dir, or None if outside it."""
        rel = self.experiment.exp_rel
        if rel == ".":
            return repo_path
        prefix = rel + "/"
        return repo_path[len(prefix):] if repo_path.startswith(prefix) else None

    def fixed_paths(self, commit: str) -> dict[str, str]:
        """Repo path -> blob id of every fixed file in ``commit``."""
        is_fixed = compile_globs(self.fixed_globs)

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
    warn_variable_imports(session)
    check_sandbox(session)
    check_holdout(session)
    if session.kind is not AUTORESEARCH:
        _check_params_file(p, compile_globs(session.fixed_globs))
        return
    is_variable, is_fixed = compile_globs(p.variable.files), compile_globs(p.fixed.files)
    overlap = [f for f in files if is_variable(f) and is_fixed(f)]
    if overlap:
        raise ProtocolError(f"{overlap[0]!r} matches both fixed.files and variable.files; a "
                            "file is either fixed or variable.")
    for glob in p.variable.files:
        _check_variable_glob(session, glob, files, is_fixed)
    params_file = getattr(p.researcher, "params_file", None)
    if params_file is not None and not is_variable(params_file):
        raise ProtocolError(f"researcher.params_file must be a variable file, got "
                            f"{params_file!r}. Add it to variable.files.")


def warn_variable_imports(session: LoopSession) -> list[str]:
    """Warn (and return them) when the fixed evaluation, or the holdout's, imports files the
    researcher may edit: that code runs inside it, where it could print or write any metric
    (and, in the holdout's, read the held-out data)."""
    from spml.toolkit.loop.evaluation import evaluation_imports  # it imports compliance

    holdout = getattr(session.protocol, "holdout", None)
    commands = [session.protocol.eval.command, *([holdout.command] if holdout else [])]
    imported = sorted({path for command in commands
                       for path in evaluation_imports(session.workdir, command)})
    is_fixed = compile_globs(session.fixed_globs)
    editable = compile_globs(list(session.protocol.editable_files))
    variable = [path for path in imported if editable(path) and not is_fixed(path)]
    if variable:
        log.warning("the fixed evaluation imports variable file(s) %s: the researcher's code "
                    "runs inside the evaluation and could forge its metric; move what the "
                    "evaluation needs into fixed files", ", ".join(variable))
    return variable


def _check_variable_glob(session: LoopSession, glob: str, files: list[str],
                         is_fixed: Any) -> None:
    """A variable glob must match a committed file or name a path the researcher can create;
    otherwise every round would fail compliance, blamed on the researcher."""
    if any(compile_globs([glob])(f) for f in files):
        return
    problem = _uncreatable(session, glob, files, is_fixed)
    if problem:
        raise ProtocolError(f"variable.files pattern {glob!r} matches no committed file, and "
                            f"{problem}. Fix the pattern, or commit the file it should match.")
    # Shown on the terminal: a typo here would otherwise only surface as rounds that change
    # nothing the loop can see.
    log.warning("variable.files pattern %r matches no committed file yet: the researcher may "
                "create one (if that is a typo, fix the pattern)", glob)


def _uncreatable(session: LoopSession, glob: str, files: list[str], is_fixed: Any) -> str:
    """Why no file the glob names could be created ("" when one could)."""
    path = example_path(glob)
    if path is None:
        return ""
    parents = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    if clash := next((parent for parent in parents if parent in files), None):
        return f"its folder {clash} is a committed file"
    if is_fixed(path):
        return f"what it names ({path}) lies inside fixed.files, which wins"
    rel = session.experiment.exp_rel
    if session.workspace.is_ignored(path if rel == "." else f"{rel}/{path}"):
        return f"git ignores what it names ({path}), so a created file would never be seen"
    return ""


def example_path(glob: str) -> str | None:
    """A path ``glob`` matches, wildcards filled in (None when no simple one is found)."""
    parts = [part for part in glob.strip("/").split("/") if part not in ("", ".", "**")]
    filled = [re.sub(r"\[!?[^\]]*\]|[*?]", "x", part) for part in parts]
    if glob.endswith("/") or glob.rstrip("/").endswith("**"):
        filled.append("x")
    path = "/".join(filled)
    return path if path and compile_globs([glob])(path) else None


def check_checkout(experiment: Experiment, protocol: Any, kind: LoopKind,
                   allow_dirty: bool = False) -> list[str]:
    """Refuse uncommitted changes, in the person's checkout, to files the loop runs.

    The loop runs committed code only: an uncommitted edit of a fixed or variable file would be
    silently left out of every round, the baseline first.

    Returns:
        The files ignored under ``allow_dirty`` (relative to the experiment directory).

    Raises:
        GitStateError: such changes exist and ``allow_dirty`` is False; names the files.
    """
    dirty = _dirty_loop_files(experiment, protocol, kind)
    if not dirty:
        return []
    shown = ", ".join(dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
    if not allow_dirty:
        raise GitStateError(
            f"uncommitted changes to files the loop runs: {shown}. The loop runs the committed "
            "code only, so every round (the baseline first) would measure without them. "
            "Commit them, or pass --allow-dirty to run without them.")
    log.warning("running without the uncommitted changes to %s (--allow-dirty): the loop runs "
                "the committed code only", shown)
    return dirty


def _dirty_loop_files(experiment: Experiment, protocol: Any, kind: LoopKind) -> list[str]:
    """Changed fixed and variable files, and changed committed files (code the loop runs
    although neither list names it); a new scratch file that no list names is not the loop's."""
    is_fixed = compile_globs([*protocol.fixed.files, *kind.implicit_fixed])
    is_variable = compile_globs(protocol.editable_files)
    # Not code the loop runs: the protocol is read from the checkout (an edit applies), the
    # ledger and the state are the loop's own.
    own = (experiment.protocol_filename, LEDGER_FILENAME, PLOT_FILENAME)
    prefix = "" if experiment.exp_rel == "." else experiment.exp_rel + "/"
    out = []
    for path, untracked in uncommitted_files(experiment.repo_root, experiment.exp_rel).items():
        inner = path[len(prefix):]
        if inner in own or inner.split("/", 1)[0] == STATE_DIRNAME:
            continue
        if is_fixed(inner):
            out.append(f"{inner} (fixed)")
        elif is_variable(inner):
            out.append(f"{inner} (variable)")
        elif not untracked:
            out.append(inner)
    return out


def _check_params_file(p: Any, is_fixed: Any) -> None:
    params_file = getattr(p.researcher, "params_file", None)
    if params_file is not None and is_fixed(params_file):
        raise ProtocolError(f"researcher.params_file {params_file!r} is a fixed file; the "
                            "researcher must be able to edit it. Remove it from fixed.files.")


def _session_path(experiment: Experiment) -> Path:
    return experiment.state_dir / "session.json"


def save_session(experiment: Experiment, protocol: Any,
                 max_rounds_override: int | None) -> None:
    """Record the accepted protocol and this run's overrides."""
    state: dict[str, Any] = {"accepted_protocol": protocol.model_dump(mode="json"),
                             "max_rounds_override": max_rounds_override}
    write_atomic(_session_path(experiment), json.dumps(state, indent=2, sort_keys=True))


def accepted_protocol(experiment: Experiment, kind: LoopKind = AUTORESEARCH) -> Any:
    """The protocol the loop last accepted, if it ever ran (None otherwise)."""
    state = read_json(_session_path(experiment), None)
    return None if state is None else kind.protocol_model.model_validate(
        state["accepted_protocol"])


def reload_protocol(session: LoopSession) -> tuple[LoopSession, str]:
    """Apply mid-run edits of the protocol file; refuse edits of locked fields.

    Returns:
        The session to use for the next round, and a note for the ledger ("" if nothing to say).
    """
    try:
        fresh = session.kind.load_protocol(session.experiment.protocol_path)
    except ProtocolError as exc:
        first = str(exc).splitlines()[-1].strip()
        log.warning("protocol edit ignored, the file is invalid: %s", exc)
        return session, f"protocol edit ignored (invalid: {first})"
    if fresh == session.protocol:
        return session, ""
    locked = session.kind.locked_changes(session.protocol, fresh)
    if locked:
        message = (f"protocol edit refused: {', '.join(locked)} cannot change mid-run "
                   "(restore it, or stop and start a new experiment)")
        log.warning(message)
        return session, message
    candidate = LoopSession(session.experiment, fresh, session.workspace,
                            session.max_rounds_override, session.kind)
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

