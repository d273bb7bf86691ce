"""A project to analyse: its Python files parsed once, imports resolved, names indexed.

Checks ask the project questions ("which calls are ``torch.optim.AdamW``?", "which local
classes are ``nn.Module``s?") instead of walking syntax trees themselves, so a script that
imports its model from ``model.py`` is analysed as one program.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from spml.errors import SpmlError

IGNORE_COMMENT = re.compile(r"#\s*spml:\s*ignore(?:\[(?P<ids>[^\]]*)\])?", re.IGNORECASE)
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".tox", "build", "dist"}
MODULE_BASES = ("torch.nn.Module", "nn.Module", "Module", "torch.nn.modules.module.Module")


class SourceError(SpmlError, ValueError):
    """A file cannot be read or parsed; the message names it and the line."""

    def __init__(self, message: str, line: int = 1, col: int = 1, detail: str = "") -> None:
        super().__init__(message)
        self.line, self.col, self.detail = line, col, detail or message


@dataclass(frozen=True)
class UnparsableFile:
    """A named file that could not be read or parsed (reported as L0-00, the rest analysed)."""

    display: str
    line: int
    col: int
    detail: str


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain (calls in the chain break it), else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


@dataclass(eq=False)  # identity: a file is itself, usable in sets and as a key
class SourceFile:
    """One parsed file, with its import aliases and ``# spml: ignore`` comments."""

    path: Path
    display: str
    text: str
    tree: ast.Module
    module: str
    aliases: dict[str, str] = field(default_factory=dict)
    ignores: dict[int, frozenset[str] | None] = field(default_factory=dict)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    # Loaded because an analysed file imports it (not named on the command line).
    context: bool = False
    # A context file that an exclude glob matches: read to resolve names, never reported on.
    excluded: bool = False

    @classmethod
    def load(cls, path: Path, root: Path) -> SourceFile:
        try:
            with tokenize.open(path) as handle:  # PEP 263 coding cookies and BOMs, as Python
                text = handle.read()
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            raise SourceError(f"{path}: cannot read: {exc}", detail=f"cannot read: {exc}") \
                from None
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            line, col = exc.lineno or 1, exc.offset or 1
            raise SourceError(f"{path}:{line}:{col}: syntax error: {exc.msg}; L0 needs code "
                              "that parses", line, col, f"syntax error: {exc.msg}") from None
        except (RecursionError, MemoryError, ValueError) as exc:  # nesting Python rejects too
            detail = f"cannot parse: {type(exc).__name__}: {exc}"
            raise SourceError(f"{path}: {detail}", detail=detail) from None
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        source = cls(path, _display(path), text, tree, module)
        source._index()
        return source

    def _index(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            self._index_import(node)
        for number, line in enumerate(self.text.splitlines(), 1):
            match = IGNORE_COMMENT.search(line)
            if match:
                ids = match.group("ids")
                self.ignores[number] = (frozenset(i.strip().upper() for i in ids.split(",")
                                                  if i.strip()) if ids else None)

    def _index_import(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self.aliases[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:  # relative import: resolve against this package
                base = ".".join(self.module.split(".")[:-node.level] + [node.module or ""])
                self.aliases[a.asname or a.name] = f"{base.strip('.')}.{a.name}"

    def canonical(self, node: ast.AST) -> str | None:
        """The dotted name with this file's import aliases expanded (``F.softmax`` ->
        ``torch.nn.functional.softmax``)."""
        name = dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        base = self.aliases.get(head, head)
        return f"{base}.{rest}" if rest else base

    def ignored(self, line: int, check_id: str) -> bool:
        if line not in self.ignores:
            return False
        ids = self.ignores[line]
        return ids is None or check_id in ids

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        while node in self.parents:
            node = self.parents[node]
            yield node

    def scope_of(self, node: ast.AST) -> ast.AST:
        """The innermost function (or the module) that contains ``node``."""
        for parent in self.ancestors(node):
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                return parent
        return self.tree

    def class_of(self, node: ast.AST) -> ast.ClassDef | None:
        return next((p for p in self.ancestors(node) if isinstance(p, ast.ClassDef)), None)


def _display(path: Path) -> str:
    """Relative to the working directory when under it (``train.py:3:1``), else absolute."""
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def _is_test_file(name: str) -> bool:
    """pytest files are not training code: a test's ``loss.backward()`` is no training loop.
    Named explicitly, they are still analysed."""
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def collect_files(paths: Iterable[Path], exclude: Sequence[str] = ()) -> list[Path]:
    """Every ``.py`` file under the given files/directories, sorted; folders skip virtual
    environments, hidden and build folders, pytest files, and paths matching an ``exclude``
    glob (relative to the folder given, or a file or folder name)."""
    found: set[Path] = set()
    for path in paths:
        if path.is_symlink() and _real(path) is None:
            raise SourceError(f"{path}: cannot read: a symlink loop or a dangling link")
        if not path.exists():
            raise SourceError(f"{path}: no such file or directory")
        if path.is_file():
            found.add(path.resolve())
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            rel = Path(dirpath).relative_to(path)
            # Virtual environments by their marker file, whatever the folder is called.
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                           and not Path(dirpath, d, "pyvenv.cfg").exists()
                           and not excluded(rel / d, exclude)]
            found.update(_real(Path(dirpath, f)) or Path(dirpath, f).absolute()
                         for f in filenames if f.endswith(".py") and not _is_test_file(f)
                         and not excluded(rel / f, exclude))
    return sorted(found)


def _real(path: Path) -> Path | None:
    """The file a path names, or None for a symlink loop or a dangling link (kept as it is in
    a folder walk, the file then cannot be read and becomes an L0-00 finding of its own)."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop before Python 3.13
        return None


def _load_imported(sources: dict[Path, SourceFile], root: Path, paths: Sequence[Path],
                   exclude: Sequence[str]) -> list[UnparsableFile]:
    """Add the local modules the loaded files import (transitively) to ``sources`` as
    context; return those that do not parse (their code runs unchecked: an L0-00 each),
    except excluded ones. A module an exclude glob matches is still read (it resolves
    classes) but marked ``excluded``: nothing is reported in it."""
    unparsable: list[UnparsableFile] = []
    queue = list(sources.values())
    failed: set[Path] = set()
    while queue and len(sources) < MAX_CONTEXT_FILES:
        importer = queue.pop()
        for path in local_imports(importer, root):
            if path in sources or path in failed:
                continue
            skip = _excluded_context(path, paths, root, exclude)
            try:
                sources[path] = SourceFile.load(path, root)
            except SourceError as exc:
                failed.add(path)
                if not skip:
                    unparsable.append(UnparsableFile(
                        _display(path), exc.line, exc.col,
                        f"{exc.detail}; imported by {importer.display}"))
                continue
            sources[path].context = True
            sources[path].excluded = skip
            queue.append(sources[path])
    return unparsable


def _excluded_context(path: Path, paths: Sequence[Path], root: Path,
                      globs: Sequence[str]) -> bool:
    """Whether an imported module, or a folder above it, matches an exclude glob, relative
    to a folder given on the command line or to the analysed root (as the walk matches)."""
    if not globs:
        return False
    bases = [p.resolve() for p in paths if p.is_dir()] + [root]
    rels = [path.relative_to(base) for base in bases if path.is_relative_to(base)]
    return any(excluded(part, globs) for rel in rels
               for part in [rel, *list(rel.parents)[:-1]])


def excluded(rel: Path, globs: Sequence[str]) -> bool:
    """Whether ``rel`` (relative to an analysed folder) matches an exclude glob."""
    text = rel.as_posix()
    return any(fnmatch.fnmatch(text, g) or fnmatch.fnmatch(rel.name, g)
               or fnmatch.fnmatch(text, g.rstrip("/") + "/*") for g in globs)


class Project:
    """Every file of the analysed project plus the indices checks share."""

    def __init__(self, files: list[SourceFile], root: Path,
                 unparsable: list[UnparsableFile] | None = None) -> None:
        self.files = files
        self.root = root
        self.unparsable = unparsable or []
        self.by_module = {f.module: f for f in files}
        self._call_names: dict[int, str | None] = {}

    @classmethod
    def load(cls, paths: Iterable[Path], exclude: Sequence[str] = ()) -> Project:
        """The given files (and folders' files), plus the local modules they import, so
        ``spml validate static train.py`` still sees the model class in ``model.py``.

        A file that does not parse is kept aside (`unparsable`, reported as L0-00) and the
        rest is analysed; only when no file parses is that an error.
        """
        paths = list(paths)
        targets = collect_files(paths, exclude)
        if not targets:
            raise SourceError("no Python files found under the given paths")
        root = Path(os.path.commonpath([f.parent for f in targets]))
        sources: dict[Path, SourceFile] = {}
        unparsable = []
        for target in targets:
            try:
                sources[target] = SourceFile.load(target, root)
            except SourceError as exc:
                if len(targets) == 1:
                    raise
                unparsable.append(UnparsableFile(_display(target), exc.line, exc.col,
                                                 exc.detail))
        if not sources:
            raise SourceError("no file under the given paths parses: " + "; ".join(
                f"{u.display}: {u.detail}" for u in unparsable))
        unparsable += _load_imported(sources, root, paths, exclude)
        return cls(sorted(sources.values(), key=lambda s: s.path), root, unparsable)

    @property
    def targets(self) -> list[SourceFile]:
        return [f for f in self.files if not f.context]

    # ---- calls ------------------------------------------------------------------------
    @cached_property
    def calls(self) -> list[tuple[SourceFile, ast.Call]]:
        return [(s, n) for s in self.files for n in ast.walk(s.tree) if isinstance(n, ast.Call)]

    def call_name(self, source: SourceFile, call: ast.Call) -> str | None:
        key = id(call)
        if key not in self._call_names:
            self._call_names[key] = source.canonical(call.func)
        return self._call_names[key]

    def calls_to(self, *names: str, suffix: bool = False) -> list[tuple[SourceFile, ast.Call]]:
        """Calls whose canonical name is one of ``names`` (or ends with one, ``suffix``)."""
        wanted = set(names)
        out = []
        for source, call in self.calls:
            name = self.call_name(source, call)
            if name is None:
                continue
            if name in wanted or (suffix and any(name.endswith("." + n) or name == n
                                                 for n in wanted)):
                out.append((source, call))
        return out

    def method_calls(self, *methods: str) -> list[tuple[SourceFile, ast.Call]]:
        """Calls ``<anything>.method(...)`` for the given method names."""
        return [(s, c) for s, c in self.calls
                if isinstance(c.func, ast.Attribute) and c.func.attr in methods]

    # ---- definitions -------------------------------------------------------------------
    @cached_property
    def classes(self) -> dict[str, tuple[SourceFile, ast.ClassDef]]:
        """Classes by bare name; a name defined in two modules maps to neither (ambiguous:
        `local_class` then needs the module-qualified name)."""
        found: dict[str, list[tuple[SourceFile, ast.ClassDef]]] = {}
        for s in self.files:
            for n in ast.walk(s.tree):
                if isinstance(n, ast.ClassDef):
                    found.setdefault(n.name, []).append((s, n))
        self._classes_by_name = found
        return {name: defs[0] for name, defs in found.items() if len(defs) == 1}

    @cached_property
    def functions(self) -> dict[str, list[tuple[SourceFile, ast.FunctionDef]]]:
        table: dict[str, list[tuple[SourceFile, ast.FunctionDef]]] = {}
        for s in self.files:
            for n in ast.walk(s.tree):
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                    table.setdefault(n.name, []).append((s, n))
        return table

    def local_class(self, name: str | None) -> tuple[SourceFile, ast.ClassDef] | None:
        """The project's class for a canonical or bare name (``model.GPT`` or ``GPT``)."""
        if not name or not self._is_local(name):
            return None
        module, _, bare = name.rpartition(".")
        unique = self.classes.get(bare)
        if unique is not None or not module:
            return unique
        # Defined in several modules: pick the one the import names (`models.a.Net`).
        return next(((s, c) for s, c in self._classes_by_name.get(bare, [])
                     if s.module == module or s.module.endswith("." + module)), None)

    def _is_local(self, name: str) -> bool:
        head = name.rsplit(".", 1)[0] if "." in name else ""
        return not head or head in self.by_module or head.split(".")[0] not in EXTERNAL_ROOTS

    def is_module_class(self, name: str | None, _seen: frozenset[str] = frozenset()) -> bool:
        """True for a local class deriving (transitively) from ``torch.nn.Module``."""
        found = self.local_class(name)
        if found is None or found[1].name in _seen:
            return False
        source, cls = found
        for base in cls.bases:
            base_name = source.canonical(base) or ""
            if base_name in MODULE_BASES or base_name.startswith("torch.nn."):
                return True
            if self.is_module_class(base_name, _seen | {cls.name}):
                return True
        return False

    def walk(self) -> Iterator[tuple[SourceFile, ast.AST]]:
        return iter(self._all_nodes)

    @cached_property
    def _all_nodes(self) -> list[tuple[SourceFile, ast.AST]]:
        return [(source, node) for source in self.files for node in ast.walk(source.tree)]

    @cached_property
    def line_count(self) -> int:
        return sum(len(s.text.splitlines()) for s in self.targets)


MAX_CONTEXT_FILES = 500


def local_imports(source: SourceFile, root: Path) -> list[Path]:
    """Existing ``.py`` files that ``source``'s imports name, next to it or under ``root``."""
    found: list[Path] = []
    for node in ast.walk(source.tree):
        if isinstance(node, ast.Import):
            dotted_names = [a.name for a in node.names]
            bases = [source.path.parent, root]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            dotted_names = [f"{module}.{a.name}".strip(".") for a in node.names] + [module]
            bases = ([source.path.parents[node.level - 1]] if node.level
                     else [source.path.parent, root])
        else:
            continue
        parts = {".".join(n.split(".")[:i]) for n in dotted_names if n
                 for i in range(1, n.count(".") + 2)}  # a.b.c -> a, a.b, a.b.c
        for name in sorted(parts):
            rel = Path(*name.split("."))
            for base in bases:
                for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
                    if candidate.is_file():
                        found.append(candidate.resolve())
    return found


# Top-level packages that are never the project's own code.
EXTERNAL_ROOTS = frozenset({
    "torch", "numpy", "np", "math", "os", "sys", "time", "json", "random", "logging", "csv",
    "transformers", "datasets", "tiktoken", "wandb", "mlflow", "tensorboard", "tqdm",
    "pandas", "accelerate", "lightning", "pytorch_lightning", "torchvision", "deepspeed",
    "apex", "timm", "functools", "itertools", "collections", "pathlib", "argparse",
})
