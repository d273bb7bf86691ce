"""Auto Research's default acceptance on the canary (a knob that does nothing, score 0.50 + noise
with sigma ~0.01), through the real engine: real git, real subprocesses, the real researcher
command. The noise is a hash of seed, round and change, so every run here replays exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.canary.project import SIGMA, TRUTH, make_canary
from helpers import drive

from spml.errors import ProtocolError
from spml.protocols.experiences import KEPT, Experiences, parse_experiences
from spml.toolkit.loop.confirm import read_confirmation
from spml.toolkit.loop.incumbent import find_incumbent
from spml.toolkit.loop.kind import AUTORESEARCH
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.measurement import INCUMBENT_FILENAME, load_measurement
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.process.sandbox import unavailable_reason

HELPERS = Path(__file__).parents[2] / "helpers.py"


def ledger(exp: Path) -> Experiences:
    return parse_experiences((exp / "experiences.md").read_text())


def kept(exp: Path, rounds: range) -> list[int]:
    return [r.round for r in ledger(exp).rows if r.round in rounds and r.verdict in KEPT]


def session(exp: Path) -> LoopSession:
    return LoopSession.load(exp, AUTORESEARCH)


def test_null_changes_are_not_kept_the_best_stays_honest_and_a_real_change_is(
        tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {31: 5}, max_rounds=30)  # the default protocol: no acceptance
    drive(exp)

    assert len(kept(exp, range(1, 31))) <= 2
    best = ledger(exp).incumbent
    assert best is not None
    assert best.n >= 5
    assert abs(best.mean - TRUTH) <= SIGMA
    text = (exp / "experiences.md").read_text()
    assert f"best: score = {best.render()}" in text  # `0.4997 ± 0.011 (n=5, R0)`
    # Clearly worse changes stop early: the 30 null rounds cost fewer than 30 x 5 runs.
    rounds = [load_measurement(session(exp).experiment.round_dir(n)) for n in range(1, 31)]
    runs = [len(m.seeds) for m in rounds if m is not None]
    assert len(runs) == 30
    assert min(runs) == 1
    assert sum(runs) < 30 * 5

    drive(exp, max_rounds=31)
    row = next(r for r in ledger(exp).rows if r.round == 31)
    assert row.verdict == "committed"
    assert row.insight.startswith("better than best ")
    assert "beyond noise" in row.insight
    # The end of the loop re-measured the best and the baseline on fresh seeds.
    confirmed = read_confirmation(session(exp))
    assert confirmed.startswith("best ")
    assert confirmed.endswith(", confirmed")
    assert "vs baseline" in confirmed
    assert "(n=5)" in confirmed


def test_greedy_reproduces_todays_rule_and_keeps_noise(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {}, max_rounds=15, acceptance={"mode": "greedy"})
    drive(exp)

    rows = [r for r in ledger(exp).rows if r.round > 0]
    best, expected = ledger(exp).rows[0].result, []
    assert best is not None
    for row in rows:  # today's rule: one run, kept when it beats the best so far
        assert row.result is not None
        assert "(n=" not in row.result_text
        expected.append("committed" if row.result > best else "rolled_back")
        best = max(best, row.result)
    assert [r.verdict for r in rows] == expected
    assert len(kept(exp, range(1, 16))) >= 2  # ...which keeps changes that do nothing
    assert ledger(exp).incumbent is None
    assert ledger(exp).best is not None
    assert ledger(exp).best.result > TRUTH + SIGMA / 2  # and reports a lucky draw as the best
    assert read_confirmation(session(exp)) == ""  # greedy: no confirmation unless asked


def test_a_real_one_sigma_gain_is_committed_once_enough_runs_agree(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {1: 1}, max_rounds=1, acceptance={"repeats": 10})
    drive(exp)
    row = ledger(exp).rows[1]
    assert row.verdict == "committed", row.insight
    assert int(row.result_text.split("(n=")[1][:-1]) >= 2  # never on one run


def test_a_one_sigma_gain_that_the_runs_cannot_show_is_inconclusive_not_worse(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CANARY_SALT", "a")  # a noise draw where 5 runs cannot tell
    exp = make_canary(tmp_path, {1: 1}, max_rounds=1)
    drive(exp)
    row = ledger(exp).rows[1]
    assert row.verdict == "rolled_back"
    assert row.insight.startswith("inconclusive against best "), row.insight
    assert "interval [" in row.insight
    assert "5 runs vs 5" in row.insight


def test_a_round_that_changes_nothing_is_never_measured_or_committed(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {}, max_rounds=1, researcher="true")
    drive(exp)
    row = ledger(exp).rows[1]
    assert (row.verdict, row.insight) == ("rolled_back", "no change: the code is HEAD's")
    assert not list(session(exp).experiment.round_dir(1).glob("train-*"))


def test_an_acceptance_edit_between_runs_is_refused(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {}, max_rounds=0)
    drive(exp)
    protocol = exp / "autoresearch-protocol.md"
    protocol.write_text(protocol.read_text().replace("max_rounds: 0",
                                                     "max_rounds: 1\nacceptance: {mode: greedy}"))
    with pytest.raises(ProtocolError, match="acceptance changed since this loop started"):
        open_loop(str(exp), None, AUTORESEARCH)


def test_kill_9_during_the_incumbents_top_up_resumes_exactly_once(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {1: 5}, max_rounds=2)
    # Round 1 keeps +5 sigma after 2 runs; round 2 first tops its runs up with seeds 2, 3, 4:
    # the supervisor dies with seed 2 saved and seed 3 about to run.
    env = {**os.environ, "SPML_CRASH_AT": "incumbent-before-seed-3@2"}
    killed = subprocess.run([sys.executable, str(HELPERS), str(exp)], env=env,
                            capture_output=True, check=False, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stdout.decode()[-2000:]
    saved = load_measurement(session(exp).experiment.round_dir(2), INCUMBENT_FILENAME)
    assert saved is not None
    assert [s.seed for s in saved.seeds] == [2]

    resumed_at = time.time()
    drive(exp)
    rows = ledger(exp).rows
    assert [r.round for r in rows] == [0, 1, 2]
    assert rows[1].verdict == "committed"
    topped = load_measurement(session(exp).experiment.round_dir(2), INCUMBENT_FILENAME)
    assert topped is not None
    assert [s.seed for s in topped.seeds] == [2, 3, 4]
    incumbent = find_incumbent(session(exp))
    assert incumbent is not None
    seeds = [s.seed for s in incumbent.seeds]
    if rows[2].verdict not in KEPT:  # HEAD is still round 1's code: 2 runs + 3 top-ups
        assert sorted(seeds) == [0, 1, 2, 3, 4]
    round_dir = session(exp).experiment.round_dir(2)
    assert (round_dir / "incumbent-eval-2.stdout.log").stat().st_mtime < resumed_at  # not rerun
    assert (round_dir / "incumbent-eval-3.stdout.log").stat().st_mtime >= resumed_at
    assert json.loads((exp / "knob.json").read_text()) == {"change": 0, "effect": 0}


# What an independent review of the default acceptance found, each now held by a test.

def state_dir(exp: Path) -> Path:
    return session(exp).experiment.state_dir


def script(tmp_path: Path, name: str, body: str) -> str:
    """A researcher command running ``body`` (Python, cwd = the experiment in the worktree)."""
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return f"{sys.executable} -S {path} {{round}}"


def test_a_measurement_planted_in_a_round_not_reached_yet_is_never_read(tmp_path: Path) -> None:
    exp_dir = tmp_path / "repo" / "exp"
    forge = script(tmp_path, "forge", f"""
import json, subprocess, sys
from pathlib import Path
tree = subprocess.run(["git", "rev-parse", "HEAD^{{tree}}"], capture_output=True,
                      text=True).stdout.strip()
fake = {{"round": 999, "tree": tree, "primary": "score",
        "seeds": [{{"seed": s, "metrics": {{"score": 0.40}}}} for s in range(40)]}}
target = Path({str(exp_dir)!r}) / ".spml/autoresearch/rounds/0999"
target.mkdir(parents=True, exist_ok=True)
(target / "measurement.json").write_text(json.dumps(fake))
Path("knob.json").write_text(json.dumps({{"change": int(sys.argv[1]), "effect": 0}}) + "\\n")
""")
    exp = make_canary(tmp_path, {}, max_rounds=2, researcher=forge)
    drive(exp)
    assert kept(exp, range(1, 3)) == []  # a best of 0.40 x 40 runs would have made it "better"
    incumbent = find_incumbent(session(exp))
    assert incumbent is not None
    assert 5 <= len(incumbent.values) <= 6  # its own runs (a top-up after round 1), not 45
    assert min(incumbent.values) > 0.45


@pytest.mark.parametrize("sandbox", ["off", "auto"])
def test_a_planted_confirmation_fails_the_round_and_is_removed(tmp_path: Path,
                                                               sandbox: str) -> None:
    if sandbox == "auto" and unavailable_reason():
        pytest.skip(f"no sandbox here: {unavailable_reason()}")
    exp_dir = tmp_path / "repo" / "exp"
    plant = script(tmp_path, "plant", f"""
import json, sys
from pathlib import Path
confirm = Path({str(exp_dir)!r}) / ".spml/autoresearch/confirm"
confirm.mkdir(parents=True, exist_ok=True)
(confirm / "baseline.json").write_text(json.dumps({{"tree": "x", "seeds": []}}))
Path("knob.json").write_text(json.dumps({{"change": int(sys.argv[1]), "effect": 5}}) + "\\n")
""")
    exp = make_canary(tmp_path, {}, max_rounds=1, researcher=plant, sandbox=sandbox)
    drive(exp)
    row = ledger(exp).rows[1]
    if sandbox == "off":  # written, then caught by compliance and removed
        assert (row.compliance, row.verdict) == ("fail", "rolled_back")
    else:  # never written: the sandbox stops the researcher
        assert row.verdict == "rolled_back"
        assert "Read-only file system" in row.insight
    assert not (state_dir(exp) / "confirm" / "baseline.json").exists()


def test_status_shows_the_confirmation_and_a_new_ledger_does_not_inherit_it(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spml.cli import app

    exp = make_canary(tmp_path, {1: 5}, max_rounds=1)
    drive(exp)
    confirmed = read_confirmation(session(exp))
    assert confirmed.endswith(", confirmed")
    shown = CliRunner().invoke(app, ["autoresearch", "status", str(exp)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"confirmed on fresh seeds: {confirmed}" in " ".join(shown.output.split())

    (exp / "experiences.md").unlink()  # a person starts a new ledger
    drive(exp, max_rounds=0)
    assert read_confirmation(session(exp)) == ""
    assert not (state_dir(exp) / "confirm").exists()


def test_a_round_that_changed_nothing_does_not_stop_the_incumbents_top_ups(
        tmp_path: Path) -> None:
    canary = Path(__file__).parents[2] / "fixtures" / "canary" / "researcher.py"
    plan = tmp_path / "plan.json"
    noop_first = (f"sh -c 'test {{round}} = 1 || {sys.executable} -S {canary} {plan} "
                  f"{{round}}'")
    exp = make_canary(tmp_path, {}, max_rounds=4, researcher=noop_first)
    drive(exp)
    rows = ledger(exp).rows
    assert rows[1].insight == "no change: the code is HEAD's"
    inconclusive = [r.round for r in rows if r.insight.startswith("inconclusive against best")]
    assert inconclusive  # each one earns the incumbent a run in the next round
    topped = [n for n in range(2, 5) if (session(exp).experiment.round_dir(n)
                                          / INCUMBENT_FILENAME).exists()]
    assert topped == [n + 1 for n in inconclusive if n < 4]


def test_the_same_code_proposed_again_continues_its_runs_instead_of_starting_over(
        tmp_path: Path) -> None:
    same = script(tmp_path, "same", """
import json
from pathlib import Path
Path("knob.json").write_text(json.dumps({"change": 7, "effect": 0}) + "\\n")
""")
    exp = make_canary(tmp_path, {}, max_rounds=4, researcher=same)
    drive(exp)
    measured = [load_measurement(session(exp).experiment.round_dir(n)) for n in range(1, 5)]
    seeds = [s.seed for m in measured if m is not None for s in m.seeds]
    assert len(seeds) == len(set(seeds)) <= 5  # one budget of 5 runs for that code, all rounds
    rows = ledger(exp).rows
    assert kept(exp, range(1, 5)) == []
    assert rows[4].insight.startswith("already measured: this code ran 5 times")


def test_a_hand_edited_best_line_is_undone_while_the_loop_runs(tmp_path: Path) -> None:
    exp = make_canary(tmp_path, {}, max_rounds=2)
    path = exp / "experiences.md"

    def inflate(round_no: int) -> None:
        if round_no == 1:
            text = path.read_text()
            best = next(line for line in text.splitlines() if line.startswith("best:"))
            path.write_text(text.replace(best, "best: score = 0.95 ± 0.001 (n=50, R0)"))

    drive(exp, between_rounds=inflate)
    assert "best: score = 0.95" not in path.read_text()
    assert "the best: line's measured value changed" in ledger(exp).rows[2].note


def test_a_baseline_whose_runs_repeat_exactly_is_noted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CANARY_NOISELESS", "1")
    exp = make_canary(tmp_path, {}, max_rounds=0)
    drive(exp)
    assert "gave the same value: the training ignores SPML_SEED" in ledger(exp).rows[0].note
