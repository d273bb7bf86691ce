"""L0-18: debugging or determinism switches that force slow CUDA code paths, left on."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import is_constant
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

# Flags that slow every step when set to the given literal.
SLOW_FLAGS = {
    "torch.backends.cudnn.enabled": (False, "cuDNN is disabled: convolutions and RNNs fall "
                                            "back to slow native kernels"),
    "torch.backends.cuda.matmul.allow_tf32": (False, "TF32 matmuls are disabled: fp32 matmuls "
                                                     "run several times slower on Ampere+"),
    "torch.backends.cudnn.allow_tf32": (False, "TF32 convolutions are disabled"),
}
# Calls whose first argument, set to the given literal, forces a slow path.
SLOW_CALLS = {
    "torch.autograd.set_detect_anomaly": (True, "anomaly detection is left on: every backward "
                                                "op is checked and traced"),
    "torch.use_deterministic_algorithms": (True, "deterministic algorithms are forced in "
                                                 "training: fast kernels are refused"),
    "torch.set_float32_matmul_precision": ("highest", "float32 matmul precision is 'highest': "
                                                      "TF32 tensor cores are not used"),
}
ANOMALY = frozenset({"torch.autograd.detect_anomaly",
                     "torch.autograd.anomaly_mode.detect_anomaly"})
CONV = ("torch.nn.Conv", "torch.nn.ConvTranspose", "torch.nn.LazyConv")


class SlowFallback(Check):
    """Checks that debugging and determinism switches which disable fast CUDA kernels are
    not left on in training code.

    ## What it does
    Flags, when set unconditionally: ``torch.autograd.set_detect_anomaly(True)`` or
    ``detect_anomaly()``; ``os.environ["CUDA_LAUNCH_BLOCKING"] = "1"``;
    ``torch.backends.cudnn.enabled = False``; ``torch.backends.cudnn.benchmark = False`` in a
    project with convolution layers; ``torch.use_deterministic_algorithms(True)``;
    ``torch.set_float32_matmul_precision("highest")``; and
    ``torch.backends.cuda.matmul.allow_tf32 = False`` (or the cuDNN one). A switch inside
    ``if args.debug:`` (or any other condition) is left alone.

    ## Why is this bad?
    Each of these trades speed for debuggability or bit-exactness. Anomaly detection
    records a traceback for every op and checks every gradient for NaN; CUDA_LAUNCH_BLOCKING
    serialises every kernel launch with the host; deterministic mode and disabled TF32 or
    cuDNN push work onto slower kernels. Left on in a real run they can cost 10-100× in
    step time, and nothing in the output says why.

    ## Example
    ```python
    os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
    torch.autograd.set_detect_anomaly(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    ```

    ## Use instead
    ```python
    if args.debug:
        torch.autograd.set_detect_anomaly(True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    ```

    ## References
    - https://pytorch.org/docs/stable/autograd.html#anomaly-detection
    - https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices
    - https://pytorch.org/docs/stable/notes/randomness.html
    """

    id = "L0-18"
    name = "slow-fallback"
    severity = "warning"
    message = "a debugging or determinism switch forces slow CUDA code paths"
    fix = "Remove the switch or put it behind a --debug / --deterministic option"
    condition = "uses CUDA"
    runtime_note = "which kernels really run is visible in the L1 profile"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.uses_cuda else not_applicable("no CUDA use")

    def run(self, facts: Facts) -> Iterator[Finding]:
        has_conv = any((facts.project.call_name(s, c) or "").startswith(CONV)
                       for s, c in facts.project.calls)
        for source, node in facts.project.walk():
            if isinstance(node, ast.Assign) and not _conditional(source, node):
                yield from self._assignment(source, node, has_conv)
            elif isinstance(node, ast.Call) and not _conditional(source, node):
                yield from self._call(facts, source, node)

    def _assignment(self, source: SourceFile, node: ast.Assign,
                    has_conv: bool) -> Iterator[Finding]:
        for target in node.targets:
            name = source.canonical(target) or ""
            if name in SLOW_FLAGS and is_constant(node.value, SLOW_FLAGS[name][0]):
                yield self.finding(source, node, SLOW_FLAGS[name][1])
            elif name == "torch.backends.cudnn.benchmark" and has_conv \
                    and is_constant(node.value, False):
                yield self.finding(source, node, "cudnn.benchmark is off in a model with "
                                   "convolutions: no autotuned conv kernels")
            elif _env_key(source, target) == "CUDA_LAUNCH_BLOCKING" and _truthy(node.value):
                yield self.finding(source, node, "CUDA_LAUNCH_BLOCKING=1 serialises every "
                                   "kernel launch with the host")

    def _call(self, facts: Facts, source: SourceFile, call: ast.Call) -> Iterator[Finding]:
        name = facts.project.call_name(source, call) or ""
        first = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg in ("mode", "precision")), None)
        if name in SLOW_CALLS and isinstance(first, ast.Constant) \
                and first.value == SLOW_CALLS[name][0]:
            yield self.finding(source, call, SLOW_CALLS[name][1])
        elif name in ANOMALY and not is_constant(first, False):
            yield self.finding(source, call, "anomaly detection wraps the training code: "
                               "every backward op is checked and traced")
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "setdefault" \
                and source.canonical(call.func.value) == "os.environ" and len(call.args) == 2 \
                and _is_text(call.args[0], "CUDA_LAUNCH_BLOCKING") and _truthy(call.args[1]):
            yield self.finding(source, call, "CUDA_LAUNCH_BLOCKING=1 serialises every "
                               "kernel launch with the host")


def _env_key(source: SourceFile, target: ast.AST) -> str | None:
    if isinstance(target, ast.Subscript) and source.canonical(target.value) == "os.environ" \
            and isinstance(target.slice, ast.Constant):
        return str(target.slice.value)
    return None


def _is_text(node: ast.AST, text: str) -> bool:
    return isinstance(node, ast.Constant) and node.value == text


def _truthy(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and str(node.value).strip() not in ("", "0")


def _conditional(source: SourceFile, node: ast.AST) -> bool:
    """Under an ``if`` other than ``if __name__ == "__main__":``: a switch someone turns on
    deliberately (``if args.debug:``), not one left on."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.If) and "__main__" not in ast.unparse(parent.test):
            return True
        if isinstance(parent, ast.IfExp):
            return True
    return False
