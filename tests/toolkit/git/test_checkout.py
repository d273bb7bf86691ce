"""Commits of the pipeline stages in the person's own checkout (real git repositories)."""

from __future__ import annotations

from pathlib import Path

from helpers import git

from spml.toolkit.git.checkout import (
    commit_paths,
    current_branch,
    dirty_paths,
    text_when_last_committed,
)


def repo_with_experiment(tmp_path: Path, identity: bool = True) -> Path:
    repo = tmp_path / "repo"
    (repo / "exp").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    if identity:
        git(repo, "config", "user.name", "Person")
        git(repo, "config", "user.email", "person@example.invalid")
    (repo / "notes.txt").write_text("the person's own work\n")
    (repo / "exp" / ".gitignore").write_text("outputs/\n")
    return repo


def test_only_the_named_paths_are_committed(tmp_path):
    repo = repo_with_experiment(tmp_path)
    git(repo, "add", "notes.txt")  # staged by the person: must stay staged, not committed
    (repo / "exp" / "train.py").write_text("print(1)\n")
    (repo / "exp" / "half-written.py").write_text("def f(:\n")
    (repo / "exp" / ".env").write_text("API_KEY=secret\n")
    (repo / "exp" / "outputs").mkdir()
    (repo / "exp" / "outputs" / "model.pt").write_text("weights")
    assert dirty_paths(repo / "exp") == {".gitignore", "train.py", "half-written.py", ".env"}
    sha = commit_paths(repo / "exp", "experiment: model core", ["train.py", ".gitignore"])
    assert sha == git(repo, "rev-parse", "HEAD")
    committed = git(repo, "show", "--name-only", "--format=%s", "HEAD").splitlines()
    assert committed == ["experiment: model core", "", "exp/.gitignore", "exp/train.py"]
    status = git(repo, "status", "--porcelain").splitlines()
    assert "A  notes.txt" in status
    assert "?? exp/.env" in status
    assert "?? exp/half-written.py" in status
    assert git(repo, "log", "-1", "--format=%an") == "Person"
    assert current_branch(repo / "exp") == "main"


def test_unchanged_paths_are_no_commit_and_a_bare_machine_gets_a_fallback_identity(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = repo_with_experiment(tmp_path, identity=False)
    (repo / "exp" / "a.py").write_text("a = 1\n")
    assert commit_paths(repo / "exp", "experiment: a", ["a.py"]) is not None
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "spml <spml@localhost>"
    assert commit_paths(repo / "exp", "experiment: again", ["a.py"]) is None
    (repo / "exp" / "a.py").unlink()
    assert commit_paths(repo / "exp", "experiment: a deleted", ["a.py"]) is not None
    assert git(repo, "rev-list", "--count", "HEAD") == "2"


def test_the_text_a_file_had_when_another_was_last_committed(tmp_path):
    repo = repo_with_experiment(tmp_path)
    exp = repo / "exp"
    (exp / "design.md").write_text("v1\n")
    (exp / "plan.md").write_text("plan\n")
    commit_paths(exp, "plan", ["design.md", "plan.md"])
    (exp / "design.md").write_text("v2\n")
    commit_paths(exp, "design v2", ["design.md"])
    assert text_when_last_committed(exp, "plan.md", "design.md") == "v1\n"
    assert text_when_last_committed(exp, "never.md", "design.md") is None
    assert text_when_last_committed(exp, "plan.md", "missing.md") is None


def test_changed_after_orders_two_files_by_their_commits(tmp_path):
    from spml.toolkit.git.checkout import changed_after

    repo = repo_with_experiment(tmp_path)
    exp = repo / "exp"
    (exp / "design.md").write_text("v1\n")
    commit_paths(exp, "design", ["design.md"])
    (exp / "plan.md").write_text("plan\n")
    commit_paths(exp, "plan", ["plan.md"])
    assert not changed_after(exp, "design.md", "plan.md")
    (exp / "design.md").write_text("v2\n")
    assert changed_after(exp, "design.md", "plan.md")  # uncommitted
    commit_paths(exp, "design v2", ["design.md"])
    assert changed_after(exp, "design.md", "plan.md")
    (exp / "plan.md").write_text("plan v2\n")
    commit_paths(exp, "plan v2", ["plan.md"])
    assert not changed_after(exp, "design.md", "plan.md")
