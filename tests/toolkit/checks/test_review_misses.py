"""Misses from the adversarial review of L0 on public code (issue 10, round 2), cut down to a
few lines each: training loops found where the backward is reached indirectly, optimizers and
schedulers followed through ``accelerator.prepare``, head-only optimizers seen through a slice
or a re-wrap. Each planted bug is reported as critical at its line; the correct version stays
silent."""

from __future__ import annotations

from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import analyse
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import Project

ORDER = ("L0-27", "L0-32")


def _run(tmp_path: Path, files: dict[str, str], *ids: str):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    report = analyse([tmp_path], ValidateConfig(select=list(ids)))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return report


def _criticals(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int]]:
    report = _run(tmp_path, {"train.py": text}, *ids)
    assert report.training_loop, "no training loop found"
    return [(f.id, f.line) for f in report.findings if f.severity == "critical"]


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# ---- training loops: backward two calls below the loop ------------------------------------
DEEP = """import torch
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

def forward_backward(batch):
    loss = model(batch).pow(2).mean()
    loss.backward()

def train_step(batch):
    {clear}
    forward_backward(batch)
    opt.step()

for batch in [torch.randn(16, 8)]:
    train_step(batch)
"""


def test_backward_two_calls_below_the_loop_is_a_training_loop(tmp_path: Path) -> None:
    text = DEEP.format(clear="pass")
    assert _criticals(tmp_path, text, *ORDER) == [("L0-27", _line(text, "for batch in"))]
    assert _criticals(tmp_path, DEEP.format(clear="opt.zero_grad()"), *ORDER) == []


def test_backward_three_calls_below_the_loop_is_followed(tmp_path: Path) -> None:
    text = DEEP.replace("def train_step(batch):", "def inner_step(batch):").replace(
        "for batch in", "def train_step(batch):\n    inner_step(batch)\n\nfor batch in")
    assert _criticals(tmp_path, text.format(clear="pass"), *ORDER) == [
        ("L0-27", _line(text, "for batch in"))]
    assert _criticals(tmp_path, text.format(clear="opt.zero_grad()"), *ORDER) == []


# ---- training loops: two files defining the same class name -------------------------------
TRAINER = """import torch
import torch.nn.functional as F


class Trainer:
    def __init__(self, model, train_data, optimizer):
        self.model = model
        self.train_data = train_data
        self.optimizer = optimizer

    def _run_batch(self, source, targets):
        {first}
        loss = F.cross_entropy(self.model(source), targets)
        loss.backward()
        {last}

    def _run_epoch(self, epoch):
        for source, targets in self.train_data:
            self._run_batch(source, targets)


def main():
    model = torch.nn.Linear(20, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    Trainer(model, [], optimizer)._run_epoch(0)
"""


def test_same_class_name_in_two_files_resolves_per_file(tmp_path: Path) -> None:
    text = TRAINER.format(first="self.optimizer.step()", last="pass")
    report = _run(tmp_path, {"train_a.py": text, "train_b.py": text}, *ORDER)
    assert report.training_loop
    found = sorted((f.id, Path(f.path).name, f.line) for f in report.findings
                   if f.severity == "critical")
    step, loop = _line(text, "self.optimizer.step()"), _line(text, "for source, targets")
    assert found == sorted((i, name, line) for name in ("train_a.py", "train_b.py")
                           for i, line in (("L0-27", loop), ("L0-32", step)))


def test_same_class_name_in_two_files_correct_stays_silent(tmp_path: Path) -> None:
    text = TRAINER.format(first="self.optimizer.zero_grad()", last="self.optimizer.step()")
    report = _run(tmp_path, {"train_a.py": text, "train_b.py": text}, *ORDER)
    assert report.training_loop
    assert report.findings == []


# ---- training loops: a closure at module level ----------------------------------------------
MODULE_CLOSURE = """import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader
model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.1), nn.Linear(32, 4))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
loader = DataLoader([], batch_size=8)
for x, y in loader:
    {first}
    loss = F.cross_entropy(model(x), y)

    def _backward(_loss):
        _loss.backward()

    {middle}
    _backward(loss)
    {last}
"""


def test_module_level_closure_loop_is_checked(tmp_path: Path) -> None:
    text = MODULE_CLOSURE.format(first="pass", middle="optimizer.step()", last="pass")
    assert _criticals(tmp_path, text, *ORDER) == [
        ("L0-27", _line(text, "for x, y in")), ("L0-32", _line(text, "optimizer.step()"))]


def test_module_level_closure_correct_stays_silent(tmp_path: Path) -> None:
    text = MODULE_CLOSURE.format(first="optimizer.zero_grad()", middle="pass",
                                 last="optimizer.step()")
    assert _criticals(tmp_path, text, *ORDER) == []


# ---- training loops: LBFGS optimizer.step(closure) -------------------------------------------
LBFGS = """import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader
model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.1), nn.Linear(32, 4))
train_loader = DataLoader([], batch_size=8)
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.8)
for x, y in train_loader:
    def closure():
        {clear}
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    optimizer.step(closure)
"""


def test_lbfgs_closure_loop_is_checked(tmp_path: Path) -> None:
    text = LBFGS.format(clear="pass")
    assert _criticals(tmp_path, text, *ORDER) == [("L0-27", _line(text, "for x, y in"))]


def test_lbfgs_closure_that_clears_stays_silent(tmp_path: Path) -> None:
    report = _run(tmp_path, {"train.py": LBFGS.format(clear="optimizer.zero_grad()")},
                  *ORDER)
    assert report.training_loop
    assert report.findings == []


# ---- training loops: a NativeScaler-style class's __call__ runs backward -------------------
SCALER = """import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader


class NativeScalerWithGradNormCount:
    def __init__(self):
        self._scaler = torch.cuda.amp.GradScaler()

    def __call__(self, loss, optimizer, clip_grad=None, parameters=None, update_grad=True):
        self._scaler.scale(loss).backward()
        if update_grad:
            self._scaler.unscale_(optimizer)
            self._scaler.step(optimizer)
            self._scaler.update()


model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.1), nn.Linear(32, 4)).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
loss_scaler = NativeScalerWithGradNormCount()
train_loader = DataLoader([], batch_size=8)
for i, (x, y) in enumerate(train_loader):
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y) / 2
    loss_scaler(loss, optimizer, parameters=model.parameters(), update_grad=(i + 1) % 2 == 0)
    if (i + 1) % 2 == 0:
        {clear}
"""


def test_scaler_class_call_loop_is_checked(tmp_path: Path) -> None:
    text = SCALER.format(clear="pass")
    assert _criticals(tmp_path, text, *ORDER) == [("L0-27", _line(text, "for i, (x, y)"))]


def test_scaler_class_call_that_clears_stays_silent(tmp_path: Path) -> None:
    assert _criticals(tmp_path, SCALER.format(clear="optimizer.zero_grad()"), *ORDER) == []


# ---- training loops: a micro-batch loop in a helper is not THE training loop ---------------
MICRO = """import torch


class TrainLoop:
    def __init__(self, model, data, microbatch):
        self.model = model
        self.data = data
        self.microbatch = microbatch
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def run_loop(self):
        while True:
            batch = next(self.data)
            self.run_step(batch)

    def run_step(self, batch):
        self.forward_backward(batch)
        self.opt.step()

    def forward_backward(self, batch):
        {clear}
        for i in range(0, batch.shape[0], self.microbatch):
            loss = self.model(batch[i : i + self.microbatch]).pow(2).mean()
            loss.backward()
"""


def test_micro_batch_helper_step_loop_is_the_callers(tmp_path: Path) -> None:
    text = MICRO.format(clear="pass")
    assert _criticals(tmp_path, text, *ORDER) == [("L0-27", _line(text, "while True"))]


def test_micro_batch_helper_that_clears_stays_silent(tmp_path: Path) -> None:
    assert _criticals(tmp_path, MICRO.format(clear="self.opt.zero_grad()"), *ORDER) == []


MANUAL_SGD = """import torch


def train(model, data, lr):
    for x in data:
        model.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)


def main(model, data):
    for epoch in range(10):
        train(model, data, 0.1)
"""


def test_a_loop_around_a_function_that_trains_without_optimizer_is_no_step_loop(
        tmp_path: Path) -> None:
    # word_lm: the function's own loop is the training loop; the epoch loop steps nothing.
    (tmp_path / "train.py").write_text(MANUAL_SGD)
    facts = Facts(Project.load([tmp_path / "train.py"]))
    assert [lp.loop.lineno for lp in facts.training_loops] == [_line(MANUAL_SGD, "for x in")]


# ---- L0-27: a project's optimizer whose step() clears the gradients ------------------------
OWN_STEP = """import torch


class NorMuonAndAdam:
    def __init__(self, params):
        self.params = list(params)

    @torch.no_grad()
    def step(self):
        for p in self.params:
            p.add_(p.grad, alpha=-0.01)
            {clear}


class Manager:
    def __init__(self, model):
        self.optimizer = NorMuonAndAdam(model.parameters())

    def step_optimizers(self):
        self.optimizer.step()


model = torch.nn.Linear(4, 4)
manager = Manager(model)
for x in []:
    model(x).sum().backward()
    manager.step_optimizers()
"""


def test_own_optimizer_step_that_clears_is_a_clearing(tmp_path: Path) -> None:
    assert _criticals(tmp_path, OWN_STEP.format(clear="p.grad = None"), *ORDER) == []
    text = OWN_STEP.format(clear="pass")
    assert _criticals(tmp_path, text, *ORDER) == [("L0-27", _line(text, "for x in"))]


# ---- L0-05: followed through accelerator.prepare ---------------------------------------------
PREPARE = """import torch
from accelerate import Accelerator
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader
accelerator = Accelerator()
model = torch.nn.Linear(8, 2)
optimizer = torch.optim.Adam(params=model.parameters(), lr=1e-3)
other = torch.optim.Adam(params=model.parameters(), lr=1e-3)
lr_scheduler = OneCycleLR(optimizer={bound}, max_lr=1e-3, epochs=1, steps_per_epoch=10)
loader = DataLoader([])
model, optimizer, loader, lr_scheduler = accelerator.prepare(
    model, optimizer, loader, lr_scheduler)
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    accelerator.backward(loss)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad()
"""


def test_scheduler_on_another_optimizer_through_prepare(tmp_path: Path) -> None:
    text = PREPARE.format(bound="other")
    assert _criticals(tmp_path, text, "L0-05") == [("L0-05", _line(text, "OneCycleLR(opt"))]
    assert _criticals(tmp_path, PREPARE.format(bound="optimizer"), "L0-05") == []


# ---- L0-04: head-only optimizers through a slice, a re-wrap, get_classifier() --------------
ATTR_SLICE = """import torch, torch.nn as nn

class QNetwork(nn.Module):
    def __init__(self, n_obs, n_act):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(n_obs, 120), nn.ReLU(), nn.Linear(120, 84),
                                     nn.ReLU(), nn.Linear(84, n_act))

    def forward(self, x):
        return self.network(x)

q_network = QNetwork(4, 2)
optimizer = torch.optim.Adam({params}, lr=1e-3)
for x, y in []:
    loss = nn.functional.mse_loss(q_network(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def test_slice_of_a_sequential_attribute(tmp_path: Path) -> None:
    text = ATTR_SLICE.format(params="q_network.network[:-1].parameters()")
    assert _criticals(tmp_path, text, "L0-04") == [("L0-04", _line(text, "optimizer ="))]
    report = _run(tmp_path, {"train.py": text}, "L0-04")
    assert "`q_network.network[4]`" in report.findings[0].message
    for params in ("q_network.network[:].parameters()", "q_network.network.parameters()",
                   "q_network.parameters()", "q_network.network[::2].parameters()"):
        assert _criticals(tmp_path, ATTR_SLICE.format(params=params), "L0-04") == [], params


REWRAP = """import torch, torch.nn as nn, torchvision

class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = torchvision.models.resnet18(weights=None)
        self.resnet = torch.nn.Sequential(*(list(self.resnet.children())[:-1]))
        self.fc = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, a, b):
        return self.fc(torch.cat([self.resnet(a), self.resnet(b)], 1))

model = Siamese()
optimizer = torch.optim.Adadelta({params}, lr=1.0)
for a, b, y in []:
    optimizer.zero_grad()
    loss = nn.functional.binary_cross_entropy_with_logits(model(a, b).squeeze(), y)
    loss.backward()
    optimizer.step()
"""


def test_children_rewrap_is_a_submodule_with_parameters(tmp_path: Path) -> None:
    text = REWRAP.format(params="model.fc.parameters()")
    assert _criticals(tmp_path, text, "L0-04") == [("L0-04", _line(text, "optimizer ="))]
    assert _criticals(tmp_path, REWRAP.format(params="model.parameters()"), "L0-04") == []


GET_CLASSIFIER = """import torch, timm
model = timm.create_model("resnet50d", pretrained=True, num_classes=10)
{freeze}
optimizer = torch.optim.Adam(params=model.get_classifier().parameters(), lr=1e-3)
model.train()
for x, y in []:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_timm_get_classifier_is_the_head(tmp_path: Path) -> None:
    text = GET_CLASSIFIER.format(freeze="")
    assert _criticals(tmp_path, text, "L0-04") == [("L0-04", _line(text, "optimizer ="))]
    # Accelerate's cv_example: the base model frozen, only the classifier trained.
    frozen = GET_CLASSIFIER.format(freeze="for p in model.parameters():\n"
                                          "    p.requires_grad = False")
    assert _criticals(tmp_path, frozen, "L0-04") == []
    whole = GET_CLASSIFIER.format(freeze="").replace("model.get_classifier().parameters()",
                                                     "model.parameters()")
    assert _criticals(tmp_path, whole, "L0-04") == []


def test_get_classifier_of_an_own_class_is_not_judged(tmp_path: Path) -> None:
    text = """import torch, torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.classifier = nn.Linear(4, 2)

    def get_classifier(self):
        return self.classifier

model = Net()
optimizer = torch.optim.Adam(model.get_classifier().parameters(), lr=1e-3)
for x, y in []:
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
"""
    assert _criticals(tmp_path, text, "L0-04") == []


SAC = """import torch
from torch import nn, optim

actor = nn.Linear(4, 2)
actor_optimizer = optim.Adam({params}, lr=3e-4)
log_alpha = torch.zeros(1, requires_grad=True)
a_optimizer = optim.Adam([log_alpha], lr=1e-3)
for step in range(1000):
    actor_loss = actor(obs).mean()
    actor_loss.backward()
    actor_optimizer.step()
    alpha_loss = log_alpha.exp().mean()
    a_optimizer.zero_grad()
    alpha_loss.backward()
    a_optimizer.step()
"""


def test_an_optimizer_built_from_a_list_of_parameters_is_checked_on_its_own(
        tmp_path: Path) -> None:
    # cleanrl SAC/TD3/DDPG: Adam(list(actor.parameters())); another optimizer's zero_grad in
    # the loop must not stand in for the actor's.
    for n, params in enumerate(("list(actor.parameters())", "tuple(actor.parameters())",
                                "actor.parameters()")):
        (folder := tmp_path / str(n)).mkdir()
        found = _criticals(folder, SAC.format(params=params), "L0-27")
        assert [check for check, _ in found] == ["L0-27"], params
    fixed = SAC.format(params="list(actor.parameters())").replace(
        "    actor_loss.backward()", "    actor_optimizer.zero_grad()\n    actor_loss.backward()")
    (folder := tmp_path / "fixed").mkdir()
    assert _criticals(folder, fixed, "L0-27") == []
