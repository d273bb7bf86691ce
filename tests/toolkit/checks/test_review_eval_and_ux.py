"""Review of L0 on public code (issue 10, second pass): L0-28 decides "evaluation" by what the
code does, not by the function's name; excluded modules read through an import are not
reported on; duplicate findings at one place are merged; an unparsable imported module is
an L0-00 finding. Each false positive is cut down to a few lines, next to the real defect
that must still be reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks._base import Finding
from spml.toolkit.checks.engine import analyse, merge_duplicates, validate_static
from spml.toolkit.checks.report import finding_text, render_json, render_text


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def findings(root: Path, target: str, *ids: str, **config) -> list[tuple[str, str, int]]:
    report = analyse([root / target], ValidateConfig(select=list(ids), **config))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return [(f.id, Path(f.path).name, f.line) for f in report.findings]


HEAD = """import contextlib
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader
device = torch.device("cuda")

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Dropout(0.1))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.body(x))

train_loader = DataLoader([], batch_size=8)
val_loader = DataLoader([], batch_size=8)
"""
TRAIN = """
model = Net().to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for epoch in range(3):
    model.train()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    {after}
"""


def _script(tmp_path: Path, middle: str, after: str = "pass") -> list[tuple[str, str, int]]:
    write(tmp_path, "train.py", HEAD + middle + TRAIN.format(after=after))
    return findings(tmp_path, "train.py", "L0-28", "L0-29")


# ---- L0-28: a shape smoke test of a freshly built model is no evaluation ------------------
SHAPE_TEST = """
def test():
    net = Net()
    y = net(torch.randn(2, 16))
    print(y.size())
"""


def test_shape_check_of_a_model_built_in_the_function_is_not_evaluation(tmp_path) -> None:
    # kuangliu/pytorch-cifar: every models/*.py ends with this; 17 false criticals there.
    assert _script(tmp_path, SHAPE_TEST) == []
    moved = SHAPE_TEST.replace("net = Net()", "net = Net().to(device)")
    assert _script(tmp_path, moved) == []


def test_evaluating_the_trained_model_or_loaded_weights_is_still_reported(tmp_path) -> None:
    trained = "\ndef test():\n    y = model(torch.randn(2, 16))\n    print(y.size())\n"
    assert ("L0-28", "train.py", 18) in _script(tmp_path, trained)
    loaded = SHAPE_TEST.replace("    y = net(", "    net.load_state_dict(torch.load('c.pt'))\n"
                                               "    y = net(")
    assert ("L0-28", "train.py", 18) in _script(tmp_path, loaded)


def test_a_models_package_shape_test_is_silent_and_its_real_evaluation_is_not(
        tmp_path: Path) -> None:
    write(tmp_path, "models/__init__.py", "from .resnet import *\n")
    write(tmp_path, "models/resnet.py", HEAD + SHAPE_TEST)
    write(tmp_path, "main.py", "from models import *\n" + TRAIN.format(after="pass"))
    assert findings(tmp_path, "main.py", "L0-28") == []


# ---- L0-28: a tokenizer is no model --------------------------------------------------------
def test_a_function_calling_only_a_tokenizer_is_not_evaluation(tmp_path: Path) -> None:
    tokenizer = """
from transformers import AutoTokenizer

def eval_tokenizer(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model_inputs = tokenizer("hello world")
    print(tokenizer.decode(model_inputs["input_ids"]))
"""
    assert _script(tmp_path, tokenizer) == []
    # The same function running the model is evaluation.
    both = tokenizer.replace("    print(", "    model(torch.tensor(model_inputs['input_ids']))\n"
                                          "    print(")
    assert [f[0] for f in _script(tmp_path, both)] == ["L0-28", "L0-29"]


def test_a_tokenizer_is_not_a_mode_dependent_layer(tmp_path: Path) -> None:
    write(tmp_path, "train.py", """import torch, torch.nn as nn
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained("gpt2")
model = nn.Linear(4, 4).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x in range(3):
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()

def evaluate():
    return model(torch.randn(2, 4))
""")
    report = analyse([tmp_path / "train.py"], ValidateConfig(select=["L0-28"]))
    (result,) = report.results
    assert result.status == "PASS"
    assert "no active dropout or batch-norm" in result.reason


# ---- L0-28: a function whose output is backpropagated is training -------------------------
RL = """import torch, torch.nn as nn


class ActorCriticPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp_extractor = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.BatchNorm1d(64))
        self.action_net = nn.Linear(64, 4)
        self.value_net = nn.Linear(64, 1)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=3e-4)

    def forward(self, obs):
        return self.value_net(self.mlp_extractor(obs))

    def evaluate_actions(self, obs, actions):
        latent = self.mlp_extractor(obs)
        dist = torch.distributions.Categorical(logits=self.action_net(latent))
        return self.value_net(latent), dist.log_prob(actions), dist.entropy()


class PPO:
    def __init__(self):
        self.policy = ActorCriticPolicy().to("cuda")

    def train(self, rollout_buffer):
        self.policy.train()
        for epoch in range(10):
            for data in rollout_buffer.get(64):
                values, log_prob, entropy = self.policy.evaluate_actions(data.obs, data.actions)
                loss = -(log_prob * data.advantages).mean() + (values - data.returns).pow(2).mean()
                self.policy.optimizer.zero_grad()
                loss.backward()
                self.policy.optimizer.step()
{extra}"""


def test_an_evaluate_function_feeding_the_loss_is_training(tmp_path: Path) -> None:
    # stable-baselines3 evaluate_actions(): PPO's training forward; model.eval() there would
    # change training.
    write(tmp_path, "ppo.py", RL.format(extra=""))
    assert findings(tmp_path, "ppo.py", "L0-28", "L0-29") == []


def test_an_evaluate_function_whose_result_is_only_logged_is_evaluation(tmp_path) -> None:
    extra = """

def evaluate(policy_net, rollout_buffer):
    for data in rollout_buffer.get(64):
        print(policy_net.evaluate_actions(data.obs, data.actions)[0].mean().item())
        print(policy_net(data.obs).mean().item())
"""
    write(tmp_path, "ppo.py", RL.format(extra=extra))
    assert findings(tmp_path, "ppo.py", "L0-28") == [("L0-28", "ppo.py", 36)]


# ---- L0-28: eval mode through a context manager --------------------------------------------
CONTEXT = """
@contextlib.contextmanager
def eval_mode(net):
    was = net.training
    {switch}
    try:
        yield
    finally:
        net.train(was)

def evaluate():
    with eval_mode(model), torch.no_grad():
        return sum(F.cross_entropy(model(x.to(device)), y.to(device)).item()
                   for x, y in val_loader)
"""


@pytest.mark.parametrize("switch", ["net.eval()", "net.train(False)"])
def test_eval_mode_switched_by_a_context_manager_is_recognised(tmp_path, switch) -> None:
    # The helper switches back on exit: no "stays in eval mode" either.
    assert _script(tmp_path, CONTEXT.format(switch=switch), after="evaluate()") == []


def test_a_context_manager_that_never_switches_mode_is_still_reported(tmp_path) -> None:
    found = _script(tmp_path, CONTEXT.format(switch="pass"), after="evaluate()")
    assert [f[0] for f in found] == ["L0-28"]


def test_evaluation_called_inside_the_eval_context_is_recognised(tmp_path) -> None:
    caller = CONTEXT.replace("with eval_mode(model), torch.no_grad():",
                             "with torch.no_grad():").format(switch="net.eval()")
    caller += "\ndef run():\n    with eval_mode(model):\n        return evaluate()\n"
    assert _script(tmp_path, caller, after="run()") == []


# ---- --exclude / config exclude: no finding in an excluded imported module ----------------
def _excluded_project(tmp_path: Path) -> Path:
    write(tmp_path, "models/__init__.py", "from .resnet import *\nfrom .data import *\n")
    write(tmp_path, "models/resnet.py", HEAD + """
def evaluate(net, loader):
    with torch.no_grad():
        return [net(x) for x, _ in loader]
""")
    write(tmp_path, "models/data.py", "from torch.utils.data import DataLoader\n"
                                      "extra = DataLoader([], num_workers=0)\n")
    write(tmp_path, "main.py", "from models import *\n" + TRAIN.format(
        after="evaluate(model, val_loader)"))
    return tmp_path


def test_findings_in_an_imported_module_are_reported_without_exclude(tmp_path) -> None:
    root = _excluded_project(tmp_path)
    found = {(f.id, Path(f.path).name) for f in validate_static([root]).findings}
    assert {("L0-28", "resnet.py"), ("L0-06", "data.py")} <= found


@pytest.mark.parametrize("glob", ["models/*", "models/", "models", "resnet.py"])
def test_exclude_drops_findings_in_an_excluded_module_reached_by_import(tmp_path, glob) -> None:
    root = _excluded_project(tmp_path)
    report = validate_static([root], exclude=[glob])
    assert not report.errors
    paths = {Path(f.path).name for f in report.findings}
    assert "resnet.py" not in paths
    assert report.context_files >= 1  # still read: Net and evaluate() resolve
    assert all(not Path(f).match("models/resnet.py") for f in report.files)
    # Named as a single file, too: the glob is matched relative to the analysed root.
    single = validate_static([root / "main.py"], exclude=[glob])
    assert "resnet.py" not in {Path(f.path).name for f in single.findings}


def test_config_exclude_drops_findings_in_an_imported_module(tmp_path: Path) -> None:
    root = _excluded_project(tmp_path)
    write(root, "pyproject.toml", '[tool.spml.validate]\nexclude = ["models/"]\n')
    report = validate_static([root])
    assert {Path(f.path).parent.name for f in report.findings} == {root.name}
    assert any(f.id == "L0-28" for f in validate_static(
        [root], config_file=write(root, "other.toml", "")).findings)


# ---- one finding per defect and place ------------------------------------------------------
PROGRESS = """import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from utils import progress_bar

device = "cuda"
net = nn.Linear(4, 2).to(device)
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
loader = DataLoader([], batch_size=128)
for epoch in range(10):
    for batch_idx, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = criterion(net(inputs), targets)
        loss.backward()
        optimizer.step()
        progress_bar(batch_idx, len(loader), 'Loss: %.3f' % (loss.item()))
"""
BAR = """import sys


def progress_bar(current, total, msg=None):
    sys.stdout.write(' [')
    for i in range(10):
        sys.stdout.write('=')
    print('x')
    print('y')
    if msg:
        print(msg)
    sys.stdout.flush()
"""


def test_a_helper_with_many_prints_is_one_finding_at_its_call(tmp_path: Path) -> None:
    write(tmp_path, "main.py", PROGRESS)
    write(tmp_path, "utils.py", BAR)
    report = analyse([tmp_path / "main.py"], ValidateConfig(select=["L0-22"]))
    (finding,) = report.findings
    assert (Path(finding.path).name, finding.line) == ("main.py", 18)
    assert "print() in progress_bar (" in finding.note
    assert "utils.py:8, 9)" in finding.note  # two prints, one finding
    assert "utils.py:5, 7)" in finding.note
    # Two ungated calls on two lines are two places: both reported.
    write(tmp_path, "main.py", PROGRESS + "        progress_bar(0, 1)\n")
    lines = [f.line for f in analyse([tmp_path / "main.py"],
                                     ValidateConfig(select=["L0-22"])).findings]
    assert lines == [18, 19]


def test_merge_keeps_distinct_defects_on_one_line() -> None:
    def make(message: str, note: str = "", col: int = 5) -> Finding:
        return Finding("t.py", 3, col, "L0-01", message, "critical", "fix", note)

    merged = merge_duplicates([make("batch `x` is never moved"),
                               make("batch `y` is never moved"),
                               make("batch `x` is never moved", col=9)])
    assert [(f.message, f.col) for f in merged] == [("batch `x` is never moved", 5),
                                                    ("batch `y` is never moved", 5)]
    notes = ["reaches print() in bar (u.py:12)", "reaches print() in bar (u.py:3)", "other"]
    (one,) = merge_duplicates([make("m", n) for n in [*notes, "other", ""]])
    assert one.note == "other; reaches print() in bar (u.py:3, 12)"
    (many,) = merge_duplicates([make("m", n) for n in ["a", "b", "c", "d", "e"]])
    assert many.note == "a; b; c; and 2 more"


# ---- the severity on each finding line (text output) --------------------------------------
def test_text_finding_lines_carry_the_severity_and_json_keeps_its_fields(tmp_path) -> None:
    write(tmp_path, "train.py", "from torch.utils.data import DataLoader\n"
                                "loader = DataLoader(ds, num_workers=0)\n")
    report = analyse([tmp_path / "train.py"], ValidateConfig(select=["L0-06"], profile="spml"))
    (finding,) = report.findings
    text = render_text(report, summary=False)
    assert text.startswith(f"{finding.path}:2:10 L0-06 [critical] DataLoader loads")
    assert finding_text(finding).splitlines()[1:] == finding.text().splitlines()[1:]
    default = analyse([tmp_path / "train.py"], ValidateConfig(select=["L0-06"]))
    assert " L0-06 [warning] " in render_text(default, summary=False)
    import json

    (data,) = json.loads(render_json(report))["findings"]
    assert set(data) == {"id", "severity", "path", "line", "col", "message", "fix"}
    assert data["message"].startswith("DataLoader loads")


# ---- an unparsable module reached only by import ------------------------------------------
def test_an_unparsable_imported_module_is_an_l0_00_finding(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "import helpers\nfrom pkg import old\nx = helpers.y\n")
    write(tmp_path, "helpers.py", "print 'py2'\n")
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/old.py", "def f(:\n")
    report = analyse([tmp_path / "train.py"], ValidateConfig(select=["L0-00"]))
    got = [(Path(f.path).name, f.line, f.severity) for f in report.findings]
    assert got == [("helpers.py", 1, "warning"), ("old.py", 1, "warning")]
    assert all("imported by" in f.message and "train.py" in f.message
               for f in report.findings)
    assert report.critical == 0
    skipped = validate_static([tmp_path / "train.py"], select=["L0-00"], exclude=["helpers.py"])
    assert [Path(f.path).name for f in skipped.findings] == ["old.py"]


def test_exclude_by_folder_name_covers_a_nested_imported_module(tmp_path: Path) -> None:
    write(tmp_path, "src/vendor/__init__.py", "")
    write(tmp_path, "src/vendor/data.py", "from torch.utils.data import DataLoader\n"
                                          "extra = DataLoader([], num_workers=0)\n")
    write(tmp_path, "src/train.py", "from vendor.data import extra\nprint(extra)\n")
    assert [f.id for f in validate_static([tmp_path / "src" / "train.py"],
                                          select=["L0-06"]).findings] == ["L0-06"]
    assert validate_static([tmp_path / "src" / "train.py"], select=["L0-06"],
                           exclude=["vendor"]).findings == []
