"""`parallel:` in both loop protocols: defaults, the dask fields, and the refusal of timing
criteria for ml-iteration candidates that train at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import problem_rows
from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols import iteration
from spml.protocols.autoresearch import load_protocol
from spml.protocols.parallel import ParallelSpec

AUTORESEARCH = """\
---
research_question: Which x minimises the loss?
max_rounds: 8
train_command: python train.py
fixed: {files: [train.py, evaluate.py], time_limit: 60}
variable: {files: [params.yaml]}
eval: {command: python evaluate.py, metric: loss, direction: minimize}
researcher:
  kind: command
  command: my-agent {prompt_file}
PARALLEL
---
"""

ITERATION = """\
---
goal: Lower the validation loss.
train_command: python train.py
fixed: {files: [evaluate.py], time_limit: 90}
eval: {command: python evaluate.py}
researcher:
  kind: command
  command: my-agent {prompt_file}
review_criteria:
  metrics: [{name: val_loss, op: "<=", threshold: 1.5}]
PERFORMANCE
PARALLEL
---
"""


def _write(tmp_path: Path, template: str, parallel: str, performance: str = "") -> Path:
    name = "iteration-protocol.md" if "goal:" in template else "autoresearch-protocol.md"
    path = tmp_path / name
    path.write_text(template.replace("PARALLEL", parallel).replace("PERFORMANCE", performance))
    return path


def test_one_candidate_by_default(tmp_path: Path) -> None:
    protocol = load_protocol(_write(tmp_path, AUTORESEARCH, ""))
    assert protocol.parallel == ParallelSpec()
    assert protocol.parallel.candidates == 1
    assert not protocol.parallel.batched


def test_a_batch_of_four_on_the_local_runner(tmp_path: Path) -> None:
    spec = load_protocol(_write(tmp_path, AUTORESEARCH,
                                "parallel: {candidates: 4, gpus_per_candidate: 2}")).parallel
    assert (spec.candidates, spec.runner, spec.gpus_per_candidate) == (4, "local", 2)
    assert spec.batched


@pytest.mark.parametrize(("parallel", "expected"), [
    ("parallel: {candidates: 0}", "parallel.candidates"),
    ("parallel: {candidates: 65}", "parallel.candidates"),
    ("parallel: {candidates: 2, runner: slurm}", "parallel.runner"),
    ("parallel: {candidates: 2, address: 'tcp://h:8786'}", "runner: dask"),
    ("parallel: {candidates: 2, runner: dask, address: 'tcp://h:8786'}",
     "parallel.git_remote"),
    ("parallel: {candidates: 2, workers: 3}", "parallel.workers"),
    ("parallel: {candidates: 2, runner: dask, gpus_per_candidate: 1}", "--resources GPU"),
])
def test_bad_parallel_sections_name_the_field(tmp_path: Path, parallel: str,
                                              expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        load_protocol(_write(tmp_path, AUTORESEARCH, parallel))
    assert expected in "\n".join(problem_rows(str(info.value)))


def test_dask_with_a_remote_scheduler_and_a_git_remote(tmp_path: Path) -> None:
    spec = load_protocol(_write(tmp_path, AUTORESEARCH, (
        "parallel: {candidates: 8, runner: dask, address: 'tcp://10.0.0.5:8786', "
        "git_remote: 'ssh://git@host/exp.git'}"))).parallel
    assert (spec.runner, spec.address, spec.git_remote) == (
        "dask", "tcp://10.0.0.5:8786", "ssh://git@host/exp.git")


def test_iteration_candidates_refuse_timing_criteria(tmp_path: Path) -> None:
    path = _write(tmp_path, ITERATION, "parallel: {candidates: 4}",
                  "  performance: [{name: train_time_s, op: '<=', threshold: 60}]")
    with pytest.raises(ProtocolError) as info:
        iteration.load_protocol(path)
    [row] = problem_rows(str(info.value))
    assert "parallel" in row
    assert "performance.train_time_s" in row
    assert "Set parallel.candidates to 1, or drop the timing criteria" in row


def test_iteration_candidates_refuse_a_wall_time_under_metrics(tmp_path: Path) -> None:
    path = _write(tmp_path, ITERATION, "parallel: {candidates: 2}").read_text().replace(
        "metrics: [{name: val_loss,", "metrics: [{name: first_step_time_s, op: '<=', "
        "threshold: 9}, {name: val_loss,")
    (tmp_path / "iteration-protocol.md").write_text(path)
    with pytest.raises(ProtocolError, match=r"metrics\.first_step_time_s"):
        iteration.load_protocol(tmp_path / "iteration-protocol.md")


def test_iteration_candidates_without_timing_criteria_load(tmp_path: Path) -> None:
    protocol = iteration.load_protocol(_write(tmp_path, ITERATION, "parallel: {candidates: 4}"))
    assert protocol.parallel.candidates == 4
    # One candidate may keep its timing criteria.
    alone = iteration.load_protocol(_write(
        tmp_path, ITERATION, "", "  performance: [{name: train_time_s, op: '<=', "
        "threshold: 60}]"))
    assert alone.parallel.candidates == 1


def test_the_spec_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        ParallelSpec(candidates="4")  # type: ignore[arg-type]
    spec = ParallelSpec(candidates=2)
    with pytest.raises(ValidationError):
        spec.candidates = 3  # type: ignore[misc]
