"""Is a checkpoint whole? Judged from its own structure, never from timing.

Once the writer is dead, waiting proves nothing: a half-written file stays "unchanged" forever.
So at a restart each checkpoint is verified by reading only its headers and indexes (never a
whole multi-GB file):

* torch archives (``.pt``/``.pth``/``.bin``/``.ckpt`` zip files, what ``torch.save`` writes
  since 1.6): the zip central directory (written last, on close) is intact, lists ``data.pkl``
  and every ``data/<key>`` record that ``data.pkl`` refers to, and each record's local header
  and data lie inside the file before the directory;
* any other zip archive (``.npz``, ``.zip``, accelerate's ``random_states_0.pkl`` written by
  ``torch.save``; one holding a ``data.pkl`` gets the torch checks): the directory and offset
  checks. An ``.npz``/``.zip`` that is not a zip archive is ``bad``;
* a legacy (non-zip) torch pickle cannot be verified without loading all of it: it is
  ``unverifiable``, and the caller decides (see `spml.toolkit.watchdog.resume`). So is a plain
  pickle (``.pkl``), once its last byte is the STOP opcode every pickle ends with (one that
  does not end so was cut short: ``bad``);
* ``.safetensors``: the 8-byte header length and the JSON header parse, every tensor's byte
  range matches its dtype and shape, and the data length the header declares (the largest
  ``data_offsets`` end) is exactly what the file holds;
* ``.json`` / ``.yaml`` / ``.yml``: the text parses;
* directories: see `spml.toolkit.watchdog.verify_dirs`.

Other formats are ``unverifiable``. Nothing here writes, locks or imports user code.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["TORCH_SUFFIXES", "Verdict", "verify_checkpoint", "verify_file"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local header, or an empty archive's directory
_PICKLE_PROTO = b"\x80"
_PICKLE_STOP = b"."
# torch's legacy format begins with a pickled magic number (torch.serialization.MAGIC_NUMBER).
_TORCH_LEGACY = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_ZIP_SUFFIXES = (".npz", ".zip")
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (skipped), name length, extra length
_MAX_HEADER = 100 << 20  # safetensors refuses larger headers; so do we
_MAX_PICKLE = 64 << 20  # data.pkl holds structure, not tensors; a bigger one is not parsed
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
                "F64": 8, "C64": 8}

Status = Literal["ok", "bad", "unverifiable"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification.

    Attributes:
        status: ``ok`` (whole), ``bad`` (incomplete or corrupt) or ``unverifiable`` (no
            cheap structural check exists for this format).
        reason: One line saying what was checked or what is wrong.
    """

    status: Status
    reason: str

    @property
    def ok(self) -> bool:
        """Whether the checkpoint verified."""
        return self.status == "ok"


def verify_checkpoint(path: Path) -> Verdict:
    """Verify a checkpoint file or directory by its structure.

    Args:
        path: The checkpoint.

    Returns:
        The verdict; a path that vanished or cannot be read is ``bad``.
    """
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        return Verdict("bad", f"cannot be read: {exc}")
    if is_dir:
        from spml.toolkit.watchdog.verify_dirs import verify_directory

        return verify_directory(path)
    return verify_file(path)


def verify_file(path: Path) -> Verdict:
    """Verify one checkpoint file by the rule for its content and suffix (module docstring)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(len(_TORCH_LEGACY))
            handle.seek(max(size - 1, 0))
            last = handle.read(1)
    except OSError as exc:
        return Verdict("bad", f"cannot be read: {exc}")
    if size == 0:
        return Verdict("bad", "empty file")
    suffix = path.suffix.lower()
    if head.startswith(_ZIP_MAGIC):
        return _verify_zip(path, size, torch_archive=suffix in TORCH_SUFFIXES)
    if (pickled := _verify_pickle(head, last, suffix)) is not None:
        return pickled
    if suffix in TORCH_SUFFIXES:
        return Verdict("bad", "neither a zip archive nor a pickle: torch.load cannot read it")
    if suffix in _ZIP_SUFFIXES:
        return Verdict("bad", f"not a zip archive, which every {suffix} file is")
    if suffix == ".safetensors":
        return _verify_safetensors(path, size)
    if suffix in (".json", ".yaml", ".yml"):
        return _verify_text(path, suffix)
    return Verdict("unverifiable", f"no structural check for {suffix or 'suffix-less'} files")


def _verify_pickle(head: bytes, last: bytes, suffix: str) -> Verdict | None:
    """A torch legacy file or a plain pickle (None when it is neither)."""
    if head.startswith(_TORCH_LEGACY):
        return Verdict("unverifiable", "legacy (non-zip) torch pickle: only loading all of it "
                       "could prove it whole")
    if suffix not in (*TORCH_SUFFIXES, ".pkl", ".pickle") or not head.startswith(_PICKLE_PROTO):
        return None
    if last != _PICKLE_STOP:
        return Verdict("bad", "pickle does not end with its STOP opcode: cut short")
    return Verdict("unverifiable", "pickle: only loading all of it could prove it whole")


# --- zip archives (torch.save) ---------------------------------------------------------------


def _verify_zip(path: Path, size: int, *, torch_archive: bool) -> Verdict:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            # The central directory begins where the records must end.
            bound = getattr(archive, "start_dir", size)
            if (problem := _records_outside(path, infos, min(bound, size))) is not None:
                return Verdict("bad", problem)
            names = [info.filename for info in infos]
            if not torch_archive and not any(n.rsplit("/", 1)[-1] == "data.pkl" for n in names):
                return Verdict("ok", f"zip archive: central directory lists {len(infos)} "
                               "records, all inside the file")
            return _verify_torch_records(archive, names)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        return Verdict("bad", f"zip central directory unreadable ({exc}): cut short or corrupt")


def _records_outside(path: Path, infos: list[zipfile.ZipInfo], bound: int) -> str | None:
    """The first record whose local header or data does not fit before ``bound``, if any."""
    with path.open("rb") as handle:
        for info in infos:
            handle.seek(info.header_offset)
            raw = handle.read(_LOCAL_HEADER.size)
            if len(raw) < _LOCAL_HEADER.size:
                return f"record {info.filename!r} starts past the end of the file"
            signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
            if signature != _ZIP_MAGIC[0]:
                return f"record {info.filename!r} has no local header at its offset"
            end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if end + info.compress_size > bound:
                return (f"record {info.filename!r} ends at byte {end + info.compress_size}, "
                        f"past the {bound} bytes before the central directory")
    return None


def _verify_torch_records(archive: zipfile.ZipFile, names: list[str]) -> Verdict:
    pickles = [name for name in names if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        return Verdict("bad", f"a torch archive holds one data.pkl, this one {len(pickles)}")
    prefix = pickles[0].removesuffix("data.pkl")
    records = {name.removeprefix(f"{prefix}data/") for name in names
               if name.startswith(f"{prefix}data/")}
    info = archive.getinfo(pickles[0])
    if info.file_size > _MAX_PICKLE:
        return Verdict("ok", f"torch archive: data.pkl and {len(records)} data records listed "
                       "(data.pkl too large to cross-check)")
    keys = _storage_keys(archive.read(pickles[0]))  # also checks data.pkl's CRC
    if keys is None:
        return Verdict("ok", f"torch archive: data.pkl and {len(records)} data records listed "
                       "(data.pkl not parsed for its references)")
    if missing := sorted(keys - records, key=lambda k: (len(k), k)):
        shown = ", ".join(f"data/{key}" for key in missing[:3])
        return Verdict("bad", f"data.pkl refers to {len(missing)} record(s) the archive does "
                       f"not list: {shown}")
    return Verdict("ok", f"torch archive: central directory intact, data.pkl and its "
                   f"{len(keys)} data records listed")


class _Stub:
    """Stands in for every class a pickle names, so that parsing runs no foreign code."""

    def __new__(cls, *args: object, **kwargs: object) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass


class _KeyCollector(pickle.Unpickler):
    """Reads torch's data.pkl, collecting the storage keys of its persistent ids."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.keys: set[str] = set()

    def find_class(self, module: str, name: str) -> type:
        return _Stub  # never import what the pickle names

    def persistent_load(self, pid: object) -> object:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            self.keys.add(str(pid[2]))  # ('storage', type, key, location, numel)
        return _Stub()


def _storage_keys(data: bytes) -> set[str] | None:
    """The ``data/<key>`` records ``data.pkl`` refers to; None when it cannot be parsed."""
    collector = _KeyCollector(data)
    try:
        collector.load()
    except Exception:  # noqa: BLE001 - an exotic pickle is not proof of damage (CRC matched)
        return None
    return collector.keys


# --- safetensors ------------------------------------------------------------------------------


def _verify_safetensors(path: Path, size: int) -> Verdict:
    if size < 8:
        return Verdict("bad", f"{size} bytes: shorter than the 8-byte header length")
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > _MAX_HEADER or 8 + length > size:
            return Verdict("bad", f"header length {length} does not fit in the {size}-byte "
                           "file: cut short or corrupt")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return Verdict("bad", f"header is not JSON ({exc})")
    if not isinstance(header, dict):
        return Verdict("bad", "header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if (problem := _tensor_problem(tensors)) is not None:
        return Verdict("bad", problem)
    declared = max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
    held = size - 8 - length
    if declared != held:
        return Verdict("bad", f"header declares {declared} data bytes, the file holds {held}"
                       + (": cut short" if held < declared else ""))
    return Verdict("ok", f"safetensors: header parses, {len(tensors)} tensors, data length "
                   "matches the file size")


def _tensor_problem(tensors: dict[str, Any]) -> str | None:
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not _valid_offsets(offsets):
            return f"tensor {name!r} has no valid data_offsets"
        shape, width = entry.get("shape"), _DTYPE_BYTES.get(str(entry.get("dtype")))
        if width is None or not isinstance(shape, list):
            continue  # an unknown dtype: only the offsets can be checked
        if all(isinstance(d, int) for d in shape) and (
                need := math.prod(shape) * width) != offsets[1] - offsets[0]:
            return (f"tensor {name!r}: {entry.get('dtype')} {shape} needs {need} bytes, "
                    f"data_offsets give {offsets[1] - offsets[0]}")
    return None


def _valid_offsets(offsets: object) -> bool:
    return (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(x, int) for x in offsets) and 0 <= offsets[0] <= offsets[1])


# --- text -------------------------------------------------------------------------------------


def _verify_text(path: Path, suffix: str) -> Verdict:
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            json.loads(text)
        else:
            yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())[:160]
        return Verdict("bad", f"{suffix[1:].upper()} does not parse ({reason})")
    return Verdict("ok", f"{suffix[1:].upper()} parses")
