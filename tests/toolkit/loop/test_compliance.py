"""S2 compliance rules, on real researcher actions in a real worktree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import git
import pytest

from spml.toolkit.git.workspace import FileChange, GitSnapshot, Workspace
from spml.toolkit.loop.compliance import Violation, check_compliance

VARIABLE = ["params.yaml", "*.py", "model/**"]
FIXED = ["train.py", "evaluate.py", "data/"]


def run_git(cwd: Path, *args: str) -> str:
    return git.Git(str(cwd)).execute(
        ["git", "-c", "user.name=Tester", "-c", "user.email=t@example.com", *args])


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "repo"
    exp = root / "exp"
    (exp / "data").mkdir(parents=True)
    run_git(root, "init", "-q", "-b", "main")
    (exp / "train.py").write_text("print('train')\n")
    (exp / "evaluate.py").write_text("print('eval')\n")
    (exp / "params.yaml").write_text("lr: 0.1\n")
    (exp / "helpers.py").write_text("def f(): ...\n")
    (exp / "data" / "train.csv").write_text("x,y\n")
    (exp / ".gitignore").write_text("outputs/\n")
    (root / "README.md").write_text("readme\n")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "init")
    return Workspace.open_or_create(root, root / ".git" / "spml" / "worktrees" / "ar",
                                    "spml/autoresearch/exp")


def researcher_round(ws: Workspace, act: Callable[[Path], object],
                     fixed_module_names: frozenset[str] = frozenset()) -> list[Violation]:
    """Snapshot, let ``act`` play the researcher in the worktree, check the round."""
    base = ws.head()
    before = ws.snapshot()
    act(ws.path)
    after = ws.snapshot()
    return check_compliance(before, after, ws.changes_since(base), exp_rel="exp",
                            variable=VARIABLE, fixed=FIXED,
                            fixed_module_names=fixed_module_names)


def reasons(violations: list[Violation]) -> list[str]:
    return [v.reason for v in violations]


def write(path: Path, text: str = "x = 1\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_allowed_variable_edits_pass(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "params.yaml", "lr: 0.01\n")
        write(wt / "exp" / "model" / "net.py")
        write(wt / "exp" / "outputs" / "ignored.log", "ignored\n")
        (wt / "exp" / "helpers.py").unlink()  # deleting a variable file is allowed

    assert researcher_round(ws, act) == []


def test_editing_a_fixed_file(ws: Workspace) -> None:
    violations = researcher_round(ws, lambda wt: write(wt / "exp" / "train.py", "cheat()\n"))
    assert violations == [Violation("exp/train.py", "modified fixed file train.py")]


def test_fixed_directory_and_renames(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        (wt / "exp" / "evaluate.py").rename(wt / "exp" / "evaluate2.py")
        write(wt / "exp" / "data" / "extra.csv", "1,2\n")

    assert reasons(researcher_round(ws, act)) == [
        "created fixed file data/extra.csv",
        "deleted fixed file evaluate.py",
    ]


def test_file_outside_variable_files_and_outside_experiment(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "notes.txt", "hi\n")
        write(wt / "exp" / ".gitignore", "outputs/\n*.txt\n")
        write(wt / "README.md", "changed\n")

    assert reasons(researcher_round(ws, act)) == [
        "changed file README.md outside the experiment directory exp",
        "changed file .gitignore outside variable files",
    ]


def test_new_sitecustomize_is_flagged(ws: Workspace) -> None:
    violations = researcher_round(ws, lambda wt: write(wt / "exp" / "sitecustomize.py"))
    assert violations == [Violation("exp/sitecustomize.py",
                                    "file sitecustomize.py would shadow module sitecustomize")]


def test_stdlib_shadowing_even_when_variable_glob_matches(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "json.py")
        write(wt / "exp" / "logging" / "__init__.py")
        write(wt / "exp" / "model" / "json.py")  # nested: not importable as `json`
        write(wt / "exp" / "model" / "hook.pth", "import os\n")

    assert reasons(researcher_round(ws, act)) == [
        "file json.py would shadow module json",
        "created file logging/__init__.py outside variable files",
        "file logging/__init__.py would shadow module logging",
        "file model/hook.pth is a .pth file, which can run code at interpreter start",
    ]


def test_shadowing_a_fixed_module(ws: Workspace) -> None:
    violations = researcher_round(ws, lambda wt: write(wt / "exp" / "train" / "__init__.py"),
                                  fixed_module_names=frozenset({"train"}))
    assert reasons(violations) == ["created file train/__init__.py outside variable files",
                                   "file train/__init__.py would shadow module train"]


def test_commit_moves_head(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "params.yaml", "lr: 1\n")
        run_git(wt, "commit", "-q", "-am", "sneaky")

    violations = researcher_round(ws, act)
    assert [v.path for v in violations] == ["HEAD"]
    assert violations[0].reason.startswith("moved HEAD (new commit ")


def test_commit_then_reset_hard_head_is_still_a_commit(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "params.yaml", "lr: 1\n")
        run_git(wt, "commit", "-q", "-am", "sneaky")
        run_git(wt, "reset", "-q", "--hard", "HEAD~0")

    assert [v.path for v in researcher_round(ws, act)] == ["HEAD"]


def test_commit_undone_by_soft_reset_is_just_an_edit(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        write(wt / "exp" / "params.yaml", "lr: 1\n")
        run_git(wt, "commit", "-q", "-am", "sneaky")
        run_git(wt, "reset", "-q", "--soft", "HEAD~1")

    assert researcher_round(ws, act) == []


def test_detached_head(ws: Workspace) -> None:
    violations = researcher_round(ws, lambda wt: run_git(wt, "checkout", "-q", "--detach"))
    assert reasons(violations)[0].startswith("detached HEAD at ")


def test_stash_is_flagged_but_user_branches_and_tags_are_not(ws: Workspace) -> None:
    # Other branches and tags belong to the user, who may keep working during a loop.
    def act(wt: Path) -> None:
        run_git(wt, "tag", "v1")
        run_git(wt, "branch", "side")
        write(wt / "exp" / "params.yaml", "lr: 2\n")
        run_git(wt, "stash", "-q")

    assert [v.path for v in researcher_round(ws, act)] == ["refs/stash"]


def test_hook_and_config_changes(ws: Workspace) -> None:
    def act(wt: Path) -> None:
        common = Path(run_git(wt, "rev-parse", "--path-format=absolute", "--git-common-dir"))
        write(common / "hooks" / "pre-commit", "#!/bin/sh\necho pwned\n")
        run_git(wt, "config", "alias.st", "status")

    assert reasons(researcher_round(ws, act)) == [
        "changed git admin file config",
        "created git admin file hooks/pre-commit",
    ]


def snap(head: str = "a" * 40, head_ref: str | None = "refs/heads/b",
         refs: dict[str, str] | None = None, admin: dict[str, str] | None = None) -> GitSnapshot:
    return GitSnapshot(head, head_ref, refs or {}, admin or {})


def test_every_violation_reported_in_a_fixed_order() -> None:
    before = snap(refs={"refs/heads/b": "a" * 40, "refs/tags/t": "c" * 40},
                  admin={"config": "1", "hooks/x": "2"})
    after = snap(head="b" * 40, refs={"refs/heads/b": "b" * 40, "refs/heads/z": "d" * 40},
                 admin={"config": "9"})
    changes = [FileChange("exp/zz.txt", "untracked"), FileChange("exp/train.py", "modified"),
               FileChange("other/a.py", "deleted")]
    found = check_compliance(before, after, changes, exp_rel="exp", variable=VARIABLE,
                             fixed=FIXED)
    assert [v.path for v in found] == ["HEAD", "refs/heads/z", "refs/tags/t", "config",
                                       "hooks/x", "exp/train.py", "exp/zz.txt", "other/a.py"]
    assert found == check_compliance(before, after, list(reversed(changes)), exp_rel="exp",
                                     variable=VARIABLE, fixed=FIXED)


def test_experiment_at_repo_root() -> None:
    changes = [FileChange("params.yaml", "modified"), FileChange("train.py", "modified")]
    found = check_compliance(snap(), snap(), changes, exp_rel=".", variable=VARIABLE,
                             fixed=FIXED)
    assert found == [Violation("train.py", "modified fixed file train.py")]


# --- exact rules (survivors of mutation testing) ---------------------------------------------


def test_a_moved_head_is_named_by_its_seven_character_sha(ws: Workspace) -> None:
    def commit(work: Path) -> None:
        write(work / "exp" / "params.yaml", "lr: 0.2\n")
        run_git(work, "commit", "-qam", "researcher commit")

    violations = researcher_round(ws, commit)
    sha = run_git(ws.path, "rev-parse", "HEAD")
    assert reasons(violations)[0] == (f"moved HEAD (new commit {sha[:7]}); the researcher must "
                                      "not commit, reset or check out")


def test_pth_and_shadowing_paths(ws: Workspace) -> None:
    violations = researcher_round(ws, lambda w: (
        write(w / "exp" / "hook.pth"),
        write(w / "exp" / "model" / "os.bak" / "x.py"),      # a dotted folder shadows nothing
        write(w / "exp" / "json.cpython-311-x86_64-linux-gnu.so")))
    by_path = {v.path: v.reason for v in violations}
    assert by_path["exp/hook.pth"].startswith("file hook.pth is a .pth file")
    assert by_path["exp/json.cpython-311-x86_64-linux-gnu.so"] == (
        "file json.cpython-311-x86_64-linux-gnu.so would shadow module json")
    assert not any("os.bak" in path for path in by_path)
