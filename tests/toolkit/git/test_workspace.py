"""The supervisor's git layer, against real repositories in tmp_path."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git
import pytest

from spml.errors import GitStateError
from spml.toolkit.git.workspace import (
    FileChange,
    GitSnapshot,
    Workspace,
    ensure_excluded,
    uncommitted_files,
)

BRANCH = "spml/autoresearch/exp"
ATTEMPT = "refs/spml/attempts/autoresearch/exp/4"


def run_git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` as a user (or a researcher) would."""
    return git.Git(str(cwd)).execute(
        ["git", "-c", "user.name=Tester", "-c", "user.email=t@example.com", *args])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    exp = root / "exp"
    exp.mkdir(parents=True)
    run_git(root, "init", "-q", "-b", "main")
    (exp / "train.py").write_text("print('train')\n")
    (exp / "evaluate.py").write_text("print('eval')\n")
    (exp / "params.yaml").write_text("lr: 0.1\n")
    (exp / ".gitignore").write_text("outputs/\n")
    (root / "README.md").write_text("readme\n")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "init")
    return root


def worktree_dir(repo: Path) -> Path:
    return repo / ".git" / "spml" / "worktrees" / "autoresearch-exp"


@pytest.fixture
def ws(repo: Path) -> Workspace:
    return Workspace.open_or_create(repo, worktree_dir(repo), BRANCH)


def symbolic_head(ws: Workspace) -> str:
    return run_git(ws.path, "symbolic-ref", "HEAD")


# --- worktree creation and reuse ----------------------------------------------------------


def test_open_creates_worktree_on_branch(repo: Path, ws: Workspace) -> None:
    assert ws.path == worktree_dir(repo).resolve()
    assert (ws.path / "exp" / "train.py").read_text() == "print('train')\n"
    assert symbolic_head(ws) == f"refs/heads/{BRANCH}"
    assert ws.head() == run_git(repo, "rev-parse", "HEAD")
    assert run_git(repo, "status", "--porcelain") == ""  # the user's checkout is untouched


def test_open_reuses_existing_worktree_and_branch(repo: Path, ws: Workspace) -> None:
    (ws.path / "exp" / "params.yaml").write_text("lr: 0.2\n")
    sha = ws.commit_all("round 1")
    again = Workspace.open_or_create(repo, worktree_dir(repo), BRANCH)
    assert again.head() == sha
    assert len(run_git(repo, "worktree", "list").splitlines()) == 2


def test_open_after_worktree_dir_was_deleted(repo: Path, ws: Workspace) -> None:
    sha = ws.commit_all("round 1")
    shutil.rmtree(ws.path)
    again = Workspace.open_or_create(repo, worktree_dir(repo), BRANCH)
    assert again.head() == sha
    assert (again.path / "exp" / "train.py").is_file()


def test_open_reattaches_a_detached_worktree(repo: Path, ws: Workspace) -> None:
    run_git(ws.path, "checkout", "-q", "--detach")
    again = Workspace.open_or_create(repo, worktree_dir(repo), BRANCH)
    assert symbolic_head(again) == f"refs/heads/{BRANCH}"


def test_open_removes_stale_index_lock(repo: Path, ws: Workspace) -> None:
    lock = Path(run_git(ws.path, "rev-parse", "--absolute-git-dir")) / "index.lock"
    lock.write_text("")
    again = Workspace.open_or_create(repo, worktree_dir(repo), BRANCH)
    assert not lock.exists()
    again.commit_all("works again")


def test_open_refuses_non_repository_and_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(GitStateError, match="git init"):
        Workspace.open_or_create(tmp_path, tmp_path / "wt", BRANCH)
    run_git(tmp_path, "init", "-q")
    with pytest.raises(GitStateError, match=r"git init. / commit"):
        Workspace.open_or_create(tmp_path, tmp_path / "wt", BRANCH)


def test_open_refuses_a_foreign_non_empty_directory(repo: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(GitStateError, match="not a worktree"):
        Workspace.open_or_create(repo, taken, BRANCH)


# --- changes_since ------------------------------------------------------------------------


def test_changes_since_lists_every_kind(ws: Workspace) -> None:
    base = ws.head()
    exp = ws.path / "exp"
    (exp / "train.py").write_text("print('changed')\n")
    (exp / "evaluate.py").unlink()
    (exp / "params.yaml").rename(exp / "hparams.yaml")
    (exp / "new.py").write_text("x = 1\n")
    (exp / "pkg" / "sub").mkdir(parents=True)
    (exp / "pkg" / "sub" / "mod.py").write_text("y = 2\n")
    (exp / "staged.txt").write_text("s\n")
    run_git(ws.path, "add", "exp/staged.txt")
    (exp / "outputs").mkdir()
    (exp / "outputs" / "model.bin").write_text("ignored")
    os.symlink("train.py", exp / "link")
    run_git(ws.path, "add", "exp/link")
    (exp / "link").unlink()
    (exp / "link").write_text("now a file\n")
    assert ws.changes_since(base) == [
        FileChange("exp/evaluate.py", "deleted"),
        FileChange("exp/hparams.yaml", "renamed", "exp/params.yaml"),
        FileChange("exp/link", "added"),
        FileChange("exp/new.py", "untracked"),
        FileChange("exp/pkg/sub/mod.py", "untracked"),
        FileChange("exp/staged.txt", "added"),
        FileChange("exp/train.py", "modified"),
    ]


def test_changes_since_sees_typechange_and_hidden_edits(ws: Workspace) -> None:
    base = ws.head()
    exp = ws.path / "exp"
    (exp / "evaluate.py").unlink()
    os.symlink("train.py", exp / "evaluate.py")
    run_git(ws.path, "update-index", "--assume-unchanged", "exp/train.py")
    (exp / "train.py").write_text("print('sneaky')\n")
    assert ws.changes_since(base) == [FileChange("exp/evaluate.py", "typechange"),
                                      FileChange("exp/train.py", "modified")]


def test_changes_since_clean_worktree_is_empty(ws: Workspace) -> None:
    assert ws.changes_since(ws.head()) == []


# --- commit_all ---------------------------------------------------------------------------


def write_hook(repo: Path, name: str, body: str) -> Path:
    hook = repo / ".git" / "hooks" / name
    hook.write_text(f"#!/bin/sh\n{body}\n")
    hook.chmod(0o755)
    return hook


def test_commit_all_with_trailers_and_no_hooks(repo: Path, ws: Workspace) -> None:
    marker = repo.parent / "post-commit-ran"
    write_hook(repo, "pre-commit", "exit 1")
    write_hook(repo, "commit-msg", "exit 1")
    write_hook(repo, "post-commit", f"touch {marker}")
    base = ws.head()
    (ws.path / "exp" / "params.yaml").write_text("lr: 0.3\n")
    (ws.path / "exp" / "extra.py").write_text("z = 3\n")
    sha = ws.commit_all("round 3: lower lr", {"Spml-Round": "3", "Spml-Result": "0.91"})
    assert sha == ws.head() != base
    assert run_git(ws.path, "log", "-1", "--format=%B", sha).strip() == (
        "round 3: lower lr\n\nSpml-Round: 3\nSpml-Result: 0.91")
    assert run_git(ws.path, "rev-parse", f"{sha}^") == base
    assert "exp/extra.py" in run_git(ws.path, "ls-tree", "-r", "--name-only", sha)
    assert not marker.exists()
    assert run_git(ws.path, "status", "--porcelain") == ""


def test_commit_all_without_changes_still_commits(ws: Workspace) -> None:
    base = ws.head()
    sha = ws.commit_all("noise win")
    assert sha != base
    assert run_git(ws.path, "rev-parse", f"{sha}^{{tree}}") == run_git(
        ws.path, "rev-parse", f"{base}^{{tree}}")


def test_commit_all_uses_fallback_identity(ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    sha = ws.commit_all("anonymous")
    assert run_git(ws.path, "log", "-1", "--format=%an <%ae>", sha) == "spml <spml@localhost>"


def test_commit_all_refuses_a_detached_head(ws: Workspace) -> None:
    run_git(ws.path, "checkout", "-q", "--detach")
    with pytest.raises(GitStateError, match="roll it back"):
        ws.commit_all("nope")


# --- rollback -----------------------------------------------------------------------------


def test_rollback_restores_tracked_removes_untracked_keeps_ignored(ws: Workspace) -> None:
    base = ws.head()
    exp = ws.path / "exp"
    (exp / "train.py").write_text("print('hacked')\n")
    (exp / "evaluate.py").unlink()
    (exp / "new" / "deep").mkdir(parents=True)
    (exp / "new" / "deep" / "x.py").write_text("x")
    (exp / "outputs").mkdir()
    (exp / "outputs" / "cache.bin").write_text("keep me")
    run_git(ws.path, "init", "-q", "exp/nested")  # a nested repository
    ws.rollback(base)
    assert (exp / "train.py").read_text() == "print('train')\n"
    assert (exp / "evaluate.py").is_file()
    assert not (exp / "new").exists()
    assert not (exp / "nested").exists()
    assert (exp / "outputs" / "cache.bin").read_text() == "keep me"
    assert ws.changes_since(base) == []


def test_rollback_undoes_commits_and_reattaches_head(ws: Workspace) -> None:
    base = ws.head()
    (ws.path / "exp" / "params.yaml").write_text("lr: 9\n")
    run_git(ws.path, "commit", "-q", "-am", "researcher commit")
    run_git(ws.path, "checkout", "-q", "--detach", "HEAD")
    (ws.path / "exp" / "params.yaml").write_text("lr: 10\n")
    ws.rollback(base)
    assert symbolic_head(ws) == f"refs/heads/{BRANCH}"
    assert ws.head() == base
    assert run_git(ws.path, "status", "--porcelain") == ""


def test_rollback_recovers_from_a_deleted_branch_and_garbled_head(ws: Workspace) -> None:
    base = ws.head()
    admin = Path(run_git(ws.path, "rev-parse", "--absolute-git-dir"))
    run_git(ws.path, "checkout", "-q", "--detach")
    run_git(ws.path, "branch", "-D", BRANCH)
    (admin / "HEAD").write_text("garbage\n")
    snap = ws.snapshot()
    assert (snap.head, snap.head_ref) == ("", None)
    assert snap.refs == {}  # the loop's branch is gone; other refs are not watched
    ws.rollback(base)
    assert symbolic_head(ws) == f"refs/heads/{BRANCH}"
    assert ws.head() == base


def test_rollback_with_snapshot_restores_refs_and_admin_files(repo: Path, ws: Workspace) -> None:
    run_git(repo, "tag", "existing")
    base = ws.head()
    before = ws.snapshot()
    exp = ws.path / "exp"
    run_git(ws.path, "branch", "evil")
    run_git(ws.path, "tag", "v1")
    run_git(ws.path, "tag", "-d", "existing")
    (exp / "params.yaml").write_text("lr: 5\n")
    run_git(ws.path, "stash", "-q")
    (exp / "params.yaml").write_text("lr: 6\n")
    run_git(ws.path, "commit", "-q", "-am", "moved main")
    run_git(ws.path, "update-ref", "refs/heads/main", "HEAD")
    write_hook(repo, "post-checkout", "echo pwned")
    (repo / ".git" / "hooks" / "pre-commit.sample").write_text("changed\n")
    (repo / ".git" / "hooks" / "pre-push.sample").unlink()
    run_git(ws.path, "config", "core.fsmonitor", "evil-daemon")
    (repo / ".git" / "info" / "exclude").write_text("*\n")
    ws.rollback(base, restore_refs=before)
    after = ws.snapshot()
    assert after == before
    assert after.refs == before.refs
    assert "refs/stash" not in after.refs
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert os.access(repo / ".git" / "hooks" / "pre-push.sample", os.X_OK)
    assert "evil" not in (repo / ".git" / "config").read_text()
    # The user's own refs are left exactly as they are now (they may work during a loop).
    assert run_git(repo, "tag", "--list") == "v1"
    assert run_git(repo, "branch", "--list", "evil")


def test_rollback_keeps_private_refs(ws: Workspace) -> None:
    base = ws.head()
    before = ws.snapshot()
    (ws.path / "exp" / "params.yaml").write_text("lr: 7\n")
    sha = ws.archive_attempt("refs/spml/attempts/x/1", base, "attempt 1")
    ws.rollback(base, restore_refs=before)
    assert run_git(ws.path, "rev-parse", "refs/spml/attempts/x/1") == sha
    assert ws.attempt("refs/spml/attempts/x/1") == sha
    assert ws.attempt("refs/spml/attempts/x/2") is None


# --- archive_attempt, clean_ignored, blobs, restore_paths, ensure_excluded ---------------


def test_archive_attempt_leaves_worktree_index_and_head_alone(ws: Workspace) -> None:
    base = ws.head()
    exp = ws.path / "exp"
    (exp / "params.yaml").write_text("lr: 0.5\n")
    (exp / "scratch.py").write_text("tmp = 1\n")
    admin = Path(run_git(ws.path, "rev-parse", "--absolute-git-dir"))
    status_before = run_git(ws.path, "status", "--porcelain")  # (refreshes the index)
    index_before = (admin / "index").read_bytes()
    sha = ws.archive_attempt(ATTEMPT, base, "attempt 4")
    assert sha is not None
    assert run_git(ws.path, "rev-parse", ATTEMPT) == sha
    assert run_git(ws.path, "rev-parse", f"{sha}^") == base
    assert run_git(ws.path, "show", f"{sha}:exp/scratch.py") == "tmp = 1"
    assert run_git(ws.path, "show", f"{sha}:exp/params.yaml") == "lr: 0.5"
    assert (admin / "index").read_bytes() == index_before
    assert run_git(ws.path, "status", "--porcelain") == status_before
    assert ws.changes_since(base) == [FileChange("exp/params.yaml", "modified"),
                                      FileChange("exp/scratch.py", "untracked")]
    assert ws.head() == base
    assert symbolic_head(ws) == f"refs/heads/{BRANCH}"
    (exp / "params.yaml").write_text("lr: 0.6\n")
    assert ws.archive_attempt(ATTEMPT, base, "again") != sha  # overwritten


def test_archive_attempt_without_changes_returns_none(ws: Workspace) -> None:
    (ws.path / "exp" / "outputs").mkdir()
    (ws.path / "exp" / "outputs" / "log.txt").write_text("ignored\n")
    assert ws.archive_attempt(ATTEMPT, ws.head(), "nothing") is None


def test_archive_attempt_refuses_a_ref_outside_refs_spml(ws: Workspace) -> None:
    (ws.path / "exp" / "params.yaml").write_text("lr: 0.5\n")
    with pytest.raises(ValueError, match="under refs/spml/"):
        ws.archive_attempt("refs/heads/attempt", ws.head(), "no")


def test_clean_ignored_respects_keep(ws: Workspace) -> None:
    out = ws.path / "exp" / "outputs"
    (out / "deep").mkdir(parents=True)
    (out / "deep" / "a.txt").write_text("a")
    (out / "weights.bin").write_text("w")
    (ws.path / "exp" / "untracked.py").write_text("u")
    assert ws.ignored_files() == ["exp/outputs/deep/a.txt", "exp/outputs/weights.bin"]
    removed = ws.clean_ignored(keep=lambda path: path.endswith(".bin"))
    assert removed == ["exp/outputs/deep/a.txt"]
    assert not (out / "deep").exists()
    assert (out / "weights.bin").exists()
    assert ws.clean_ignored() == ["exp/outputs/weights.bin"]
    assert not out.exists()
    assert (ws.path / "exp" / "untracked.py").exists()  # not ignored: not cleaned


def test_blob_ids_and_restore_paths(ws: Workspace) -> None:
    base = ws.head()
    fixed = ws.tree_blob_ids(base, lambda p: p.startswith("exp/") and p.endswith(".py"))
    assert sorted(fixed) == ["exp/evaluate.py", "exp/train.py"]
    assert ws.worktree_blob_ids(list(fixed)) == fixed
    (ws.path / "exp" / "train.py").write_text("print('edited')\n")
    (ws.path / "exp" / "evaluate.py").unlink()
    (ws.path / "exp" / "ghost.py").write_text("boo\n")
    actual = ws.worktree_blob_ids([*fixed, "exp/ghost.py"])
    assert actual["exp/train.py"] != fixed["exp/train.py"]
    assert actual["exp/evaluate.py"] is None
    ws.restore_paths(base, ["exp/train.py", "exp/evaluate.py", "exp/ghost.py"])
    assert ws.worktree_blob_ids(list(fixed)) == fixed
    assert not (ws.path / "exp" / "ghost.py").exists()
    assert ws.changes_since(base) == []


def test_worktree_blob_id_of_a_symlink_matches_git(ws: Workspace) -> None:
    os.symlink("train.py", ws.path / "exp" / "alias.py")
    sha = ws.commit_all("add a link")
    expected = ws.tree_blob_ids(sha, lambda p: p == "exp/alias.py")
    assert ws.worktree_blob_ids(["exp/alias.py"]) == expected


def test_ensure_excluded_is_idempotent(repo: Path) -> None:
    (repo / "exp" / ".spml").mkdir()
    (repo / "exp" / ".spml" / "journal.json").write_text("{}")
    ensure_excluded(repo / "exp", ".spml/")
    ensure_excluded(repo, ".spml/")
    lines = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert lines.count(".spml/") == 1
    assert run_git(repo, "status", "--porcelain") == ""


def test_snapshot_fields(repo: Path, ws: Workspace) -> None:
    snap = ws.snapshot()
    assert isinstance(snap, GitSnapshot)
    assert snap.head == ws.head()
    assert snap.head_ref == f"refs/heads/{BRANCH}"
    # Only the loop's branch and the stash are watched; the user's branches are theirs.
    assert snap.refs == {f"refs/heads/{BRANCH}": snap.head}
    assert {"config", "info/exclude", "<worktree>/.git"} <= set(snap.admin_digest)
    assert "_admin_bytes" not in repr(snap)


def test_open_refuses_a_branch_checked_out_elsewhere(repo: Path) -> None:
    with pytest.raises(GitStateError, match="already checked out"):
        Workspace.open_or_create(repo, worktree_dir(repo), "main")


# --- finding and replaying loop commits ---------------------------------------------------


def test_find_commit_matches_the_whole_trailer_line(ws: Workspace) -> None:
    (ws.path / "exp" / "params.yaml").write_text("lr: 0.2\n")
    first = ws.commit_all("round 1", trailers={"Spml-Round": "1"})
    (ws.path / "exp" / "params.yaml").write_text("lr: 0.3\n")
    tenth = ws.commit_all("round 10", trailers={"Spml-Round": "10"})
    assert ws.find_commit("Spml-Round: 1") == first
    assert ws.find_commit("Spml-Round: 10") == tenth
    assert ws.find_commit("Spml-Round: 2") is None
    assert ws.round_trailers() == [10, 1]


def test_find_commit_and_round_trailers_need_every_line(ws: Workspace) -> None:
    params = ws.path / "exp" / "params.yaml"
    params.write_text("lr: 0.2\n")
    old = ws.commit_all("round 1", trailers={"Spml-Round": "1", "Spml-Generation": "a"})
    params.write_text("lr: 0.3\n")
    new = ws.commit_all("round 1 again", trailers={"Spml-Round": "1", "Spml-Generation": "b"})
    assert ws.find_commit("Spml-Round: 1", "Spml-Generation: a") == old
    assert ws.find_commit("Spml-Round: 1", "Spml-Generation: b") == new
    assert ws.find_commit("Spml-Round: 1", "Spml-Generation: c") is None
    assert ws.round_trailers(having=("Spml-Generation: a",)) == [1]
    assert ws.round_trailers(having=("Spml-Generation: c",)) == []


def test_replay_reverts_a_commit_and_refuses_a_conflict(ws: Workspace) -> None:
    params = ws.path / "exp" / "params.yaml"
    params.write_text("lr: 0.2\n")
    first = ws.commit_all("one")
    ws.replay(first, revert=True)
    assert params.read_text() == "lr: 0.1\n"
    ws.rollback(ws.head())
    params.write_text("lr: 0.3\n")
    ws.commit_all("two")  # edits the same line: reverting `one` now conflicts
    head = ws.head()
    with pytest.raises(GitStateError, match="does not apply cleanly"):
        ws.replay(first, revert=True)
    assert ws.head() == head
    assert params.read_text() == "lr: 0.3\n"
    assert run_git(ws.path, "status", "--porcelain") == ""


# --- what git ignores, what the person's checkout has not committed ---------------------------


def test_is_ignored_reads_the_worktrees_gitignore_for_paths_that_do_not_exist(
        ws: Workspace) -> None:
    assert ws.is_ignored("exp/outputs/new.yaml")
    assert not ws.is_ignored("exp/params.yaml")
    assert not ws.is_ignored("exp/new [1].yaml")  # no pathspec magic needed


def test_uncommitted_files_lists_every_change_under_a_folder(repo: Path) -> None:
    (repo / "exp" / "params.yaml").write_text("lr: 0.2\n")
    (repo / "exp" / "new file.py").write_text("x = 1\n")
    (repo / "exp" / "outputs").mkdir()
    (repo / "exp" / "outputs" / "run.log").write_text("ignored\n")
    (repo / "README.md").write_text("outside\n")
    run_git(repo, "rm", "-q", "exp/evaluate.py")
    assert uncommitted_files(repo, "exp") == {"exp/evaluate.py": False,
                                              "exp/new file.py": True,
                                              "exp/params.yaml": False}
    assert "README.md" in uncommitted_files(repo, ".")


def test_worktrees_created_again_from_several_threads_at_once(repo: Path) -> None:
    """A batch's candidates open their worktrees at once; after a person deleted them, each is
    created again. Unserialized, a `git worktree add` read another's half-made admin folder
    (2 failures in 15 rounds, in review; most runs of this test failed)."""
    dirs = [repo / ".git" / "spml" / "candidates" / str(slot) for slot in range(4)]

    def open_slot(slot: int) -> str:
        workspace = Workspace.open_or_create(repo, dirs[slot], f"candidate/{slot}", "main")
        return workspace.state_tree()

    for _ in range(30):
        for slot in range(4):
            open_slot(slot)
        for path in dirs:
            shutil.rmtree(path)
        with ThreadPoolExecutor(max_workers=4) as pool:
            trees = list(pool.map(open_slot, range(4)))
        assert len(set(trees)) == 1  # each at the same commit, none failed
