"""Current and idiomatic training code the checks must read (issue 10)."""

from __future__ import annotations

from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import analyse

ACCELERATOR = """import torch
from torch import nn
from torch.utils.data import DataLoader

device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
model = nn.Linear(4, 2).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(dataset, batch_size=8, num_workers=2, pin_memory=True)
for x, y in loader:
    {move}
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
"""


def _findings(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int]]:
    path = tmp_path / "train.py"
    path.write_text(text)
    report = analyse([path], ValidateConfig(select=list(ids)))
    return [(f.id, f.line) for f in report.findings]


def test_torch_accelerator_counts_as_gpu_use(tmp_path: Path) -> None:
    # pytorch/examples pick their device with torch.accelerator: a batch never moved is the
    # same bug as with torch.device("cuda").
    bad = _findings(tmp_path, ACCELERATOR.format(move="pass"), "L0-01")
    assert bad == [("L0-01", 12), ("L0-01", 12)]  # model(x) and its target y
    good = ACCELERATOR.format(move="x, y = x.to(device), y.to(device)")
    assert _findings(tmp_path, good, "L0-01") == []
    report = analyse([tmp_path / "train.py"], ValidateConfig(select=["L0-01"]))
    assert report.results[0].status == "PASS"  # applied (CUDA in use), not N/A
