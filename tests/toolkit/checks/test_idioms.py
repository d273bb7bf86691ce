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


GAN = """import torch
from torch import nn, optim

netD, netG = nn.Linear(4, 1), nn.Linear(2, 4)
optimizerD = optim.Adam(netD.parameters(), lr=2e-4)
optimizerG = optim.Adam(netG.parameters(), lr=2e-4)
for real in loader:
    netD.zero_grad()
    errD = netD(real).mean() - netD(netG(noise).detach()).mean()
    errD.backward()
    optimizerD.step()
    {clear_g}
    errG = -netD(netG(noise)).mean()
    errG.backward()
    optimizerG.step()
"""


def test_zero_grad_is_checked_per_optimizer(tmp_path: Path) -> None:
    # DCGAN with netG.zero_grad() deleted: netD's clearing does not clear the generator.
    assert _findings(tmp_path, GAN.format(clear_g="pass"), "L0-27") == [("L0-27", 15)]
    for clear in ("netG.zero_grad()", "optimizerG.zero_grad()"):
        assert _findings(tmp_path, GAN.format(clear_g=clear), "L0-27") == []
