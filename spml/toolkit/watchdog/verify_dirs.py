"""Verify a directory checkpoint: every file in it that is checkpoint data is whole.

* torch.distributed.checkpoint (a ``.metadata`` file, ``__R_N.distcp`` shards): DCP writes
  ``.metadata`` last, after every rank's shards, so a directory with shards but no
  ``.metadata`` did not finish. The metadata is read with
  ``torch.distributed.checkpoint.FileSystemReader(path).read_metadata()``; every shard its
  ``storage_data`` names must exist and be at least ``offset + length`` bytes long. (That
  reader unpickles ``.metadata``, as loading the checkpoint would.)
* Hugging Face sharded weights (``model-00001-of-00004.safetensors``,
  ``pytorch_model-00001-of-00002.bin``): ``save_pretrained`` writes the ``*.index.json`` last,
  after every shard, so shards that no index names did not finish saving, and all ``M`` shards
  of an ``-of-M`` set must be there. An index must parse and every shard of its
  ``weight_map`` must exist. (Its ``metadata.total_size`` counts tensor bytes, not file bytes,
  so it is not compared; each shard's own rule checks its size.)
* Then every other file is judged by its own rule (`spml.toolkit.watchdog.verify`). One file
  that is ``bad`` makes the directory ``bad``; one whose format has no structural check (a
  legacy torch pickle, ``.pkl``, ``.h5``, ``.msgpack``, an unknown suffix) makes it
  ``unverifiable`` as a whole, exactly like such a file alone: verifying the rest proves
  nothing about it (it needs a marker, or to be seen complete while its writer lived).
  Files that are not checkpoint data are left out: text and tokenizer vocabularies
  (``.txt``, ``.md``, ``.model``, ...), images, logs, hidden files other than ``.metadata``,
  completeness markers, and temporary files (a save in progress elsewhere).

An empty directory is ``bad``; one that cannot be listed completely is ``bad`` (a loader
could not read it either).
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from spml.toolkit.watchdog.checkpoints import COMPLETE_MARKER, is_temporary
from spml.toolkit.watchdog.verify import Verdict, verify_file

__all__ = ["verify_directory"]

_DCP_METADATA = ".metadata"
_HF_SHARD = re.compile(
    r"^(?P<stem>.+)-(?P<index>\d+)-of-(?P<total>\d+)\.(?P<ext>safetensors|bin)$")
_MARKERS = (".complete", ".done")
# Not checkpoint data: text, tokenizer vocabularies, chat templates, images, logs, code.
_AUXILIARY = {".txt", ".md", ".rst", ".model", ".vocab", ".tiktoken", ".spm", ".jinja", ".py",
              ".log", ".csv", ".tsv", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf",
              ".gitattributes", ".gitignore"}
_SHOWN = 3


def verify_directory(path: Path) -> Verdict:
    """Verify a directory checkpoint (module docstring)."""
    try:
        files = _files(path)
    except OSError as exc:
        return Verdict("bad", f"cannot be listed completely ({type(exc).__name__}: "
                       f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''})")
    if not files:
        return Verdict("bad", "empty directory")
    checks: list[str] = []
    covered: set[Path] = set()
    for verdict in _structure(path, files, covered):
        if not verdict.ok:
            return verdict
        checks.append(verdict.reason)
    verified, unverifiable = 0, []
    for file in (f for f in files if f not in covered and _is_data(f)):
        verdict = verify_file(file)
        if verdict.status == "bad":
            return Verdict("bad", f"{file.relative_to(path)}: {verdict.reason}")
        verified += verdict.ok
        if not verdict.ok:
            unverifiable.append(f"{file.relative_to(path)} ({verdict.reason})")
    return _conclude(checks, verified, unverifiable)


def _conclude(checks: list[str], verified: int, unverifiable: list[str]) -> Verdict:
    if unverifiable:
        more = len(unverifiable) - _SHOWN
        return Verdict("unverifiable", "holds file(s) without a structural check: "
                       + "; ".join(unverifiable[:_SHOWN])
                       + (f"; and {more} more" if more > 0 else ""))
    if not checks and not verified:
        return Verdict("unverifiable", "no file in it has a format that can be verified")
    if verified:
        checks.append(f"{verified} file(s) verified")
    return Verdict("ok", "; ".join(checks))


def _structure(path: Path, files: list[Path], covered: set[Path]) -> Iterator[Verdict]:
    """The DCP, index and shard-set verdicts, in order (stop at the first failing one); the
    files they vouch for are added to ``covered``."""
    if (path / _DCP_METADATA).is_file() or any(f.suffix == ".distcp" for f in files):
        yield _verify_dcp(path)
        covered |= {f for f in files if f.suffix == ".distcp" or f.name == _DCP_METADATA}
    indexes = [f for f in files if f.name.endswith(".index.json")]
    for index in indexes:
        yield _verify_index(path, index)
    if (shards := _verify_shard_sets(path, files, indexes)) is not None:
        yield shards


def _files(path: Path) -> list[Path]:
    """Regular files below ``path``, without temporary ones; raises OSError when a folder
    cannot be listed."""
    def fail(exc: OSError) -> None:
        raise exc

    found = []
    for root, dirs, names in os.walk(path, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not is_temporary(d))
        found += [Path(root, n) for n in sorted(names) if not is_temporary(n)]
    return found


def _is_data(file: Path) -> bool:
    name = file.name
    if name == COMPLETE_MARKER or name.endswith(_MARKERS):
        return False
    if name.startswith(".") and name != _DCP_METADATA:
        return False
    return file.suffix.lower() not in _AUXILIARY


def _verify_dcp(path: Path) -> Verdict:
    if not (path / _DCP_METADATA).is_file():
        return Verdict("bad", "torch.distributed.checkpoint shards without .metadata (written "
                       "last): the save did not finish")
    try:
        from torch.distributed.checkpoint import FileSystemReader
    except ImportError as exc:
        return Verdict("unverifiable", f".metadata present, but torch is not importable ({exc})")
    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except Exception as exc:  # noqa: BLE001 - any failure to read it means it is not usable
        return Verdict("bad", f".metadata unreadable ({type(exc).__name__}: {exc})")
    needed: dict[str, int] = {}
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for relative, end in sorted(needed.items()):
        shard = path / relative
        try:
            size = shard.stat().st_size if shard.is_file() else None
        except OSError as exc:
            return Verdict("bad", f"shard {relative} cannot be read ({exc})")
        if size is None:
            return Verdict("bad", f"shard {relative} named by .metadata is missing")
        if size < end:
            return Verdict("bad", f"shard {relative} holds {size} bytes, .metadata needs {end}")
    return Verdict("ok", f"torch.distributed.checkpoint: .metadata names {len(needed)} "
                   "shard(s), all present with their sizes")


def _verify_index(path: Path, index: Path) -> Verdict:
    name = index.relative_to(path)
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        return Verdict("bad", f"{name} does not parse ({exc})")
    if not isinstance(weight_map, dict) or not weight_map:
        return Verdict("bad", f"{name} has no weight_map")
    shards = sorted({str(shard) for shard in weight_map.values()})
    if missing := [s for s in shards if not (index.parent / s).is_file()]:
        return Verdict("bad", f"{name} names {len(missing)} missing shard(s): "
                       + ", ".join(missing[:_SHOWN]))
    return Verdict("ok", f"{name}: all {len(shards)} shard(s) present")


def _verify_shard_sets(path: Path, files: list[Path], indexes: list[Path]) -> Verdict | None:
    """Every ``-of-M`` shard set is complete (1..M) and named by an index; None if none."""
    sets: dict[tuple[Path, str, int, str], set[int]] = defaultdict(set)
    for file in files:
        if match := _HF_SHARD.match(file.name):
            key = (file.parent, match["stem"], int(match["total"]), match["ext"])
            sets[key].add(int(match["index"]))
    if not sets:
        return None
    named = _named_by_indexes(indexes)
    for (folder, stem, total, ext), present in sorted(sets.items()):
        shown = folder.relative_to(path) / f"{stem}-*-of-{total:05d}.{ext}"
        if missing := sorted(set(range(1, total + 1)) - present):
            return Verdict("bad", f"{shown}: {total - len(missing)} of {total} shards present "
                           f"(missing {', '.join(map(str, missing[:_SHOWN]))}"
                           f"{', ...' if len(missing) > _SHOWN else ''}): the save did not "
                           "finish")
        files_here = {f.name for f in files if f.parent == folder
                      and (m := _HF_SHARD.match(f.name)) and m["stem"] == stem
                      and int(m["total"]) == total and m["ext"] == ext}
        if not files_here & named.get(folder, set()):
            return Verdict("bad", f"{shown}: {total} shard(s) but no *.index.json names them "
                           "(save_pretrained writes it last): the save did not finish")
    return Verdict("ok", f"{len(sets)} shard set(s) complete and indexed")


def _named_by_indexes(indexes: list[Path]) -> dict[Path, set[str]]:
    named: dict[Path, set[str]] = defaultdict(set)
    for index in indexes:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
        named[index.parent] |= {str(shard) for shard in weight_map.values()}
    return named
