"""L0-24: a visualisation tool is imported but not initialised, never logged to, or logged
to on every training step."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.logging_cadence import every_step_calls, switched
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile
from spml.toolkit.checks.sinks import helper_note


@dataclass(frozen=True)
class Tool:
    """How one tracker is imported, started and written to."""

    label: str
    modules: tuple[str, ...]
    inits: tuple[str, ...]  # canonical call names (suffix match) that start a run / writer
    logs: tuple[str, ...] = ()  # canonical call names that log
    methods: frozenset[str] = frozenset()  # methods that log, on any object
    run_methods: frozenset[str] = frozenset()  # methods that log, on what an init returned
    init_text: str = ""
    log_text: str = ""
    # Library helpers that log to the tool, with the keyword that turns that on ("": always).
    helpers: tuple[tuple[str, str], ...] = ()


TB_METHODS = frozenset({"add_scalar", "add_scalars", "add_histogram", "add_image", "add_images",
                        "add_figure", "add_text", "add_hparams", "add_pr_curve", "add_embedding",
                        "add_audio", "add_video", "add_mesh", "add_custom_scalars", "add_graph"})
TOOLS = (
    Tool("W&B", ("wandb",), ("wandb.init",), ("wandb.log", "wandb.run.log"),
         run_methods=frozenset({"log"}), init_text="wandb.init", log_text="wandb.log",
         # timm's update_summary(..., log_wandb=True) calls wandb.log with the epoch metrics
         helpers=(("timm.utils.update_summary", "log_wandb"),
                  ("timm.utils.summary.update_summary", "log_wandb"))),
    Tool("TensorBoard", ("torch.utils.tensorboard", "tensorboardX"), ("SummaryWriter",),
         methods=TB_METHODS, init_text="SummaryWriter(...)", log_text="add_scalar"),
    Tool("MLflow", ("mlflow",), ("mlflow.start_run", "mlflow.autolog", "mlflow.pytorch.autolog",
                                 "mlflow.log_metric", "mlflow.log_metrics"),
         ("mlflow.log_metric", "mlflow.log_metrics", "mlflow.autolog", "mlflow.pytorch.autolog"),
         methods=frozenset({"log_metric", "log_metrics"}), init_text="mlflow.start_run",
         log_text="mlflow.log_metric"),
    Tool("Aim", ("aim",), ("aim.Run", "aim.Session"), methods=frozenset({"track"}),
         init_text="aim.Run", log_text="run.track"),
    Tool("SwanLab", ("swanlab",), ("swanlab.init",), ("swanlab.log",),
         run_methods=frozenset({"log"}), init_text="swanlab.init", log_text="swanlab.log"),
)
# Accelerate's trackers: started by init_trackers, written by accelerator.log.
ACCELERATE = Tool("Accelerate trackers", (), ("init_trackers",), ("accelerator.log",))
# Frameworks that start the tracker and log to it themselves (Accelerate's init_trackers,
# Lightning's loggers, the transformers Trainer with report_to).
DELEGATED = ("init_trackers", "WandbLogger", "TensorBoardLogger", "MLFlowLogger", "AimLogger",
             "SwanLabLogger", "transformers.Trainer", "transformers.TrainingArguments",
             "transformers.Seq2SeqTrainer", "trl.SFTTrainer")

# ``x.log(...)`` on these is arithmetic or the logging module, never a tracker run.
NOT_RUNS = ("math.", "numpy.", "torch.", "logging.", "np.", "cmath.")

# Tracker setups that say a visualisation tool is in use without importing it.
FRAMEWORK_TRACKERS = ("init_trackers", "WandbLogger", "TensorBoardLogger", "MLFlowLogger",
                      "AimLogger", "SwanLabLogger")


class VisualisationNotWired(Check):
    """Checks that an imported visualisation tool is initialised and logged to every N steps.

    ## What it does
    For W&B, TensorBoard (``SummaryWriter``, also tensorboardX), MLflow, Aim and SwanLab:
    flags an import with no initialisation anywhere in the project (``wandb.init``,
    ``SummaryWriter(...)``, ``mlflow.start_run``, ``aim.Run``), an initialisation with no
    log call (``wandb.log``, ``writer.add_scalar``, ``mlflow.log_metric``, ``run.track``),
    and a log call that runs on every training step without a ``step % N`` or time gate.
    Library helpers that log to a tool count as log calls (timm's
    ``update_summary(..., log_wandb=...)`` for W&B).
    Initialising under a flag (``if args.wandb: wandb.init(...)``) is fine, and so is
    handing the tracker to Accelerate, Lightning or the transformers ``Trainer``.

    ## Why is this bad?
    A tracker that is never started or never written to gives an empty dashboard, found out
    only when someone needs the curves. Logging every step sends thousands of points a
    minute: it slows the step (serialisation, ``.item()`` syncs), throttles or bloats the
    run, and makes the dashboard slow without showing anything more.

    ## Example
    ```python
    import wandb

    wandb.init(project="gpt")
    for step in range(max_steps):
        loss = train_step(batch)
        wandb.log({"loss": loss.item()}, step=step)
    ```

    ## Use instead
    ```python
    import wandb

    wandb.init(project="gpt", config=vars(args))
    for step in range(max_steps):
        loss = train_step(batch)
        if step % args.log_every == 0:
            wandb.log({"loss": loss.item()}, step=step)
    ```

    ## References
    - https://docs.wandb.ai/guides/track/log/
    - https://pytorch.org/docs/stable/tensorboard.html
    """

    id = "L0-24"
    name = "visualisation-not-wired"
    severity = "critical"
    policy = True
    message = "visualisation tool is not initialised, never logged to, or logged every step"
    fix = "Initialise the tracker once, log metrics to it, and only every N steps"
    condition = "a visualisation tool is used"

    def applicability(self, facts: Facts) -> Applicability:
        if _imported(facts) or any(
                _matches(facts.project.call_name(s, c) or "", FRAMEWORK_TRACKERS)
                for s, c in facts.project.calls):
            return APPLIES
        return not_applicable("no visualisation tool imported")

    def run(self, facts: Facts) -> Iterator[Finding]:
        tools = _imported(facts)
        calls = [(s, c, facts.project.call_name(s, c) or "") for s, c in facts.project.calls]
        delegated = any(_matches(name, DELEGATED) for _, _, name in calls)
        for tool, (source, node) in {} if delegated else tools.items():
            inits = [(s, c) for s, c, name in calls if _matches(name, tool.inits)]
            if not inits:
                yield self.finding(source, node, f"{tool.label} is imported but never "
                                   f"initialised (no {tool.init_text})",
                                   f"Call {tool.init_text} once before training, or drop the "
                                   "import")
            elif not any(_is_log(facts, tool, s, c, sure=False) for s, c, _ in calls):
                yield self.finding(*inits[0], f"{tool.label} is initialised but nothing is "
                                   f"ever logged to it (no {tool.log_text})",
                                   f"Log the loss and step time with {tool.log_text} every N "
                                   "steps")
        started = any(_matches(name, ACCELERATE.inits) for _, _, name in calls)
        yield from self._every_step(facts, [*tools, *([ACCELERATE] if started else [])])

    def _every_step(self, facts: Facts, tools: list[Tool]) -> Iterator[Finding]:
        def logs_to(source: SourceFile, call: ast.Call) -> Tool | None:
            return next((t for t in tools if _is_log(facts, t, source, call)), None)

        for site_source, site, target_source, target in every_step_calls(
                facts, lambda s, c: logs_to(s, c) is not None):
            tool = logs_to(target_source, target)
            why = "gated only by a flag" if switched(site_source, site) \
                else "no step % N or time gate"
            yield self.finding(site_source, site,
                               f"`{ast.unparse(site.func)[-30:]}()` logs to {tool.label} on "
                               f"every training step ({why})",
                               "Log to the tracker every N steps (if step % log_every == 0)",
                               note="" if site is target else helper_note(target_source,
                                                                          target))


def _imported(facts: Facts) -> dict[Tool, tuple[SourceFile, ast.stmt]]:
    """Each tool imported somewhere (outside ``if TYPE_CHECKING``), with its first import."""
    found: dict[Tool, tuple[SourceFile, ast.stmt]] = {}
    for source, node in facts.project.walk():
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        else:
            continue
        if _type_checking(source, node):
            continue
        for tool in TOOLS:
            if tool not in found and any(m == p or m.startswith(p + ".")
                                         for m in modules for p in tool.modules):
                found[tool] = (source, node)
    return found


def _type_checking(source: SourceFile, node: ast.AST) -> bool:
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test)
               for p in source.ancestors(node))


def _matches(name: str, wanted: tuple[str, ...]) -> bool:
    return any(name == w or name.endswith("." + w) for w in wanted)


def _is_log(facts: Facts, tool: Tool, source: SourceFile, call: ast.Call,
            sure: bool = True) -> bool:
    """A call that sends data to ``tool``: its module function, a logging method on any
    object (``writer.add_scalar``), or ``log`` on what its init returned (``run.log``).
    Not ``sure``: also ``log`` on an object whose origin is unknown (``self.run.log``)."""
    name = facts.project.call_name(source, call) or ""
    if _helper_logs(tool, name, call):
        return True
    if _matches(name, tool.logs) or not isinstance(call.func, ast.Attribute):
        return _matches(name, tool.logs)
    if call.func.attr in tool.methods:
        return True
    if call.func.attr in tool.run_methods and not name.startswith(NOT_RUNS):
        made = [n for _, n in facts.flow.origin_calls(source, call.func.value)]
        return any(_matches(n, tool.inits) for n in made) or (not sure and not made)
    return False


def _helper_logs(tool: Tool, name: str, call: ast.Call) -> bool:
    """A library helper that logs to ``tool``, with its switch keyword not set to a
    constant false (``update_summary(..., log_wandb=args.log_wandb)`` counts)."""
    for helper, keyword in tool.helpers:
        if name != helper:
            continue
        if not keyword:
            return True
        value = next((k.value for k in call.keywords if k.arg == keyword), None)
        return value is not None and not (isinstance(value, ast.Constant) and not value.value)
    return False
