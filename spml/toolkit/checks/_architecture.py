"""Finding a transformer's size in the code: layers, width, context, vocabulary, batch.

Shared by L0-12 (vocabulary vs embedding), L0-14 (FLOPs estimate) and L0-16 (memory
estimate). Values are read from wherever projects write them down: module constants
(``n_layer = 12``, nanoGPT's ``train.py``), ``argparse`` defaults, keywords of config calls
(``GPTConfig(n_layer=12)``, ``dict(n_embd=768)``, ``LlamaConfig(hidden_size=4096)``), dict
literals (``{"d_model": 512}``), dataclass field defaults (nanoGPT's ``GPTConfig``) and
parameter defaults. When several places disagree, the script's own settings win over a
config class's defaults (see ``TIERS``).
"""

from __future__ import annotations

import ast
import re
import weakref
from dataclasses import dataclass, field

from spml.toolkit.checks.flow import scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

# Canonical key -> the spellings projects use (compared case-insensitively).
ALIASES: dict[str, tuple[str, ...]] = {
    "n_layer": ("n_layer", "n_layers", "num_layers", "num_hidden_layers", "nlayers"),
    "d_model": ("n_embd", "n_embed", "d_model", "hidden_size", "embed_dim", "emb_dim",
                "embedding_dim", "model_dim", "dim_model", "n_embedding"),
    "n_head": ("n_head", "n_heads", "num_heads", "num_attention_heads", "nhead"),
    "seq_len": ("block_size", "seq_len", "seq_length", "max_seq_len", "max_seq_length",
                "context_length", "context_len", "ctx_len", "n_ctx", "n_positions",
                "max_position_embeddings"),
    "vocab_size": ("vocab_size", "n_vocab", "ntokens", "num_tokens"),
    "batch_size": ("batch_size", "micro_batch_size", "per_device_train_batch_size",
                   "train_batch_size"),
}
KEY_OF = {alias: key for key, names in ALIASES.items() for alias in names}
# Llama-style ``ModelArgs`` spell the width ``dim``; only trusted as a config-class field,
# never as a call keyword (``softmax(x, dim=-1)``).
CONFIG_CLASS_ONLY = {"dim": "d_model"}
# Keywords of these constructors describe a recurrent or embedding layer, not the model.
NOT_CONFIG_CALLS = ("torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN", "torch.nn.Embedding",
                    "torch.nn.LSTMCell", "torch.nn.GRUCell", "torch.nn.RNNCell")
# Where a value was written, most authoritative first: the script's module-level settings
# and command-line defaults, then values set inside functions (config calls, dicts), then
# the defaults of a config class or of parameters.
TIERS = {"module": 0, "local": 1, "default": 2}
ATTENTION_WORDS = re.compile(r"attn|attention|transformer", re.IGNORECASE)
MINIMUM = {"n_layer": 1, "d_model": 8, "n_head": 1, "seq_len": 1, "vocab_size": 2,
           "batch_size": 1}


@dataclass(frozen=True)
class Setting:
    """One architecture value and where it was written."""

    key: str
    value: int
    source: SourceFile
    node: ast.AST
    tier: int


@dataclass
class Architecture:
    """The model's size as far as the code tells; any value may be missing."""

    settings: dict[str, Setting] = field(default_factory=dict)

    def get(self, key: str) -> int | None:
        found = self.settings.get(key)
        return found.value if found else None

    @property
    def complete(self) -> bool:
        """Layers and width are known: enough for a parameter count."""
        return self.get("n_layer") is not None and self.get("d_model") is not None

    def params(self) -> int:
        """N ≈ 12·L·d² (attention 4d², MLP 8d² per layer) + V·d (tied embedding)."""
        layers, width = self.get("n_layer") or 0, self.get("d_model") or 0
        return 12 * layers * width * width + (self.get("vocab_size") or 0) * width

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N + 12·L·d·T (Kaplan et al.; PaLM appendix B)."""
        layers, width = self.get("n_layer") or 0, self.get("d_model") or 0
        return 6.0 * self.params() + 12.0 * layers * width * (self.get("seq_len") or 0)

    def anchor(self) -> Setting:
        """Where findings about the whole model go: the width's setting (else layers')."""
        return self.settings.get("d_model") or self.settings["n_layer"]

    def describe(self) -> str:
        short = {"n_layer": "L", "d_model": "d", "seq_len": "T", "vocab_size": "V"}
        return ", ".join(f"{s}={self.get(k)}" for k, s in short.items() if self.get(k))


_CACHE: weakref.WeakKeyDictionary[Facts, Architecture] = weakref.WeakKeyDictionary()


def architecture(facts: Facts) -> Architecture:
    """The project's architecture settings (cached per analysis)."""
    if facts not in _CACHE:
        _CACHE[facts] = _collect(facts)
    return _CACHE[facts]


def is_transformer(facts: Facts) -> bool:
    """The project builds attention layers (its own, torch's or a transformers model):
    the 12·L·d² parameter rule describes transformers, not LSTMs or CNNs."""
    for _, node in facts.project.walk():
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(
            node, ast.Attribute) else node.name if isinstance(node, ast.ClassDef) else ""
        if ATTENTION_WORDS.search(name):
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
                (a.name if isinstance(node, ast.Import) else node.module or "").startswith(
                    "transformers") for a in node.names):
            return True
    return False


def _collect(facts: Facts) -> Architecture:
    training = {lp.source.display for lp in facts.training_loops}
    found: list[Setting] = []
    for source in facts.project.files:
        for key, expr, node, tier in _candidates(facts, source):
            value = int_value(facts, source, expr)
            if value is not None and value >= MINIMUM[key]:
                found.append(Setting(key, value, source, node, tier))
    # The training script's settings first, then file order, then line order.
    found.sort(key=lambda s: (s.tier, s.source.display not in training, s.source.display,
                              getattr(s.node, "lineno", 0)))
    arch = Architecture()
    for setting in found:
        arch.settings.setdefault(setting.key, setting)
    return arch


def _candidates(facts: Facts, source: SourceFile):
    """(key, value expression, node, tier) for every place that may set a size."""
    module_level = {id(n) for n in scope_nodes(source.tree)}
    for node in ast.walk(source.tree):
        tier = "module" if id(node) in module_level else "local"
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            yield from _assigned(source, node, tier)
        elif isinstance(node, ast.Call):
            yield from _call_settings(facts, source, node, tier)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                key = _key(k.value) if isinstance(k, ast.Constant) and isinstance(
                    k.value, str) else None
                if key:
                    yield key, v, v, TIERS[tier]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs = [*zip(positional[len(positional) - len(args.defaults):], args.defaults,
                          strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
            for arg, default in pairs:
                if default is not None and _key(arg.arg):
                    yield _key(arg.arg), default, default, TIERS["default"]


def _assigned(source: SourceFile, node: ast.Assign | ast.AnnAssign, tier: str):
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    owner = source.parents.get(node)
    in_class = isinstance(owner, ast.ClassDef)
    for target in targets:
        if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant) \
                and isinstance(target.slice.value, str) and _key(target.slice.value):
            yield _key(target.slice.value), node.value, node, TIERS[tier]
            continue
        for name in target_names(target):
            last = name.rsplit(".", 1)[-1]
            key = _key(last)
            if key is None and in_class and any(w in owner.name.lower()
                                                for w in ("config", "args", "params")):
                key = CONFIG_CLASS_ONLY.get(last.lower())
            if key:
                yield key, node.value, node, TIERS["default" if in_class else tier]


def _call_settings(facts: Facts, source: SourceFile, call: ast.Call, tier: str):
    name = facts.project.call_name(source, call) or ""
    if name.startswith(NOT_CONFIG_CALLS):
        return
    if isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument":
        flag = next((a.value for a in call.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str) and a.value.startswith("--")), None)
        default = next((k.value for k in call.keywords if k.arg == "default"), None)
        key = _key(flag.lstrip("-").replace("-", "_")) if flag else None
        if key and default is not None:
            yield key, default, call, TIERS["module"]  # a command-line default: the script's
        return
    for keyword in call.keywords:
        if keyword.arg and _key(keyword.arg):
            yield _key(keyword.arg), keyword.value, keyword.value, TIERS[tier]


def _key(name: str) -> str | None:
    return KEY_OF.get(name.lower())


def int_value(facts: Facts, source: SourceFile, expr: ast.AST, depth: int = 6) -> int | None:
    """The integer an expression always has: literals, arithmetic on them, and names whose
    every assignment is such an expression. None when unknown."""
    number = _number(facts, source, expr, depth)
    if number is None or number != int(number):
        return None
    return int(number)


def _number(facts: Facts, source: SourceFile, expr: ast.AST, depth: int) -> float | None:
    if depth <= 0:
        return None
    if isinstance(expr, ast.Constant):
        value = expr.value
        return float(value) if isinstance(value, int | float) and not isinstance(
            value, bool) else None
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub | ast.UAdd):
        inner = _number(facts, source, expr.operand, depth - 1)
        return None if inner is None else (-inner if isinstance(expr.op, ast.USub) else inner)
    if isinstance(expr, ast.BinOp):
        return _binop(facts, source, expr, depth)
    if dotted(expr) is None:
        return None
    values = set()
    for origin in facts.flow.origins(source, expr):
        if origin.kind != "value" or origin.node is None or origin.node is expr:
            return None
        values.add(_number(facts, origin.source, origin.node, depth - 1))
    return values.pop() if len(values) == 1 else None


def _binop(facts: Facts, source: SourceFile, expr: ast.BinOp, depth: int) -> float | None:
    left = _number(facts, source, expr.left, depth - 1)
    right = _number(facts, source, expr.right, depth - 1)
    if left is None or right is None:
        return None
    op = expr.op
    try:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            return left / right
        if isinstance(op, ast.FloorDiv):
            return float(left // right)
        if isinstance(op, ast.Pow) and abs(right) < 64:
            return float(left**right)
    except (ZeroDivisionError, OverflowError):
        return None
    return None


def human(count: float) -> str:
    """``124M``, ``1.5B``: a count in three significant digits."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.3g}"


def scientific(value: float) -> str:
    """``8.7e8``: two significant digits, no ``+`` or leading zeros in the exponent."""
    mantissa, _, exponent = f"{value:.1e}".partition("e")
    mantissa = mantissa.removesuffix(".0")
    return f"{mantissa}e{int(exponent)}"
