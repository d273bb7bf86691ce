"""L0-12: the token embedding has fewer rows than the tokenizer has tokens."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._architecture import KEY_OF, architecture, int_value
from spml.toolkit.checks._base import Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts, string_constants
from spml.toolkit.checks.project import SourceFile, dotted

EMBEDDING = frozenset({"torch.nn.Embedding", "torch.nn.modules.sparse.Embedding"})
# len(tokenizer) of well-known tokenizers (base vocabulary plus built-in special tokens).
PRETRAINED_VOCAB = {
    "gpt2": 50257, "gpt2-medium": 50257, "gpt2-large": 50257, "gpt2-xl": 50257,
    "distilgpt2": 50257, "bert-base-uncased": 30522, "bert-large-uncased": 30522,
    "distilbert-base-uncased": 30522, "bert-base-cased": 28996, "bert-large-cased": 28996,
    "roberta-base": 50265, "roberta-large": 50265, "meta-llama/llama-2-7b-hf": 32000,
    "meta-llama/llama-2-13b-hf": 32000, "mistralai/mistral-7b-v0.1": 32000,
}
# tiktoken's n_vocab per encoding, and the encoding of the models tiktoken knows.
TIKTOKEN_VOCAB = {"gpt2": 50257, "r50k_base": 50257, "p50k_base": 50281, "p50k_edit": 50284,
                  "cl100k_base": 100277, "o200k_base": 200019}
TIKTOKEN_MODELS = {"gpt2": "gpt2", "text-davinci-003": "p50k_base", "gpt-4": "cl100k_base",
                   "gpt-3.5-turbo": "cl100k_base", "gpt-4o": "o200k_base"}
TOKEN_WORDS = re.compile(r"vocab|token|tok_|wte|word|ntoken", re.IGNORECASE)
OTHER_WORDS = re.compile(r"pos|wpe|segment|type|block|seq|ctx|max_len|expert|class|label|"
                         r"user|item|patch|time", re.IGNORECASE)


class VocabEmbeddingMismatch(Check):
    """Checks that the token embedding has a row for every token the tokenizer can produce.

    ## What it does
    Resolves the row count of each token embedding (``nn.Embedding(rows, dim)`` assigned to
    a name like ``wte``/``tok_emb``/``embed_tokens`` or sized by a ``vocab_size``; literals,
    constants and config-class defaults are followed) and the tokenizer's size
    (``tiktoken.get_encoding("gpt2")``, ``AutoTokenizer.from_pretrained("<known name>")``,
    a module-level ``vocab_size`` constant). Fewer rows than tokens is a finding; more rows
    (nanoGPT pads 50257 to 50304) is fine. It also flags tokens added to a tokenizer
    (``add_tokens``, ``add_special_tokens`` with new strings) without
    ``model.resize_token_embeddings(len(tokenizer))`` afterwards in the same function or its
    caller. Positional and other embeddings are not compared.

    ## Why is this bad?
    A token id at or beyond the embedding's row count indexes out of range: on CUDA that is a
    device-side assert in the middle of training (often only when a rare token appears), on
    CPU an ``IndexError``. Added special tokens are exactly such ids.

    ## Example
    ```python
    enc = tiktoken.get_encoding("gpt2")          # 50257 tokens
    self.tok_emb = nn.Embedding(32000, d_model)  # 32000 rows

    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    ```

    ## Use instead
    ```python
    enc = tiktoken.get_encoding("gpt2")
    self.tok_emb = nn.Embedding(50304, d_model)  # >= 50257, padded to a multiple of 64

    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    model = AutoModelForCausalLM.from_pretrained("gpt2")
    model.resize_token_embeddings(len(tokenizer))
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html
    - https://huggingface.co/docs/transformers/main_classes/model#transformers.PreTrainedModel.resize_token_embeddings
    """

    id = "L0-12"
    name = "vocab-embedding-mismatch"
    severity = "warning"
    message = "token embedding has fewer rows than the tokenizer has tokens"
    fix = "Size the embedding to at least the tokenizer's length (len(tokenizer)), or resize it"
    condition = "embedding layer"

    def applicability(self, facts: Facts) -> Applicability:
        if _embeddings(facts) or _pretrained_models(facts) \
                or facts.project.method_calls("resize_token_embeddings"):
            return Applicability(True)
        return not_applicable("no embedding layer (no nn.Embedding, no pretrained model)")

    def run(self, facts: Facts) -> Iterator[Finding]:
        vocab = tokenizer_vocab(facts)
        for source, call in _embeddings(facts):
            if not _is_token_embedding(source, call) or vocab is None:
                continue
            rows = embedding_rows(facts, source, call)
            if rows is not None and rows < vocab:
                message = f"embedding has {rows} rows but the tokenizer has {vocab} tokens"
                yield self.finding(source, call, message)
        if any(_sized_by_len(facts, s, c) for s, c in _embeddings(facts)):
            return  # the model is built from len(tokenizer), added tokens included
        for source, call in facts.project.method_calls("add_tokens", "add_special_tokens"):
            if _adds_new_tokens(source, call) and not _resized_after(facts, source, call):
                yield self.finding(
                    source, call, "tokens are added to the tokenizer but the model's embedding "
                    "is never resized", "Call model.resize_token_embeddings(len(tokenizer)) "
                    "after adding tokens")


def _embeddings(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    return [(s, c) for s, c in facts.project.calls if facts.project.call_name(s, c) in EMBEDDING]


def _pretrained_models(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    out = []
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if name.startswith("transformers.") and name.endswith(".from_pretrained") \
                and "Tokenizer" not in name and ("Model" in name or "For" in name):
            out.append((source, call))
    return out


def _rows_expr(call: ast.Call) -> ast.AST | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "num_embeddings"), None)


def _label(source: SourceFile, call: ast.Call) -> str:
    """The name the embedding is stored under: ``self.wte``, ``wte=`` in a ModuleDict."""
    parent = source.parents.get(call)
    if isinstance(parent, ast.Assign):
        return " ".join(n for t in parent.targets for n in target_names(t))
    if isinstance(parent, ast.AnnAssign):
        return " ".join(target_names(parent.target))
    if isinstance(parent, ast.keyword):
        return parent.arg or ""
    if isinstance(parent, ast.Dict):
        index = next((i for i, v in enumerate(parent.values) if v is call), None)
        key = parent.keys[index] if index is not None else None
        return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else ""
    return ""


def _is_token_embedding(source: SourceFile, call: ast.Call) -> bool:
    rows = _rows_expr(call)
    text = f"{_label(source, call)} {ast.unparse(rows) if rows is not None else ''}"
    return bool(TOKEN_WORDS.search(text)) and not OTHER_WORDS.search(text)


def embedding_rows(facts: Facts, source: SourceFile, call: ast.Call) -> int | None:
    """The embedding's row count: a literal or constant, else the project's configured
    vocabulary size when the argument is a ``config.vocab_size``-style field."""
    rows = _rows_expr(call)
    if rows is None:
        return None
    value = int_value(facts, source, rows)
    name = dotted(rows)
    if value is None and name and KEY_OF.get(name.rsplit(".", 1)[-1].lower()) == "vocab_size":
        value = architecture(facts).get("vocab_size")
    return value


def tokenizer_vocab(facts: Facts) -> int | None:
    """The smallest vocabulary among the tokenizers the code names (None if none known)."""
    sizes: list[int] = []
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        first = _string_arg(facts, source, call)
        if name == "tiktoken.get_encoding" and first in TIKTOKEN_VOCAB:
            sizes.append(TIKTOKEN_VOCAB[first])
        elif name == "tiktoken.encoding_for_model" and first in TIKTOKEN_MODELS:
            sizes.append(TIKTOKEN_VOCAB[TIKTOKEN_MODELS[first]])
        elif name.endswith(".from_pretrained") and "Tokenizer" in name and first:
            known = PRETRAINED_VOCAB.get(first.lower().removeprefix("openai-community/"))
            sizes.extend([known] if known else [])
    for source in facts.project.files:
        for node in scope_nodes(source.tree):
            if isinstance(node, ast.Assign) and any(
                    n.lower() in ("vocab_size", "n_vocab") for t in node.targets
                    for n in target_names(t)):
                value = int_value(facts, source, node.value)
                sizes.extend([value] if value and value > 1 else [])
    return min(sizes, default=None)


def _string_arg(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    if not call.args:
        return None
    arg = call.args[0]
    values = [o.node for o in facts.flow.origins(source, arg)] if dotted(arg) else [arg]
    found = {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return found.pop() if len(found) == 1 and len(values) == 1 else None


def _adds_new_tokens(source: SourceFile, call: ast.Call) -> bool:
    """``add_special_tokens({"pad_token": tokenizer.eos_token})`` reuses a token: only
    string literals (dict values, list items) are new tokens."""
    args = [*call.args, *(k.value for k in call.keywords if k.arg != "special_tokens")]
    values = [v for a in args for v in (a.values if isinstance(a, ast.Dict) else [a])]
    return any(string_constants(v) for v in values)


def _resized_after(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """A ``resize_token_embeddings`` runs after ``call``: later in its function or in a
    function that one calls later, or in a caller on the model the function returned."""
    scope = source.scope_of(call)
    if _resize_after(facts, source, scope, call.lineno, frozenset(), depth=1):
        return True
    for caller_source, caller in facts.project.calls:
        found = facts.flow.callee(caller_source, caller)
        received = _bound_from(caller_source, caller)
        if found is not None and found[1] is scope and received and _resize_after(
                facts, caller_source, caller_source.scope_of(caller), caller.lineno, received,
                depth=0):
            return True
    return False


def _resize_after(facts: Facts, source: SourceFile, scope: ast.AST, line: int,
                  names: frozenset[str], depth: int) -> bool:
    """A resize in ``scope`` after ``line`` (on one of ``names`` when given)."""
    for node in scope_nodes(scope):
        if not isinstance(node, ast.Call) or node.lineno < line:
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "resize_token_embeddings":
            if not names or mentions(node, names):
                return True
        found = facts.flow.callee(source, node) if depth else None
        if found is not None and _resize_after(facts, found[0], found[1], 0, names, depth - 1):
            return True
    return False


def _bound_from(source: SourceFile, call: ast.Call) -> frozenset[str]:
    parent = source.parents.get(call)
    if isinstance(parent, ast.Assign):
        return frozenset(n for t in parent.targets for n in target_names(t))
    return frozenset()


def _sized_by_len(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """``nn.Embedding(len(tokenizer), d)``: the embedding follows the tokenizer's size."""
    rows = _rows_expr(call)
    if rows is None:
        return False
    nodes = [o.node for o in facts.flow.origins(source, rows) if o.node is not None] \
        if dotted(rows) else [rows]
    return any(isinstance(n, ast.Call) and dotted(n.func) == "len"
               for node in nodes for n in ast.walk(node))
