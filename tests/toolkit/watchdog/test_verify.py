"""Checkpoint verification by structure, on real files: torch.save archives, safetensors written
by hand (8-byte little-endian header length + JSON header + data, the documented layout), real
torch.distributed.checkpoint directories, Hugging Face index directories, JSON and YAML."""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from spml.toolkit.watchdog.verify import verify_checkpoint


def torch_file(path: Path, **tensors: torch.Tensor) -> Path:
    torch.save({"step": 7, **(tensors or {"w": torch.ones(32, 32), "b": torch.zeros(5)})}, path)
    return path


def safetensors_file(path: Path, n: int = 16, *, pad: bool = True) -> Path:
    header = {"__metadata__": {"step": "7"},
              "w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
              "i": {"dtype": "I64", "shape": [2], "data_offsets": [4 * n, 4 * n + 16]}}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8 if pad else 0)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * (4 * n + 16))
    return path


def dcp_dir(path: Path) -> Path:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(8, 8), "step": 7}, checkpoint_id=str(path))
    return path


def hf_dir(path: Path) -> Path:
    path.mkdir()
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    for shard in shards.values():
        safetensors_file(path / shard)
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 160}, "weight_map": shards}))
    (path / "trainer_state.json").write_text('{"global_step": 7}')
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    os.truncate(path, int(path.stat().st_size * keep))
    return path


# --- torch archives ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_a_whole_torch_archive_verifies(tmp_path: Path, suffix: str) -> None:
    verdict = verify_checkpoint(torch_file(tmp_path / f"model{suffix}"))
    assert verdict.ok, verdict
    assert verdict.reason == ("torch archive: central directory intact, data.pkl and its 2 "
                              "data records listed")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_torch_archive_cut_short_is_bad(tmp_path: Path, keep: float) -> None:
    verdict = verify_checkpoint(cut(torch_file(tmp_path / "model.pt"), keep))
    assert verdict.status == "bad"
    assert "zip central directory unreadable" in verdict.reason
    assert "cut short or corrupt" in verdict.reason


def test_an_archive_missing_a_data_record_is_bad(tmp_path: Path) -> None:
    whole = torch_file(tmp_path / "whole.pt")
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(whole) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/1"):
                dst.writestr(info, src.read(info))
    verdict = verify_checkpoint(broken)
    assert verdict.status == "bad"
    assert verdict.reason == "data.pkl refers to 1 record(s) the archive does not list: data/1"


def test_a_record_pointing_past_the_directory_is_bad(tmp_path: Path) -> None:
    path = torch_file(tmp_path / "model.pt")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        last = archive.infolist()[-1]
    # Make the last local header unrecognisable: the directory still points there.
    data[last.header_offset:last.header_offset + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert "has no local header at its offset" in verdict.reason


def test_a_torch_archive_without_data_pkl_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", "3")
    verdict = verify_checkpoint(path)
    assert (verdict.status, verdict.reason) == (
        "bad", "a torch archive holds one data.pkl, this one 0")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archives_verify(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 3)), path)
    assert verify_checkpoint(path).ok


def test_a_legacy_torch_pickle_is_unverifiable(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"step": 7}, path, _use_new_zipfile_serialization=False)
    verdict = verify_checkpoint(path)
    assert verdict.status == "unverifiable"
    assert "legacy (non-zip) torch pickle" in verdict.reason


def test_data_pkl_is_parsed_without_importing_what_it_names(tmp_path: Path) -> None:
    # A class the pickle names is never imported: this module does not exist.
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02cno_such_module\nBoom\nq\x00)\x81q\x01.")
    assert verify_checkpoint(path).reason == ("torch archive: central directory intact, "
                                              "data.pkl and its 0 data records listed")


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"),
    (b"hello world", "neither a zip archive nor a pickle: torch.load cannot read it"),
])
def test_garbage_torch_files_are_bad(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert (verify_checkpoint(path).status, verify_checkpoint(path).reason) == ("bad", reason)


def test_other_zip_files_get_the_directory_check(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", b"x" * 100)
    assert verify_checkpoint(path).ok
    assert verify_checkpoint(cut(path, 0.6)).status == "bad"


# --- safetensors ------------------------------------------------------------------------------


def test_a_whole_safetensors_file_verifies(tmp_path: Path) -> None:
    verdict = verify_checkpoint(safetensors_file(tmp_path / "model.safetensors"))
    assert verdict.ok, verdict
    assert verdict.reason == ("safetensors: header parses, 2 tensors, data length matches the "
                              "file size")


def test_a_truncated_safetensors_file_is_bad(tmp_path: Path) -> None:
    path = safetensors_file(tmp_path / "model.safetensors")
    os.truncate(path, path.stat().st_size - 10)
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert verdict.reason == "header declares 80 data bytes, the file holds 70: cut short"


def test_a_safetensors_file_cut_inside_its_header_is_bad(tmp_path: Path) -> None:
    verdict = verify_checkpoint(cut(safetensors_file(tmp_path / "model.safetensors"), 0.3))
    assert verdict.status == "bad"
    assert "does not fit in the" in verdict.reason


def test_trailing_bytes_after_the_data_are_bad(tmp_path: Path) -> None:
    path = safetensors_file(tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    assert verify_checkpoint(path).reason == "header declares 80 data bytes, the file holds 88"


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_bad(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    verdict = verify_checkpoint(path)
    assert verdict.reason == "tensor 'w': F32 [4] needs 16 bytes, data_offsets give 8"


def test_a_safetensors_header_that_is_not_json_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    assert verify_checkpoint(path).reason.startswith("header is not JSON")


# --- directories ------------------------------------------------------------------------------


def test_a_real_dcp_checkpoint_verifies(tmp_path: Path) -> None:
    verdict = verify_checkpoint(dcp_dir(tmp_path / "dcp-7"))
    assert verdict.ok, verdict
    assert verdict.reason == ("torch.distributed.checkpoint: .metadata names 1 shard(s), all "
                              "present with their sizes")


def test_a_dcp_checkpoint_missing_its_shard_is_bad(tmp_path: Path) -> None:
    path = dcp_dir(tmp_path / "dcp-7")
    (path / "__0_0.distcp").unlink()
    verdict = verify_checkpoint(path)
    assert (verdict.status, verdict.reason) == (
        "bad", "shard __0_0.distcp named by .metadata is missing")


def test_a_dcp_checkpoint_with_a_short_shard_is_bad(tmp_path: Path) -> None:
    path = dcp_dir(tmp_path / "dcp-7")
    os.truncate(path / "__0_0.distcp", 10)
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert verdict.reason.startswith("shard __0_0.distcp holds 10 bytes, .metadata needs ")


def test_dcp_shards_without_metadata_did_not_finish(tmp_path: Path) -> None:
    path = dcp_dir(tmp_path / "dcp-7")
    (path / ".metadata").unlink()
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert "without .metadata (written last): the save did not finish" in verdict.reason


def test_a_corrupt_dcp_metadata_is_bad(tmp_path: Path) -> None:
    path = dcp_dir(tmp_path / "dcp-7")
    (path / ".metadata").write_bytes(b"\x80\x04garbage")
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert verdict.reason.startswith(".metadata unreadable")


def test_a_whole_hf_directory_verifies(tmp_path: Path) -> None:
    verdict = verify_checkpoint(hf_dir(tmp_path / "checkpoint-7"))
    assert verdict.ok, verdict
    assert verdict.reason == ("model.safetensors.index.json: all 2 shard(s) present; "
                              "1 shard set(s) complete and indexed; 4 file(s) verified")


def test_an_hf_directory_missing_a_shard_is_bad(tmp_path: Path) -> None:
    path = hf_dir(tmp_path / "checkpoint-7")
    (path / "model-00002-of-00002.safetensors").unlink()
    verdict = verify_checkpoint(path)
    assert (verdict.status, verdict.reason) == (
        "bad", "model.safetensors.index.json names 1 missing shard(s): "
        "model-00002-of-00002.safetensors")


def test_an_hf_directory_with_a_truncated_shard_is_bad(tmp_path: Path) -> None:
    path = hf_dir(tmp_path / "checkpoint-7")
    cut(path / "model-00001-of-00002.safetensors", 0.9)
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert verdict.reason.startswith("model-00001-of-00002.safetensors: header declares")


def test_a_plain_directory_verifies_every_file_it_can(tmp_path: Path) -> None:
    path = tmp_path / "global_step7"
    path.mkdir()
    torch_file(path / "model_states.pt")
    torch_file(path / "optim_states.pt")
    (path / "notes.txt").write_text("anything")  # text: not checkpoint data
    (path / "COMPLETE").write_text("")  # a marker: not checkpoint data either
    assert verify_checkpoint(path).reason == "2 file(s) verified"
    cut(path / "optim_states.pt")
    assert verify_checkpoint(path).reason.startswith("optim_states.pt: zip central directory")


def test_directories_without_anything_verifiable(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verify_checkpoint(empty).reason == "empty directory"
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.h5").write_bytes(b"x")
    assert verify_checkpoint(other).status == "unverifiable"


# --- text and the rest ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("state.json", '{"step": 7}', '{"step": 7'),
    ("state.yaml", "step: 7\n", "step: [7\n"),
    ("state.yml", "step: 7\n", "a: b: c\n"),
])
def test_text_checkpoints_must_parse(tmp_path: Path, name: str, good: str, bad: str) -> None:
    path = tmp_path / name
    path.write_text(good)
    assert verify_checkpoint(path).ok
    path.write_text(bad)
    verdict = verify_checkpoint(path)
    assert verdict.status == "bad"
    assert "does not parse" in verdict.reason


def test_unknown_formats_are_unverifiable(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF")
    assert verify_checkpoint(path).status == "unverifiable"


def test_a_vanished_path_is_bad(tmp_path: Path) -> None:
    assert verify_checkpoint(tmp_path / "gone.pt").status == "bad"
