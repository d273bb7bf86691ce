"""Evaluation code (shared by L0-28 and L0-29): functions and loops that run the model
forward on held-out data without ever calling ``backward()``, who calls them, and whether the
model there is in eval mode and autograd is off."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from spml.toolkit.checks._accumulation import cached
from spml.toolkit.checks.flow import names_read, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

EVAL_PREFIXES = ("eval", "valid", "test", "val_", "estimate_loss")
EVAL_WORDS = frozenset({"val", "valid", "validation", "test", "eval", "evaluation", "dev",
                        "holdout"})
# Hooks a framework calls in eval mode under no_grad itself (Lightning, Keras-style).
FRAMEWORK_HOOKS = frozenset({"validation_step", "test_step", "predict_step", "eval_step"})
MODEL_WORDS = ("model", "net", "network", "module", "backbone", "encoder", "decoder",
               "classifier", "ema")
PRETRAINED = ("transformers.", "torchvision.models.", "timm.", "torch.hub.load")
# What a pretrained library loads that is not a network: ``AutoTokenizer.from_pretrained``.
NOT_MODELS = ("Tokenizer", "TokenizerFast", "Processor", "FeatureExtractor", "Config",
              "GenerationConfig")
NO_GRAD = frozenset({"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad",
                     "torch.autograd.grad_mode.no_grad",
                     "torch.autograd.grad_mode.inference_mode"})
FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
LOOPS = (ast.For, ast.AsyncFor)


@dataclass(frozen=True)
class Evaluation:
    """An evaluation function (``kind`` function) or a loop over held-out data (``loop``)
    and the model calls it makes."""

    source: SourceFile
    node: ast.AST
    kind: str
    forwards: tuple[ast.Call, ...]

    @property
    def label(self) -> str:
        return f"{self.node.name}()" if isinstance(self.node, FUNCS) else "the evaluation loop"


def evaluations(facts: Facts) -> list[Evaluation]:
    """Evaluation functions, then held-out loops outside them, in file order."""
    return cached(facts, "evaluations", _find_evaluations)


def _find_evaluations(facts: Facts) -> list[Evaluation]:
    found: list[Evaluation] = []
    inside: set[int] = set()
    for source, node in facts.project.walk():
        if isinstance(node, FUNCS) and _is_eval_function(source, node):
            ev = _region(facts, source, node, "function")
            if ev is not None:
                found.append(ev)
                inside.update(id(n) for n in ast.walk(node))
    for source, node in facts.project.walk():
        if isinstance(node, LOOPS) and id(node) not in inside and _over_held_out(node.iter):
            ev = _region(facts, source, node, "loop")
            if ev is not None:
                found.append(ev)
                inside.update(id(n) for n in ast.walk(node))
    return found


def _region(facts: Facts, source: SourceFile, node: ast.AST, kind: str) -> Evaluation | None:
    nodes = list(ast.walk(node))  # a nested helper (``def run_validate``) belongs to it
    backward = {id(c) for s, c in facts.backward_calls if s is source}
    if any(id(n) in backward for n in nodes):
        return None
    forwards = tuple(n for n in nodes
                     if isinstance(n, ast.Call) and is_model_call(facts, source, n)
                     and not (kind == "function" and _built_here(facts, source, n)))
    if not forwards or (kind == "function" and _feeds_backward(facts, source, node)):
        return None
    return Evaluation(source, node, kind, forwards)


def _built_here(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """A forward of a network the function builds itself and never loads weights into:
    ``def test(): net = ResNet18(); y = net(torch.randn(1, 3, 32, 32))`` checks shapes of a
    freshly initialised model (every ``models/*.py`` of kuangliu/pytorch-cifar); it is not
    the trained model being evaluated."""
    if not isinstance(call.func, ast.Name):
        return False
    scope = source.scope_of(call)
    if not isinstance(scope, FUNCS) or call.func.id not in facts.flow.bindings(scope):
        return False
    origins = facts.flow.origins(source, call.func)
    inside = set(scope_nodes(scope))
    if not origins or any(o.source is not source or o.node not in inside for o in origins):
        return False  # built (also) elsewhere: a parameter, a global, a helper's result
    made = [facts.project.call_name(s, c) or "" for o in origins
            for s, c in facts.flow.producing_calls(o)]
    if not made or not all(facts.project.is_module_class(n) or (
            n.startswith("torch.nn.") and not n.startswith("torch.nn.functional."))
            for n in made):
        return False  # a pretrained network, or one a helper builds (and may load)
    return not any(_loads_weights(n) for n in inside)


def _loads_weights(node: ast.AST) -> bool:
    """``load_state_dict``, ``torch.load``, ``load_checkpoint``, ``from_pretrained`` ..."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return "load" in name.lower() or name == "from_pretrained"


def _feeds_backward(facts: Facts, source: SourceFile, func: ast.AST) -> bool:
    """Whether some call of ``func`` returns a value that a ``backward()`` in the caller
    differentiates: stable-baselines3's ``policy.evaluate_actions(obs, actions)`` is PPO's
    training forward, its log-probabilities and values make the loss. Evaluation code's
    result never reaches a backward."""
    for src, site in call_sites(facts, source, func):
        scope = src.scope_of(site)
        backwards = [c for s, c in facts.backward_calls if s is src and src.scope_of(c) is scope]
        if not backwards:
            continue
        tainted = facts.flow.tainted(scope, lambda n, site=site: n is site)
        if any(names_read(c) & tainted for c in backwards):
            return True
    return False


def _is_eval_function(source: SourceFile, func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    name = func.name.lower()
    if not name.startswith(EVAL_PREFIXES) or func.name in FRAMEWORK_HOOKS:
        return False
    if name.startswith("test") and (_is_pytest_file(source) or _asserts(func)):
        return False  # a unit test of the model, not an evaluation
    cls = source.class_of(func)
    return not (cls and any("Lightning" in (dotted(b) or "") for b in cls.bases))


def _is_pytest_file(source: SourceFile) -> bool:
    parts = source.module.split(".")  # relative to the analysed root, not the disk
    name = parts[-1]
    return name.startswith("test_") or name.endswith("_test") or name == "conftest" \
        or "tests" in parts[:-1]


def _asserts(func: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in scope_nodes(func))


def _over_held_out(expr: ast.AST) -> bool:
    """``val_loader``, ``loaders["test"]``, ``enumerate(eval_dataloader)``."""
    words: list[str] = []
    for node in ast.walk(expr):
        if isinstance(node, ast.Name | ast.Attribute):
            words += re.split(r"[^a-z0-9]+|_", (dotted(node) or "").lower())
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.append(node.value.lower())
    return any(w in EVAL_WORDS for w in words)


def is_model_call(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """A forward of a model: ``model(x)``, ``self.net(x)``; not a loss module, not one of
    the project's own functions (``self.load_model(path)``)."""
    func = call.func
    if not isinstance(func, ast.Name | ast.Attribute) or dotted(func) == "self" \
            or facts.flow.callee(source, call) is not None:
        return False
    if facts.project.is_module_class(source.canonical(func)):
        return False  # ``Net()`` builds a model, it runs none
    made = [n for _, n in facts.flow.origin_calls(source, func)]
    if any(n.endswith("Loss") or _not_a_model(n) for n in made):
        return False
    if any(facts.project.is_module_class(n) or n.startswith(PRETRAINED)
           or (n.startswith("torch.nn.") and not n.startswith("torch.nn.functional."))
           for n in made):
        return True
    last = (dotted(func) or "").rsplit(".", 1)[-1].lower()
    if last.startswith(("load", "build", "get", "make", "create", "save", "init", "set")):
        return False
    return last in MODEL_WORDS or last.endswith(("model", "_net"))


def _not_a_model(name: str) -> bool:
    """A tokenizer, processor or config a pretrained library loads
    (``transformers.AutoTokenizer.from_pretrained``): calling it runs no network."""
    return any(part.endswith(NOT_MODELS) for part in name.split("."))


# ---- who calls what --------------------------------------------------------------------
def call_sites(facts: Facts, source: SourceFile, func: ast.AST
               ) -> list[tuple[SourceFile, ast.Call]]:
    """Calls of ``func``: resolved by the flow, or by name when the receiver is unknown."""
    name = getattr(func, "name", None)
    out = []
    for src, call in facts.project.calls:
        target = facts.flow.callee(src, call)
        if target is not None:
            if target[1] is func:
                out.append((src, call))
            continue
        called = call.func.attr if isinstance(call.func, ast.Attribute) else dotted(call.func)
        if called == name:
            out.append((src, call))
    return out


def holds_before(facts: Facts, source: SourceFile, node: ast.AST, predicate,
                 depth: int = 2) -> bool:
    """True when a call matching ``predicate`` runs in ``node``'s scope before ``node``, or
    (for a function) before some call of that function, following callers ``depth`` deep."""
    scope = source.scope_of(node)
    line = getattr(node, "lineno", 0)
    for other in scope_nodes(scope):
        if isinstance(other, ast.Call) and other.lineno <= line and predicate(source, other):
            return True
    if depth == 0 or not isinstance(scope, FUNCS):
        return False
    return any(holds_before(facts, src, call, predicate, depth - 1)
               for src, call in call_sites(facts, source, scope))


def is_eval_mode_call(source: SourceFile, call: ast.AST) -> bool:
    """``model.eval()``, ``model.train(False)``, ``model.train(mode=False)``."""
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
        return False
    if call.func.attr == "eval" and not call.args:
        return (dotted(call.func.value) or "") not in ("torch", "builtins")
    return call.func.attr == "train" and _false_arg(call)


def is_context_manager(func: ast.AST) -> bool:
    """A ``@contextlib.contextmanager`` generator (or any function that yields)."""
    return any((dotted(d) or "").endswith("contextmanager") for d in
               getattr(func, "decorator_list", ())) \
        or any(isinstance(n, ast.Yield | ast.YieldFrom) for n in scope_nodes(func))


def eval_context(facts: Facts, source: SourceFile, node: ast.AST, depth: int = 2) -> bool:
    """Whether ``node`` runs inside ``with helper(model):`` where ``helper`` is a context
    manager of the project that calls ``model.eval()`` (and switches back on exit), here or
    around every call of the function ``node`` is in, ``depth`` callers up."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.With | ast.AsyncWith) and any(
                _eval_manager(facts, source, item.context_expr) for item in parent.items):
            return True
    scope = source.scope_of(node)
    if depth == 0 or not isinstance(scope, FUNCS):
        return False
    sites = call_sites(facts, source, scope)
    return bool(sites) and all(eval_context(facts, s, c, depth - 1) for s, c in sites)


def _eval_manager(facts: Facts, source: SourceFile, expr: ast.AST) -> bool:
    if not isinstance(expr, ast.Call):
        return False
    target = facts.flow.callee(source, expr)
    if target is None or not is_context_manager(target[1]):
        return False
    return any(is_eval_mode_call(target[0], n) for n in scope_nodes(target[1]))


def is_train_mode_call(source: SourceFile, call: ast.AST) -> bool:
    """``model.train()`` or ``model.train(True)``."""
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
        and call.func.attr == "train" and not _false_arg(call) \
        and all(isinstance(a, ast.Constant)
                for a in [*call.args, *(k.value for k in call.keywords)])


def _false_arg(call: ast.Call) -> bool:
    args = [*call.args, *(k.value for k in call.keywords if k.arg == "mode")]
    return bool(args) and isinstance(args[0], ast.Constant) and args[0].value is False


# ---- autograd ---------------------------------------------------------------------------
def grad_disabled(facts: Facts, source: SourceFile, node: ast.AST, depth: int = 2) -> bool:
    """True when ``node`` runs with autograd off: under ``with torch.no_grad()`` /
    ``inference_mode()``, in a function decorated with one of them, after
    ``torch.set_grad_enabled(False)``, or in a function every caller runs that way."""
    scope = source.scope_of(node)
    for parent in source.ancestors(node):
        if isinstance(parent, ast.With | ast.AsyncWith) and any(
                _disables_grad(facts, source, item.context_expr) for item in parent.items):
            return True
        if parent is scope:
            break
    if isinstance(scope, FUNCS) and any(_disables_grad(facts, source, d)
                                        for d in scope.decorator_list):
        return True
    if any(isinstance(n, ast.Call) and n.lineno <= getattr(node, "lineno", 0)
           and _set_grad_false(source, n) for n in scope_nodes(scope)):
        return True
    if depth == 0 or not isinstance(scope, FUNCS):
        return False
    sites = call_sites(facts, source, scope)
    return bool(sites) and all(grad_disabled(facts, s, c, depth - 1) for s, c in sites)


def _disables_grad(facts: Facts, source: SourceFile, expr: ast.AST) -> bool:
    target = expr.func if isinstance(expr, ast.Call) else expr
    name = source.canonical(target) or ""
    if name in NO_GRAD or (isinstance(expr, ast.Call) and _set_grad_false(source, expr)):
        return True
    if isinstance(expr, ast.Name):  # ``ctx = torch.no_grad()`` ... ``with ctx:``
        return any(n in NO_GRAD for _, n in facts.flow.origin_calls(source, expr))
    return False


def _set_grad_false(source: SourceFile, call: ast.Call) -> bool:
    return source.canonical(call.func) == "torch.set_grad_enabled" and bool(call.args) \
        and isinstance(call.args[0], ast.Constant) and call.args[0].value is False


# ---- layers whose behaviour depends on train/eval mode ----------------------------------
MODE_LAYER = re.compile(r"^(Dropout[123]?d?|AlphaDropout|FeatureAlphaDropout|"
                        r"(Sync)?BatchNorm[123]?d?|LazyBatchNorm[123]d)$")
TRANSFORMER_LAYERS = frozenset({"TransformerEncoderLayer", "TransformerDecoderLayer",
                                "Transformer", "MultiheadAttention"})


def mode_dependent_layers(facts: Facts, value_of) -> Iterator[tuple[SourceFile, ast.AST, str]]:
    """Layers that act differently in train and eval mode: (source, node, what).
    ``value_of(source, expr)`` resolves a dropout probability to a number or None."""
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if isinstance(call.func, ast.Subscript):  # ``torchvision.models.__dict__[arch]()``
            name = source.canonical(call.func.value) or ""
        last = name.rsplit(".", 1)[-1]
        if MODE_LAYER.match(last) and (name.startswith("torch.nn.") or last == name):
            prob = call.args[0] if call.args else _kw(call, "p")
            if "Dropout" in last and _is_zero(source, prob, value_of):
                continue
            yield source, call, last
        elif last in TRANSFORMER_LAYERS and name.startswith("torch.nn."):
            default = None if last == "MultiheadAttention" else ast.Constant(0.1)
            if not _is_zero(source, _kw(call, "dropout") or default, value_of):
                yield source, call, last
        elif name.startswith(PRETRAINED) and not _in_factory(source, call) \
                and not _not_a_model(name):
            yield source, call, name
    yield from _training_flag_uses(facts, value_of)


def _training_flag_uses(facts: Facts, value_of) -> Iterator[tuple[SourceFile, ast.AST, str]]:
    # ``F.dropout(x, p, training=self.training)``, ``dropout_p=p if self.training else 0``
    for source, node in facts.project.walk():
        if not (isinstance(node, ast.Attribute) and node.attr == "training"
                and dotted(node) == "self.training"):
            continue
        parent = source.parents.get(node)
        if isinstance(parent, ast.IfExp) and parent.test is node \
                and _is_zero(source, parent.body, value_of) \
                and _is_zero(source, parent.orelse, value_of):
            continue
        if isinstance(parent, ast.keyword):
            call = source.parents.get(parent)
            prob = call.args[1] if isinstance(call, ast.Call) and len(call.args) > 1 else None
            prob = prob or (_kw(call, "p") if isinstance(call, ast.Call) else None)
            if prob is not None and _is_zero(source, prob, value_of):
                continue
        yield source, node, "self.training"


def _in_factory(source: SourceFile, node: ast.AST) -> bool:
    """Inside a ``@classmethod``/``@staticmethod`` (nanoGPT's ``GPT.from_pretrained`` loads
    Hugging Face weights only to copy them into its own modules)."""
    scope = source.scope_of(node)
    return isinstance(scope, FUNCS) and any(
        dotted(d) in ("classmethod", "staticmethod") for d in scope.decorator_list)


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_zero(source: SourceFile, expr: ast.AST | None, value_of) -> bool:
    return expr is not None and value_of(source, expr) == 0
