"""L0-15: code that assumes one particular GPU: a hard-coded peak-FLOPS figure, a fixed
device index, bf16 without a capability check, a fixed memory fraction."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import autocasts, keyword
from spml.toolkit.checks.flow import target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

PEAK_FLOPS_MIN = 1e13
# Well-known dense peak figures, to name the GPU a constant was taken from.
KNOWN_PEAKS = {312e12: "an A100 bf16", 989e12: "an H100 SXM bf16", 989.4e12: "an H100 SXM bf16",
               989.5e12: "an H100 SXM bf16", 756e12: "an H100 PCIe bf16",
               1979e12: "an H100 sparse fp16", 125e12: "a V100 fp16", 19.5e12: "an A100 fp32",
               165.2e12: "an RTX 4090 fp16", 82.6e12: "an RTX 4090 fp32"}
FLOPS_WORDS = re.compile(r"flop|mfu|peak|promised|tflops", re.IGNORECASE)
CUDA_INDEX = re.compile(r"^cuda:(\d+)$")
BF16_CHECKS = frozenset({"torch.cuda.is_bf16_supported", "torch.cuda.get_device_capability",
                         "torch.cuda.get_device_properties", "torch.cuda.get_device_name"})


class HardcodedGpuAssumptions(Check):
    """Checks that the training code does not assume one particular GPU model or slot.

    ## What it does
    Flags a peak-FLOPS literal (a number of at least 1e13, such as ``312e12``) used to
    compute model FLOPs utilisation; a literal device index other than 0 (``"cuda:1"``,
    ``torch.cuda.set_device(1)``, ``device_ids=[0, 1, 2, 3]``); ``bfloat16`` autocast in a
    project that never asks ``torch.cuda.is_bf16_supported()`` or the device capability;
    and a literal ``torch.cuda.set_per_process_memory_fraction(...)``. A peak figure looked
    up from a table keyed by the device name, or read from a config option, is fine.

    ## Why is this bad?
    The run lands on whatever GPU the scheduler hands out. An A100 figure on an H100 makes
    MFU look three times better than it is (and an H100 figure on an A100 the opposite), so
    nobody notices a slow run. ``"cuda:1"`` fails on a one-GPU node and fights with
    ``CUDA_VISIBLE_DEVICES``; a fixed ``device_ids`` list breaks on smaller nodes. bf16 on
    pre-Ampere GPUs (V100, T4) is emulated and slow; a fixed memory fraction fits one card.

    ## Example
    ```python
    device = "cuda:1"
    flops_promised = 312e12  # A100 bf16 peak
    mfu = flops_achieved / flops_promised
    ```

    ## Use instead
    ```python
    device = f"cuda:{local_rank}"
    peak = PEAK_FLOPS.get(torch.cuda.get_device_name(), args.peak_flops)
    mfu = flops_achieved / peak
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.cuda.is_bf16_supported.html
    - https://pytorch.org/docs/stable/notes/cuda.html#cuda-semantics
    """

    id = "L0-15"
    name = "hardcoded-gpu-assumptions"
    severity = "warning"
    message = "the code assumes one particular GPU model or device index"
    fix = "Detect the GPU at run time (device name, capability) or take the value from config"
    condition = "uses CUDA"
    runtime_note = "the real GPU is detected in L1"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.uses_cuda else not_applicable("no CUDA use")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, node in facts.project.walk():
            if isinstance(node, ast.Constant):
                yield from self._constant(source, node)
        for source, call in facts.project.calls:
            yield from self._call(facts, source, call)
        yield from self._bf16_unchecked(facts)

    def _constant(self, source: SourceFile, node: ast.Constant) -> Iterator[Finding]:
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and value >= PEAK_FLOPS_MIN and _is_peak_flops(source, node):
            text = (ast.get_source_segment(source.text, node) or repr(value))[:16]
            gpu = KNOWN_PEAKS.get(float(value))
            what = f"{text}, {gpu} figure" if gpu else text
            yield self.finding(source, node, f"peak FLOPS hard-coded ({what}); MFU is wrong "
                               "on other GPUs")
        elif isinstance(value, str) and (match := CUDA_INDEX.match(value)) \
                and match.group(1) != "0" and not _is_option_default(source, node):
            yield self.finding(source, node, f'device index hard-coded ("{value}")',
                               "Use cuda:{local_rank} (or plain cuda) and CUDA_VISIBLE_DEVICES")

    def _call(self, facts: Facts, source: SourceFile, call: ast.Call) -> Iterator[Finding]:
        name = facts.project.call_name(source, call) or ""
        first = call.args[0] if call.args else None
        if name == "torch.cuda.set_device" and _int_literal(first) not in (None, 0):
            yield self.finding(source, call, f"device index hard-coded "
                               f"(torch.cuda.set_device({first.value}))",
                               "Use the LOCAL_RANK environment variable or CUDA_VISIBLE_DEVICES")
        elif name == "torch.device" and len(call.args) > 1 \
                and _int_literal(call.args[1]) not in (None, 0):
            yield self.finding(source, call, "device index hard-coded "
                               f"(torch.device(..., {call.args[1].value}))")
        elif name == "torch.cuda.set_per_process_memory_fraction" \
                and isinstance(first, ast.Constant):
            yield self.finding(source, call, f"GPU memory fraction hard-coded ({first.value})",
                               "Size batches from the free memory (torch.cuda.mem_get_info)")
        ids = keyword(call, "device_ids")
        if isinstance(ids, ast.List | ast.Tuple) and ids.elts \
                and all(_int_literal(e) is not None for e in ids.elts) \
                and ast.unparse(ids) not in ("[0]", "(0,)"):
            yield self.finding(source, ids, f"device ids hard-coded ({ast.unparse(ids)})",
                               "Use list(range(torch.cuda.device_count())) or LOCAL_RANK")

    def _bf16_unchecked(self, facts: Facts) -> Iterator[Finding]:
        if facts.project.calls_to(*BF16_CHECKS):
            return
        for cast in autocasts(facts):
            if cast.dtype == "bfloat16" and _names_bf16(cast.source, cast.call):
                yield self.finding(cast.source, cast.call, "bf16 autocast without a "
                                   "capability check: pre-Ampere GPUs emulate bf16 slowly",
                                   "Check torch.cuda.is_bf16_supported() and fall back to "
                                   "fp16 with a GradScaler")


def _int_literal(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) \
            and not isinstance(node.value, bool):
        return node.value
    return None


def _names_bf16(source: SourceFile, call: ast.Call) -> bool:
    """The autocast spells out ``torch.bfloat16`` (not a dtype chosen elsewhere)."""
    dtype = keyword(call, "dtype") or (call.args[1] if len(call.args) > 1 else None)
    return dtype is not None and source.canonical(dtype) == "torch.bfloat16"


def _is_peak_flops(source: SourceFile, node: ast.Constant) -> bool:
    """A literal that sets or divides by a peak-FLOPS figure: assigned to a name like
    ``flops_promised`` or used in arithmetic inside an MFU function; not a value in a
    table (keyed by GPU name) and not an option's default."""
    parent = source.parents.get(node)
    in_arithmetic = isinstance(parent, ast.BinOp)
    while isinstance(parent, ast.BinOp | ast.UnaryOp):
        node, parent = parent, source.parents.get(parent)  # 312 * 1e12, -x
    if isinstance(parent, ast.Dict | ast.keyword | ast.arguments | ast.Call) \
            or _is_option_default(source, node):
        return False
    if isinstance(parent, ast.Assign | ast.AnnAssign):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        if source.class_of(parent) is not None and source.scope_of(parent) is source.tree:
            return False  # a dataclass/config field default
        return any(FLOPS_WORDS.search(n) for t in targets for n in target_names(t))
    return in_arithmetic and bool(FLOPS_WORDS.search(getattr(source.scope_of(node), "name", "")))


def _is_option_default(source: SourceFile, node: ast.AST) -> bool:
    """``default=...`` or ``choices=[...]`` of an option: configurable, not hard-coded."""
    parent = source.parents.get(node)
    if isinstance(parent, ast.List | ast.Tuple):
        parent = source.parents.get(parent)
    return isinstance(parent, ast.keyword) and parent.arg in ("default", "choices")
