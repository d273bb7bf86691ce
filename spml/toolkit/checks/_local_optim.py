"""Optimizers the project defines itself: local subclasses of ``torch.optim.Optimizer``.

nanochat's ``MuonAdamW(torch.optim.Optimizer)``, modded-nanoGPT's ``Muon`` and many research
codebases build their optimizer from a class of their own. Its constructions are optimizer
constructions like ``torch.optim.AdamW(...)``: the first argument (or the keyword named
like ``__init__``'s first parameter) holds the parameters or param groups.
"""

from __future__ import annotations

import ast
import weakref

from spml.toolkit.checks.patterns import OPTIMIZER_NAMES, Facts
from spml.toolkit.checks.project import SourceFile

OPTIMIZER_BASES = frozenset({"torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"})
_CLASSES: weakref.WeakKeyDictionary[Facts, frozenset[int]] = weakref.WeakKeyDictionary()
_BUILDS: weakref.WeakKeyDictionary[Facts, list] = weakref.WeakKeyDictionary()


def local_optimizer_classes(facts: Facts) -> frozenset[int]:
    """Ids of the project's classes deriving (transitively) from an optimizer class."""
    if facts not in _CLASSES:
        found = frozenset(id(cls) for source, cls in _all_classes(facts)
                          if _derives(facts, source, cls, frozenset()))
        _CLASSES[facts] = found
    return _CLASSES[facts]


def _all_classes(facts: Facts) -> list[tuple[SourceFile, ast.ClassDef]]:
    return [(s, n) for s, n in facts.project.walk() if isinstance(n, ast.ClassDef) and n.bases]


def _derives(facts: Facts, source: SourceFile, cls: ast.ClassDef, seen: frozenset[str]) -> bool:
    for base in cls.bases:
        name = source.canonical(base) or ""
        if name in OPTIMIZER_BASES or (name.rsplit(".", 1)[-1] in OPTIMIZER_NAMES
                                       and facts.project.local_class(name) is None):
            return True  # torch.optim.Optimizer, or a library optimizer (a tweaked AdamW)
        found = facts.project.local_class(name)
        if found is not None and found[1].name not in seen \
                and _derives(facts, found[0], found[1], seen | {cls.name}):
            return True
    return False


def local_optimizer_class(facts: Facts, source: SourceFile,
                          call: ast.Call) -> ast.ClassDef | None:
    """The local optimizer class ``call`` constructs, if any."""
    if not local_optimizer_classes(facts):
        return None  # the common case: no project-defined optimizer, nothing to resolve
    found = facts.project.local_class(facts.project.call_name(source, call))
    if found is not None and id(found[1]) in local_optimizer_classes(facts):
        return found[1]
    return None


def optimizer_builds(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    """Every optimizer construction: library optimizers (``Facts.optimizer_constructions``)
    and the project's own ``torch.optim.Optimizer`` subclasses."""
    if facts not in _BUILDS:
        known = list(facts.optimizer_constructions)
        seen = {id(c) for _, c in known}
        if local_optimizer_classes(facts):
            known += [(s, c) for s, c in facts.project.calls if id(c) not in seen
                      and local_optimizer_class(facts, s, c) is not None]
        _BUILDS[facts] = known
    return _BUILDS[facts]


def params_keyword(facts: Facts, source: SourceFile, call: ast.Call) -> str:
    """The keyword that passes the parameters: ``params``, or the name of a local optimizer
    class's (or its local base's) first ``__init__`` parameter (``param_groups``)."""
    cls = local_optimizer_class(facts, source, call)
    seen: set[int] = set()
    while cls is not None and id(cls) not in seen:
        seen.add(id(cls))
        init = next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                     and n.name == "__init__"), None)
        if init is not None:
            args = init.args.args[1:]
            return args[0].arg if args else "params"
        cls = _local_base(facts, cls)
    return "params"


def _local_base(facts: Facts, cls: ast.ClassDef) -> ast.ClassDef | None:
    """The first local optimizer class ``cls`` derives from (where its ``__init__`` is)."""
    source = next((s for s in facts.project.files if cls in s.parents), None)
    for base in cls.bases if source is not None else []:
        found = facts.project.local_class(source.canonical(base))
        if found is not None and id(found[1]) in local_optimizer_classes(facts):
            return found[1]
    return None
