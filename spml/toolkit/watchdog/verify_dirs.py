"""Verify a directory checkpoint: its metadata is present and names only files that exist.

* torch.distributed.checkpoint (a ``.metadata`` file, ``__R_N.distcp`` shards): DCP writes
  ``.metadata`` last, after every rank's shards, so a directory with shards but no
  ``.metadata`` did not finish. The metadata is read with
  ``torch.distributed.checkpoint.FileSystemReader(path).read_metadata()``; every shard its
  ``storage_data`` names must exist and be at least ``offset + length`` bytes long. (That
  reader unpickles ``.metadata``, as loading the checkpoint would.)
* Hugging Face sharded weights (``*.index.json`` such as ``model.safetensors.index.json`` or
  ``pytorch_model.bin.index.json``): the index parses and every shard of its ``weight_map``
  exists. (Its ``metadata.total_size`` counts tensor bytes, not file bytes, so it is not
  compared; each shard's own rule checks its size.)
* Then every file inside with a verifiable format (see `spml.toolkit.watchdog.verify`) must
  verify. A directory with nothing verifiable is ``unverifiable``; an empty one is ``bad``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from spml.toolkit.watchdog.verify import Verdict, verify_file

__all__ = ["verify_directory"]

_DCP_METADATA = ".metadata"
_TEMP = re.compile(r"\.(?:tmp|partial)(?:\.|$)", re.IGNORECASE)
_WITH_RULE = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json", ".yaml", ".yml")


def verify_directory(path: Path) -> Verdict:
    """Verify a directory checkpoint (module docstring)."""
    files = _files(path)
    if not files:
        return Verdict("bad", "empty directory")
    checks: list[str] = []
    if (path / _DCP_METADATA).is_file() or any(f.suffix == ".distcp" for f in files):
        dcp = _verify_dcp(path)
        if not dcp.ok:
            return dcp
        checks.append(dcp.reason)
    for index in (f for f in files if f.name.endswith(".index.json")):
        verdict = _verify_index(path, index)
        if not verdict.ok:
            return verdict
        checks.append(verdict.reason)
    verified = 0
    for file in (f for f in files if f.suffix.lower() in _WITH_RULE):
        verdict = verify_file(file)
        if verdict.status == "bad":
            return Verdict("bad", f"{file.relative_to(path)}: {verdict.reason}")
        verified += verdict.ok
    if not checks and not verified:
        return Verdict("unverifiable", "no file in it has a format that can be verified")
    if verified:
        checks.append(f"{verified} file(s) verified")
    return Verdict("ok", "; ".join(checks))


def _files(path: Path) -> list[Path]:
    """Regular files below ``path``, without temporary ones (a save in progress elsewhere)."""
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _TEMP.search(d))
        found += [Path(root, n) for n in sorted(names) if not _TEMP.search(n)]
    return found


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
        if not shard.is_file():
            return Verdict("bad", f"shard {relative} named by .metadata is missing")
        if (size := shard.stat().st_size) < end:
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
                       + ", ".join(missing[:3]))
    return Verdict("ok", f"{name}: all {len(shards)} shard(s) present")
