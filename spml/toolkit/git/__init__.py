"""The supervisor's git layer. Only the supervisor writes to git; researchers edit files.

- `workspace`: `Workspace` (one linked worktree on a dedicated branch: snapshot, changes,
  commit, archive an attempt, roll back), `GitSnapshot`, `FileChange`, `ensure_excluded`,
  `uncommitted_files` (what the person's checkout has not committed).
- `runner`: `GitRunner`, the hardened `git` subprocess (no hooks, no user config surprises).
- `setup`: creating and repairing the worktree and branch.
- `trees`: tree objects of the index and the worktree (scratch index, blob ids).
- `admin`: digests and restores of `.git` admin files (hooks, config) a researcher could touch.
- `restore`: resetting the worktree and refs back to a snapshot.
"""

from spml.toolkit.git.workspace import (
    FileChange,
    GitSnapshot,
    Workspace,
    ensure_excluded,
    uncommitted_files,
)

__all__ = ["FileChange", "GitSnapshot", "Workspace", "ensure_excluded", "uncommitted_files"]
