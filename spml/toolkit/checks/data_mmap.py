"""L0-07: a large dataset file is read whole into memory instead of memory-mapped."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spml.toolkit.checks._base import Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

GB = 1e9
LARGE_COMMENT = re.compile(r"#\s*spml:\s*large-data\b", re.IGNORECASE)
# ``dataset_size_gb = 40``, ``DATA_GB = 120``, ``corpus_gb: float = 35``.
SIZE_DECLARATION = re.compile(r"(data|corpus).*gb$", re.IGNORECASE)
# torch.load of these is a checkpoint or weights, not a data tensor.
CHECKPOINT_WORDS = re.compile(r"ckpt|checkpoint|model|weight|state|optim|best|last|epoch",
                              re.IGNORECASE)
# Files that travel with a dataset but are never the bulk of it.
SIDE_FILES = re.compile(
    r"\.(json|ya?ml|toml|cfg|ini|md|py)$|meta|config|vocab|tokenizer|merges", re.IGNORECASE)
FULL_READERS = frozenset({"numpy.load", "numpy.fromfile", "numpy.loadtxt", "torch.load",
                          "pandas.read_csv", "pandas.read_parquet", "pandas.read_json",
                          "pandas.read_feather", "pickle.load"})
PANDAS_FIX = "Stream it with chunksize=..., or convert it once to a memory-mappable format"
PANDAS_STREAMING = frozenset({"chunksize", "iterator", "nrows"})
FILE_READS = frozenset({"read", "read_bytes", "read_text"})


@dataclass(frozen=True)
class Read:
    """A call that reads a whole file into memory, and the file when it can be named."""

    source: SourceFile
    call: ast.Call
    path: str | None  # the resolved path text, None when not a literal


class LargeDataWithoutMmap(Check):
    """Checks that large dataset files are memory-mapped rather than read whole.

    ## What it does
    Finds reads that pull a whole file into memory: ``np.load(path)`` without ``mmap_mode``,
    ``np.fromfile``, ``torch.load`` of a data tensor without ``mmap=True`` (checkpoints are
    not judged), ``open(path, "rb").read()``, ``pickle.load`` and ``pd.read_csv`` without
    ``chunksize``. The check applies when the dataset is large: a read's path (a literal,
    followed through assignments, ``os.path.join`` and ``Path /``) names a file on disk of at
    least ``large-data-gb`` (default 10), or the project declares the size, either with a
    ``# spml: large-data`` comment on the read's line or with a module-level number such as
    ``dataset_size_gb = 40`` (names with ``data``/``corpus`` ending in ``gb``; the declaration
    covers every full read in the project). Otherwise the check is N/A: the data size is
    unknown at analysis time and L1 measures data loading.

    ## Why is this bad?
    Reading a file larger than a good share of host RAM fills memory (each DataLoader worker
    and each DDP rank may hold its own copy), pushes the machine into swap or the OOM killer,
    and delays the first step by the whole read. A memory map reads only the pages a batch
    touches and shares them between processes.

    ## Example
    ```python
    dataset_size_gb = 40
    tokens = np.load("data/train_tokens.npy")
    ```

    ## Use instead
    ```python
    dataset_size_gb = 40
    tokens = np.load("data/train_tokens.npy", mmap_mode="r")
    # or: np.memmap("data/train.bin", dtype=np.uint16, mode="r")
    # or: torch.load("data/train.pt", mmap=True)
    ```

    ## References
    - https://numpy.org/doc/stable/reference/generated/numpy.memmap.html
    - https://numpy.org/doc/stable/reference/generated/numpy.load.html
    - https://pytorch.org/docs/stable/generated/torch.load.html
    """

    id = "L0-07"
    name = "large-data-without-mmap"
    severity = "warning"
    message = "large dataset file is read whole into memory instead of memory-mapped"
    fix = "Memory-map it: np.memmap / np.load(mmap_mode='r') / torch.load(mmap=True)"
    condition = "dataset files are large"
    runtime_note = "data-loading time is measured in L1"

    def applicability(self, facts: Facts) -> Applicability:
        declared = _declared_gb(facts)
        threshold = facts.config.large_data_gb
        if declared is not None and declared >= threshold:
            return Applicability(True, f"dataset declared {declared:g} GB")
        reads = [r for r in [*full_reads(facts), *_mapped_reads(facts)] if not _is_side_file(r)]
        sizes = [s for s in (_size_gb(r) for r in reads) if s is not None]
        commented = any(_commented(r) for r in [*full_reads(facts), *_mapped_reads(facts)])
        if commented or (sizes and max(sizes) >= threshold):
            return Applicability(True)
        if sizes:
            return not_applicable(f"data files are small (largest {_size_text(max(sizes))} "
                                  f"< {threshold:g} GB)")
        return not_applicable("data size unknown: no data file found on disk at analysis "
                              "time; L1 measures data-loading time")

    def run(self, facts: Facts) -> Iterator[Finding]:
        declared = _declared_gb(facts)
        threshold = facts.config.large_data_gb
        for read in full_reads(facts):
            size = _size_gb(read)
            if size is not None and size >= threshold:
                why = f"file is {_size_text(size)}"
            elif _commented(read):
                why = "marked large-data"
            elif declared is not None and declared >= threshold and size is None \
                    and not _is_side_file(read):
                why = f"dataset declared {declared:g} GB"
            else:
                continue
            what = f"`{os.path.basename(read.path)}`" if read.path else "data file"
            name = facts.project.call_name(read.source, read.call) or ""
            fix = PANDAS_FIX if name.startswith("pandas.") else None
            yield self.finding(read.source, read.call,
                               f"{what} is read whole into memory ({why})", fix)


def full_reads(facts: Facts) -> list[Read]:
    """Every call that reads a whole data file into memory."""
    reads: list[Read] = []
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if name in FULL_READERS and not _streams(facts, name, call):
            path = _path_text(facts, source, _path_arg(facts, source, name, call))
            if name == "torch.load" and _is_checkpoint(call, path):
                continue
            reads.append(Read(source, call, path))
        elif isinstance(call.func, ast.Attribute) and call.func.attr in FILE_READS \
                and not call.args:
            opened = _opened_path(facts, source, call.func.value)
            if opened is not None:
                reads.append(Read(source, call, _path_text(facts, source, opened)))
    return reads


def _mapped_reads(facts: Facts) -> list[Read]:
    """Memory-mapped opens: their files' sizes still tell whether the data is large."""
    out = []
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if name in ("numpy.memmap", "numpy.load", "torch.load") and call.args:
            path = _path_text(facts, source, call.args[0])
            if not (name == "torch.load" and _is_checkpoint(call, path)):
                out.append(Read(source, call, path))
    return out


def _streams(facts: Facts, name: str, call: ast.Call) -> bool:
    """The call reads lazily: ``mmap_mode='r'``, ``mmap=True``, ``chunksize=...``."""
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    if any(k.arg is None for k in call.keywords):
        return True  # **kwargs may carry mmap_mode: trust it
    if name == "numpy.load":
        mode = keywords.get("mmap_mode", call.args[1] if len(call.args) > 1 else None)
        return mode is not None and not (isinstance(mode, ast.Constant) and mode.value is None)
    if name == "torch.load":
        mmap = keywords.get("mmap")
        return mmap is not None and not (isinstance(mmap, ast.Constant) and not mmap.value)
    if name.startswith("pandas."):
        return bool(PANDAS_STREAMING & keywords.keys())
    return False


def _path_arg(facts: Facts, source: SourceFile, name: str, call: ast.Call) -> ast.AST | None:
    if name == "pickle.load":  # pickle.load(f): the file is whatever f was opened on
        return _opened_path(facts, source, call.args[0]) if call.args else None
    return call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg in ("file", "f", "filepath_or_buffer",
                                                     "path", "fname")), None)


def _opened_path(facts: Facts, source: SourceFile, expr: ast.AST) -> ast.AST | None:
    """The path of ``open(path)``/``Path(path)`` that ``expr`` is (or is bound to)."""
    candidates = [expr]
    if dotted(expr):
        candidates = [o.node for o in facts.flow.origins(source, expr) if o.node is not None]
    for node in candidates:
        if isinstance(node, ast.Call):
            name = facts.project.call_name(source, node) or ""
            if name in ("open", "io.open", "pathlib.Path", "Path") and node.args:
                return node.args[0]
            if isinstance(node.func, ast.Attribute) and node.func.attr == "open":
                return node.func.value  # Path(p).open("rb")
    return None


def _path_text(facts: Facts, source: SourceFile, expr: ast.AST | None, depth: int = 6
               ) -> str | None:
    """The path an expression always names, built from string literals."""
    if expr is None or depth == 0:
        return None
    if isinstance(expr, ast.Constant):
        return expr.value if isinstance(expr.value, str) else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div | ast.Add):
        left = _path_text(facts, source, expr.left, depth - 1)
        right = _path_text(facts, source, expr.right, depth - 1)
        if left is None or right is None:
            return None
        return left + right if isinstance(expr.op, ast.Add) else os.path.join(left, right)
    if isinstance(expr, ast.Call):
        return _joined(facts, source, expr, depth)
    if dotted(expr) is None:
        return None
    found = {_path_text(facts, o.source, o.node, depth - 1) if o.kind == "value" else None
             for o in facts.flow.origins(source, expr)}
    return found.pop() if len(found) == 1 else None


def _joined(facts: Facts, source: SourceFile, call: ast.Call, depth: int) -> str | None:
    name = facts.project.call_name(source, call) or ""
    if name in ("os.path.join", "pathlib.Path", "Path", "pathlib.PurePath") and call.args:
        parts = [_path_text(facts, source, a, depth - 1) for a in call.args]
        return None if None in parts else os.path.join(*parts)
    return None


def _is_checkpoint(call: ast.Call, path: str | None) -> bool:
    text = path or (ast.unparse(call.args[0]) if call.args else "")
    return bool(CHECKPOINT_WORDS.search(text))


def _is_side_file(read: Read) -> bool:
    """A config, vocabulary or metadata file: small whatever the dataset's size."""
    text = read.path or (ast.unparse(read.call.args[0]) if read.call.args else "")
    return bool(SIDE_FILES.search(text))


def _size_gb(read: Read) -> float | None:
    if not read.path:
        return None
    path = Path(os.path.expanduser(read.path))
    for candidate in ([path] if path.is_absolute() else [read.source.path.parent / path,
                                                          Path.cwd() / path]):
        try:
            if candidate.is_file():
                return candidate.stat().st_size / GB
        except OSError:
            continue
    return None


def _size_text(gb: float) -> str:
    for scale, unit in ((1.0, "GB"), (1e-3, "MB"), (1e-6, "KB")):
        if gb >= scale:
            return f"{gb / scale:.3g} {unit}"
    return f"{gb * 1e9:.0f} B"


def _commented(read: Read) -> bool:
    lines = read.source.text.splitlines()
    line = read.call.lineno
    return 0 < line <= len(lines) and bool(LARGE_COMMENT.search(lines[line - 1]))


def _declared_gb(facts: Facts) -> float | None:
    """The largest dataset size a module-level ``dataset_size_gb = N`` declares."""
    sizes: list[float] = []
    for source in facts.project.files:
        for node in scope_nodes(source.tree):
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if any(SIZE_DECLARATION.search(n) for t in targets for n in target_names(t)) \
                    and isinstance(value, ast.Constant) and isinstance(value.value, int | float):
                sizes.append(float(value.value))
    return max(sizes, default=None)
