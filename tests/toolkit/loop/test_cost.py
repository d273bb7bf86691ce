"""The cost ledger (`spml.toolkit.loop.cost`): what a researcher reports, what each round and
the loop cost, from a real loop's files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import drive, model_protocol, tiny_experiment

from spml.toolkit.loop.cost import Cost, loop_cost, read_reported, round_cost
from spml.toolkit.loop.summary import render_summary, summarize
from spml.toolkit.profiling.gpuinfo import gpus_held

MODEL = "import time\ndef train():\n    time.sleep(0.3)\n"
TRAIN = "import model\nmodel.train()\n"
REPORTING_RESEARCHER = '''import json, os, pathlib, sys
work = pathlib.Path(os.environ["SPML_WORKDIR"])
(work / "model.py").write_text(pathlib.Path(sys.argv[1]).read_text())
pathlib.Path(os.environ["SPML_COST_FILE"]).write_text(json.dumps({"tokens": 1200, "usd": 0.05}))
'''


def test_a_loop_records_each_rounds_cost_and_the_total(tmp_path):
    (tmp_path / "candidate.py").write_text(MODEL.replace("0.3", "0.2"))
    (tmp_path / "researcher.py").write_text(REPORTING_RESEARCHER)
    protocol = model_protocol(tmp_path, f"{sys.executable} -c \"print('loss=1.0')\"")
    exp = tiny_experiment(tmp_path / "repo", {"train.py": TRAIN, "evaluate.py": "",
                                              "model.py": MODEL}, protocol)
    ledger = drive(exp)
    rounds = exp / ".spml" / "autoresearch" / "rounds"
    first = round_cost(rounds / "0001")
    assert (first.tokens, first.usd) == (1200, pytest.approx(0.05))
    assert first.researcher_s > 0
    assert first.train_s >= 0.2  # the candidate's training sleeps 0.2 s
    total = loop_cost(rounds)
    assert total.train_s >= 0.5  # the baseline's 0.3 s and round 1's 0.2 s
    assert total.tokens == 1200
    assert total.gpu_s == 0.0  # no GPU here (CUDA_VISIBLE_DEVICES unset, no NVML device)
    summary = summarize(ledger, cost=total.render())
    assert "- **Cost:** researcher " in render_summary(summary, ledger)
    assert "1200 tokens, $0.05" in total.render()


@pytest.mark.parametrize(("text", "expected"), [
    ('{"tokens": 10, "usd": 0.5}', {"tokens": 10, "usd": 0.5}),
    ('{"tokens": -1, "usd": "a lot"}', {}), ('{"tokens": true}', {}), ("[1]", {}),
    ("not json", {}), ('{"usd": Infinity}', {}), ("", {})])
def test_what_a_researcher_reports_is_checked(tmp_path, text, expected):
    path = tmp_path / "cost.json"
    path.write_text(text)
    assert read_reported(path) == expected


def test_costs_add_up_and_unreported_stays_unreported():
    total = Cost(researcher_s=1, train_s=2) + Cost(train_s=3, tokens=5)
    assert (total.researcher_s, total.train_s, total.tokens, total.usd) == (1, 5, 5, None)
    assert "$" not in total.render()


def test_gpus_held_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert gpus_held() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus_held() == 0


def test_a_cost_file_that_is_a_link_is_ignored(tmp_path):
    (tmp_path / "real.json").write_text(json.dumps({"tokens": 9}))
    (tmp_path / "cost.json").symlink_to(tmp_path / "real.json")
    assert read_reported(Path(tmp_path / "cost.json")) == {}
