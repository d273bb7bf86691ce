"""False critical findings an independent review found on public code the analyser was not
tuned on (issue 10, round 10), cut down to a few lines each: the legitimate code stays
silent, and the real defect next to it is still reported."""

from __future__ import annotations

from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import analyse


def _findings(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int, str]]:
    path = tmp_path / "train.py"
    path.write_text(text)
    report = analyse([path], ValidateConfig(select=list(ids)))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return [(f.id, f.line, f.message) for f in report.findings]


def _lines(tmp_path: Path, text: str, *ids: str) -> list[tuple[str, int]]:
    return [(i, line) for i, line, _ in _findings(tmp_path, text, *ids)]


# ---- L0-02: fp16 autocast only matters for a loss that is backpropagated ------------------
VALIDATION = """import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline


def log_validation(pipeline, prompts):
    pipeline = pipeline.to("cuda")
    images = []
    for prompt in prompts:
        with torch.autocast("cuda"):
            images.append(pipeline(prompt, num_inference_steps=20).images[0])
    return images


def main(unet, loader):
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    for epoch in range(10):
        for batch in loader:
            pred = unet(batch["noisy"].cuda())
            loss = F.mse_loss(pred.float(), batch["noise"].cuda().float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        pipeline = StableDiffusionPipeline.from_pretrained("sd", unet=unet)
        images = log_validation(pipeline, ["a cat"])
        {inline}
"""
INLINE = """with torch.cuda.amp.autocast():
            more = [pipeline("a dog").images[0] for _ in range(4)]
        print(len(images + more))"""


def test_l002_autocast_in_validation_is_silent(tmp_path: Path) -> None:
    # diffusers' log_validation: autocast around pipeline(...), no backward downstream
    assert _lines(tmp_path, VALIDATION.format(inline=""), "L0-02") == []
    # the same inline in the training function (diffusers' older dreambooth scripts)
    assert _lines(tmp_path, VALIDATION.format(inline=INLINE), "L0-02") == []


TRAIN_FP16 = """import torch
import torch.nn.functional as F

model = torch.nn.Linear(16, 4).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x.cuda())
    loss = F.cross_entropy(out, y.cuda())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_l002_fp16_training_forward_without_scaler_is_reported(tmp_path: Path) -> None:
    assert _lines(tmp_path, TRAIN_FP16, "L0-02") == [("L0-02", 7)]


HELPER_FP16 = """import torch
import torch.nn.functional as F

model = torch.nn.Linear(16, 4).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)


def compute_loss(x, y):
    with torch.autocast("cuda"):
        return F.cross_entropy(model(x), y)


@torch.no_grad()
def evaluate(x, y):
    with torch.autocast("cuda"):
        return compute_loss(x, y)


for x, y in loader:
    loss = compute_loss(x.cuda(), y.cuda())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_l002_fp16_loss_returned_to_the_training_loop_is_reported(tmp_path: Path) -> None:
    # the region returns the loss to its caller, which backpropagates it
    assert _lines(tmp_path, HELPER_FP16, "L0-02") == [("L0-02", 9)]


NANOGPT_CTX = """import torch

model = torch.nn.Linear(16, 4).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
ctx = torch.amp.autocast(device_type="cuda", dtype=torch.float16)
for x, y in loader:
    with ctx:
        logits, loss = model(x.cuda(), y.cuda())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
"""


def test_l002_fp16_context_object_is_followed_to_its_with(tmp_path: Path) -> None:
    assert _lines(tmp_path, NANOGPT_CTX, "L0-02") == [("L0-02", 5)]


ACCELERATE = """import torch
import torch.nn.functional as F
from accelerate import Accelerator

accelerator = Accelerator(mixed_precision={precision})
model = torch.nn.Linear(16, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
"""


def test_l002_accelerate_scales_the_fp16_loss(tmp_path: Path) -> None:
    assert _lines(tmp_path, ACCELERATE.format(precision='"fp16"'), "L0-02") == []
    assert _lines(tmp_path, ACCELERATE.format(precision="args.mixed_precision"), "L0-02") == []
    # mixed_precision="no": Accelerate does not scale, the fp16 autocast is unscaled
    assert _lines(tmp_path, ACCELERATE.format(precision='"no"'), "L0-02") == [("L0-02", 10)]


BF16_CPU = """import torch
import torch.nn.functional as F

model = torch.nn.Linear(16, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
with torch.cpu.amp.autocast(enabled=True, dtype=torch.bfloat16):
    for epoch in range(3):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
"""
FP16_AROUND_BACKWARD = """import torch
import torch.nn.functional as F

model = torch.nn.Linear(16, 4).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x.cuda()), y.cuda())
        scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""


def test_l002_bf16_autocast_around_backward_is_silent(tmp_path: Path) -> None:
    # diffusers' intel textual_inversion_bf16: bf16 needs no scaler and cannot underflow
    assert _lines(tmp_path, BF16_CPU, "L0-02") == []
    assert _lines(tmp_path, FP16_AROUND_BACKWARD, "L0-02") == [("L0-02", 10)]


# ---- L0-01: batches moved entry by entry, datasets already on the GPU ----------------------
DICT_ITEMS = """import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

device = torch.device("cuda")
train_loader = DataLoader(dataset, batch_size=8)
model = torch.nn.Linear(16, 4).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for batch in train_loader:
    for key, value in batch.items():
        batch[key] = value.{move}
    optimizer.zero_grad()
    F.cross_entropy(model(batch["x"]), batch["y"]).backward()
    optimizer.step()
"""


def test_l001_batch_dict_moved_entry_by_entry_is_silent(tmp_path: Path) -> None:
    assert _lines(tmp_path, DICT_ITEMS.format(move="to(device, non_blocking=True)"),
                  "L0-01") == []
    # the entries are converted but never moved: still reported
    assert _lines(tmp_path, DICT_ITEMS.format(move="float()"), "L0-01") == [
        ("L0-01", 13), ("L0-01", 13)]


GPU_DATASET = """import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

device = torch.device("cuda")
X = torch.randn(1000, 16){move}
Y = torch.randint(0, 4, (1000,)){move}
{loader}
model = torch.nn.Linear(16, 4).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for x, y in gpu_loader:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
"""
DIRECT = "gpu_loader = DataLoader(TensorDataset(X, Y), batch_size=64, shuffle=True)"
VIA_NAME = "data = TensorDataset(X, Y)\ngpu_loader = DataLoader(data, batch_size=64)"


def test_l001_dataset_built_on_the_gpu_is_silent(tmp_path: Path) -> None:
    for loader in (DIRECT, VIA_NAME):
        text = GPU_DATASET.format(move=".to(device)", loader=loader)
        assert _lines(tmp_path, text, "L0-01") == [], loader
    # the same dataset left on the CPU: the batches are never moved
    text = GPU_DATASET.format(move="", loader=DIRECT)
    assert _lines(tmp_path, text, "L0-01") == [("L0-01", 13), ("L0-01", 13)]


PROMPTS = """import torch
from diffusers import DiffusionPipeline
from torch.utils.data import DataLoader

pipeline = DiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float16)
sample_dataloader = DataLoader(PromptDataset(args.class_prompt, 8), batch_size=4)
pipeline.to("cuda")
for example in sample_dataloader:
    images = pipeline(example["prompt"]).images
model = torch.nn.Linear(16, 4).cuda()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for x in DataLoader(dataset):
    model(x).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_l001_inference_pipeline_takes_prompts(tmp_path: Path) -> None:
    # diffusers research_projects/colossalai/train_dreambooth_colossalai.py:394
    assert _lines(tmp_path, PROMPTS, "L0-01") == [("L0-01", 13)]


# ---- L0-32: a deferred accumulation step --------------------------------------------------
DEFERRED = """import torch
import torch.nn.functional as F

device = "cuda"
model = torch.nn.Linear(16, 4).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
accum = 4
for epoch in range(10):
    for i, (x, y) in enumerate(train_loader):
        x, y = x.to(device), y.to(device)
        if {guard}:
            optimizer.step()
            optimizer.zero_grad()
        (F.cross_entropy(model(x), y) / accum).backward()
"""


def test_l032_deferred_step_after_the_first_window_is_silent(tmp_path: Path) -> None:
    for guard in ("i > 0 and i % accum == 0", "i % accum == 0 and 0 < i",
                  "i != 0 and i % accum == 0"):
        assert _findings(tmp_path, DEFERRED.format(guard=guard), "L0-32") == [], guard


def test_l032_conditional_step_before_backward_says_what_happens(tmp_path: Path) -> None:
    # the first step runs with no gradients and the last window is never applied; the
    # message no longer claims the previous batch's gradients are applied
    (found,) = _findings(tmp_path, DEFERRED.format(guard="i % accum == 0"), "L0-32")
    assert found[:2] == ("L0-32", 12)
    assert "previous batch" not in found[2]
    assert "never applied" in found[2]


# ---- L0-27: distributed autograd keeps gradients in the context ----------------------------
DIST_AUTOGRAD = """import torch
import torch.distributed.autograd as dist_autograd
from torch.distributed.optim import DistributedOptimizer
from torch.distributed.rpc import RRef

model = torch.nn.Linear(16, 4)
opt = DistributedOptimizer(torch.optim.SGD, [RRef(p) for p in model.parameters()], lr=0.05)
criterion = torch.nn.CrossEntropyLoss()
for epoch in range(10):
    for data, target in loader:
        with dist_autograd.context() as context_id:
            loss = criterion(model(data), target)
            {backward}
            opt.step({context})
"""


def test_l027_dist_autograd_context_needs_no_zero_grad(tmp_path: Path) -> None:
    text = DIST_AUTOGRAD.format(backward="dist_autograd.backward(context_id, [loss])",
                                context="context_id")
    assert _lines(tmp_path, text, "L0-27") == []
    # a plain backward in the same loop fills .grad, which nothing clears
    text = DIST_AUTOGRAD.format(backward="loss.backward()", context="")
    assert _lines(tmp_path, text, "L0-27") == [("L0-27", 10)]
