"""Commits of the pipeline stages in the person's own checkout (real git repositories)."""

from __future__ import annotations

from pathlib import Path

from helpers import git

from spml.toolkit.git.checkout import commit_experiment


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


def test_only_the_experiment_directory_is_committed(tmp_path):
    repo = repo_with_experiment(tmp_path)
    git(repo, "add", "notes.txt")  # staged by the person: must stay staged, not committed
    (repo / "exp" / "train.py").write_text("print(1)\n")
    (repo / "exp" / "outputs").mkdir()
    (repo / "exp" / "outputs" / "model.pt").write_text("weights")
    (repo / "exp" / "experiences.md").write_text("ledger\n")
    sha = commit_experiment(repo / "exp", "experiment: model core", ("experiences.md",))
    assert sha == git(repo, "rev-parse", "HEAD")
    committed = git(repo, "show", "--name-only", "--format=%s", "HEAD").splitlines()
    assert committed == ["experiment: model core", "", "exp/.gitignore", "exp/train.py"]
    status = git(repo, "status", "--porcelain").splitlines()
    assert "A  notes.txt" in status
    assert "?? exp/experiences.md" in status
    assert git(repo, "log", "-1", "--format=%an") == "Person"


def test_nothing_changed_is_no_commit_and_a_bare_machine_gets_a_fallback_identity(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = repo_with_experiment(tmp_path, identity=False)
    (repo / "exp" / "a.py").write_text("a = 1\n")
    assert commit_experiment(repo / "exp", "experiment: a") is not None
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "spml <spml@localhost>"
    assert commit_experiment(repo / "exp", "experiment: again") is None
    assert git(repo, "rev-list", "--count", "HEAD") == "1"
