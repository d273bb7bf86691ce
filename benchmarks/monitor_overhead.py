"""Measure what `spml.toolkit.Monitor` adds to a training step.

One process trains a small model (MLP or transformer encoder) in blocks of ``--steps`` steps,
alternating blocks without and with a Monitor (``log_every=10``, JSONL file and text lines
written to real files), and swapping which goes first in every pair so clock drift, thermal or
allocator effects hit both alike. A block's time is its wall time divided by its steps (on CUDA
with a synchronize at the block's ends only, so the Monitor's own no-sync behaviour is what is
measured). Printed: the median per-step time of each mode over the blocks, the median of the
per-pair ratios (robust to load that drifts between pairs) and the host time spent inside
``observe()`` per step (log steps included), which on a busy machine is the steadiest figure.

Usage: python benchmarks/monitor_overhead.py [--device cpu|cuda] [--model mlp|transformer]
       [--blocks 30] [--steps 20] [--log-every 10] [--drift] [--clip] [--threads N]

``--clip`` clips gradients in both modes and hands ``clip_grad_norm_``'s norm to ``observe``
(``grad_norm=``), so the Monitor makes no pass of its own over the gradients.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spml.toolkit.monitor import Monitor


def build(kind: str, device: torch.device) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """The model and a closure computing one batch's loss (fixed batch: no data loading)."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
            torch.nn.GELU(), torch.nn.Linear(512, 512), torch.nn.GELU(),
            torch.nn.Linear(512, 10)).to(device)
        x = torch.randn(64, 256, device=device)
        y = torch.randint(0, 10, (64,), device=device)
        return model, lambda: torch.nn.functional.cross_entropy(model(x), y)
    layer = torch.nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512,
                                             batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    model = model.to(device)
    x = torch.randn(16, 64, 128, device=device)
    return model, lambda: model(x).pow(2).mean()


def run_block(steps: int, first_step: int, loss_fn: Callable[[], torch.Tensor],  # noqa: PLR0913
              opt: torch.optim.Optimizer, mon: Monitor | None, device: torch.device,
              clip: bool = False) -> tuple[float, float]:
    """Seconds per step over one block, and seconds per step spent inside observe()."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    observing = 0.0
    for step in range(first_step, first_step + steps):
        loss = loss_fn()
        loss.backward()
        params = opt.param_groups[0]["params"]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0) if clip else None
        opt.step()
        if mon is not None:
            before = time.perf_counter()
            mon.observe(step, loss, grad_norm=norm)
            observing += time.perf_counter() - before
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps, observing / steps


def measure(args: argparse.Namespace, device: torch.device, out_dir: Path) -> dict[str, list]:
    model, loss_fn = build(args.model, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with (out_dir / "text.log").open("w") as text:
        mon = Monitor(model, opt, log_every=args.log_every, jsonl=out_dir / "m.jsonl",
                      stream=text, tokens_per_step=1024, track_drift=args.drift).start()
        times: dict[str, list[float]] = {"baseline": [], "monitor": [], "observe": []}
        step = 1
        for block in range(args.warmup + args.blocks):
            order = ("baseline", "monitor") if block % 2 == 0 else ("monitor", "baseline")
            for mode in order:
                per_step, observing = run_block(args.steps, step, loss_fn, opt,
                                                mon if mode == "monitor" else None, device,
                                                clip=args.clip)
                step += args.steps
                if block >= args.warmup:
                    times[mode].append(per_step)
                    if mode == "monitor":
                        times["observe"].append(observing)
        mon.close()
    lines = sum(1 for _ in (out_dir / "m.jsonl").open())
    print(f"monitor wrote {lines} JSONL records, "
          f"{sum(1 for _ in (out_dir / 'text.log').open())} text lines")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="mlp", choices=("mlp", "transformer"))
    parser.add_argument("--blocks", type=int, default=30, help="measured blocks per mode")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured blocks per mode")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--drift", action="store_true", help="also track parameter drift")
    parser.add_argument("--clip", action="store_true",
                        help="clip in both modes and pass the norm to observe(grad_norm=)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available to this torch build")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        times = measure(args, device, Path(tmp))
    base, mon = (statistics.median(times[k]) for k in ("baseline", "monitor"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} model={args.model} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} blocks={args.blocks}x{args.steps} steps "
          f"log_every={args.log_every} drift={args.drift} clip={args.clip}")
    print(f"median step time without Monitor: {base * 1e3:.3f} ms")
    print(f"median step time with Monitor:    {mon * 1e3:.3f} ms")
    print(f"overhead of the medians: {(mon / base - 1) * 100:+.2f} % "
          f"({(mon - base) * 1e6:+.1f} us/step); ratio={mon / base:.4f}")
    pairs = [m / b for m, b in zip(times["monitor"], times["baseline"], strict=True)]
    print(f"median per-pair ratio: {statistics.median(pairs):.4f} "
          f"(quartiles {statistics.quantiles(pairs, n=4)[0]:.4f}.."
          f"{statistics.quantiles(pairs, n=4)[2]:.4f})")
    inside = statistics.median(times["observe"])
    print(f"time inside observe(): {inside * 1e6:.1f} us/step = {inside / base * 100:.2f} % "
          "of the baseline step")


if __name__ == "__main__":
    main()
