"""L1's six stages, in-process on an entry point's pieces (spml-reference §2.4).

Data Loading, Model Init, Training, Checkpoint, Inference, Evaluation: each takes the shared
`entry_driver.StageState` and returns a `StageResult`; `entry_driver.run_stages` runs them
in order and turns an exception into a FAIL at the project's ``file:line``. Each stage's
docstring says what it checks; the evidence lines say why it failed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch

from spml.toolkit.runtime import health
from spml.toolkit.runtime.contract import RECORD_KEYS
from spml.toolkit.runtime.entry import (
    checkpoint_folder,
    epochs,
    load_checkpoint,
    make_scheduler,
    save_checkpoint,
    seed_everything,
)
from spml.toolkit.runtime.report import STAGES, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

if TYPE_CHECKING:
    from spml.toolkit.runtime.entry_driver import StageState

DATA, INIT, TRAIN, CHECKPOINT, INFERENCE, EVALUATION = STAGES
_BEAT_S = 1.0  # at most one training heartbeat per second in the progress file
_MAX_EVIDENCE = 5


def duration(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:04.1f}s"


def _capped(lines: list[str]) -> list[str]:
    extra = len(lines) - _MAX_EVIDENCE
    return lines[:_MAX_EVIDENCE] + ([f"... and {extra} more"] if extra > 0 else [])


# --- tensors ----------------------------------------------------------------------------------


def tensors_in(value: Any, path: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in nested tuples, lists and dicts, with its path (``batch[0]['x']``)."""
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if isinstance(value, Mapping):
        items = [(f"{path}[{key!r}]", item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return []
    return [pair for sub, item in items for pair in tensors_in(item, sub)]


def shapes_text(layout: list[tuple[str, torch.Tensor]], limit: int = 4) -> str:
    shown = ", ".join(str(list(t.shape)) for _, t in layout[:limit])
    return shown + (", ..." if len(layout) > limit else "")


def nonfinite_count(tensor: torch.Tensor) -> int:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    return int((~torch.isfinite(tensor.detach())).sum())


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.to(torch.complex128) if tensor.is_complex() else tensor.double()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference (NaN where both are NaN counts as equal; inf: shapes)."""
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    a, b = _widen(a), _widen(b)
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    return float(torch.where(same, 0.0, (a - b).abs().nan_to_num(nan=math.inf)).max())


def close(a: torch.Tensor, b: torch.Tensor, thresholds: Thresholds) -> bool:
    """`torch.allclose` at the L1 tolerances (same shape, NaN equal to NaN)."""
    return a.shape == b.shape and torch.allclose(
        _widen(a), _widen(b), rtol=thresholds.allclose_rtol, atol=thresholds.allclose_atol,
        equal_nan=True)


# --- 1. Data Loading --------------------------------------------------------------------------


def data_loading(state: StageState) -> StageResult:
    """Take N batches from ``train_batches()``: tensors present, finite, consistent."""
    wanted = state.options.data_batches
    started = time.monotonic()
    batches = list(islice(iter(state.entry.train_batches()), wanted))
    elapsed = time.monotonic() - started
    if not batches:
        return StageResult.failed(DATA, "train_batches() yielded no batch",
                                  "it must yield at least one batch")
    state.batches = batches
    layouts = [tensors_in(batch, "batch") for batch in batches]
    if not layouts[0]:
        return StageResult.failed(DATA, "the first batch holds no tensor",
                                  f"got {type(batches[0]).__name__}; yield tensors, or tuples, "
                                  "lists or dicts of tensors")
    problems = _batch_problems(layouts)
    shapes = shapes_text(layouts[0])
    evidence = [f"{len(batches)} batches in {elapsed:.2f} s"]
    if len(batches) < wanted:
        evidence.append(f"train_batches() ended after {len(batches)} batches (asked for {wanted})")
    metrics = {"batches": len(batches), "load_s": round(elapsed, 3)}
    if problems:
        return StageResult(DATA, "FAIL", problems[0], _capped(problems[1:]) + evidence, metrics)
    return StageResult(DATA, "PASS", f"{len(batches)} batches, shapes ok ({shapes})", evidence,
                       metrics)


def _batch_problems(layouts: list[list[tuple[str, torch.Tensor]]]) -> list[str]:
    problems = []
    first = {path: t for path, t in layouts[0]}
    for number, layout in enumerate(layouts, 1):
        for path, tensor in layout:
            bad = nonfinite_count(tensor)
            if bad:
                problems.append(f"batch {number}: {path} holds {bad} NaN/Inf values")
        if [p for p, _ in layout] != list(first):
            problems.append(f"batch {number} holds {[p for p, _ in layout]}, batch 1 "
                            f"{list(first)}: inconsistent structure")
            continue
        for path, tensor in layout:
            ref = first[path]
            if tensor.dtype != ref.dtype or tensor.dim() != ref.dim():
                problems.append(f"batch {number}: {path} is {tensor.dtype} "
                                f"{list(tensor.shape)}, batch 1 {ref.dtype} {list(ref.shape)}")
    return problems


# --- 2. Model Init ----------------------------------------------------------------------------


def model_init(state: StageState) -> StageResult:
    """Build the model and run one forward pass: a finite scalar loss that requires grad."""
    entry, batch = state.entry, state.batches[0]
    model = entry.make_model()
    if not isinstance(model, torch.nn.Module):
        return StageResult.failed(INIT, f"make_model() returned {type(model).__name__}, "
                                  "not a torch.nn.Module")
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        return StageResult.failed(INIT, "the model has no trainable parameter",
                                  f"{n_params:,} parameters, none with requires_grad=True")
    loss = entry.training_step(model, batch)
    problem = _loss_problem(loss)
    if problem:
        return StageResult.failed(INIT, *problem)
    model.eval()
    try:
        with torch.no_grad():
            output = tensors_in(entry.predict(model, batch), "output")
    finally:
        model.train()
    state.model = model
    summary = (f"{type(model).__name__}: {n_params:,} parameters, output shape "
               f"{shapes_text(output) or 'none'}, loss {float(loss.detach()):.4g}")
    return StageResult(INIT, "PASS", summary, [f"{trainable:,} trainable parameters"],
                       {"parameters": n_params, "trainable": trainable})


def _loss_problem(loss: object) -> tuple[str, ...] | None:
    """Why ``training_step``'s return value is not a usable loss, or None."""
    if not isinstance(loss, torch.Tensor):
        return (f"training_step returned {type(loss).__name__}, not a loss tensor",
                "return the scalar loss tensor (not .item())")
    if loss.numel() != 1:
        return (f"the loss is not a scalar: shape {list(loss.shape)}",
                "reduce it (mean or sum) before returning it")
    if not loss.requires_grad:
        return ("the loss is detached from the parameters",
                "loss does not require grad: detached from the parameters; return the loss "
                "computed from the model's outputs without .detach(), .item(), .data or "
                "torch.no_grad()")
    value = float(loss.detach())
    if not math.isfinite(value):
        return (f"the loss is {value} on the first forward pass",
                "check the inputs and the loss function (log of 0, division by 0)")
    return None


# --- 3. Training ------------------------------------------------------------------------------


def training(state: StageState) -> StageResult:
    """Train up to max_steps / time_limit, record per-step health, judge it."""
    entry, opts = state.entry, state.options
    seed_everything(opts.seed)
    state.optimizer = entry.make_optimizer(state.model)
    scheduler = make_scheduler(entry, state.optimizer)
    params = [p for p in state.model.parameters() if p.requires_grad]
    theta0 = [p.detach().to("cpu", copy=True) for p in params]
    started = time.monotonic()
    stop = _train_loop(state, scheduler)
    elapsed = time.monotonic() - started
    drift = _drift(params, theta0)
    if state.records:
        state.records[-1]["param_drift"] = drift
    return _training_result(state, drift, elapsed, stop)


def _train_loop(state: StageState, scheduler: Any) -> str:
    opts = state.options
    deadline = time.monotonic() + opts.time_limit_s
    batches = epochs(state.entry)
    for step in range(1, opts.max_steps + 1):
        if time.monotonic() >= deadline:
            return f"stopped by the {opts.time_limit_s:g} s time limit after {step - 1} steps"
        batch = next(batches, None)
        if batch is None:
            return f"train_batches() ran dry after {step - 1} steps"
        record = _train_step(state, batch, step)
        state.records.append(record)
        _log_step(state, record)
        if not _finite_step(record):
            return (f"stopped at step {step}: non-finite loss or gradients "
                    "(its optimizer step was skipped)")
        if scheduler is not None:
            scheduler.step()
    return f"reached max_steps={opts.max_steps}"


def _finite_step(record: Mapping[str, Any]) -> bool:
    return (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])
            and record["nonfinite_grads"] == 0)


def _train_step(state: StageState, batch: Any, step: int) -> dict[str, Any]:
    model, optimizer = state.model, state.optimizer
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = state.entry.training_step(model, batch)
    loss.backward()
    norm, nonfinite = _grad_stats(model)
    record = dict.fromkeys(RECORD_KEYS)
    record.update(step=step, loss=float(loss.detach()), grad_norm=norm,
                  nonfinite_grads=nonfinite, lr=optimizer.param_groups[0].get("lr"))
    if _finite_step(record):
        clip = getattr(state.entry, "max_grad_norm", None)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
        optimizer.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    record["step_time_s"] = elapsed = time.perf_counter() - started
    layout = tensors_in(batch, "batch")
    if layout and layout[0][1].dim() > 0:
        record["throughput"] = layout[0][1].shape[0] / elapsed
    return record


def _grad_stats(model: torch.nn.Module) -> tuple[float, int]:
    """Total gradient norm (0.0 when no parameter got a gradient) and non-finite tensors."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0, 0
    device = grads[0].device
    norms = torch.stack([torch.linalg.vector_norm(g.float()).to(device) for g in grads]).cpu()
    return float(torch.linalg.vector_norm(norms)), int((~torch.isfinite(norms)).sum())


def _drift(params: list[torch.Tensor], theta0: list[torch.Tensor]) -> float:
    """``||θ-θ0|| / ||θ0||`` over the trainable parameters (absolute when ``θ0`` is 0)."""
    moved = sum(float((p.detach().cpu().double() - p0.double()).pow(2).sum())
                for p, p0 in zip(params, theta0, strict=True))
    base = sum(float(p0.double().pow(2).sum()) for p0 in theta0)
    return math.sqrt(moved) / math.sqrt(base) if base > 0 else math.sqrt(moved)


def _log_step(state: StageState, record: dict[str, Any]) -> None:
    """Append the record to the metrics file; a heartbeat to the progress log each second."""
    if state.options.metrics_file is not None:
        with state.options.metrics_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    now = time.monotonic()
    if now - state.last_beat >= _BEAT_S:
        state.last_beat = now
        state.progress({"event": "step", "stage": TRAIN, "step": record["step"],
                        "loss": record["loss"], "time": time.time()})


def _training_result(state: StageState, drift: float, elapsed: float, stop: str) -> StageResult:
    records, thresholds = state.records, state.options.thresholds
    judged = {"Throughput": health.judge_throughput(records, thresholds),
              "Loss": health.judge_loss_trend(records, thresholds),
              "Gradients": health.judge_gradients(records, thresholds),
              "Learning Rate": health.judge_learning_rate(records),
              "Param Drift": health.judge_drift(drift, thresholds)}
    evidence = []
    for label, judgement in judged.items():
        line = judgement.summary
        same = line.lower().startswith(label.lower())
        evidence.append(line[0].upper() + line[1:] if same else f"{label}: {line}")
        evidence.extend(f"  {line}" for line in judgement.evidence
                        if not judgement.ok or line.startswith("warning"))
    if torch.cuda.is_available():
        evidence.insert(1, f"Peak Memory: {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")
    evidence.append(stop)
    failed = [j for j in judged.values() if not j.ok]
    head = f"{len(records)} steps, {duration(elapsed)}"
    summary = f"{head}, {'; '.join(j.summary for j in failed or [judged['Loss']])}"
    losses = [r["loss"] for r in records]
    metrics = {"steps": len(records), "elapsed_s": round(elapsed, 3), "param_drift": drift,
               "loss_first": losses[0] if losses else None,
               "loss_last": losses[-1] if losses else None}
    return StageResult(TRAIN, "FAIL" if failed else "PASS", summary, evidence, metrics)


# --- 4. Checkpoint ----------------------------------------------------------------------------


@dataclass
class Comparison:
    """What a reload comparison found: tensors (or states) compared, max diff, mismatches."""

    compared: int = 0
    max_diff: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    def tensor(self, label: str, saved: Any, loaded: Any, thresholds: Thresholds) -> None:
        if not (isinstance(saved, torch.Tensor) and isinstance(loaded, torch.Tensor)):
            if saved != loaded:
                self.mismatches.append(f"{label}: {saved!r:.40} saved, {loaded!r:.40} loaded")
            return
        self.compared += 1
        diff = max_diff(saved, loaded)
        self.max_diff = max(self.max_diff, diff)
        if saved.shape != loaded.shape:
            self.mismatches.append(f"{label}: shape {list(saved.shape)} saved, "
                                   f"{list(loaded.shape)} loaded")
        elif not close(saved, loaded, thresholds):
            self.mismatches.append(f"{label} differs after reload (max diff {diff:.3g})")


def compare_states(saved: Mapping[str, Any], loaded: Mapping[str, Any],
                   thresholds: Thresholds) -> Comparison:
    """Every parameter and buffer of a model state dict, saved vs loaded."""
    result = Comparison()
    for name, value in saved.items():
        if name not in loaded:
            result.mismatches.append(f"{name} missing from the reloaded model")
        else:
            result.tensor(name, value, loaded[name], thresholds)
    return result


def compare_optimizer(saved: Mapping[str, Any], loaded: Mapping[str, Any],
                      thresholds: Thresholds) -> Comparison:
    """Per-parameter optimizer state (every tensor) and param_groups hyperparameters."""
    result = Comparison()
    states, reloaded = saved.get("state", {}), loaded.get("state", {})
    restored = [key for key in states if key in reloaded]
    if len(restored) < len(states):
        result.mismatches.append(f"optimizer state not restored: {len(restored)} of "
                                 f"{len(states)} parameter states loaded")
    for key in restored:
        for name, value in states[key].items():
            result.tensor(f"optimizer state[{key}][{name!r}]", value,
                          reloaded[key].get(name), thresholds)
    groups, regroups = saved.get("param_groups", []), loaded.get("param_groups", [])
    if len(groups) != len(regroups):
        result.mismatches.append(f"optimizer param_groups: {len(groups)} saved, "
                                 f"{len(regroups)} loaded")
    for index, (group, regroup) in enumerate(zip(groups, regroups, strict=False)):
        for name, value in group.items():
            if name != "params":
                result.tensor(f"param_groups[{index}][{name!r}]", value, regroup.get(name),
                              thresholds)
    result.compared = len(restored)
    return result


def checkpoint(state: StageState) -> StageResult:
    """Save, load into a fresh model + optimizer, compare every tensor and optimizer state."""
    entry, thresholds = state.entry, state.options.thresholds
    optimizer = state.optimizer or entry.make_optimizer(state.model)
    with checkpoint_folder(state.options.checkpoint_dir) as folder:
        path = folder / "l1_checkpoint.pt"
        save_checkpoint(entry, path, state.model, optimizer)
        fresh_model = entry.make_model()
        fresh_optimizer = entry.make_optimizer(fresh_model)
        load_checkpoint(entry, path, fresh_model, fresh_optimizer)
    model_check = compare_states(state.model.state_dict(), fresh_model.state_dict(), thresholds)
    opt_check = compare_optimizer(optimizer.state_dict(), fresh_optimizer.state_dict(),
                                  thresholds)
    mismatches = model_check.mismatches + opt_check.mismatches
    diff = max(model_check.max_diff, opt_check.max_diff)
    evidence = [f"model: {model_check.compared} tensors, max diff {model_check.max_diff:.1e}",
                f"optimizer: {opt_check.compared} parameter states, "
                f"max diff {opt_check.max_diff:.1e}"]
    if opt_check.compared == 0 and not mismatches:
        evidence.append("the optimizer holds no state (no step taken): nothing to compare")
    metrics = {"max_diff": diff, "tensors": model_check.compared,
               "optimizer_states": opt_check.compared}
    if mismatches:
        return StageResult(CHECKPOINT, "FAIL", mismatches[0], _capped(mismatches[1:]) + evidence,
                           metrics)
    return StageResult(CHECKPOINT, "PASS", f"save/load match (max diff {diff:.1e})", evidence,
                       metrics)


# --- 5. Inference -----------------------------------------------------------------------------


def inference(state: StageState) -> StageResult:
    """Seeded passes of ``predict`` in eval mode without grad: finite and identical."""
    thresholds, batch, model = state.options.thresholds, state.batches[0], state.model
    passes = []
    model.eval()
    try:
        seed_everything(state.options.seed)
        with torch.no_grad():
            for _ in range(thresholds.inference_passes):
                passes.append(tensors_in(state.entry.predict(model, batch), "output"))
    finally:
        model.train()
    if not passes or not passes[0]:
        return StageResult.failed(INFERENCE, "predict() returned no tensor")
    for number, outputs in enumerate(passes, 1):
        for path, tensor in outputs:
            if bad := nonfinite_count(tensor):
                return StageResult.failed(INFERENCE, f"non-finite inference output: {bad} "
                                          f"NaN/Inf values in {path} (pass {number})")
    for number, outputs in enumerate(passes[1:], 2):
        problem = _pass_difference(passes[0], outputs, thresholds)
        if problem:
            return StageResult.failed(INFERENCE, f"non-deterministic inference: {problem} "
                                      f"between pass 1 and {number}",
                                      "eval mode with a fixed seed must give identical "
                                      "outputs: dropout forced on, or random noise, in predict?")
    return StageResult(INFERENCE, "PASS", f"{len(passes)} passes, deterministic, output shape "
                       f"{shapes_text(passes[0])}", [], {"passes": len(passes)})


def _pass_difference(first: list[tuple[str, torch.Tensor]],
                     other: list[tuple[str, torch.Tensor]], thresholds: Thresholds) -> str | None:
    if [(p, t.shape) for p, t in first] != [(p, t.shape) for p, t in other]:
        return f"outputs {shapes_text(first)} vs {shapes_text(other)}"
    for (path, a), (_, b) in zip(first, other, strict=True):
        if not close(a, b, thresholds):
            return f"max diff {max_diff(a, b):.3g} in {path}"
    return None


# --- 6. Evaluation ----------------------------------------------------------------------------


def evaluation(state: StageState) -> StageResult:
    """``evaluate(model)`` must return a non-empty dict of finite numbers."""
    metrics = state.entry.evaluate(state.model)
    if not isinstance(metrics, Mapping) or not metrics:
        return StageResult.failed(EVALUATION, f"evaluate() returned {metrics!r:.80}, not a "
                                  "non-empty dict of metrics")
    values: dict[str, float] = {}
    bad = []
    for name, raw in metrics.items():
        try:
            value = float(raw.item() if isinstance(raw, torch.Tensor) else raw)
        except (TypeError, ValueError, RuntimeError):
            bad.append(f"{name}={raw!r:.40} is not a number")
            continue
        if not math.isfinite(value):
            bad.append(f"{name}={value}")
        values[str(name)] = value
    if bad:
        return StageResult.failed(EVALUATION, f"non-finite metrics: {', '.join(bad)}")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return StageResult(EVALUATION, "PASS", f"metrics computed ({shown})", [], dict(values))


_STAGE_FUNCTIONS = (data_loading, model_init, training, checkpoint, inference, evaluation)
