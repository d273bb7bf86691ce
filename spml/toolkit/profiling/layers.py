"""Per-module forward AND backward time, at exactly one depth of the module tree.

Hooks mark points in time around each module (shared/spec/toolkit-and-watchdog-notes.md §3.1):
forward pre/post hooks for the forward pass, full backward pre/post hooks for the backward pass.
On CUDA the marks are ``torch.cuda.Event`` records read after one synchronise per step (they
time the stream, so launch latency shows up when the GPU is starved); on CPU they are
``time.perf_counter`` calls (CPU ops run synchronously, nothing to wait for).

Fixes over the reference profiler (spml-reference §7.5, §11 item 8): backward time is measured,
not only forward; depth N selects exactly the modules N levels below the root (depth 1 = direct
children), never deeper ones.

One PyTorch subtlety is handled: when none of a module's inputs needs a gradient (the first
layer, an embedding of token ids), its full backward hook fires as soon as the gradient of its
output exists, before its weight gradients are computed. For such modules the backward interval
ends at the last of its parameters' gradient accumulations instead.

Caveats: in-place ops on a hooked module's output break full backward hooks (PyTorch raises
"...BackwardHookFunction... modified inplace"); the profiler then falls back to forward-only and
says so. Activation checkpointing runs forwards twice; ``torch.compile`` fuses across modules.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_INPLACE_HOOK_ERROR = "BackwardHookFunction"
_EARLY_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to"


@dataclass(frozen=True)
class LayerTime:
    """Mean time of one module per step, in milliseconds."""

    name: str
    kind: str  # the module's class name
    forward_ms: float
    backward_ms: float | None  # None: backward was not measured (see LayerProfile.notes)
    calls: int  # forward calls per step
    share: float  # total time as a fraction of the mean step time

    @property
    def total_ms(self) -> float:
        """Forward plus backward time."""
        return self.forward_ms + (self.backward_ms or 0.0)


@dataclass(frozen=True)
class LayerProfile:
    """Layer times sorted by total time, longest first."""

    layers: tuple[LayerTime, ...]
    step_ms: float  # mean wall time of one step
    depth: int
    iterations: int
    device: str
    notes: tuple[str, ...] = ()

    @property
    def attributed_share(self) -> float:
        """Fraction of the step spent inside the profiled modules (the rest is elsewhere:
        loss, optimizer, modules at other depths, Python)."""
        return sum(layer.share for layer in self.layers)


def modules_at_depth(model: nn.Module, depth: int) -> list[tuple[str, nn.Module]]:
    """The modules exactly ``depth`` levels below ``model`` (1 = its direct children), with
    their qualified names; a module reachable under two names is listed once.

    Raises:
        ValueError: ``depth`` is below 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1 but got {depth}")
    level = list(model.named_children())
    for _ in range(depth - 1):
        level = [(f"{name}.{child_name}", child) for name, module in level
                 for child_name, child in module.named_children()]
    seen: set[int] = set()
    unique = []
    for name, module in level:
        if id(module) not in seen:
            seen.add(id(module))
            unique.append((name, module))
    return unique


class _CpuClock:
    """Marks are perf_counter seconds."""

    device = "cpu"

    def mark(self) -> float:
        return time.perf_counter()

    def ms(self, start: float, end: float) -> float:
        return (end - start) * 1000.0

    def sync(self) -> None:
        """CPU ops are synchronous."""

    def reset(self) -> None:
        """Nothing pooled."""


class _CudaClock:
    """Marks are pooled CUDA events on the current stream (no allocation per mark)."""

    device = "cuda"

    def __init__(self) -> None:
        self._pool: list[torch.cuda.Event] = []
        self._used = 0

    def mark(self) -> torch.cuda.Event:
        if self._used == len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        event = self._pool[self._used]
        self._used += 1
        event.record()
        return event

    def ms(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return start.elapsed_time(end)

    def sync(self) -> None:
        torch.cuda.synchronize()

    def reset(self) -> None:
        self._used = 0  # events are reusable once the step's times are read


def _needs_grad(values: Iterable[Any]) -> bool:
    """Whether any tensor among ``values`` (one level of tuples/lists/dicts) requires grad."""
    for value in values:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return True
        if isinstance(value, list | tuple) and _needs_grad(value):
            return True
        if isinstance(value, dict) and _needs_grad(value.values()):
            return True
    return False


@dataclass
class _Record:
    """Marks of one module during the current step, and its totals so far."""

    fwd_open: list[Any] = field(default_factory=list)
    fwd: list[tuple[Any, Any]] = field(default_factory=list)
    bwd_open: list[Any] = field(default_factory=list)
    bwd: list[list[Any]] = field(default_factory=list)  # [start, end, later ends...]
    leaf_inputs: bool = False  # last forward had no input requiring grad
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    calls: int = 0


class _Recorder:
    """Installs the hooks, collects marks and turns them into milliseconds."""

    def __init__(self, modules: list[tuple[str, nn.Module]], clock: Any) -> None:
        self.modules = modules
        self.clock = clock
        self.records = {name: _Record() for name, _ in modules}
        self._handles: list[RemovableHandle] = []

    def attach(self, backward: bool) -> None:
        for name, module in self.modules:
            rec = self.records[name]
            self._handles += [
                module.register_forward_pre_hook(self._fwd_pre(rec), with_kwargs=True),
                module.register_forward_hook(self._fwd_post(rec)),
            ]
            if backward:
                self._attach_backward(module, rec)

    def _attach_backward(self, module: nn.Module, rec: _Record) -> None:
        mark = self.clock.mark

        def bwd_pre(_mod: nn.Module, _grad_out: Any) -> None:
            rec.bwd_open.append(mark())

        def bwd_post(_mod: nn.Module, _grad_in: Any, _grad_out: Any) -> None:
            if rec.bwd_open:
                rec.bwd.append([rec.bwd_open.pop(), mark()])

        def grad_accumulated(_param: torch.Tensor) -> None:
            if rec.leaf_inputs and rec.bwd:  # see the module docstring
                rec.bwd[-1].append(mark())

        self._handles += [module.register_full_backward_pre_hook(bwd_pre),
                          module.register_full_backward_hook(bwd_post)]
        self._handles += [p.register_post_accumulate_grad_hook(grad_accumulated)
                          for p in module.parameters() if p.requires_grad]

    def _fwd_pre(self, rec: _Record) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            rec.leaf_inputs = not _needs_grad((args, kwargs))
            rec.fwd_open.append(self.clock.mark())

        return hook

    def _fwd_post(self, rec: _Record) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any, _output: Any) -> None:
            if rec.fwd_open:
                rec.fwd.append((rec.fwd_open.pop(), self.clock.mark()))

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def collect(self, keep: bool) -> None:
        """Read the step's marks (after a sync) into the totals, or drop them (warmup)."""
        ms = self.clock.ms
        for rec in self.records.values():
            if keep:
                rec.forward_ms += sum(ms(start, end) for start, end in rec.fwd)
                rec.backward_ms += sum(max(ms(marks[0], end) for end in marks[1:])
                                       for marks in rec.bwd)
                rec.calls += len(rec.fwd)
            for marks in (rec.fwd_open, rec.fwd, rec.bwd_open, rec.bwd):
                marks.clear()
        self.clock.reset()


def _run_steps(recorder: _Recorder, step_fn: Callable[[], Any], warmup: int,
               iterations: int) -> float:
    """Run warmup + measured steps; return the total measured step time in ms."""
    clock, total_ms = recorder.clock, 0.0
    for index in range(warmup + iterations):
        start = clock.mark()
        step_fn()
        end = clock.mark()
        clock.sync()
        measured = index >= warmup
        if measured:
            total_ms += clock.ms(start, end)
        recorder.collect(keep=measured)
    return total_ms


def _measure(recorder: _Recorder, step_fn: Callable[[], Any], warmup: int, iterations: int,
             backward: bool) -> float:
    recorder.attach(backward=backward)
    try:
        with warnings.catch_warnings():
            # PyTorch warns when a full backward hook fires early (no input needs grad); the
            # recorder handles exactly that case, so the warning would only confuse users.
            warnings.filterwarnings("ignore", message=_EARLY_HOOK_WARNING)
            return _run_steps(recorder, step_fn, warmup, iterations)
    finally:
        recorder.detach()


def profile_layers(model: nn.Module, step_fn: Callable[[], Any], *, depth: int = 1,
                   iterations: int = 5, warmup: int = 2) -> LayerProfile:
    """Time each module at ``depth`` over ``iterations`` steps of ``step_fn``.

    Args:
        model: The model; its train/eval mode is left as the caller set it.
        step_fn: Runs one training step: forward, backward (and optimizer if wanted).
        depth: Which level of the module tree to time (1 = direct children of ``model``).
        iterations: Measured steps (after ``warmup`` unmeasured ones).
        warmup: Steps run with the hooks installed but not counted.

    Returns:
        Per-module mean forward/backward ms per step, sorted by total time, and the share of
        the mean step each takes. All hooks are removed before returning.

    Raises:
        ValueError: bad ``depth``/``iterations``, or no module at ``depth``.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0 but got {iterations}, "
                         f"{warmup}")
    modules = modules_at_depth(model, depth)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no modules at depth {depth}")
    on_cuda = any(t.is_cuda for t in itertools.chain(model.parameters(), model.buffers()))
    clock = _CudaClock() if on_cuda else _CpuClock()
    notes: list[str] = []
    recorder = _Recorder(modules, clock)
    try:
        total_ms = _measure(recorder, step_fn, warmup, iterations, backward=True)
        backward = True
    except RuntimeError as exc:
        if _INPLACE_HOOK_ERROR not in str(exc):
            raise
        notes.append("backward not measured: an in-place op modifies a profiled module's "
                     f"output, which full backward hooks do not allow ({exc})")
        recorder = _Recorder(modules, clock)
        total_ms = _measure(recorder, step_fn, warmup, iterations, backward=False)
        backward = False
    step_ms = total_ms / iterations
    return LayerProfile(layers=_layer_times(recorder, modules, iterations, step_ms, backward),
                        step_ms=step_ms, depth=depth, iterations=iterations,
                        device=clock.device, notes=tuple(notes))


def _layer_times(recorder: _Recorder, modules: list[tuple[str, nn.Module]], iterations: int,
                 step_ms: float, backward: bool) -> tuple[LayerTime, ...]:
    layers = []
    for name, module in modules:
        rec = recorder.records[name]
        forward = rec.forward_ms / iterations
        back = rec.backward_ms / iterations if backward else None
        total = forward + (back or 0.0)
        layers.append(LayerTime(name=name, kind=type(module).__name__, forward_ms=forward,
                                backward_ms=back, calls=rec.calls // iterations,
                                share=total / step_ms if step_ms > 0 else 0.0))
    return tuple(sorted(layers, key=lambda layer: layer.total_ms, reverse=True))
