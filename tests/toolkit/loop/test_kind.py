"""Loop kinds as descriptors: lookup, one kind per directory, ledger columns, policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spml.errors import ProtocolError
from spml.protocols.autoresearch import AutoresearchProtocol
from spml.protocols.experiences import COLUMNS, ITERATION_COLUMNS
from spml.protocols.iteration import IterationProtocol
from spml.toolkit.loop.evidence import Noise, Rule
from spml.toolkit.loop.kind import (
    AUTORESEARCH,
    ITERATION,
    KINDS,
    kind_named,
    refuse_other_kinds,
)
from spml.toolkit.loop.policies import MinDeltaPolicy, SignificancePolicy
from spml.toolkit.loop.review import ReviewPolicy

ACC = {"name": "acc", "op": ">=", "threshold": 0.9}
RESEARCHER = {"kind": "command", "command": "true"}


def iteration(noise: float | None = None, **criteria: Any) -> IterationProtocol:
    return IterationProtocol.model_validate({
        "goal": "g", "train_command": "python train.py",
        "fixed": {"files": ["evaluate.py"], "time_limit": 10},
        "eval": {"command": "python evaluate.py"}, "researcher": RESEARCHER,
        "acceptance": {"noise": noise}, "review_criteria": criteria})


def autoresearch(**fields: Any) -> AutoresearchProtocol:
    return AutoresearchProtocol.model_validate({
        "research_question": "q", "max_rounds": 3, "train_command": "python train.py",
        "fixed": {"files": ["train.py"], "time_limit": 5}, "variable": {"files": ["p.yaml"]},
        "eval": {"command": "python evaluate.py", "metric": "loss", "direction": "minimize"},
        "researcher": RESEARCHER, **fields})


def test_kind_named() -> None:
    assert kind_named("autoresearch") is AUTORESEARCH
    assert kind_named("ml-iteration") is ITERATION
    assert set(KINDS) == {"autoresearch", "ml-iteration"}
    with pytest.raises(ProtocolError, match=r"one of autoresearch, ml-iteration, got 'iteration'"):
        kind_named("iteration")
    with pytest.raises(ProtocolError, match="got 'Auto Research'"):
        kind_named("Auto Research")


@pytest.mark.parametrize(("kind", "other", "marker"), [
    (ITERATION, AUTORESEARCH, "autoresearch-protocol.md"),
    (ITERATION, AUTORESEARCH, ".spml/autoresearch/"),
    (AUTORESEARCH, ITERATION, "iteration-protocol.md"),
    (AUTORESEARCH, ITERATION, ".spml/ml-iteration/"),
])
def test_refuses_the_other_kinds_directory(tmp_path: Path, kind: Any, other: Any,
                                           marker: str) -> None:
    if marker.endswith("/"):
        (tmp_path / marker).mkdir(parents=True)
    else:
        (tmp_path / marker).write_text("---\n---\n")
    with pytest.raises(ProtocolError) as raised:
        refuse_other_kinds(kind, tmp_path)
    message = str(raised.value)
    assert f"already holds an {other.title} experiment" in message
    assert kind.protocol_filename in message


@pytest.mark.parametrize("kind", [ITERATION, AUTORESEARCH])
def test_accepts_its_own_or_an_empty_directory(tmp_path: Path, kind: Any) -> None:
    refuse_other_kinds(kind, tmp_path)
    (tmp_path / kind.protocol_filename).write_text("---\n---\n")
    (tmp_path / ".spml" / kind.name).mkdir(parents=True)
    (tmp_path / "experiences.md").write_text("# ledger\n")
    refuse_other_kinds(kind, tmp_path)


def test_a_state_file_that_is_not_a_directory_is_no_other_kind(tmp_path: Path) -> None:
    (tmp_path / ".spml").mkdir()
    (tmp_path / ".spml" / "autoresearch").write_text("stray")
    refuse_other_kinds(ITERATION, tmp_path)


def test_autoresearch_columns_are_fixed() -> None:
    assert AUTORESEARCH.columns(autoresearch()) == COLUMNS


def test_iteration_columns_drop_empty_dimensions() -> None:
    full = iteration(metrics=[ACC], performance=[{"name": "train_time_s", "op": "<=",
                                                  "threshold": 5.0}],
                     observability={"required_keys": ["loss"]}, stability={"no_nan": True},
                     custom=[{"name": "hf", "command": "true"}])
    assert ITERATION.columns(full) == ITERATION_COLUMNS
    assert ITERATION.columns(iteration(metrics=[ACC])) == (
        "Round", "Strategy", "Metrics", "User Hint", "Verdict", "Insight")
    only_obs = iteration(observability={"required_keys": ["loss"]}, stability={"no_nan": True},
                         metrics=[])
    assert ITERATION.columns(only_obs) == (
        "Round", "Strategy", "Observability", "Stability", "User Hint", "Verdict", "Insight")
    no_keys = iteration(metrics=[ACC], observability={"required_keys": []})
    assert "Observability" not in ITERATION.columns(no_keys)


def test_stability_column_dropped_when_nothing_is_checked() -> None:
    protocol = iteration(metrics=[ACC], stability={"no_nan": False})
    assert "Stability" not in ITERATION.columns(protocol)


def test_policies() -> None:
    noise = Noise(0.01, 8)
    greedy = autoresearch(target=0.1, acceptance={"min_delta": 0.01, "mode": "greedy"})
    assert AUTORESEARCH.make_policy(greedy, noise) == MinDeltaPolicy("minimize", 0.01,
                                                                     metric="loss", target=0.1)
    default = AUTORESEARCH.make_policy(autoresearch(target=0.1, acceptance={"min_delta": 0.01}),
                                       noise)
    assert default == SignificancePolicy(Rule(maximize=False, min_delta=0.01, looks=5), noise,
                                         metric="loss", target=0.1)
    protocol = iteration(noise=0.05, metrics=[ACC])
    review = ITERATION.make_policy(protocol, noise)
    assert isinstance(review, ReviewPolicy)
    assert (review.criteria, review.noise) == (protocol.review_criteria, 0.05)
    assert ITERATION.make_policy(iteration(metrics=[ACC]), noise).noise is None  # type: ignore[attr-defined]


def test_artifact_keys() -> None:
    assert ITERATION.artifact_key("review", "my_exp.v2") == "iteration-review-my-exp-v2"
    assert AUTORESEARCH.artifact_key("ledger", "exp") == "autoresearch-ledger-exp"
    assert AUTORESEARCH.artifact_key("best_round", "a.b") == "autoresearch-best-round-a-b"


def test_descriptors() -> None:
    assert (ITERATION.protocol_filename, AUTORESEARCH.protocol_filename) == (
        "iteration-protocol.md", "autoresearch-protocol.md")
    assert ITERATION.implicit_fixed == ("iteration-protocol.md", ".gitignore")
    assert AUTORESEARCH.implicit_fixed == ()
    assert (ITERATION.commit_prefix, AUTORESEARCH.commit_prefix) == ("ml-iteration",
                                                                    "autoresearch")
    assert ITERATION.protocol_model is IterationProtocol
    assert AUTORESEARCH.protocol_model is AutoresearchProtocol
    assert (AUTORESEARCH.title, ITERATION.title) == ("Auto Research", "ml-iteration")
