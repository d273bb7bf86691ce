"""Planted bugs in real code that L0 used to miss (issue 10), cut down to a few lines each:
the bug is reported, and the legitimate idioms around it stay silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import analyse


def _findings(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int]]:
    path = tmp_path / "train.py"
    path.write_text(text)
    report = analyse([path], ValidateConfig(select=list(ids)))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return [(f.id, f.line) for f in report.findings]


# ---- L0-01: a library model (class unknown) moved to the device ---------------------------
IMAGENET = """import torch
import torch.nn as nn
import torchvision.models as models
from torch.utils.data import DataLoader

device = torch.device("cuda")
model = models.__dict__[arch]()
{wrap}
criterion = nn.CrossEntropyLoss().to(device)
optimizer = torch.optim.SGD(model.parameters(), 0.1)
train_loader = DataLoader(dataset, batch_size=256, num_workers=8, pin_memory=True)


def train(train_loader, model, criterion, optimizer):
    for i, (images, target) in enumerate(train_loader):
        {move_images}
        {move_target}
        output = model(images)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


train(train_loader, model, criterion, optimizer)
"""
MOVE_IMAGES = "images = images.to(device, non_blocking=True)"
MOVE_TARGET = "target = target.to(device, non_blocking=True)"


def _imagenet(wrap: str, move_images: str = MOVE_IMAGES, move_target: str = MOVE_TARGET) -> str:
    return IMAGENET.format(wrap=wrap, move_images=move_images, move_target=move_target)


@pytest.mark.parametrize("wrap", [
    "model = torch.nn.DataParallel(model).cuda()",  # pytorch/examples imagenet
    "model.cuda()",
    "model.to(device)",
    "model = model.to(device)",
    "model = torch.nn.parallel.DistributedDataParallel(model.cuda(), device_ids=[0])",
])
def test_unmoved_target_of_a_moved_library_model(tmp_path: Path, wrap: str) -> None:
    # examples_imagenet/target-not-moved: the model's class is unknown (torchvision), but a
    # move makes its output a GPU tensor, and the CPU target breaks the loss.
    text = _imagenet(wrap, move_target="pass")
    assert _findings(tmp_path, text, "L0-01") == [("L0-01", 19)]
    assert _findings(tmp_path, _imagenet(wrap), "L0-01") == []


def test_unmoved_batch_of_a_moved_library_model(tmp_path: Path) -> None:
    text = _imagenet("model.cuda()", move_images="pass", move_target="pass")
    assert _findings(tmp_path, text, "L0-01") == [("L0-01", 18), ("L0-01", 19)]


@pytest.mark.parametrize("wrap", [
    "model = torch.nn.DataParallel(model).cuda()",
    "model = torch.nn.parallel.DistributedDataParallel(model.cuda(), device_ids=[0])",
    "model = torch.nn.DataParallel(nn.Linear(8, 2)).cuda()",  # a known class as well
])
def test_scattering_wrappers_move_their_inputs(tmp_path: Path, wrap: str) -> None:
    # DataParallel (and DDP given device_ids) copy the batch to the device themselves; the
    # output lands on the GPU, so only the target must be moved.
    text = _imagenet(wrap, move_images="pass")
    assert _findings(tmp_path, text, "L0-01") == []


def test_ddp_without_device_ids_does_not_move_inputs(tmp_path: Path) -> None:
    wrap = "model = torch.nn.parallel.DistributedDataParallel(model.cuda())"
    text = _imagenet(wrap, move_images="pass")
    assert _findings(tmp_path, text, "L0-01") == [("L0-01", 18)]


def test_unmoved_library_model_is_trusted(tmp_path: Path) -> None:
    # A library model never moved: its device is unknown (device_map, a wrapper that moves
    # it, a CPU run), so neither the model nor its batches are reported.
    text = _imagenet("pass", move_images="pass", move_target="pass")
    assert _findings(tmp_path, text, "L0-01") == []
    prepared = _imagenet("model.to(device)\nmodel = accelerator.prepare(model)",
                         move_images="pass", move_target="pass")
    assert _findings(tmp_path, prepared, "L0-01") == []


def test_target_moved_in_one_branch_is_trusted(tmp_path: Path) -> None:
    # examples_imagenet's validate(): batches are moved only `if use_accel:` (the model is
    # on the CPU otherwise), so the target's device is not known statically.
    move = "if use_accel:\n            target = target.to(device)"
    assert _findings(tmp_path, _imagenet("model.cuda()", move_target=move), "L0-01") == []


# ---- L0-02: a GradScaler enabled for the wrong precision ------------------------------------
NANOGPT = """import torch
from contextlib import nullcontext

dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float16'
ptdtype = {{'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}}[dtype]
ctx = torch.amp.autocast(device_type='cuda', dtype={cast_dtype})
scaler = torch.cuda.amp.GradScaler(enabled={enabled})
for X, Y in batches:
    with ctx:
        logits, loss = model(X, Y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
"""


@pytest.mark.parametrize("enabled", [
    "(dtype == 'bfloat16')",  # nanogpt/scaler-disabled-for-fp16
    "(dtype == 'float32')",
    "('bf16' == dtype)",
    "(dtype != 'float16')",
    "(dtype in ('bfloat16', 'float32'))",
    "(ptdtype == torch.bfloat16)",
    "(use_amp and dtype == 'bfloat16')",
    "not (dtype == 'float16')",
])
def test_scaler_disabled_for_fp16(tmp_path: Path, enabled: str) -> None:
    text = NANOGPT.format(cast_dtype="ptdtype", enabled=enabled)
    assert _findings(tmp_path, text, "L0-02") == [("L0-02", 7)]


@pytest.mark.parametrize("enabled", [
    "(dtype == 'float16')",  # nanoGPT as published
    "('float16' == dtype)",
    "(ptdtype == torch.float16)",
    "(dtype != 'bfloat16')",
    "(dtype in ('float16', 'fp16'))",
    "use_amp",
    "args.fp16",
    "(use_amp or dtype == 'bfloat16')",  # can be on for fp16: trusted
    "(dtype == precision)",  # compared with something unknown
])
def test_scaler_enabled_for_fp16_is_trusted(tmp_path: Path, enabled: str) -> None:
    text = NANOGPT.format(cast_dtype="ptdtype", enabled=enabled)
    assert _findings(tmp_path, text, "L0-02") == []


def test_scaler_condition_read_through_a_variable(tmp_path: Path) -> None:
    text = NANOGPT.format(cast_dtype="ptdtype", enabled="use_scaler").replace(
        "scaler = torch", "use_scaler = dtype == 'bf16'\nscaler = torch")
    assert _findings(tmp_path, text, "L0-02") == [("L0-02", 8)]


def test_scaler_off_for_fp16_is_fine_when_autocast_never_runs_fp16(tmp_path: Path) -> None:
    # autocast is always bf16: the scaler is a no-op either way, nothing underflows.
    text = NANOGPT.format(cast_dtype="torch.bfloat16", enabled="(dtype == 'bfloat16')")
    assert _findings(tmp_path, text, "L0-02") == []


# ---- L0-32: a conditional step before the iteration's backward ------------------------------
ACCUMULATE = """import torch
from torch.utils.data import DataLoader

model = torch.nn.Linear(8, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
loader = DataLoader(dataset, batch_size=8)
for epoch in range(3):
    for step, batch in enumerate(loader):
        loss = model(batch).sum() / accum
{body}
{after}
"""
STEP = """        if step % accum == 0:
            optimizer.step()
            optimizer.zero_grad()"""
BACKWARD = "        loss.backward()"


def _accumulate(body: str, after: str = "") -> str:
    return ACCUMULATE.format(body=body, after=after)


def test_conditional_step_before_backward(tmp_path: Path) -> None:
    # accelerate_nlp/step-before-backward: the step applies the previous iteration's
    # gradients, this iteration's wait for the next window.
    text = _accumulate(STEP + "\n" + BACKWARD)
    assert _findings(tmp_path, text, "L0-32") == [("L0-32", 11)]


def test_conditional_step_after_backward_is_fine(tmp_path: Path) -> None:
    assert _findings(tmp_path, _accumulate(BACKWARD + "\n" + STEP), "L0-32") == []


def test_conditional_step_followed_by_a_step_after_backward(tmp_path: Path) -> None:
    # the iteration still steps on its own gradients after its backward
    body = STEP + "\n" + BACKWARD + "\n        optimizer.step()"
    assert _findings(tmp_path, _accumulate(body), "L0-32") == []


def test_deferred_step_flushed_after_the_loop(tmp_path: Path) -> None:
    # Applying the previous window at the top of the next one is legitimate when the last
    # window is flushed after the loop.
    body = STEP.replace("step % accum == 0", "step > 0 and step % accum == 0") + "\n" + BACKWARD
    after = "    optimizer.step()\n    optimizer.zero_grad()"
    assert _findings(tmp_path, _accumulate(body, after), "L0-32") == []


def test_conditional_step_that_ends_the_iteration(tmp_path: Path) -> None:
    body = STEP + "\n            continue\n" + BACKWARD
    assert _findings(tmp_path, _accumulate(body), "L0-32") == []


def test_conditional_step_exclusive_with_backward(tmp_path: Path) -> None:
    body = STEP + "\n        else:\n    " + BACKWARD
    assert _findings(tmp_path, _accumulate(body), "L0-32") == []
