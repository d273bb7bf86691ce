"""What the handoff writes (each loop's document, loadable by that loop), SPML's routing rule,
and the integration conclusion's evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spml.errors import ProtocolError
from spml.protocols import iteration
from spml.protocols.autoresearch import load_protocol
from spml.protocols.design import DesignDoc
from spml.protocols.experiences import parse_experiences
from spml.protocols.watchdog import load_watchdog_settings
from spml.toolkit.pipeline.conclusion import code_conclusion, integration_conclusion
from spml.toolkit.pipeline.handoff import (
    recommend_route,
    script_of,
    write_autoresearch,
    write_iteration,
    write_watchdog,
)
from spml.toolkit.pipeline.levels import LevelResult
from spml.toolkit.watchdog.context import ContextFile

BRIEF = Path(__file__).resolve().parents[3] / "examples" / "pipeline" / "brief.yaml"


def design(**changes) -> DesignDoc:
    return DesignDoc.model_validate({**yaml.safe_load(BRIEF.read_text()), **changes})


def l1(val_mse: float | None, first_step: float = 2.0) -> dict:
    evaluation = {"name": "Evaluation", "metrics": {} if val_mse is None else {"val_mse": val_mse}}
    return {"passed": True, "elapsed_s": 8.0, "notes": [], "stages": [
        {"name": "Training", "metrics": {"steps": 60, "duration_s": 5.0,
                                         "first_step_s": first_step}}, evaluation]}


def test_routing_follows_spml_rule():
    assert recommend_route(design(), l1(0.01)).route == "watchdog"
    unmet = recommend_route(design(), l1(0.6))
    assert unmet.route == "iteration"
    assert unmet.reasons == ["unmet in the Validation Pyramid: val_mse <= 0.05 (L1: 0.6)"]
    assert recommend_route(design(), l1(None)).route == "iteration"
    assert recommend_route(design(), l1(0.01, first_step=45.0)).route == "iteration"


def test_the_autoresearch_handoff_writes_a_protocol_the_loop_loads_and_the_ledger(tmp_path):
    paths = write_autoresearch(tmp_path, design(), "python train.py")
    protocol = load_protocol(tmp_path / "autoresearch-protocol.md")
    assert protocol.train_command == "python train.py"
    assert protocol.max_rounds == 3
    assert protocol.eval.metric == "val_mse"
    assert protocol.acceptance.repeats == 3
    ledger = parse_experiences((tmp_path / "experiences.md").read_text())
    assert ledger.status == "not_started"
    assert ledger.rows == []
    assert ledger.metric == "val_mse"
    assert paths == [tmp_path / "autoresearch-protocol.md", tmp_path / "experiences.md"]
    assert write_autoresearch(tmp_path, design(), "python train.py") == paths  # a re-run
    with pytest.raises(ProtocolError, match="already exists and differs"):
        write_autoresearch(tmp_path, design(), "python train.py --other")
    with pytest.raises(ProtocolError, match="no `autoresearch:` section"):
        write_autoresearch(tmp_path / "x", design(autoresearch=None), "python train.py")


def test_the_iteration_handoff_copies_the_review_criteria(tmp_path):
    write_iteration(tmp_path, design(), "python train.py", "python evaluate.py",
                    {"files": ["evaluate.py", "data/"], "time_limit": 5},
                    {"kind": "command", "command": "agent {prompt_file}"})
    protocol = iteration.load_protocol(tmp_path / "iteration-protocol.md")
    assert protocol.review_criteria == design().review_criteria
    assert protocol.goal == design().hypothesis


def test_the_watchdog_handoff_writes_settings_and_its_section(tmp_path):
    summary = ["design: d.md", "PASS standalone: train.py runs on its own"]
    write_watchdog(tmp_path, design(), {"train_command": "python train.py",
                                        "checkpoint_glob": "outputs/*.pt",
                                        "log_file": "outputs/train.log"}, summary)
    settings = load_watchdog_settings(tmp_path, {})
    assert settings.train_command == "python train.py"
    context = ContextFile(tmp_path / "experiment-context.md")
    context.set_status("running", step=10)
    text = (tmp_path / "experiment-context.md").read_text()
    assert text.index("## Handoff") < text.index("## Watchdog Status")
    assert "- PASS standalone: train.py runs on its own" in text
    write_watchdog(tmp_path, design(), {"train_command": "python train.py",
                                        "checkpoint_glob": "outputs/*.pt",
                                        "log_file": "outputs/train.log"}, ["again"])
    text = (tmp_path / "experiment-context.md").read_text()
    assert text.count("## Handoff") == 1
    assert "- again" in text
    assert "step: 10" in text


def test_the_integration_conclusion_cites_each_criterion():
    l0 = LevelResult("L0", True, "0 critical, 1 warnings", "", {"critical": 0, "warnings": 1})
    met = integration_conclusion("Doing X is expected to cause Y", design().review_criteria,
                                 l0, LevelResult("L1", True, "PASS (6/6 stages)", "", l1(0.01)))
    assert met["Result"] == "effective"
    assert met["Evidence"].startswith("val_mse: 0.01 (expected: <= 0.05); "
                                      "first_step_time_s: 2 (expected: <= 30); L0: 0 critical")
    assert "60 steps" in met["Evidence"]
    assert met["Anomalies"].startswith("L0 warnings: 1")
    missed = integration_conclusion("h", design().review_criteria, l0,
                                    LevelResult("L1", True, "PASS", "", l1(0.6)))
    assert missed["Result"] == "inconclusive"
    assert missed["Recommendation"].startswith("proceed to a full run: L1 ran 60 steps only")
    unmeasured = integration_conclusion("h", design().review_criteria, l0,
                                        LevelResult("L1", True, "PASS", "", l1(None)))
    assert unmeasured["Result"] == "inconclusive"
    assert "val_mse not measured by L1" in unmeasured["Anomalies"]


def test_a_code_conclusion_counts_the_tests():
    tests = LevelResult("tests", True, "3 tests passing", "", {"passed": 3,
                                                              "targets": ["tests/test_a.py"]})
    assert code_conclusion("the model", tests, ["model.py"]) == {
        "Role": "the model", "Result": "implemented",
        "Evidence": "3 tests passing (tests/test_a.py); files: model.py"}


def test_script_of_reads_the_python_file_of_a_command():
    assert script_of("python train.py --steps 3") == "train.py"
    assert script_of("bash run.sh") is None
    assert script_of("python 'unclosed") is None
