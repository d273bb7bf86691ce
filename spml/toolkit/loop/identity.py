"""An experiment's identity: the name its branch, worktree and refs use; its ledger generation.

Names. A directory whose path (relative to the repository root) is already a clean slug
(`exp`, `mlp-2`) is named by that path; any other path (`exp a`, `runs/mlp`, `Exp_1`) gets its
slug plus 8 hex digits of the path's SHA-1 (`exp-a-3f2a1b0c`), so `exp a` and `exp-a` never
share a branch. When a loop first opens, its name is claimed in `<git dir>/spml/names/<name>`
(the file holds the path) and recorded in `.spml/<kind>/identity.json`; a name another
directory claimed, or whose branch an unclaimed older experiment left, is passed over for a
longer hash. Experiments opened before identities were recorded keep the name they had (the
slug alone), so their branch and worktree stay theirs.

Generations. Every new `experiences.md` starts a generation with its own id
(`20261205-025112-a3f0`): round commits carry `Spml-Generation: <id>`, rejected attempts live
under `refs/spml/attempts/<kind>/<name>/<id>/<round>`, and the previous generation's round
folders are moved to `.spml/<kind>/generations/<id>/` (see `spml.toolkit.loop.generation`). A
restarted ledger therefore never overwrites, nor reads, what an earlier one recorded.
Generation "" is a ledger begun before generations existed: its commits carry no generation
trailer, its attempts are `refs/spml/attempts/<kind>/<name>/<round>` (older ones
`refs/spml/attempts/<round>`), and every round commit on the branch counts as its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from spml.errors import GitStateError
from spml.toolkit.files import write_atomic

IDENTITY_FILENAME = "identity.json"
_CLEAN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_RECORDED = re.compile(r"[a-z0-9][a-z0-9._-]*")  # also the names of older experiments
_MAX_CLEAN = 64  # longer paths are shortened (a ref component is a file name)


@dataclass(frozen=True)
class Identity:
    """What `identity.json` records: ``path`` is the directory it was recorded for."""

    name: str
    generation: str
    path: str


def read_identity(state_dir: Path, exp_rel: str) -> Identity | None:
    """The recorded identity, unless it is missing, unreadable or another directory's.

    A `.spml/` copied or moved along with an experiment directory names the old path: the
    copy must not take over the original's branch, so it gets an identity of its own.
    """
    try:
        raw = json.loads((state_dir / IDENTITY_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("path") != exp_rel:
        return None
    name, generation = raw.get("name"), raw.get("generation", "")
    if not isinstance(name, str) or not _RECORDED.fullmatch(name) or not isinstance(
            generation, str):
        return None
    return Identity(name, generation, exp_rel)


def write_identity(state_dir: Path, identity: Identity) -> None:
    """Atomically record ``identity``."""
    write_atomic(state_dir / IDENTITY_FILENAME, json.dumps(asdict(identity), indent=2))


def fresh_name(exp_rel: str, repo_name: str) -> str:
    """The name of an experiment that has none yet (see the module docstring)."""
    raw = repo_name if exp_rel == "." else exp_rel
    if _CLEAN.fullmatch(raw) and len(raw) <= _MAX_CLEAN:
        return raw
    slug = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")[:_MAX_CLEAN - 9].strip("-")
    return f"{slug or 'experiment'}-{_digest(exp_rel)[:8]}"


def legacy_name(exp_rel: str, repo_name: str) -> str:
    """The name spml gave before identities were recorded (two paths could share it)."""
    raw = repo_name if exp_rel == "." else exp_rel
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.").lower() or "experiment"


def claim_name(git_dir: Path, wanted: str, exp_rel: str,
               taken: Callable[[str], bool]) -> str:
    """Claim ``wanted`` for ``exp_rel`` in this repository, or the first free longer name.

    Args:
        git_dir: The repository's common git directory (claims are shared by its worktrees).
        wanted: The preferred name.
        exp_rel: The experiment directory, relative to the repository root.
        taken: Whether an unclaimed name is in use anyway (an older experiment's branch).

    Raises:
        GitStateError: every candidate is claimed by another directory.
    """
    claims = git_dir / "spml" / "names"
    claims.mkdir(parents=True, exist_ok=True)
    for candidate in _candidates(wanted, exp_rel):
        path = claims / candidate
        if path.is_file():
            if path.read_text(encoding="utf-8").strip() == exp_rel:
                return candidate
            continue
        if not taken(candidate) and _create(path, exp_rel):
            return candidate
    raise GitStateError(f"no free experiment name for {exp_rel!r} in {claims}; delete the "
                        "claims of experiment directories that no longer exist.")


def _candidates(wanted: str, exp_rel: str) -> Iterator[str]:
    yield wanted
    digest = _digest(exp_rel)
    stem = wanted[:_MAX_CLEAN - 9].strip("-")
    for width in (8, 12, 16, 40):
        yield f"{stem}-{digest[:width]}"


def _create(path: Path, exp_rel: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another supervisor claimed it this instant
        return path.read_text(encoding="utf-8").strip() == exp_rel
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(exp_rel + "\n")
    return True


def new_generation() -> str:
    """A generation id: UTC time to the second plus 4 random hex digits (never a round number)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
