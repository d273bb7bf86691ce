"""Training code that works through helpers (issue 10): a backward in a closure, losses,
trackers and seeds handed to library or project helpers, and findings placed at the call of
the helper rather than inside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks._base import Finding
from spml.toolkit.checks.engine import Report, analyse
from spml.toolkit.checks.loss_logging import backward_losses
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import Project
from spml.toolkit.checks.report import render_json, render_markdown, render_text
from spml.toolkit.checks.sinks import reached_calls, site_of


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # finding paths (and notes) relative: train.py:9


def _report(tmp_path: Path, text: str, *ids: str, files: dict[str, str] | None = None
            ) -> Report:
    for name, body in (files or {}).items():
        (tmp_path / name).write_text(body)
    path = tmp_path / "train.py"
    path.write_text(text)
    report = analyse([path], ValidateConfig(select=list(ids)))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return report


def _findings(tmp_path: Path, text: str, *ids: str, files: dict[str, str] | None = None
              ) -> list[tuple[str, int]]:
    return [(f.id, f.line) for f in _report(tmp_path, text, *ids, files=files).findings]


def _notes(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int, str]]:
    return [(f.id, f.line, f.note) for f in _report(tmp_path, text, *ids).findings]


# ---- a training loop found through a closure -------------------------------------------------
TIMM_STYLE = """import torch

def train_one_epoch(model, loader, optimizer, loss_fn):
    optimizer.zero_grad()
    for x, y in loader:
        def _forward():
            return loss_fn(model(x), y)

        def _backward(_loss):
            _loss.backward()
            {step}

        loss = _forward()
        _backward(loss)
        {clear}
"""


def test_backward_in_a_closure_of_the_loop_body_makes_a_training_loop(tmp_path: Path) -> None:
    # timm's train_one_epoch: `_backward(loss)` is defined in the loop body and runs backward.
    good = TIMM_STYLE.format(step="optimizer.step()", clear="optimizer.zero_grad()")
    report = _report(tmp_path, good, "L0-27", "L0-32")
    assert report.training_loop
    assert [r.status for r in report.results] == ["PASS", "PASS"]
    # The clearing after the update deleted (the planted timm bug): reported at the loop.
    bad = TIMM_STYLE.format(step="optimizer.step()", clear="pass")
    assert _findings(tmp_path, bad, "L0-27") == [("L0-27", 5)]


def test_step_order_is_read_through_the_closure(tmp_path: Path) -> None:
    # The closure is read where it is called: a step before its backward is L0-32's.
    bad = TIMM_STYLE.format(step="pass", clear="optimizer.zero_grad()").replace(
        "            _loss.backward()\n            pass",
        "            optimizer.step()\n            _loss.backward()")
    assert _findings(tmp_path, bad, "L0-32") == [("L0-32", 10)]


ENCLOSING_DEF = """import torch

def step(loss):
    pass

def train(model, loader, optimizer):
    def step(loss):
        loss.backward()
        optimizer.step()

    for x, y in loader:
        {clear}
        step(model(x).sum())
"""


def test_closure_of_the_enclosing_function_shadows_a_module_function(tmp_path: Path) -> None:
    # `step` resolves to the nested def (as Python does), not to the module-level no-op.
    assert _findings(tmp_path, ENCLOSING_DEF.format(clear="pass"), "L0-27") == [("L0-27", 11)]
    good = ENCLOSING_DEF.format(clear="optimizer.zero_grad()")
    assert _report(tmp_path, good, "L0-27").results[0].status == "PASS"


def test_closure_never_called_is_no_training_loop(tmp_path: Path) -> None:
    uncalled = """import torch

for x in loader:
    def _backward(loss):
        loss.backward()
"""
    assert not _report(tmp_path, uncalled, "L0-27").training_loop


# ---- seeds through library helpers ------------------------------------------------------------
def test_timm_random_seed_seeds_every_rng(tmp_path: Path) -> None:
    for setup in ("from timm import utils\nutils.random_seed(42, 0)",
                  "from timm.utils import random_seed\nrandom_seed(42)"):
        code = f"import random\nimport torch\n{setup}\nrandom.shuffle(files)\n"
        assert _findings(tmp_path, code, "L0-09") == []


def test_project_helper_named_like_a_library_seed_is_judged_by_its_body(tmp_path: Path) -> None:
    # utils.py of the project: a random_seed that seeds nothing is no seeding.
    code = "import torch\nimport utils\nutils.random_seed(42)\n"
    helper = {"utils.py": "def random_seed(seed):\n    return seed\n"}
    assert _findings(tmp_path, code, "L0-09", files=helper) == [("L0-09", 1)]
    seeding = {"utils.py": "import torch\n\ndef random_seed(seed):\n    torch.manual_seed(seed)\n"}
    assert _findings(tmp_path, code, "L0-09", files=seeding) == []


def test_accelerate_set_seed_seeds_every_rng(tmp_path: Path) -> None:
    code = "import random\nimport torch\nfrom accelerate.utils import set_seed\nset_seed(0)\n" \
           "random.shuffle(files)\n"
    assert _findings(tmp_path, code, "L0-09") == []


# ---- losses to trackers and the console -------------------------------------------------------
ACCELERATE = """import torch
from accelerate import Accelerator

acc = Accelerator(log_with="wandb")
acc.init_trackers("run")
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    acc.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    if step % 100 == 0:
        {log}
"""


def test_accelerator_log_and_print_are_found_by_where_the_object_comes_from(
        tmp_path: Path) -> None:
    # `acc`, not `accelerator`: the object is an accelerate.Accelerator whatever its name.
    logged = ACCELERATE.format(log='acc.log({"train_loss": loss.item()}, step=step)')
    assert _findings(tmp_path, logged, "L0-19") == []
    printed = ACCELERATE.format(log='acc.print(f"loss {loss.item():.4f}")')
    assert _findings(tmp_path, printed, "L0-19", "L0-23") == [("L0-19", 12)]  # console only
    bare = ACCELERATE.format(log='acc.print("still training")')
    assert _findings(tmp_path, bare, "L0-23") == [("L0-23", 8)]


TIMM_SUMMARY = """import logging
import torch
import wandb
from collections import OrderedDict
from timm import utils

_logger = logging.getLogger("train")


def _backward(_loss, optimizer):
    _loss.backward()
    optimizer.step()


def train_one_epoch(model, loader, optimizer, losses_m):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = model(x, y)
        _backward(loss, optimizer)
        losses_m.update(loss.item(), x.size(0))
        if i % 50 == 0:
            _logger.info({message})
    return OrderedDict([("loss", losses_m.avg)])


def main(args):
    wandb.init(project="p")
    for epoch in range(10):
        train_metrics = train_one_epoch(model, loader, optimizer, utils.AverageMeter())
        utils.update_summary(epoch, train_metrics, None, filename="summary.csv",
                             log_wandb={log_wandb})
"""


def test_loss_passed_to_a_backward_helper_is_followed_from_the_caller(tmp_path: Path) -> None:
    # The loss reaches backward() as `_loss`; the loop that made it logs and summarises it.
    code = TIMM_SUMMARY.format(message='f"Loss: {losses_m.val:.3f}"', log_wandb="args.wandb")
    assert _findings(tmp_path, code, "L0-19", "L0-23", "L0-24") == []


def test_logger_call_without_the_loss_shows_no_loss(tmp_path: Path) -> None:
    code = TIMM_SUMMARY.format(message='"epoch done"', log_wandb="args.wandb")
    assert _findings(tmp_path, code, "L0-23") == [("L0-23", 11)]


def test_update_summary_logs_to_wandb_only_when_switched_on(tmp_path: Path) -> None:
    code = TIMM_SUMMARY.format(message='"epoch done"', log_wandb="False")
    assert _findings(tmp_path, code, "L0-24") == [("L0-24", 27)]  # wandb.init, never logged
    # without W&B, update_summary still writes summary.csv: the loss is on disk
    assert _findings(tmp_path, code, "L0-19") == []


METRIC_LOGGER = """import torch
from references.utils import MetricLogger

def train_one_epoch(model, optimizer, data_loader):
    metric_logger = MetricLogger(delimiter="  ")
    for image, target in metric_logger.log_every(data_loader, 10, "Epoch"):
        loss = model(image, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        {update}
"""


def test_metric_logger_prints_the_meters_put_in_it(tmp_path: Path) -> None:
    # torchvision references (and DETR, DeiT, MAE): the meter prints itself in log_every.
    code = METRIC_LOGGER.format(update="metric_logger.update(loss=loss.item())")
    assert _findings(tmp_path, code, "L0-23") == []
    assert _findings(tmp_path, code, "L0-19") == [("L0-19", 6)]  # printed only
    unused = METRIC_LOGGER.format(update="metric_logger.update(lr=optimizer.lr)")
    assert _findings(tmp_path, unused, "L0-23") == [("L0-23", 9)]


LOCAL_METRIC_LOGGER = '''import torch


class MetricLogger:
    def __init__(self):
        self.meters = {}

    def update(self, **kwargs):
        self.meters.update(kwargs)

    def __str__(self):
        return "  ".join(f"{k}: {v}" for k, v in self.meters.items())

    def log_every(self, iterable, print_freq):
        for i, obj in enumerate(iterable):
            yield obj
            if i % print_freq == 0:
                print(f"[{i}] {self}")


metric_logger = MetricLogger()
for x, y in metric_logger.log_every(loader, 10):
    loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    metric_logger.update(loss=loss.item())
'''


def test_project_metric_logger_is_read_by_its_body(tmp_path: Path) -> None:
    assert _findings(tmp_path, LOCAL_METRIC_LOGGER, "L0-23") == []
    # printed in log_every: reported at the loop's log_every call, the print as the note
    assert _notes(tmp_path, LOCAL_METRIC_LOGGER, "L0-19") == [
        ("L0-19", 22, "reaches print() in MetricLogger.log_every (train.py:18)")]


# ---- findings at the call of the helper ---------------------------------------------------
PRINT0 = """import os
import torch

rank = int(os.environ.get("RANK", 0))


def print0(s="", **kwargs):
    if rank == 0:
        print(s, **kwargs)


for step, (x, y) in enumerate(loader):
    loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    {gate}print0(f"step {{step}} loss {{loss.item():.4f}}")
"""


def test_loss_printed_by_a_helper_is_reported_at_its_call(tmp_path: Path) -> None:
    code = PRINT0.format(gate="if step % 10 == 0:\n        ")
    assert _notes(tmp_path, code, "L0-19") == [
        ("L0-19", 18, "reaches print() in print0 (train.py:9)")]


def test_every_step_logging_through_a_helper_names_the_helper(tmp_path: Path) -> None:
    assert _notes(tmp_path, PRINT0.format(gate=""), "L0-22") == [
        ("L0-22", 17, "reaches print() in print0 (train.py:9)")]


PROGRESS = """import time
import torch


class ProgressMeter:
    def __init__(self, meters):
        self.meters = meters

    def display(self, batch):
        entries = [str(batch)] + [str(meter) for meter in self.meters]
        print("\\t".join(entries))


def train(loader, model, optimizer, losses, batch_time):
    progress = ProgressMeter([batch_time, losses])
    end = time.time()
    for i, (x, y) in enumerate(loader):
        loss = model(x, y)
        losses.update(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch_time.update(time.time() - end)
        end = time.time()
        if i % 10 == 0:
            progress.display(i + 1)
"""


def test_meters_shown_by_a_display_method_are_reported_at_its_call(tmp_path: Path) -> None:
    # pytorch/examples imagenet: the finding is at `progress.display(i + 1)` in the loop.
    note = "reaches print() in ProgressMeter.display (train.py:11)"
    assert _notes(tmp_path, PROGRESS, "L0-19", "L0-20") == [("L0-19", 26, note),
                                                           ("L0-20", 26, note)]


def test_note_is_carried_in_every_output_format(tmp_path: Path) -> None:
    finding = Finding("a.py", 3, 1, "L0-19", "loss is only printed", note="reaches print()")
    assert finding.as_dict()["note"] == "reaches print()"
    assert finding.text().splitlines()[1] == "  note: reaches print()"
    plain = Finding("a.py", 3, 1, "L0-19", "loss is only printed")
    assert "note" not in plain.as_dict()
    assert "note" not in plain.text()
    report = _report(tmp_path, PRINT0.format(gate="if step % 10 == 0:\n        "), "L0-19")
    assert json.loads(render_json(report))["findings"][0]["note"].startswith("reaches print()")
    assert "  note: reaches print() in print0" in render_text(report)
    assert "(reaches print() in print0 (train.py:9))" in render_markdown(report)


def test_value_returned_by_a_helper_and_printed_by_the_caller_is_reported_at_the_print(
        tmp_path: Path) -> None:
    code = """import torch


def as_float(value):
    return float(value)


for step, (x, y) in enumerate(loader):
    loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    lossf = as_float(loss)
    if step % 10 == 0:
        print(f"loss {lossf:.4f}")
"""
    assert _notes(tmp_path, code, "L0-19") == [("L0-19", 15, "")]
    # Every route to the print places it at the print: also the one into as_float and
    # back out through its return (that one must not be placed at the as_float call).
    (tmp_path / "train.py").write_text(code)
    facts = Facts(Project.load([Path("train.py")]))
    ((source, scope, _, names),) = backward_losses(facts)
    sinks = reached_calls(facts, source, scope, facts.sink_kind, names)
    assert {(site_of(s)[1].lineno, site_of(s)[2]) for s in sinks} == {(15, "")}
