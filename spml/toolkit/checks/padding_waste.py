"""L0-08: variable-length sequences padded far beyond what each batch needs."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

PADDING_COLLATORS = ("DataCollatorWithPadding", "DataCollatorForSeq2Seq",
                     "DataCollatorForTokenClassification", "DataCollatorForLanguageModeling")
SHUFFLING_SAMPLERS = ("RandomSampler", "DistributedSampler")
# Names that show batches are formed from similar lengths.
GROUPING_WORDS = re.compile(r"bucket|length_group|lengthgroup|group_by_len|by_length|sortish|"
                            r"sort_by_len", re.IGNORECASE)


class PaddingWaste(Check):
    """Checks that variable-length sequences are not padded far beyond each batch's need.

    ## What it does
    Applies when the code pads variable-length sequences (``pad_sequence``, a tokenizer
    called with ``padding=``, a ``DataCollatorWithPadding`` or a collate function that pads).
    Flags tokenizer calls with ``padding="max_length"``, which pad every sample to the
    maximum length whatever the batch holds, and a shuffled ``DataLoader`` whose own collate
    function pads each batch to its longest sample (``pad_sequence``, ``F.pad``, padding to
    ``max(len(...))`` by hand) when nothing in the project groups samples by length (no
    bucketing or length-grouped sampler, no ``sorted(..., key=len)``, no
    ``group_by_length=True``, no custom ``batch_sampler``). Dynamic padding
    (``padding=True``/``"longest"``, Hugging Face's padding collators) and packed sequences
    are fine.

    ## Why is this bad?
    Padding tokens cost the same FLOPs and memory as real ones. With ``max_length`` padding or
    random batches of mixed lengths, most of a batch can be padding: the GPU is busy and the
    throughput looks fine while half of the work or more is thrown away.

    ## Example
    ```python
    enc = tokenizer(texts, padding="max_length", max_length=512, truncation=True)

    def collate(batch):
        return pad_sequence(batch, batch_first=True, padding_value=pad_id)

    loader = DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate)
    ```

    ## Use instead
    ```python
    enc = tokenizer(texts, truncation=True, max_length=512)  # pad per batch in the collator

    sampler = BucketBatchSampler(lengths, batch_size=32, shuffle=True)  # similar lengths
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    ```

    ## References
    - https://huggingface.co/docs/transformers/pad_truncation
    - https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments.group_by_length
    - https://pytorch.org/docs/stable/generated/torch.nn.utils.rnn.pad_sequence.html
    """

    id = "L0-08"
    name = "padding-waste"
    severity = "warning"
    message = "sequences are padded far beyond the batch's longest sample"
    fix = "Pad per batch (padding='longest') and batch similar lengths together, or pack"
    condition = "variable-length sequences"
    runtime_note = "the padded share of tokens is measured in L1"

    def applicability(self, facts: Facts) -> Applicability:
        for source, call in facts.project.calls:
            if _pads(facts, source, call) or _padding_collator(facts, source, call):
                return APPLIES
        return not_applicable("no variable-length batching (no pad_sequence, tokenizer "
                              "padding or padding collator)")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, call in facts.project.calls:
            value = _padding_value(facts, source, call)
            if value == "max_length" and _tokenizer_call(facts, source, call):
                yield self.finding(
                    source, call, "padding='max_length' pads every sequence to the maximum "
                    "length, not the batch's longest", "Use padding='longest' (or pad in a "
                    "DataCollatorWithPadding) and batch similar lengths together")
        if _groups_by_length(facts):
            return
        for source, call in facts.dataloaders:
            if any(k.arg in ("batch_sampler", None) for k in call.keywords) \
                    or not _shuffled(facts, source, call):
                continue
            collate = next((k.value for k in call.keywords if k.arg == "collate_fn"), None)
            if collate is not None and _collate_pads(facts, source, collate):
                yield self.finding(
                    source, call, f"shuffled mixed-length batches are padded by "
                    f"`{ast.unparse(collate)[:30]}` with no length grouping",
                    "Batch similar lengths together (a bucketing batch_sampler) or pack")


def _padding_value(facts: Facts, source: SourceFile, call: ast.Call) -> object:
    """The constant passed as ``padding=`` (followed through a variable), else None."""
    expr = next((k.value for k in call.keywords if k.arg == "padding"), None)
    if expr is None:
        return None
    nodes = [o.node for o in facts.flow.origins(source, expr)] if dotted(expr) else [expr]
    values = {n.value if isinstance(n, ast.Constant) else ... for n in nodes}
    value = values.pop() if len(values) == 1 else ...
    return None if value is ... else value


def _tokenizer_call(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """A tokenizer/processor call (not ``nn.Conv2d(padding=...)`` or ``F.pad``)."""
    name = facts.project.call_name(source, call) or ""
    if name.startswith("torch."):
        return False
    text = (dotted(call.func) or "").lower()
    return any(w in text for w in ("tok", "encode", "processor", "pad"))


def _pads(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """The call pads a batch of sequences."""
    name = facts.project.call_name(source, call) or ""
    if name.endswith("pad_sequence"):
        return True
    if not _tokenizer_call(facts, source, call):
        return False
    value = _padding_value(facts, source, call)
    attr = call.func.attr if isinstance(call.func, ast.Attribute) else ""
    return value is True or value in ("longest", "max_length") or attr == "pad"


def _padding_collator(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    name = facts.project.call_name(source, call) or ""
    return name.startswith("transformers.") and name.endswith(PADDING_COLLATORS)


def _shuffled(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    shuffle = keywords.get("shuffle")
    if shuffle is not None:
        nodes = [o.node for o in facts.flow.origins(source, shuffle)] if dotted(
            shuffle) else [shuffle]
        return bool(nodes) and all(isinstance(n, ast.Constant) and n.value is True
                                   for n in nodes)
    sampler = keywords.get("sampler")
    return sampler is not None and any(
        name.endswith(SHUFFLING_SAMPLERS) for _, name in facts.flow.origin_calls(source, sampler))


def _collate_pads(facts: Facts, source: SourceFile, collate: ast.AST) -> bool:
    """The project's own collate function (a function, a lambda or ``partial`` of one, or a
    class with ``__call__``) pads. Hugging Face's padding collators are the recommended
    dynamic padding and are left alone."""
    if isinstance(collate, ast.Lambda):
        return _function_pads(facts, source, collate)
    if isinstance(collate, ast.Call) and (facts.project.call_name(source, collate) or
                                          "").endswith("partial") and collate.args:
        collate = collate.args[0]
    for src, made in _made_by(facts, source, collate):
        found = facts.project.local_class(facts.project.call_name(src, made))
        method = next((n for n in found[1].body if isinstance(n, ast.FunctionDef)
                       and n.name == "__call__"), None) if found else None
        if method is not None:
            return _function_pads(facts, found[0], method)
    if isinstance(collate, ast.Name):
        target = facts.flow.callee(source, ast.Call(func=collate, args=[], keywords=[]))
        return target is not None and _function_pads(facts, target[0], target[1])
    return False


def _made_by(facts: Facts, source: SourceFile, expr: ast.AST) -> list[tuple[SourceFile, ast.Call]]:
    if isinstance(expr, ast.Call):
        return [(source, expr)]
    return [c for o in facts.flow.origins(source, expr) for c in facts.flow.producing_calls(o)]


def _function_pads(facts: Facts, source: SourceFile, func: ast.AST, depth: int = 2) -> bool:
    """The function pads: ``pad_sequence``, ``F.pad``, ``tokenizer.pad``, a tokenizer call
    with dynamic padding, padding to ``max(len(...))`` by hand, or a helper that does."""
    nodes = ast.walk(func.body) if isinstance(func, ast.Lambda) else scope_nodes(func)
    for call in (n for n in nodes if isinstance(n, ast.Call)):
        name = facts.project.call_name(source, call) or ""
        if _pads(facts, source, call) or name == "torch.nn.functional.pad":
            return True
        if name == "max" and any(isinstance(n, ast.Call) and dotted(n.func) == "len"
                                 for a in call.args for n in ast.walk(a)):
            return True
        target = facts.flow.callee(source, call) if depth else None
        if target is not None and _function_pads(facts, target[0], target[1], depth - 1):
            return True
    return False


def _groups_by_length(facts: Facts) -> bool:
    """Anything in the project that batches similar lengths together."""
    for _, node in facts.project.walk():
        if isinstance(node, ast.keyword) and node.arg == "group_by_length" and not (
                isinstance(node.value, ast.Constant) and not node.value.value):
            return True
        name = getattr(node, "name", None) or getattr(node, "id", None) \
            or getattr(node, "attr", None)
        if isinstance(name, str) and GROUPING_WORDS.search(name):
            return True
        if isinstance(node, ast.Call) and (dotted(node.func) == "sorted" or (
                isinstance(node.func, ast.Attribute) and node.func.attr == "sort")):
            key = next((k.value for k in node.keywords if k.arg == "key"), None)
            if key is not None and "len" in ast.unparse(key):
                return True
    return False
