"""Recognisers for the ML constructs several checks share: training loops, optimizers,
schedulers, DataLoaders, CUDA use, clocks and the places a value gets written."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cached_property

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.flow import Flow, scope_nodes
from spml.toolkit.checks.project import Project, SourceFile, dotted

OPTIMIZER_ROOTS = ("torch.optim.", "bitsandbytes.optim.", "bnb.optim.", "apex.optimizers.",
                   "timm.optim.", "transformers.optimization.", "deepspeed.ops.")
OPTIMIZER_NAMES = frozenset({"SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax",
                             "NAdam", "RAdam", "LBFGS", "SparseAdam", "Lion", "Muon",
                             "Adafactor", "FusedAdam", "FusedLAMB", "LAMB", "ASGD", "Rprop",
                             "AdamW8bit", "Adam8bit", "PagedAdamW"})
SCHEDULER_ROOTS = ("torch.optim.lr_scheduler.", "transformers.get_",
                   "transformers.optimization.get_", "timm.scheduler.")
CLOCKS = frozenset({"time.time", "time.perf_counter", "time.monotonic", "time.process_time",
                    "time.time_ns", "time.perf_counter_ns", "timeit.default_timer"})
DATALOADER = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})
FILE_SINKS = frozenset({"json.dump", "numpy.save", "numpy.savetxt", "numpy.savez", "torch.save",
                        "wandb.log", "mlflow.log_metric", "mlflow.log_metrics", "csv.writer",
                        "pickle.dump", "yaml.dump", "yaml.safe_dump"})
FILE_SINK_METHODS = frozenset({"write", "writelines", "writerow", "writerows", "add_scalar",
                               "add_scalars", "log_metrics", "log_metric", "log_dict", "track",
                               "write_text", "to_csv", "to_json", "log"})
CONSOLE_SINK_METHODS = frozenset({"set_postfix", "set_postfix_str", "set_description"})
NOT_SINKS = frozenset({"math", "numpy", "np", "torch", "cmath", "scipy.special"})
# Well-known library helpers that record the values passed to them, by canonical name.
# timm's update_summary appends the epoch's train/eval metrics to summary.csv (and logs
# them to W&B with log_wandb=True).
HELPER_SINKS: dict[str, str] = {
    "timm.utils.update_summary": "file",
    "timm.utils.summary.update_summary": "file",
}
# Methods of objects built by well-known library classes, as "<class>.<method>": found
# by where the object comes from, not by what the variable is called (``acc.log(...)``).
CLASS_SINKS: dict[str, str] = {
    "accelerate.Accelerator.log": "file",  # every tracker init_trackers started
    "accelerate.accelerator.Accelerator.log": "file",
    "accelerate.Accelerator.print": "console",  # print on the main process only
    "accelerate.accelerator.Accelerator.print": "console",
    "lightning.Fabric.log": "file",  # the loggers the Fabric was given
    "lightning.Fabric.log_dict": "file",
    "lightning.fabric.Fabric.log": "file",
    "lightning.fabric.Fabric.log_dict": "file",
    "lightning.Fabric.print": "console",
    "lightning.fabric.Fabric.print": "console",
}
CLASS_SINK_METHODS = frozenset(key.rsplit(".", 1)[1] for key in CLASS_SINKS)
# Objects whose ``backward(loss)`` backpropagates its argument, by the call that makes them
# (whatever the variable is called): Accelerate, Lightning Fabric, a DeepSpeed engine.
BACKWARD_OWNERS = frozenset({"accelerate.Accelerator", "accelerate.accelerator.Accelerator",
                             "lightning.Fabric", "lightning.fabric.Fabric",
                             "lightning_fabric.Fabric", "deepspeed.initialize"})
# Meters that print every value they hold (torchvision references' MetricLogger, copied by
# DETR, DeiT, MAE, DINO): ``for batch in metric_logger.log_every(loader, 10): ...``.
METER_PRINT_METHODS = frozenset({"log_every"})
# How many calls below a loop its backward() may run and still make it a training loop
# (loop -> train_step -> forward_backward -> backward is 2; the event walk follows as deep).
STEP_DEPTH = 3
LOG_LEVELS = frozenset({"info", "debug", "warning", "error", "critical", "log", "exception"})


def is_optimizer_name(name: str | None) -> bool:
    if not name or "lr_scheduler" in name or "scheduler" in name.lower():
        return False
    last = name.rsplit(".", 1)[-1]
    return name.startswith(OPTIMIZER_ROOTS) or last in OPTIMIZER_NAMES


def is_scheduler_name(name: str | None) -> bool:
    if not name:
        return False
    last = name.rsplit(".", 1)[-1]
    return name.startswith(SCHEDULER_ROOTS) or (last.endswith("LR") and last[0].isupper()) \
        or ("schedule" in last.lower() and last.startswith("get_"))


def is_clock_call(source: SourceFile, node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and source.canonical(node.func) in CLOCKS


def string_constants(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


@dataclass
class TrainingLoop:
    """A loop whose body runs ``backward()`` (directly or through a local function)."""

    source: SourceFile
    loop: ast.For | ast.While | ast.AsyncFor
    backward: list[ast.Call] = field(default_factory=list)

    @property
    def scope(self) -> ast.AST:
        return self.source.scope_of(self.loop)

    def body_nodes(self) -> list[ast.AST]:
        return [n for stmt in self.loop.body for n in [stmt, *scope_nodes(stmt)]]


class Facts:
    """Project-wide answers shared by the checks, computed once per analysis."""

    def __init__(self, project: Project, config: ValidateConfig | None = None) -> None:
        self.project = project
        self.config = config or ValidateConfig()
        self.flow = Flow(project)

    # ---- training ---------------------------------------------------------------------
    @cached_property
    def backward_calls(self) -> list[tuple[SourceFile, ast.Call]]:
        return [(s, c) for s, c in self.project.method_calls("backward")
                if not (isinstance(c.func, ast.Attribute)
                        and (s.canonical(c.func.value) or "").startswith("torch.autograd"))]

    @cached_property
    def training_loops(self) -> list[TrainingLoop]:
        """The step loops: innermost loops that run ``backward()`` directly or by calling a
        local step function (a module function, a method, the ``__call__`` of a local
        class such as MAE's ``loss_scaler(loss, optimizer)``, or a function defined in the
        enclosing function or the loop body itself, as timm's ``_backward`` closure),
        followed up to three calls deep, or by passing one to ``optimizer.step(closure)``
        (LBFGS); for a gradient-accumulation micro-loop, also the loop around it (that one
        runs once per optimizer step). A helper that runs backward in a micro-batch loop of
        its own and steps no optimizer counts where its caller steps: the training loop is
        the loop that steps the optimizer."""
        step_funcs, micro = self._step_functions
        found: dict[int, TrainingLoop] = {}
        for source, node in self.project.walk():
            if not isinstance(node, ast.For | ast.While | ast.AsyncFor):
                continue
            inner = list(scope_nodes(node))
            direct = [n for n in inner if n in self._backward_set(source)]
            via = [n for n in inner
                   if isinstance(n, ast.Call) and (self._runs(source, n, step_funcs)
                                                   or self._passes(source, n, step_funcs))]
            if not direct and not via and any(
                    isinstance(n, ast.Call) and self._runs(source, n, micro) for n in inner):
                via = [node] if self._loop_steps(source, node) else []
            if direct or via:
                found[id(node)] = TrainingLoop(source, node, direct)
        loops = list(found.values())
        steps = [lp for lp in loops if not any(
            o is not lp and o.source is lp.source and lp.loop in set(o.source.ancestors(o.loop))
            and not is_accumulation_loop(o.loop) for o in loops)]
        return sorted(steps, key=lambda lp: (lp.source.display, lp.loop.lineno))

    def _backward_set(self, source: SourceFile) -> set[ast.Call]:
        return {c for s, c in self.backward_calls if s is source}

    @cached_property
    def _step_functions(self) -> tuple[set[int], set[int]]:
        """(step functions, micro-batch helpers). Step functions run backward once per
        call: directly (not inside a loop of their own), or, up to STEP_DEPTH calls up, by
        calling one (not in a loop). A micro-batch helper runs backward in a loop of its own
        and steps no optimizer (improved-diffusion's ``forward_backward``): a function that
        calls one and steps is a step function, and so is a loop that calls one and steps."""
        funcs, micro = self._backward_functions()
        level = {**funcs, **micro}
        for _ in range(STEP_DEPTH - 1):
            names = {getattr(f, "name", None) for _, f in level.values()} - {None}
            if "__call__" in names:
                names |= {n for n in self._call_names if n not in self._attr_call_names}
            added: dict[int, tuple[SourceFile, ast.AST]] = {}
            for source, call in self._calls_named(names):
                scope = source.scope_of(call)
                if scope is source.tree or id(scope) in funcs or id(scope) in added \
                        or _in_loop_below(source, call, scope):
                    continue
                found = self.flow.callee(source, call)
                if found is None or id(found[1]) not in level:
                    continue
                if id(found[1]) in funcs or self._steps(source, scope):
                    added[id(scope)] = (source, scope)
            if not added:
                break
            funcs.update(added)
            level = added
        return set(funcs), set(micro) - set(funcs)

    def _backward_functions(self) -> tuple[dict[int, tuple[SourceFile, ast.AST]],
                                           dict[int, tuple[SourceFile, ast.AST]]]:
        """(functions that run backward outside a loop of their own, micro-batch helpers)."""
        funcs: dict[int, tuple[SourceFile, ast.AST]] = {}
        micro: dict[int, tuple[SourceFile, ast.AST]] = {}
        for source, call in self.backward_calls:
            scope = source.scope_of(call)
            if scope is source.tree or id(scope) in funcs:
                continue
            if not _in_loop_below(source, call, scope):
                funcs[id(scope)] = (source, scope)
                micro.pop(id(scope), None)
            elif id(scope) not in micro and not self._steps(source, scope):
                micro[id(scope)] = (source, scope)
        return funcs, micro

    @cached_property
    def _calls_by_name(self) -> dict[str, list[tuple[SourceFile, ast.Call]]]:
        table: dict[str, list[tuple[SourceFile, ast.Call]]] = {}
        for source, call in self.project.calls:
            func = call.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else None
            if name:
                table.setdefault(name, []).append((source, call))
        return table

    @cached_property
    def _call_names(self) -> frozenset[str]:
        return frozenset(self._calls_by_name)

    @cached_property
    def _attr_call_names(self) -> frozenset[str]:
        return frozenset(n for n, calls in self._calls_by_name.items()
                         if all(isinstance(c.func, ast.Attribute) for _, c in calls))

    def _calls_named(self, names: set[str]) -> list[tuple[SourceFile, ast.Call]]:
        return [sc for n in names for sc in self._calls_by_name.get(n, [])]

    def _steps(self, source: SourceFile, func: ast.AST) -> bool:
        """True when running ``func`` steps an optimizer (following its calls)."""
        from spml.toolkit.checks._optim import function_steps  # _optim imports this module
        return function_steps(self, source, func)

    def _loop_steps(self, source: SourceFile, loop: ast.AST) -> bool:
        from spml.toolkit.checks._optim import loop_events  # _optim imports this module
        return any(e.kind == "step" for e in loop_events(self, source, loop))

    def _runs(self, source: SourceFile, call: ast.Call, funcs: set[int]) -> bool:
        found = self.flow.callee(source, call)
        return found is not None and id(found[1]) in funcs

    def _passes(self, source: SourceFile, call: ast.Call, funcs: set[int]) -> bool:
        """``optimizer.step(closure)``: the closure (LBFGS) runs backward inside the step."""
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "step"):
            return False
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            if isinstance(arg, ast.Name):
                found = self.flow.function_named(source, call, arg.id)
                if found is not None and id(found[1]) in funcs:
                    return True
        return False

    def step_loop_of(self, source: SourceFile, node: ast.AST) -> TrainingLoop | None:
        """The step loop whose every iteration runs ``node`` (its nearest enclosing loop)."""
        for parent in source.ancestors(node):
            if isinstance(parent, ast.For | ast.While | ast.AsyncFor):
                return next((lp for lp in self.training_loops if lp.loop is parent), None)
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                return None
        return None

    # ---- optimizers, schedulers, loaders ------------------------------------------------
    @cached_property
    def optimizer_constructions(self) -> list[tuple[SourceFile, ast.Call]]:
        return [(s, c) for s, c in self.project.calls
                if is_optimizer_name(self.project.call_name(s, c))]

    @cached_property
    def scheduler_constructions(self) -> list[tuple[SourceFile, ast.Call]]:
        return [(s, c) for s, c in self.project.calls
                if is_scheduler_name(self.project.call_name(s, c))]

    @cached_property
    def dataloaders(self) -> list[tuple[SourceFile, ast.Call]]:
        return [(s, c) for s, c in self.project.calls if self.project.call_name(s, c) in DATALOADER
                or (self.project.call_name(s, c) or "").endswith(".DataLoader")
                or self.project.call_name(s, c) == "DataLoader"]

    def makes(self, source: SourceFile, expr: ast.AST, predicate) -> bool:
        """True when ``expr``'s value comes from a call whose canonical name matches."""
        return any(predicate(name) for _, name in self.flow.origin_calls(source, expr))

    # ---- devices ------------------------------------------------------------------------
    @cached_property
    def uses_cuda(self) -> bool:
        """CUDA (or any accelerator through `torch.accelerator`, as current pytorch/examples
        pick their device) is in use."""
        for source, call in self.project.calls:
            if (self.project.call_name(source, call) or "").startswith("torch.accelerator."):
                return True
        for _source, node in self.project.walk():
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.split(":")[0] == "cuda":
                return True
            if isinstance(node, ast.Attribute) and node.attr == "cuda":
                return True
        return False

    # ---- sinks ---------------------------------------------------------------------------
    @cached_property
    def logging_to_file(self) -> bool:
        """True when the project routes the ``logging`` module to a file."""
        for source, call in self.project.calls:
            name = self.project.call_name(source, call) or ""
            if name.endswith(("FileHandler", "RotatingFileHandler")) or name == "hydra.main":
                return True  # Hydra's default job logging writes <run dir>/<job>.log
            if name in ("logging.config.dictConfig", "logging.config.fileConfig") and any(
                    "FileHandler" in text or text.endswith(".log")
                    for text in string_constants(call)):
                return True
            if name == "logging.basicConfig" and any(k.arg == "filename" for k in call.keywords):
                return True
        return False

    def sink_kind(self, source: SourceFile, call: ast.Call) -> str | None:
        """``file`` when the call writes its arguments somewhere durable, ``console`` when
        only to the terminal, else None."""
        name = self.project.call_name(source, call) or ""
        func = call.func
        if name == "print":
            target = next((k.value for k in call.keywords if k.arg == "file"), None)
            if target is None or (source.canonical(target) or "") in ("sys.stdout", "sys.stderr"):
                return "console"
            return "file"
        if name in FILE_SINKS:
            return "file"
        if name in HELPER_SINKS:
            return HELPER_SINKS[name]
        if not isinstance(func, ast.Attribute):
            return None
        return self._class_sink_kind(source, func) or _method_sink_kind(
            source.canonical(func.value) or "", func.attr, self.logging_to_file)

    def _class_sink_kind(self, source: SourceFile, func: ast.Attribute) -> str | None:
        """The kind of ``obj.method(...)`` when ``obj`` was built by a class in CLASS_SINKS."""
        if func.attr not in CLASS_SINK_METHODS:
            return None
        for _, made in self.flow.origin_calls(source, func.value):
            kind = CLASS_SINKS.get(f"{made}.{func.attr}")
            if kind:
                return kind
        return None


def _method_sink_kind(owner: str, method: str, logging_to_file: bool) -> str | None:
    """The sink kind of ``<owner>.<method>(...)``."""
    if owner in NOT_SINKS:  # math.log, np.log, torch.log are arithmetic
        return None
    if owner.startswith("tqdm") or owner.endswith(("console", "Console")) \
            or owner in ("sys.stdout", "sys.stderr") or (method == "write" and "pbar" in owner):
        return "console"  # tqdm.write, rich console.log/print, pbar.write
    if method in LOG_LEVELS and ("log" in owner.lower() or owner == "logging"):
        return "file" if logging_to_file else "console"
    if method in CONSOLE_SINK_METHODS or method in METER_PRINT_METHODS:
        return "console"
    return "file" if method in FILE_SINK_METHODS else None


def _in_loop_below(source: SourceFile, node: ast.AST, scope: ast.AST) -> bool:
    return any(isinstance(p, ast.For | ast.While | ast.AsyncFor)
               for p in _until(source, node, scope))


def is_accumulation_loop(loop: ast.AST) -> bool:
    """``for micro_step in range(grad_accum_steps)`` and the like."""
    if not isinstance(loop, ast.For):
        return False
    text = (ast.unparse(loop.iter) + " " + ast.unparse(loop.target)).lower()
    return any(w in text for w in ("accum", "micro"))


def _until(source: SourceFile, node: ast.AST, stop: ast.AST):
    for parent in source.ancestors(node):
        if parent is stop:
            return
        yield parent


def loop_guarded(source: SourceFile, node: ast.AST, stop: ast.AST) -> bool:
    """True when ``node`` sits under an ``if`` (below ``stop``) whose test uses ``%`` or a
    comparison with a clock/interval, i.e. it does not run on every iteration."""
    child = node
    for parent in source.ancestors(node):
        if parent is stop:
            return False
        # Only the `if` branch runs at the cadence; its `else:` runs on the other steps.
        if isinstance(parent, ast.If) and is_cadence_test(parent.test) and child in parent.body:
            return True
        child = parent
    return False


def is_cadence_test(test: ast.AST) -> bool:
    cached = getattr(test, "_spml_cadence", None)
    if cached is None:  # asked for every statement under the same `if`
        cached = _is_cadence_test(test)
        test._spml_cadence = cached  # type: ignore[attr-defined]
    return cached


def _is_cadence_test(test: ast.AST) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return True
        if isinstance(node, ast.Compare):
            text = ast.unparse(node).lower()
            if any(w in text for w in ("time", "interval", "every", "last_log", "freq",
                                       "period", "_at", "next_")):
                return True
        if isinstance(node, ast.Name | ast.Attribute) and any(
                w in (dotted(node) or "").lower() for w in ("should_log", "log_now", "is_log")):
            return True
    return False

