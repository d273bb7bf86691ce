"""L0-04 on idiomatic code (issue 10): nn.Sequential indexing, library models, branches and
conditional weight ties in ``__init__``, a model of one of several classes, and optimizers
the project defines itself."""

from __future__ import annotations

from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import Report, analyse


def _run(tmp_path: Path, files: dict[str, str], ids: tuple[str, ...] = ("L0-04",)) -> Report:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return analyse([tmp_path / "train.py"], ValidateConfig(select=list(ids)))


def _findings(tmp_path: Path, text: str, **modules: str) -> list[tuple[str, int]]:
    report = _run(tmp_path, {"train.py": text, **{f"{k}.py": v for k, v in modules.items()}})
    return [(f.id, f.line) for f in report.findings]


def _messages(tmp_path: Path, text: str, **modules: str) -> list[str]:
    report = _run(tmp_path, {"train.py": text, **{f"{k}.py": v for k, v in modules.items()}})
    return [f.message for f in report.findings]


LOOP = """
for x, y in loader:
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
"""

# ---- nn.Sequential: indexing, slicing, OrderedDict names ---------------------------------
SEQUENTIAL = """import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.SGD({params}, lr=0.1)
""" + LOOP


def test_sequential_index_or_slice_that_misses_layers_is_reported(tmp_path: Path) -> None:
    for params in ("model[4].parameters()", "model[2:].parameters()",
                   "model[-1].parameters()", "model[::2][1:].parameters()"):
        found = _findings(tmp_path, SEQUENTIAL.format(params=params))
        if params.startswith("model[::2]"):
            assert found == [], params  # a slice of a slice: not traced, no guess
        else:
            assert found == [("L0-04", 5)], params
    message = _messages(tmp_path, SEQUENTIAL.format(params="model[2:].parameters()"))
    assert message == ["optimizer misses trainable parameters of `model[0]`"]


def test_sequential_fully_covered_by_indices_or_slices_is_fine(tmp_path: Path) -> None:
    for params in ("model[:].parameters()", "model.parameters()",
                   "[*model[:2].parameters(), *model[2:].parameters()]",
                   "[{'params': model[0].parameters()}, {'params': model[2:].parameters()}]",
                   "model[::2].parameters()",  # the ReLUs hold no parameters
                   "model[9].parameters()"):  # out of range: an IndexError, not our finding
        assert _findings(tmp_path, SEQUENTIAL.format(params=params)) == [], params


def test_sequential_built_from_a_starred_list_is_not_judged(tmp_path: Path) -> None:
    text = SEQUENTIAL.replace("nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), "
                              "nn.ReLU(), nn.Linear(8, 2))", "nn.Sequential(*layers)")
    assert _findings(tmp_path, text.format(params="model[1].parameters()")) == []


ORDERED = """import torch
from collections import OrderedDict
from torch import nn

model = nn.Sequential(OrderedDict([
    ("body", nn.Linear(4, 8)), ("act", nn.ReLU()), ("head", nn.Linear(8, 2))]))
opt = torch.optim.SGD({params}, lr=0.1)
""" + LOOP


def test_sequential_of_an_ordered_dict_is_read_by_name_and_position(tmp_path: Path) -> None:
    for params in ("model.head.parameters()", "model[2].parameters()", "model[1:].parameters()"):
        assert _findings(tmp_path, ORDERED.format(params=params)) == [("L0-04", 7)], params
    assert _messages(tmp_path, ORDERED.format(params="model.head.parameters()")) == [
        "optimizer misses trainable parameters of `model.body`"]
    for params in ("[*model.body.parameters(), *model.head.parameters()]",
                   "[*model[0].parameters(), *model.head.parameters()]"):
        assert _findings(tmp_path, ORDERED.format(params=params)) == [], params


# ---- library models (torchvision, timm, transformers) ------------------------------------
TORCHVISION = """import torch
import torchvision.models as models
from torch import nn

model = models.resnet50(weights="IMAGENET1K_V2")
model.fc = nn.Linear(2048, 10)
{freeze}
optimizer = torch.optim.SGD({params}, lr=0.01, momentum=0.9)
for images, labels in loader:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
"""


def test_head_only_optimizer_of_a_trained_torchvision_model_is_reported(tmp_path: Path) -> None:
    text = TORCHVISION.format(freeze="", params="model.fc.parameters()")
    assert _findings(tmp_path, text) == [("L0-04", 8)]
    assert _messages(tmp_path, text) == [
        "optimizer only gets the head of `model` (torchvision model); the rest trains but is "
        "never updated"]


def test_head_only_optimizer_of_a_frozen_torchvision_model_is_fine(tmp_path: Path) -> None:
    freezes = [
        "for p in model.parameters():\n    p.requires_grad = False\n"
        "for p in model.fc.parameters():\n    p.requires_grad = True",
        "model.requires_grad_(False)\nmodel.fc.requires_grad_(True)",
        "for name, p in model.named_parameters():\n    if not name.startswith('fc'):\n"
        "        p.requires_grad = False",
        "model.layer1.requires_grad_(False)",  # partly frozen: the rest may be frozen too
        "def set_parameter_requires_grad(m):\n    for p in m.parameters():\n"
        "        p.requires_grad = False\nset_parameter_requires_grad(model)",
    ]
    for freeze in freezes:
        text = TORCHVISION.format(freeze=freeze, params="model.fc.parameters()")
        assert _findings(tmp_path, text) == [], freeze


def test_torchvision_model_with_more_than_the_head_is_not_judged(tmp_path: Path) -> None:
    # Which children a library model has is not known: layer4 + fc may be all that trains.
    for params in ("model.parameters()",
                   "[*model.layer4.parameters(), *model.fc.parameters()]",
                   "[{'params': model.fc.parameters(), 'lr': 1e-2},"
                   " {'params': [p for n, p in model.named_parameters() if 'fc' not in n]}]"):
        assert _findings(tmp_path, TORCHVISION.format(freeze="", params=params)) == [], params


def test_linear_probe_on_a_library_backbone_is_fine(tmp_path: Path) -> None:
    # Only the head runs with gradients: the backbone's features come from no_grad.
    text = """import torch
import torchvision
from torch import nn

model = torchvision.models.resnet18()
optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01)
for images, labels in loader:
    with torch.no_grad():
        out = model(images)
    loss = nn.functional.cross_entropy(out, labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""
    assert _findings(tmp_path, text) == []
    piecewise = text.replace("""    with torch.no_grad():
        out = model(images)
""", """    with torch.no_grad():
        feats = features(images)
    out = model.fc(feats)
""")
    assert _findings(tmp_path, piecewise) == []


IMAGENET = """import torch
import torchvision.models as models
from torch import nn


def train(loader, model, criterion, optimizer):
    for images, target in loader:
        output = model(images)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main_worker(args):
    if args.pretrained:
        model = models.__dict__[args.arch](pretrained=True)
    else:
        model = models.__dict__[args.arch]()
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        model = torch.nn.DataParallel(model).cuda()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD({params}, args.lr, momentum=0.9)
    for epoch in range(args.epochs):
        train(loader, model, criterion, optimizer)
"""


def test_imagenet_style_model_through_wrappers_and_a_train_function(tmp_path: Path) -> None:
    # pytorch/examples imagenet: models.__dict__[arch](), DataParallel(model).cuda(), and
    # model(images) in train(), reached through the call site's argument.
    assert _findings(tmp_path, IMAGENET.format(params="model.fc.parameters()")) == [
        ("L0-04", 25)]
    assert _findings(tmp_path, IMAGENET.format(params="model.classifier.parameters()")) == [
        ("L0-04", 25)]
    assert _findings(tmp_path, IMAGENET.format(params="model.parameters()")) == []
    assert _findings(tmp_path, IMAGENET.format(params="model.features.parameters()")) == []


def test_transformers_model_classifier_only_is_reported(tmp_path: Path) -> None:
    text = """import torch
from transformers import AutoModelForSequenceClassification

model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=2e-5)
for batch in loader:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""
    assert _findings(tmp_path, text) == [("L0-04", 5)]
    frozen = text.replace("optimizer = ", "for p in model.bert.parameters():\n"
                          "    p.requires_grad = False\noptimizer = ")
    assert _findings(tmp_path, frozen) == []


# ---- __init__ branches, conditional ties, several candidate classes ----------------------
WORD_LM_MODEL = """import torch.nn as nn


class RNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, tie_weights=False):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(out), hidden


class TransformerModel(nn.Transformer):
    def __init__(self, ntoken, ninp):
        super().__init__(d_model=ninp)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(ninp, ntoken)

    def forward(self, src):
        return self.decoder(self.encoder(self.input_emb(src)))
"""

WORD_LM = """import torch
from torch import nn

from model import RNNModel, TransformerModel

if args.model == 'Transformer':
    model = TransformerModel(ntokens, args.emsize)
else:
    model = RNNModel(args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.tied)
optimizer = torch.optim.AdamW({params}, lr=args.lr)
""" + LOOP.replace("opt.", "optimizer.")


def test_optimizer_missing_parameters_of_every_candidate_class_is_reported(
        tmp_path: Path) -> None:
    text = WORD_LM.format(params="model.decoder.parameters()")
    assert _findings(tmp_path, text, model=WORD_LM_MODEL) == [("L0-04", 10)]
    assert _messages(tmp_path, text, model=WORD_LM_MODEL) == [
        "optimizer misses `model.input_emb` (TransformerModel) or `model.encoder`, `model.rnn` "
        "(RNNModel)"]
    assert _findings(tmp_path, WORD_LM.format(params="model.parameters()"),
                     model=WORD_LM_MODEL) == []


def test_candidate_class_the_optimizer_covers_keeps_it_silent(tmp_path: Path) -> None:
    # Fine for TransformerModel (RNNModel has no input_emb: that run would fail loudly), so
    # the model may be the one the optimizer was written for: no report.
    params = "[*model.input_emb.parameters(), *model.decoder.parameters()]"
    assert _findings(tmp_path, WORD_LM.format(params=params), model=WORD_LM_MODEL) == []


def test_optimizer_inside_the_branch_of_one_class_is_judged_for_that_class(
        tmp_path: Path) -> None:
    text = """import torch
from torch import nn

from model import RNNModel, TransformerModel

if args.model == 'Transformer':
    model = TransformerModel(ntokens, args.emsize)
    optimizer = torch.optim.AdamW([*model.input_emb.parameters(),
                                   *model.decoder.parameters()], lr=args.lr)
else:
    model = RNNModel(args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.tied)
    optimizer = torch.optim.AdamW({params}, lr=args.lr)
""" + LOOP.replace("opt.", "optimizer.")
    rnn_ok = "[*model.encoder.parameters(), *model.rnn.parameters(), *model.decoder.parameters()]"
    assert _findings(tmp_path, text.format(params=rnn_ok), model=WORD_LM_MODEL) == []
    no_rnn = "[*model.encoder.parameters(), *model.decoder.parameters()]"
    assert _messages(tmp_path, text.format(params=no_rnn), model=WORD_LM_MODEL) == [
        "optimizer misses trainable parameters of `model.rnn`"]


SINGLE = """import torch
from torch import nn

from model import Net

model = Net(tie={tie})
optimizer = torch.optim.AdamW({params}, lr=1e-3)
""" + LOOP.replace("opt.", "optimizer.")

TIED = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, tie=False):
        super().__init__()
        self.wte = nn.Embedding(100, 16)
        self.lm_head = nn.Linear(16, 100, bias=False)
        {tie}

    def forward(self, x):
        return self.lm_head(self.wte(x))
"""


def test_weight_tied_under_a_condition_is_not_covered_through_its_partner(
        tmp_path: Path) -> None:
    params = "model.lm_head.parameters()"
    conditional = TIED.format(tie="if tie:\n            self.lm_head.weight = self.wte.weight")
    assert _messages(tmp_path, SINGLE.format(tie=True, params=params), model=conditional) == [
        "optimizer misses trainable parameters of `model.wte`"]
    always = TIED.format(tie="self.lm_head.weight = self.wte.weight")
    assert _findings(tmp_path, SINGLE.format(tie=True, params=params), model=always) == []


def test_tie_made_by_a_method_init_always_calls_counts_as_unconditional(
        tmp_path: Path) -> None:
    params = "model.wte.parameters()"
    method = TIED.format(tie="self.tie_weights()\n\n    def tie_weights(self):\n"
                         "        self.lm_head.weight = self.wte.weight")
    assert _findings(tmp_path, SINGLE.format(tie=True, params=params), model=method) == []
    maybe = TIED.format(tie="if tie:\n            self.tie_weights()\n\n"
                        "    def tie_weights(self):\n"
                        "        self.lm_head.weight = self.wte.weight")
    assert _findings(tmp_path, SINGLE.format(tie=True, params=params), model=maybe) == [
        ("L0-04", 7)]


def test_tied_pair_missed_on_both_sides_is_reported(tmp_path: Path) -> None:
    model = TIED.format(tie="self.lm_head.weight = self.wte.weight\n"
                        "        self.norm = nn.LayerNorm(16)")
    assert _messages(tmp_path, SINGLE.format(tie=True, params="model.norm.parameters()"),
                     model=model) == [
        "optimizer misses trainable parameters of `model.wte`, `model.lm_head`"]


BRANCHES = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, kind, head=True):
        super().__init__()
        try:
            self.body = nn.Linear(4, 4)
        except ValueError:
            raise
        match kind:
            case "gru":
                self.rnn = nn.GRU(4, 4)
            case _:
                self.rnn = nn.LSTM(4, 4)
        for _ in range(0):
            self.never = nn.Linear(4, 4)  # a loop may not run: not counted
        if head:
            self.head = nn.Linear(4, 2)
        else:
            self.head = None

    def forward(self, x):
        return self.head(self.rnn(self.body(x))[0])
"""


def test_attributes_assigned_in_any_branch_of_init_count(tmp_path: Path) -> None:
    text = SINGLE.replace("Net(tie={tie})", "Net('gru')")
    assert _messages(tmp_path, text.format(params="model.head.parameters()"),
                     model=BRANCHES) == [
        "optimizer misses trainable parameters of `model.body`, `model.rnn`"]
    every = "[*model.body.parameters(), *model.rnn.parameters(), *model.head.parameters()]"
    assert _findings(tmp_path, text.format(params=every), model=BRANCHES) == []


# ---- the project's own optimizer classes ---------------------------------------------------
OWN_OPTIM = """import torch


class Muon(torch.optim.Optimizer):
    def __init__(self, param_groups, lr=0.02):
        super().__init__(param_groups, dict(lr=lr))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])


class Tweaked(Muon):
    pass
"""


def test_local_optimizer_subclass_is_an_optimizer(tmp_path: Path) -> None:
    text = """import torch
from torch import nn

from optim import Muon, Tweaked

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = {cls}({params})
""" + LOOP
    for cls in ("Muon", "Tweaked"):
        assert _findings(tmp_path, text.format(cls=cls, params="model[2].parameters()"),
                         optim=OWN_OPTIM) == [("L0-04", 7)], cls
        keyword = text.format(cls=cls, params="param_groups=model[2].parameters()")
        assert _findings(tmp_path, keyword, optim=OWN_OPTIM) == [("L0-04", 7)], cls
        assert _findings(tmp_path, text.format(cls=cls, params="model.parameters()"),
                         optim=OWN_OPTIM) == [], cls
    report = _run(tmp_path, {"train.py": text.format(cls="Muon", params="model.parameters()")})
    assert report.results[0].status == "PASS"  # applies (was N/A: no optimizer built)


def test_local_optimizer_steps_are_seen_by_the_order_checks(tmp_path: Path) -> None:
    text = """import torch
from torch import nn

from optim import Muon

model = nn.Linear(4, 2)
muon = Muon(model.parameters())
for x, y in loader:
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    muon.step()
"""
    # `muon` is no optimizer by its name: only its class says it is one.
    report = _run(tmp_path, {"train.py": text, "optim.py": OWN_OPTIM}, ("L0-27",))
    assert [(f.id, f.line) for f in report.findings] == [("L0-27", 8)]


def test_a_class_that_is_not_an_optimizer_is_not_one(tmp_path: Path) -> None:
    text = """import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler


class Warmup(LRScheduler):
    pass


model = nn.Linear(4, 2)
sched = Warmup(model.weight)
"""
    report = _run(tmp_path, {"train.py": text})
    assert report.results[0].status == "N/A"


# ---- freezing read right: Lightning's freeze(), gc.freeze() -------------------------------
def test_freeze_call_counts_as_freezing_and_gc_freeze_does_not(tmp_path: Path) -> None:
    text = """import gc
import torch
from torch import nn

from model import Net

model = Net('gru')
{freeze}
optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3)
""" + LOOP.replace("opt.", "optimizer.")
    frozen = "model.body.freeze()\nmodel.rnn.freeze()"
    assert _findings(tmp_path, text.format(freeze=frozen), model=BRANCHES) == []
    assert _findings(tmp_path, text.format(freeze="gc.freeze()"), model=BRANCHES) == [
        ("L0-04", 9)]
    unfrozen = "model.body.unfreeze()\nmodel.rnn.unfreeze()"
    assert _findings(tmp_path, text.format(freeze=unfrozen), model=BRANCHES) == [
        ("L0-04", 10)]


def test_lightning_freeze_of_the_whole_model_is_seen_by_frozen_layers(tmp_path: Path) -> None:
    text = """import gc
import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
{freeze}
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
""" + LOOP.replace("opt.", "optimizer.")
    frozen = _run(tmp_path, {"train.py": text.format(freeze="model.freeze()")}, ("L0-13",))
    assert [(f.id, f.line) for f in frozen.findings] == [("L0-13", 6)]
    collected = _run(tmp_path, {"train.py": text.format(freeze="gc.freeze()")}, ("L0-13",))
    assert collected.results[0].status == "N/A"  # gc.freeze() freezes no weights


def test_timm_head_only_optimizer_is_reported(tmp_path: Path) -> None:
    text = """import timm
import torch
from torch import nn

model = timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=10)
optimizer = torch.optim.AdamW({params}, lr=1e-4)
for images, labels in loader:
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""
    assert _findings(tmp_path, text.format(params="model.head.parameters()")) == [("L0-04", 6)]
    # timm's get_classifier() is the head too (the review's accelerate cv_example plant)
    head = text.format(params="model.get_classifier().parameters()")
    assert _findings(tmp_path, head) == [("L0-04", 6)]
    assert _findings(tmp_path, text.format(params="model.parameters()")) == []


def test_param_groups_built_by_appending_are_not_judged(tmp_path: Path) -> None:
    # nanochat's setup_optimizer: dict(...) groups, appended in a loop, for MuonAdamW.
    text = """import torch
from torch import nn

from optim import Muon

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
groups = [dict(kind="adamw", params=list(model[0].parameters()))]
for p in model[2].parameters():
    groups.append(dict(kind="muon", params=[p]))
opt = Muon(groups)
""" + LOOP
    report = _run(tmp_path, {"train.py": text, "optim.py": OWN_OPTIM})
    assert report.results[0].status == "PASS"
    assert report.findings == []
