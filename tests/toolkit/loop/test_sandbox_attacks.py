"""Attacks only the sandbox can stop (`spml.toolkit.loop.sandboxing`): writes outside the
worktree by the researcher or by the code training runs. Compliance compares git state after
the fact and cannot see a file in the user's home, a ``.pth`` in site-packages or an edited
``.git/config``; these tests assert that such files never come to exist.

Real git repositories, real subprocesses under the real bwrap, the loop engine without Prefect.
"""

from __future__ import annotations

import site
import sys
import uuid
from pathlib import Path

import pytest
from helpers import drive, git, model_protocol, tiny_experiment

from spml.errors import ProtocolError
from spml.toolkit.loop import sandboxing
from spml.toolkit.process.sandbox import unavailable_reason
from spml.toolkit.verification.experiment import evidence_lines, measure_arm, remove_bench
from spml.toolkit.verification.subject import find_subject

pytestmark = pytest.mark.skipif(bool(unavailable_reason()),
                                reason=f"no sandbox here: {unavailable_reason()}")

TRAIN = "import model\nmodel.train()\n"
EVALUATE = "print(f\"loss={float(open('outputs/loss.txt').read())}\")\n"
MODEL = ("import os\ndef train():\n    os.makedirs('outputs', exist_ok=True)\n"
         "    open('outputs/loss.txt', 'w').write('LOSS')\n")
RESEARCHER = '''import os, pathlib, sys
work = pathlib.Path(os.environ["SPML_WORKDIR"])
ATTACK
(work / "model.py").write_text(pathlib.Path(sys.argv[1]).read_text())
pathlib.Path(os.environ["SPML_STRATEGY_FILE"]).write_text("a better model\\n")
'''


def _experiment(tmp_path: Path, model: str, attack: str = "") -> Path:
    (tmp_path / "candidate.py").write_text(model.replace("LOSS", "4.0"))
    (tmp_path / "researcher.py").write_text(RESEARCHER.replace("ATTACK", attack))
    return tiny_experiment(tmp_path / "repo", {
        "train.py": TRAIN, "evaluate.py": EVALUATE, "model.py": MODEL.replace("LOSS", "9.0"),
        ".gitignore": "outputs/\n__pycache__/\n"}, model_protocol(tmp_path))


def _targets(tmp_path: Path) -> dict[str, Path]:
    """Where the code training runs tries to write: none is the worktree."""
    token = uuid.uuid4().hex[:12]
    return {
        "home": Path.home() / f".spml-attack-{token}",
        "pth": Path(site.getsitepackages()[0]) / f"spml_attack_{token}.pth",
        "checkout": tmp_path / "repo" / "exp" / f"planted-{token}.py",
        "beside": tmp_path / f"outside-{token}.txt",
    }


def test_code_run_by_training_cannot_write_outside_the_worktree(tmp_path):
    targets = _targets(tmp_path)
    writes = "".join(
        f"    try:\n        open({str(path)!r}, 'w').write('import os\\n')\n"
        f"    except OSError as exc:\n        print('blocked', exc)\n"
        for path in targets.values())
    exp = _experiment(tmp_path, MODEL + "    _attack()\ndef _attack():\n" + writes)
    try:
        ledger = drive(exp)
        for name, path in targets.items():
            assert not path.exists(), f"training wrote the {name} file {path}"
        # the writes failed quietly inside training: the honest part of the round still counts
        assert ledger.kept_rounds() == [0, 1]
        assert "Read-only file system" in (exp / ".spml" / "autoresearch" / "rounds" / "0001" /
                                           "train-0.stdout.log").read_text()
        assert ledger.sandbox.startswith("on (bwrap)")
    finally:
        for path in targets.values():
            path.unlink(missing_ok=True)


GIT_ATTACK = '''repo = pathlib.Path(sys.argv[2])
(repo / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\\necho owned\\n")
'''


@pytest.mark.parametrize(("target", "attack"), [
    ("hooks", GIT_ATTACK),
    ("config", 'open(pathlib.Path(sys.argv[2]) / ".git" / "config", "a")'
               '.write("[core]\\n\\thooksPath = /tmp\\n")'),
    ("ref", '(pathlib.Path(sys.argv[2]) / ".git" / "refs" / "heads" / "main")'
            '.write_text("0" * 40 + "\\n")'),
    ("worktree pointer", '(work.parent / ".git").write_text("gitdir: /tmp/elsewhere\\n")'),
])
def test_the_researcher_cannot_edit_the_repositorys_git(tmp_path, target, attack):
    exp = _experiment(tmp_path, MODEL, attack.replace("sys.argv[2]", "ARGV2"))
    repo = exp.parent
    researcher = tmp_path / "researcher.py"
    researcher.write_text(researcher.read_text().replace("ARGV2", repr(str(repo))))
    before = {path: path.read_bytes() for path in
              (repo / ".git" / "config", repo / ".git" / "refs" / "heads" / "main")}
    ledger = drive(exp)
    row = ledger.rows[1]
    assert (row.verdict, row.result) == ("rolled_back", None)
    assert "researcher crashed" in row.insight
    assert "Read-only file system" in row.insight  # the reason, in the ledger
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert {path: path.read_bytes() for path in before} == before
    pointer = next((repo / ".git" / "spml" / "worktrees").iterdir()) / ".git"
    assert pointer.read_text().startswith(f"gitdir: {repo / '.git' / 'worktrees'}")
    assert "round 1" not in git(repo, "log", "--all", "--format=%s", "main")


SECRET = "HOLDOUT-SECRET-7f3a"
HOLDOUT_EVAL = ("import os\nloss = float(open('outputs/loss.txt').read())\n"
                "scale = float(open(os.path.join(os.environ['SPML_HOLDOUT_DIR'], 'holdout', "
                "'scale.txt')).read().split()[0])\nprint(f'loss={loss * scale}')\n")
PEEK = '''def _peek(path):
    import glob
    seen = []
    for where in [path] + [root + path for root in glob.glob("/proc/*/root")]:
        try:  # directly, and through any process's view of the disk
            seen.append(open(where).read())
        except OSError as exc:
            seen.append(f"unreadable: {exc}")
    return " ".join(seen)
'''


def _holdout_experiment(tmp_path: Path) -> Path:
    secret = tmp_path / "repo" / "exp" / "holdout" / "scale.txt"
    peek_training = (MODEL + f"    print('peeked', _peek({str(secret)!r}))\n" + PEEK)
    attack = (PEEK + f"open(work / 'notes.txt', 'w').write(_peek({str(secret)!r}))\n")
    exp = _experiment(tmp_path, peek_training, attack)
    (exp / "evaluate_holdout.py").write_text(HOLDOUT_EVAL)
    (exp / ".gitignore").write_text("outputs/\n__pycache__/\nholdout/\n")
    protocol = (exp / "autoresearch-protocol.md").read_text()
    (exp / "autoresearch-protocol.md").write_text(protocol.replace(
        "acceptance:", "variable:\n  files: [model.py, notes.txt]\nacceptance:").replace(
        "variable:\n  files:\n  - model.py\n", "").replace(
        "---\nToy", f"holdout:\n  paths: [holdout]\n  command: {sys.executable} "
        "evaluate_holdout.py\n---\nToy"))
    git(exp.parent, "add", "-A")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "holdout")
    secret.parent.mkdir()
    secret.write_text(f"2.5 {SECRET}\n")  # untracked, as a holdout must be
    return exp


def test_the_holdout_is_sealed_in_every_round_and_measured_at_the_end(tmp_path):
    exp = _holdout_experiment(tmp_path)
    ledger = drive(exp)
    assert ledger.kept_rounds() == [0, 1]
    # what the researcher and the training read of the holdout: nothing
    everything = git(exp, "log", "--all", "-p", "--format=%B") + (exp / "experiences.md") \
        .read_text() + "".join(p.read_text(errors="replace") for p in
                               (exp / ".spml").rglob("*") if p.is_file() and p.suffix != ".db")
    assert SECRET not in everything
    assert "unreadable" in git(exp, "log", "--all", "-p", "--", "notes.txt")  # what it got
    # the end measured both versions on it: 4.0 x 2.5 and 9.0 x 2.5
    header = (exp / "experiences.md").read_text()
    holdout_line = next(line for line in header.splitlines() if line.startswith("holdout:"))
    assert "best 10" in holdout_line
    assert "baseline 22.5" in holdout_line
    assert "sealed holdout: holdout" in ledger.sandbox


def test_a_tracked_holdout_is_refused(tmp_path):
    exp = _holdout_experiment(tmp_path)
    git(exp.parent, "add", "-f", "exp/holdout/scale.txt")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "leak")
    with pytest.raises(ProtocolError, match="holdout.paths: 'holdout' is or was tracked by git"):
        drive(exp)


def test_verification_judges_on_the_holdout(tmp_path):
    exp = _holdout_experiment(tmp_path)
    drive(exp)
    subject = find_subject(exp)
    arms = {side: measure_arm(subject, side, 2) for side in ("baseline", "chosen")}
    remove_bench(subject)
    assert list(arms["chosen"].values) == [pytest.approx(10.0)] * 2  # 4.0 x the holdout 2.5
    assert list(arms["baseline"].values) == [pytest.approx(22.5)] * 2
    assert "data: the sealed holdout holdout" in "\n".join(evidence_lines(subject, {}))


def test_without_a_sandbox_auto_says_so_and_on_refuses(tmp_path, monkeypatch, caplog):
    # A kernel without unprivileged user namespaces cannot exist here: stand in for its probe.
    monkeypatch.setattr(sandboxing, "unavailable_reason", lambda: "no user namespaces")
    exp = _experiment(tmp_path, MODEL)
    ledger = drive(exp)
    assert ledger.sandbox == "UNCONFINED: no user namespaces"
    assert "run UNCONFINED: no user namespaces" in caplog.text
    assert "UNCONFINED" in (exp / "experiences.md").read_text()
    protocol = exp / "autoresearch-protocol.md"
    protocol.write_text(protocol.read_text().replace("---\nToy", "sandbox: 'on'\n---\nToy"))
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "on")
    with pytest.raises(ProtocolError, match="sandbox: on, but no user namespaces"):
        drive(exp)


def test_sandbox_off_is_written_in_the_ledger(tmp_path):
    exp = _experiment(tmp_path, MODEL)
    protocol = exp / "autoresearch-protocol.md"
    protocol.write_text(protocol.read_text().replace("---\nToy", "sandbox: false\n---\nToy"))
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "off")
    assert drive(exp).sandbox.startswith("off (sandbox: off in the protocol)")


def test_a_holdout_committed_once_is_refused_even_when_untracked_now(tmp_path):
    exp = _holdout_experiment(tmp_path)
    git(exp.parent, "add", "-f", "exp/holdout/scale.txt")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "leak")
    git(exp.parent, "rm", "-q", "--cached", "exp/holdout/scale.txt")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "untrack")
    with pytest.raises(ProtocolError, match="'holdout' is or was tracked by git"):
        drive(exp)


def test_a_holdout_behind_a_link_is_sealed_where_it_really_is(tmp_path):
    exp = _holdout_experiment(tmp_path)
    store = tmp_path / "store"  # the data's real place, outside the repository
    (exp / "holdout").rename(store)
    (exp / "holdout").symlink_to(store)
    drive(exp)
    everything = git(exp, "log", "--all", "-p", "--format=%B") + "".join(
        p.read_text(errors="replace") for p in (exp / ".spml").rglob("*.log"))
    assert SECRET not in everything
    assert "best 10" in (exp / "experiences.md").read_text()  # the end still reads it


def test_a_holdout_command_that_imports_variable_code_is_warned_about(tmp_path, caplog):
    exp = _holdout_experiment(tmp_path)
    (exp / "evaluate_holdout.py").write_text("import model\n" + HOLDOUT_EVAL)
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "import")
    drive(exp)
    assert "imports variable file(s) model.py" in caplog.text
