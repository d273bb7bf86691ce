"""The review's attacks on checkpoint verification, ordering and trust, ported as tests on real
files: torch.save archives (zip and legacy), safetensors shards laid out as Hugging Face's
save_pretrained writes them, numpy .npz archives, plain pickles; real processes where cheap."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.metrics.log import MetricHistory
from spml.toolkit.watchdog.attempt import AttemptConfig, run_attempt
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.globcheck import GlobWatch, checkpoint_suspects
from spml.toolkit.watchdog.observer import Observer
from spml.toolkit.watchdog.resume import (
    SHOWN_SKIPPED,
    ResumeChoice,
    choose_resume,
    fresh_start_warning,
)
from spml.toolkit.watchdog.state import WatchdogState
from spml.toolkit.watchdog.supervise import supervise_once
from spml.toolkit.watchdog.verify import verify_checkpoint


def _never(_: Checkpoint) -> bool:
    return False


def at(path: Path, mtime: float) -> Path:
    os.utime(path, (mtime, mtime))
    return path


def shard(path: Path, value: float = 1.0) -> Path:
    """One safetensors file (8-byte header length, JSON header, data), as save_pretrained."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<4f", *[value] * 4))
    return path


def hf_save(folder: Path, shards: int = 4, *, written: int | None = None,
            index: bool = True) -> Path:
    """save_pretrained's order: config, the shards one by one, the index last."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "toy"}')
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    for name in names[:written]:
        shard(folder / name)
    if index and written is None:
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 16 * shards},
             "weight_map": {f"l{i}.w": name for i, name in enumerate(names)}}))
    return folder


def legacy(path: Path, step: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "w": torch.ones(64)}, path, _use_new_zipfile_serialization=False)
    return path


def archive(path: Path, step: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "w": torch.ones(64)}, path)
    return path


# --- 1. a half-saved Hugging Face checkpoint; files without a structural check -----------------


def test_hf_shards_written_but_no_index_yet_did_not_finish(tmp_path: Path) -> None:
    half = hf_save(tmp_path / "checkpoint-20", written=2)  # SIGKILLed after 2 of 4 shards
    verdict = verify_checkpoint(half)
    assert (verdict.status, verdict.reason) == (
        "bad", "model-*-of-00004.safetensors: 2 of 4 shards present (missing 3, 4): the save "
        "did not finish")
    every = hf_save(tmp_path / "checkpoint-30", written=4)  # all shards, killed before the index
    verdict = verify_checkpoint(every)
    assert verdict.status == "bad"
    assert verdict.reason.endswith("4 shard(s) but no *.index.json names them (save_pretrained "
                                   "writes it last): the save did not finish")
    assert verify_checkpoint(hf_save(tmp_path / "checkpoint-10")).ok


def test_a_restart_passes_over_the_half_saved_hf_directory(tmp_path: Path) -> None:
    at(hf_save(tmp_path / "ckpt" / "checkpoint-10"), 1_000)
    half = hf_save(tmp_path / "ckpt" / "checkpoint-20", written=2)
    choice = choose_resume(CheckpointTracker("ckpt/checkpoint-*", tmp_path), _never)
    assert choice.checkpoint is not None
    assert choice.checkpoint.step == 10
    assert choice.skipped[0].startswith("ckpt/checkpoint-20: model-*-of-00004.safetensors: 2 of")
    assert half.is_dir()


def _pkl(path: Path) -> None:
    path.write_bytes(pickle.dumps({"w": list(range(100))}))


@pytest.mark.parametrize(("name", "write", "reason"), [
    ("weights.pt", legacy, "legacy (non-zip) torch pickle"),
    ("params.pkl", _pkl, "pickle: only loading all of it"),
    ("weights.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), "no structural"),
    ("opt.msgpack", lambda p: p.write_bytes(b"\x82\xa1w\x01"), "no structural check for"),
])
def test_one_file_without_a_structural_check_makes_the_directory_unverifiable(
        tmp_path: Path, name: str, write: object, reason: str) -> None:
    folder = tmp_path / "step_10"
    shard(folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    write(folder / name)  # type: ignore[operator]
    verdict = verify_checkpoint(folder)
    assert verdict.status == "unverifiable"
    assert verdict.reason.startswith(f"holds file(s) without a structural check: {name} (")
    assert reason in verdict.reason


def test_an_unverifiable_directory_is_used_only_with_a_fresh_marker(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt" / "step_10"
    shard(folder / "model.safetensors")
    legacy(folder / "optimizer.pt")
    tracker = CheckpointTracker("ckpt/step_*", tmp_path)
    assert choose_resume(tracker, lambda c: tracker.is_marked(c.path)).checkpoint is None
    (folder / "COMPLETE").write_text("")
    chosen = choose_resume(tracker, lambda c: tracker.is_marked(c.path))
    assert chosen.checkpoint is not None
    assert chosen.how.startswith("marked or seen complete while training ran (holds file(s)")


def test_npz_is_verified_as_the_zip_archive_it_is(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    np.savez(path, w=np.ones(1000), b=np.zeros(10))
    assert verify_checkpoint(path).ok
    folder = tmp_path / "ckpt_npz"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    whole = path.read_bytes()
    (folder / "params.npz").write_bytes(whole[: len(whole) // 2])
    verdict = verify_checkpoint(folder)
    assert verdict.status == "bad"
    assert verdict.reason.startswith("params.npz: zip central directory unreadable")
    (folder / "params.npz").write_bytes(b"\x93NUMPY" + bytes(100))
    assert verify_checkpoint(folder).reason == ("params.npz: not a zip archive, which every .npz "
                                                "file is")


def test_a_pickle_cut_short_is_bad_and_torch_archives_under_other_names_are_checked(
        tmp_path: Path) -> None:
    path = tmp_path / "params.pkl"
    _pkl(path)
    assert verify_checkpoint(path).status == "unverifiable"
    os.truncate(path, path.stat().st_size // 3)
    assert verify_checkpoint(path).reason == "pickle does not end with its STOP opcode: cut short"
    rng = tmp_path / "random_states_0.pkl"  # accelerate's save_state: torch.save under .pkl
    torch.save({"python": 1, "torch": torch.get_rng_state()}, rng)
    assert verify_checkpoint(rng).reason.startswith("torch archive: central directory intact")


# --- 2. a file-system error other than ENOENT is never fatal ----------------------------------


@pytest.mark.parametrize("code", [errno.EACCES, errno.ESTALE, errno.EIO])
def test_unreadable_paths_are_skipped_with_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    at(archive(tmp_path / "ckpt" / "step_10.pt", 10), 1_000)
    at(archive(tmp_path / "ckpt" / "step_20.pt", 20), 2_000)
    shard(tmp_path / "ckpt" / "step_30" / "sub" / "model.safetensors")
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if "step_20.pt" in str(path) or "sub/model" in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    tracker = CheckpointTracker("ckpt/step_*", tmp_path, stable_s=0.0)
    assert [c.step for c in tracker.complete(0.0)] == []  # a poll: no exception
    assert [c.step for c in tracker.complete(1.0)] == [10]
    assert tracker.newest_marked() is None
    choice = choose_resume(tracker, _never)
    assert choice.checkpoint is not None
    assert choice.checkpoint.step == 10
    assert len(choice.skipped) == 2
    assert all(f"[Errno {code}]" in line or os.strerror(code) in line
               for line in choice.skipped)
    watch = Observer(_settings("ckpt/step_*"), WatchdogState(tmp_path),
                     ContextFile(tmp_path / "ctx.md"), tracker, None)
    watch(MetricHistory())


def test_an_unlistable_folder_inside_a_directory_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "step_30"
    shard(folder / "model.safetensors")
    shard(folder / "sub" / "more.safetensors")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if str(path).endswith("sub"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    verdict = verify_checkpoint(folder)
    assert verdict.status == "bad"
    assert verdict.reason.startswith("cannot be listed completely (PermissionError")


_PERMISSION_PROBE = """
import sys
from pathlib import Path
from spml.toolkit.watchdog.checkpoints import CheckpointTracker
from spml.toolkit.watchdog.resume import choose_resume
tracker = CheckpointTracker("ckpt/step_*", Path(sys.argv[1]), stable_s=0.0)
tracker.complete(0.0)
choice = choose_resume(tracker, lambda c: False)
print(choice.checkpoint.step, "|".join(choice.skipped))
"""


def test_real_permission_errors_as_an_unprivileged_user(tmp_path: Path) -> None:
    root = os.geteuid() == 0
    if root and shutil.which("setpriv") is None:
        pytest.skip("root reads everything; setpriv is needed to drop that")
    at(archive(tmp_path / "ckpt" / "step_10.pt", 10), 1_000)
    at(archive(tmp_path / "ckpt" / "step_20.pt", 20), 2_000)
    archive(tmp_path / "ckpt" / "step_30" / "sub" / "model.pt", 30)
    (tmp_path / "ckpt" / "step_20.pt").chmod(0)
    (tmp_path / "ckpt" / "step_30" / "sub").chmod(0o644)  # listable, not searchable
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
            if root else [])
    try:
        done = subprocess.run([*drop, sys.executable, "-c", _PERMISSION_PROBE, str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        (tmp_path / "ckpt" / "step_30" / "sub").chmod(0o755)
    assert done.returncode == 0, done.stderr
    step, skipped = done.stdout.strip().split(" ", 1)
    assert step == "10"
    assert "step_30: cannot be read (PermissionError" in skipped
    assert "step_20.pt: cannot be read" in skipped


# --- 3. ordering: the newest written, not the biggest number in a name ----------------------


def test_lightning_last_ckpt_beats_an_older_best(tmp_path: Path) -> None:
    at(archive(tmp_path / "ckpt" / "epoch=0-step=100.ckpt", 100), 1_000)
    at(archive(tmp_path / "ckpt" / "last.ckpt", 300), 1_001)
    choice = choose_resume(CheckpointTracker("ckpt/*.ckpt", tmp_path), _never)
    assert choice.checkpoint is not None
    assert choice.checkpoint.path.name == "last.ckpt"


def test_metric_values_in_names_are_not_steps(tmp_path: Path) -> None:
    names = [f"sample-mnist-epoch={epoch:02d}-val_loss={loss}.ckpt"
             for epoch, loss in ((0, "0.95"), (1, "0.41"), (2, "0.32"))]
    for i, name in enumerate(names):
        at(archive(tmp_path / "ckpt" / name), 1_000 + i)
    tracker = CheckpointTracker("ckpt/*.ckpt", tmp_path)
    assert [c.step for c in tracker.newest_first()] == [2, 1, 0]
    assert choose_resume(tracker, _never).checkpoint.path.name == names[-1]


def test_an_older_file_naming_a_higher_step_is_pointed_out(tmp_path: Path) -> None:
    # A run restarted from scratch next to an old step_500 (or an old one copied without -p).
    at(archive(tmp_path / "ckpt" / "step_500.pt", 500), 1_000)
    at(archive(tmp_path / "ckpt" / "step_20.pt", 20), 2_000)
    choice = choose_resume(CheckpointTracker("ckpt/step_*.pt", tmp_path), _never)
    assert choice.checkpoint.step == 20
    assert ("note: 1 older file(s) name a higher step, e.g. ckpt/step_500.pt (step 500)"
            in choice.how)


# --- 4. a stale marker; trust tied to the signature, not the path ----------------------------


def test_a_marker_older_than_the_rewritten_checkpoint_vouches_for_nothing(tmp_path: Path) -> None:
    path = legacy(tmp_path / "ckpt" / "last.pt", 10)
    marker = tmp_path / "ckpt" / "last.pt.complete"
    marker.write_text("")
    at(path, 1_000)
    at(marker, 1_000)  # same second: written right after the save
    tracker = CheckpointTracker("ckpt/*.pt", tmp_path)
    assert tracker.is_marked(path)
    legacy(path, 20)  # rewritten in place (and here cut short): the marker is from the last save
    os.truncate(path, path.stat().st_size // 2)
    at(path, 1_050)
    assert not tracker.is_marked(path)
    choice = choose_resume(tracker, lambda c: tracker.is_marked(c.path))
    assert choice.checkpoint is None
    assert "no marker and not seen complete" in choice.skipped[0]


def test_a_complete_file_older_than_a_file_of_its_directory_vouches_for_nothing(
        tmp_path: Path) -> None:
    folder = tmp_path / "latest"
    legacy(folder / "model.pt")
    at(folder / "model.pt", 1_000)
    at(_touch(folder / "COMPLETE"), 1_001)
    tracker = CheckpointTracker("latest", tmp_path)
    assert tracker.is_marked(folder)
    at(folder / "model.pt", 1_100)  # rewritten after the marker
    assert not tracker.is_marked(folder)


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def test_a_remembered_directory_rewritten_in_place_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt" / "latest"
    folder.mkdir(parents=True)
    (folder / "params.pkl").write_bytes(pickle.dumps({"w": list(range(10_000))}))
    tracker, state = CheckpointTracker("ckpt/latest", tmp_path), WatchdogState(tmp_path)
    state.mark_complete(tracker.newest_first()[0])  # seen stable while training ran

    def vouched(c: Checkpoint) -> bool:
        return tracker.is_marked(c.path) or state.remembers(c)

    assert choose_resume(tracker, vouched).checkpoint is not None
    (folder / "x.tmp").write_text("x")  # a temporary file (a save elsewhere) changes nothing
    assert choose_resume(tracker, vouched).checkpoint is not None
    (folder / "params.pkl").write_bytes(pickle.dumps({"w": list(range(10))}))  # a new save...
    at(folder / "params.pkl", time.time() + 5)  # ... whole, but not the one seen complete
    choice = choose_resume(tracker, vouched)
    assert choice.checkpoint is None
    assert "not seen complete while training ran" in choice.skipped[0]


# --- 5. checkpoints from before the first attempt --------------------------------------------


def _settings(glob: str, **extra: object) -> WatchdogSettings:
    return WatchdogSettings.model_validate(
        {"train_command": "true", "checkpoint_glob": glob, "log_file": "train.log",
         "checkpoint_stable": 0.001, **extra})


def test_a_fresh_start_beside_unusable_checkpoints_is_alerted(tmp_path: Path) -> None:
    for step in (10, 20):
        at(legacy(tmp_path / "ckpt" / f"step_{step}.pt", step), 1_000 + step)
    trainer = "import sys; open('train.log', 'a').write('step=1 loss=0.5\\n')"
    settings = _settings("ckpt/step_*.pt", train_command=f"{sys.executable} -c "
                         f"{shlex.quote(trainer)}", restart_delay=0, poll_interval=0.05)
    WatchdogState(tmp_path).start_episode()
    report = supervise_once(settings, tmp_path)
    assert report.finished
    assert report.resumed_from is None
    alerts = WatchdogState(tmp_path).alerts()
    assert len(alerts) == 1
    assert alerts[0].startswith("checkpoints: starting from SCRATCH although 2 checkpoint(s) "
                                "match 'ckpt/step_*.pt' (ckpt/step_20.pt, ckpt/step_10.pt)")
    assert "<path>.complete" in alerts[0]
    assert "--checkpoint-check" in alerts[0]
    assert "starting from SCRATCH" in (tmp_path / "experiment-context.md").read_text()


def test_with_a_marker_the_pre_existing_checkpoint_is_resumed(tmp_path: Path) -> None:
    path = legacy(tmp_path / "ckpt" / "step_20.pt", 20)
    _touch(tmp_path / "ckpt" / "step_20.pt.complete")
    tracker = CheckpointTracker("ckpt/step_*.pt", tmp_path)
    choice = choose_resume(tracker, lambda c: tracker.is_marked(c.path))
    assert choice.checkpoint.path == path
    assert fresh_start_warning(choice, "ckpt/step_*.pt") is None
    assert fresh_start_warning(ResumeChoice(None), "ckpt/step_*.pt") is None  # nothing there


# --- 6. a long save through a temporary name is activity -------------------------------------


def test_a_growing_temporary_file_is_activity_not_a_candidate(tmp_path: Path) -> None:
    tracker = CheckpointTracker("ckpt/step_*.pt", tmp_path)
    watch = Observer(_settings("ckpt/step_*.pt"), WatchdogState(tmp_path),
                     ContextFile(tmp_path / "ctx.md"), tracker, None)
    assert watch(MetricHistory()) is False
    tmp = tmp_path / "ckpt" / "step_20.pt.tmp"
    tmp.parent.mkdir()
    tmp.write_bytes(b"x")
    assert watch(MetricHistory()) is True
    with tmp.open("ab") as handle:
        handle.write(b"more")
    assert watch(MetricHistory()) is True
    assert watch(MetricHistory()) is False  # no change since the last poll
    hf_tmp = tmp_path / "ckpt" / "tmp-checkpoint-20" / "model.safetensors"  # HF Trainer
    shard(hf_tmp)
    assert watch(MetricHistory()) is True
    assert tracker.measure_all() == []


_SLOW_SAVE = """
import time
from pathlib import Path
open("train.log", "a").write("step=1 loss=1\\n")
Path("ckpt").mkdir()
with open("ckpt/step_20.pt.tmp", "wb") as f:
    for _ in range(12):
        f.write(b"x" * 4096); f.flush(); time.sleep(0.25)
Path("ckpt/step_20.pt.tmp").rename("ckpt/step_20.pt")
open("train.log", "a").write("step=2 loss=1\\n")
"""


def test_a_save_through_a_temporary_name_longer_than_the_hang_timeout(tmp_path: Path) -> None:
    (tmp_path / "slow_save.py").write_text(_SLOW_SAVE)
    settings = _settings("ckpt/step_*.pt")
    tracker = CheckpointTracker("ckpt/step_*.pt", tmp_path, stable_s=0.001)
    observer = Observer(settings, WatchdogState(tmp_path), ContextFile(tmp_path / "ctx.md"),
                        tracker, None)
    config = AttemptConfig(train_command=f"{shlex.quote(sys.executable)} slow_save.py",
                           exp_dir=tmp_path, log_file=tmp_path / "train.log",
                           hang_timeout_s=1.0, startup_grace_s=0.0, poll_interval_s=0.1,
                           state_dir=WatchdogState(tmp_path).dir)
    outcome = run_attempt(config, 1, None, on_poll=observer)  # 3 s of saving, log silent
    assert not outcome.end.hung
    assert outcome.finished
    assert outcome.end.last_step == 2


# --- 7. no false alarm about the glob -------------------------------------------------------


def test_no_alarm_before_a_save_was_due(tmp_path: Path) -> None:
    archive(tmp_path / "pretrained" / "model.pt")  # old weights lying around
    at(tmp_path / "pretrained" / "model.pt", 1_000)
    watch = GlobWatch("ckpt/step_*.pt", tmp_path, interval_steps=80, grace_s=0.0, rescan_s=0.0)
    assert watch.check(False, 1, 1) is None
    archive(tmp_path / "other" / "step_40.pt")  # fresh, still before step 80: no evidence yet
    assert watch.check(False, 1, 60) is None
    assert watch.check(False, 1, 81) is not None  # the save at step 80 was due


def test_images_logs_tables_and_temporary_files_are_not_checkpoint_like(tmp_path: Path) -> None:
    for name in ("samples/step_20.png", "samples/step_20.jpg", "logs/step_20.log",
                 "metrics/step_20.csv", "notes/step_20.txt", "ckpt/step_20.pt.tmp",
                 "ckpt/tmp-checkpoint-20/model.safetensors",
                 "runs/events.out.tfevents.1700000000.host.1.0"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert checkpoint_suspects(tmp_path, limit=20) == []
    watch = GlobWatch("ckpt/step_*.pt", tmp_path, interval_steps=None, grace_s=0.0,
                      rescan_s=0.0)
    assert watch.check(False, 1, 50) is None


# --- 8. a bounded report --------------------------------------------------------------------


def test_many_damaged_checkpoints_are_summarised(tmp_path: Path) -> None:
    good = at(archive(tmp_path / "ckpt" / "step_1.pt", 1), 1_000)
    raw = good.read_bytes()
    for step in range(2, 40):
        path = tmp_path / "ckpt" / f"step_{step}.pt"
        path.write_bytes(raw[: len(raw) // 2])
        at(path, 1_000 + step)
    choice = choose_resume(CheckpointTracker("ckpt/step_*.pt", tmp_path), _never)
    assert choice.checkpoint.step == 1
    assert len(choice.skipped) == SHOWN_SKIPPED + 1
    assert choice.skipped[0].startswith("ckpt/step_39.pt: zip central directory unreadable")
    assert choice.skipped[-1] == f"and {38 - SHOWN_SKIPPED} more skipped"
    assert sum(map(len, choice.skipped)) < 1_000
