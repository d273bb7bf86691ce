"""What L1 asks of a project: the environment contract and the entry-point protocol.

**Environment contract** (command mode, and set for entry points too). spml limits the
training volume without monkey-patching anything (SPML's rule): the training command reads

- ``SPML_MAX_STEPS``: optimizer steps to run at most (the run must print its limited total,
  e.g. ``max_steps=50`` or ``Total steps: 50``, within the first ``limit_check_s`` seconds);
- ``SPML_TIME_LIMIT``: seconds of training at most;
- ``SPML_CHECKPOINT_DIR``: where to save the checkpoint L1 reloads;
- ``SPML_METRICS_FILE``: where :class:`spml.toolkit.Monitor` (or the script) appends one JSON
  object per logged step (``step``, ``loss``, ``grad_norm``, ``nonfinite_grads``, ``lr``,
  ``step_time_s``, ...); without it L1 reads ``key=value`` lines from the training output;
- ``SPML_SEED``: the seed to use.

A command may also take them as placeholders: ``python train.py --max-steps {max_steps}``
(``{max_steps}``, ``{time_limit}``, ``{checkpoint_dir}``, ``{metrics_file}``, ``{seed}``).

**Entry point** (``module:function``, imported from the project folder): the function takes
no arguments and returns an object with these attributes (a class instance, a module or a
``types.SimpleNamespace``):

- ``make_model() -> torch.nn.Module``
- ``make_optimizer(model) -> torch.optim.Optimizer``
- ``train_batches() -> Iterable``: training batches (L1 takes what it needs)
- ``training_step(model, batch) -> Tensor``: forward pass returning the scalar loss
- ``predict(model, batch) -> Tensor``: the inference path (run in eval mode, no grad)
- ``evaluate(model) -> dict[str, float]``: the project's metrics
- optional ``eval_batches() -> Iterable`` (default: ``train_batches()``),
  ``save_checkpoint(path, model, optimizer)`` and ``load_checkpoint(path, model, optimizer)``
  (default: ``torch.save``/``torch.load(weights_only=True)`` of both state dicts),
  ``make_scheduler(optimizer)``, ``max_grad_norm`` (float, clip before the step).
"""

from __future__ import annotations

import os
import re
import shlex

ENV_MAX_STEPS = "SPML_MAX_STEPS"
ENV_TIME_LIMIT = "SPML_TIME_LIMIT"
ENV_CHECKPOINT_DIR = "SPML_CHECKPOINT_DIR"
ENV_METRICS_FILE = "SPML_METRICS_FILE"
ENV_SEED = "SPML_SEED"

REQUIRED_ENTRY_ATTRS = ("make_model", "make_optimizer", "train_batches", "training_step",
                        "predict", "evaluate")
OPTIONAL_ENTRY_ATTRS = ("eval_batches", "save_checkpoint", "load_checkpoint", "make_scheduler",
                        "max_grad_norm")

# What a limited run prints early on: `max_steps=50`, `total_steps: 50`, `Total steps: 50`.
LIMIT_LINE_PATTERN = r"(?i)\b(?:max[_ ]steps|total[_ ]steps)\s*[=:]\s*(\d+)"

# One record per logged step (Monitor's JSON lines; L1 judges a list of these).
RECORD_KEYS = ("step", "loss", "grad_norm", "nonfinite_grads", "lr", "step_time_s",
               "throughput", "tokens_per_s", "mfu", "tca", "mem_allocated_gb",
               "mem_reserved_gb", "mem_peak_gb", "param_drift")


# `{name}` placeholders a command may take instead of reading the variables, and the variable
# each stands for; `{checkpoint}` (the eval command's checkpoint file) has no variable.
ENV_BY_PLACEHOLDER = {"max_steps": ENV_MAX_STEPS, "time_limit": ENV_TIME_LIMIT,
                      "checkpoint_dir": ENV_CHECKPOINT_DIR, "metrics_file": ENV_METRICS_FILE,
                      "seed": ENV_SEED}
PLACEHOLDER = re.compile(r"\{(max_steps|time_limit|checkpoint_dir|metrics_file|seed|"
                         r"checkpoint)\}")


def fill_placeholders(command: str, values: dict[str, str]) -> str:
    """``command`` with its placeholders filled, shell-quoted (unknown ones left as they are)."""
    return PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]) if m.group(1) in values
                           else m.group(0), command)


def contract_env(values: dict[str, str]) -> dict[str, str]:
    """The ``SPML_*`` variables for placeholder ``values``; Python children unbuffered (so a
    printed limit is seen at once), unless the person set it."""
    env = {ENV_BY_PLACEHOLDER[key]: value for key, value in values.items()
           if key in ENV_BY_PLACEHOLDER}
    return {**env, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}
