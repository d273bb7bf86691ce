"""What the brainstorm stage learns about an experiment directory before it writes a design.

SPML's brainstorming starts by exploring the project and collecting the ML context. Here that
is a plain function: git state, Python/torch/CUDA versions, the GPUs (NVML first, through the
profiling toolkit's `detect_gpu`), the dataset files summarised with pandas, and the baselines
already on record (an `experiences.md` best, a protocol's `baseline:`). The result is a plain
mapping that goes into the design doc's `context:` field, so a reviewer sees what the design
was written against.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import git

DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".json")
MAX_DATASETS = 8              # a design lists the data it uses, not a data lake
MAX_SUMMARY_ROWS = 200_000    # rows read per file; a larger file is summarised from its head
_SKIP_DIRS = {".git", ".spml", "__pycache__", "outputs", ".venv", "node_modules", "plans"}


def collect_context(exp_dir: Path) -> dict[str, Any]:
    """Everything the design is written against, as a YAML-friendly mapping."""
    return {
        "git": git_state(exp_dir),
        "python": platform.python_version(),
        **torch_versions(),
        "gpus": gpu_summary(),
        "datasets": [summarise_dataset(p, exp_dir) for p in dataset_files(exp_dir)],
        "baselines": recorded_baselines(exp_dir),
    }


def git_state(exp_dir: Path) -> dict[str, Any]:
    """Branch, HEAD and uncommitted paths of the repository holding ``exp_dir``."""
    try:
        repo = git.Repo(exp_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return {"repository": None}
    head = repo.head.commit.hexsha[:12] if repo.head.is_valid() else None
    branch = None if repo.head.is_detached else repo.active_branch.name
    # -z: paths unquoted (spaces, non-ASCII), a rename's old path in a field of its own
    fields = repo.git.status("--porcelain", "-z", "-uall", "--",
                             str(exp_dir.resolve())).split("\0")
    dirty, skip = [], False
    for entry in fields:
        if skip or not entry:
            skip = False
            continue
        dirty.append(entry[3:])
        skip = entry[0] in "RC"  # the next field is the old path of this rename/copy
    return {"repository": repo.working_tree_dir, "branch": branch, "head": head,
            "uncommitted": dirty[:20]}


def torch_versions() -> dict[str, Any]:
    """torch and CUDA versions (None when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda": None}
    return {"torch": torch.__version__, "cuda": torch.version.cuda}


def gpu_summary() -> list[str] | str:
    """The local GPUs by name (NVML, then torch), or why none is known."""
    from spml.toolkit.profiling.gpuinfo import detect_gpu

    detection = detect_gpu()
    if detection.gpu is None:
        return f"none ({detection.reason})" if detection.reason else "none"
    return [detection.gpu.name] * detection.gpu.count


def dataset_files(exp_dir: Path) -> list[Path]:
    """Data files under ``exp_dir`` (sorted; at most `MAX_DATASETS`)."""
    found: list[Path] = []
    for path in sorted(exp_dir.rglob("*")):
        parts = set(path.relative_to(exp_dir).parts[:-1])
        if path.suffix in DATA_SUFFIXES and path.is_file() and not parts & _SKIP_DIRS:
            found.append(path)
    return found[:MAX_DATASETS]


def summarise_dataset(path: Path, exp_dir: Path) -> dict[str, Any]:
    """Rows, columns with dtypes, missing values and size of one data file (pandas)."""
    import pandas as pd

    summary: dict[str, Any] = {"path": path.relative_to(exp_dir).as_posix(),
                               "bytes": path.stat().st_size}
    try:
        frame = _read_frame(pd, path)
    except (ValueError, OSError, ImportError) as exc:  # unreadable: say so, do not fail
        summary["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        return summary
    summary["rows"] = int(len(frame))
    summary["columns"] = {str(c): str(t) for c, t in frame.dtypes.items()}
    missing = int(frame.isna().sum().sum())
    if missing:
        summary["missing_values"] = missing
    if len(frame) >= MAX_SUMMARY_ROWS:
        summary["rows"] = f">= {MAX_SUMMARY_ROWS} (summarised from the head)"
    return summary


def _read_frame(pd: Any, path: Path) -> Any:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl", nrows=MAX_SUMMARY_ROWS
                            if path.suffix == ".jsonl" else None)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", nrows=MAX_SUMMARY_ROWS)


def recorded_baselines(exp_dir: Path) -> list[str]:
    """Baselines already on record: a ledger's best and a protocol's ``baseline:``."""
    from spml.protocols.experiences import parse_experiences
    from spml.protocols.frontmatter import read_front_matter

    found: list[str] = []
    ledger = exp_dir / "experiences.md"
    if ledger.is_file():
        try:
            parsed = parse_experiences(ledger.read_text(encoding="utf-8"))
            if parsed.best_value is not None:
                found.append(f"experiences.md best {parsed.metric} = {parsed.best_text}")
        except ValueError:
            found.append("experiences.md (unreadable)")
    for name in ("autoresearch-protocol.md", "iteration-protocol.md"):
        path = exp_dir / name
        if path.is_file():
            try:
                baseline = read_front_matter(path).data.get("baseline")
            except ValueError:
                continue
            if baseline is not None:
                found.append(f"{name} baseline = {baseline}")
    return found
