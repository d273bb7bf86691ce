"""Tests of spml.toolkit.watchdog.classify: real logs, real subprocesses, cgroup-like files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spml.toolkit.watchdog.classify import AttemptEnd, Diagnosis, classify, read_oom_evidence

# --- log tails as torch 2.x / CPython print them (shapes from the notes, §5.1-5.5) ------------

NCCL_TIMEOUT = """\
step=1200 loss=2.31 lr=3e-4
[rank1]:[E1126 03:12:44.123 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective \
operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE, NumelIn=1048576, NumelOut=1048576, \
Timeout(ms)=600000) ran for 600012 milliseconds before timing out.
[rank1]:[E1126 03:12:44.124 ProcessGroupNCCL.cpp:1785] [PG 0 Rank 1] Exception (either an error \
or timeout) detected by watchdog at work: 12, last enqueued NCCL work: 12, last completed NCCL \
work: 11.
[rank1]:[E1126 03:12:44.125 ProcessGroupNCCL.cpp:630] [Rank 1] Some NCCL operations have failed \
or timed out. Due to the asynchronous nature of CUDA kernels, subsequent GPU operations might run \
on corrupted/incomplete data.
[rank1]:[E1126 03:12:44.126 ProcessGroupNCCL.cpp:636] [Rank 1] To avoid data inconsistency, we \
are taking the entire process down.
"""

SHAPE_ERROR = """\
step=3 loss=4.02
Traceback (most recent call last):
  File "/work/exp/train.py", line 88, in <module>
    main()
  File "/work/exp/train.py", line 61, in main
    logits = model(batch)
             ^^^^^^^^^^^^
  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1532, in _call
    return forward_call(*args, **kwargs)
  File "/work/exp/model.py", line 17, in forward
    return self.head(x)
  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 116, in forward
    return F.linear(input, self.weight, self.bias)
RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)
"""

CUDA_OOM = """\
Traceback (most recent call last):
  File "/work/exp/train.py", line 42, in <module>
    loss.backward()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
capacity of 79.10 GiB of which 1.02 GiB is free. Of the allocated memory 75.3 GiB is allocated \
by PyTorch, and 1.2 GiB is reserved by PyTorch but unallocated.
"""

TORCHRUN_CHILD_KILLED = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-26_03:12:44
  rank      : 0 (local_rank: 0)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
============================================================
"""


def _end(exit_code: int | None, log: str = "", **kwargs: object) -> AttemptEnd:
    return AttemptEnd(exit_code=exit_code, log_tail=log, **kwargs)  # type: ignore[arg-type]


def _run_python(tmp_path: Path, source: str) -> AttemptEnd:
    """Run ``source`` as train.py in a real interpreter; return its end as a supervisor sees it."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=False)
    return AttemptEnd(exit_code=proc.returncode, log_tail=proc.stdout + proc.stderr)


# --- contract ---------------------------------------------------------------------------------


def test_clean_exit_is_not_a_failure() -> None:
    with pytest.raises(ValueError, match="end must be a failed attempt, got exit_code=0"):
        classify(_end(0, "step=10 done"))


def test_diagnosis_is_frozen_and_evidence_is_short() -> None:
    log = "\n".join(f"No space left on device {'x' * 400} {i}" for i in range(30))
    diagnosis = classify(_end(1, log))
    assert isinstance(diagnosis, Diagnosis)
    assert len(diagnosis.evidence) <= 5
    assert all(len(item) <= 200 for item in diagnosis.evidence)
    with pytest.raises(AttributeError):
        diagnosis.kind = "code"  # type: ignore[misc]


# --- real subprocesses ------------------------------------------------------------------------


def test_real_python_exception_names_type_message_and_user_frame(tmp_path: Path) -> None:
    end = _run_python(tmp_path, """\
        def step(count):
            return 1 / count

        print("step=1 loss=2.0", flush=True)
        step(0)
    """)
    diagnosis = classify(end)
    assert end.exit_code == 1
    assert diagnosis.kind == "code"
    assert diagnosis.cause == "python exception: ZeroDivisionError: division by zero"
    assert diagnosis.signature == "exc:ZeroDivisionError@train.py:2"
    assert "ZeroDivisionError: division by zero" in diagnosis.evidence


@pytest.mark.parametrize(("signum", "signature"), [(9, "signal:9"), (15, "signal:15")])
def test_real_signal_deaths_are_environment(tmp_path: Path, signum: int, signature: str) -> None:
    end = _run_python(tmp_path, f"import os\nos.kill(os.getpid(), {signum})\n")
    assert end.exit_code == -signum
    diagnosis = classify(end)
    assert (diagnosis.kind, diagnosis.signature) == ("environment", signature)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_real_enospc_is_disk_full_not_a_code_bug(tmp_path: Path) -> None:
    end = _run_python(tmp_path, """\
        with open("/dev/full", "w") as handle:
            handle.write("checkpoint bytes")
    """)
    diagnosis = classify(end)
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "environment", "disk full (ENOSPC)", "enospc")
    assert any("No space left on device" in line for line in diagnosis.evidence)


# --- exit statuses (§5.1, §5.2) ---------------------------------------------------------------


@pytest.mark.parametrize("code", [-9, 137])
def test_sigkill_with_oom_evidence_is_a_host_oom_kill(code: int) -> None:
    evidence = "oom_kill 0 -> 1 in /sys/fs/cgroup/job/memory.events"
    diagnosis = classify(_end(code, "step=5 loss=1.0", oom_kill_evidence=evidence))
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "environment", "host OOM kill (SIGKILL)", "host-oom")
    assert evidence in diagnosis.evidence


@pytest.mark.parametrize("code", [-9, 137])
def test_sigkill_without_oom_evidence_is_an_external_kill(code: int) -> None:
    diagnosis = classify(_end(code, "step=5 loss=1.0"))
    assert diagnosis.kind == "environment"
    assert diagnosis.signature == "signal:9"
    assert "external kill or preemption" in diagnosis.cause


@pytest.mark.parametrize("code", [-15, 143])
def test_sigterm_is_preemption(code: int) -> None:
    diagnosis = classify(_end(code))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", "signal:15")
    assert "preemption" in diagnosis.cause


def test_torchrun_child_killed_is_unwrapped_to_its_signal() -> None:
    diagnosis = classify(_end(1, TORCHRUN_CHILD_KILLED, oom_kill_evidence="kernel: Out of memory"))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", "host-oom")


def test_torchrun_wrapper_traceback_is_skipped_for_the_childs() -> None:
    log = SHAPE_ERROR + "Traceback (most recent call last):\n  File \"/usr/bin/torchrun\", line " \
        "8, in <module>\n    sys.exit(main())\n" + TORCHRUN_CHILD_KILLED.replace("-9", "1")
    diagnosis = classify(_end(1, log))
    assert diagnosis.signature == "exc:RuntimeError@model.py:17"


def test_hang_is_environment_whatever_the_exit_status() -> None:
    diagnosis = classify(AttemptEnd(exit_code=None, hung=True, last_step=812))
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "environment", "hang: no heartbeat", "hang")
    assert "last logged step: 812" in diagnosis.evidence


@pytest.mark.parametrize(("code", "signature", "name"), [(-11, "signal:11", "SIGSEGV"),
                                                         (134, "signal:6", "SIGABRT")])
def test_native_crash_without_cause_is_surfaced_as_code(code: int, signature: str,
                                                        name: str) -> None:
    log = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):"
    diagnosis = classify(_end(code, log))
    assert (diagnosis.kind, diagnosis.signature) == ("code", signature)
    assert name in diagnosis.cause
    assert "without a recognised cause" in diagnosis.cause


def test_unknown_exit_without_traceback_is_surfaced_as_code() -> None:
    diagnosis = classify(_end(3, "step=10 loss=1.2\nbye"))
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "code", "exit 3 without a recognised cause", "exit:3")
    assert "bye" in diagnosis.evidence


def test_missing_exit_status_without_hang_is_surfaced_as_code() -> None:
    assert classify(_end(None, "")).signature == "unknown"


# --- NCCL (§5.3) ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [-6, 134, 1])
def test_nccl_collective_timeout_is_environment_with_op_signature(code: int) -> None:
    diagnosis = classify(_end(code, NCCL_TIMEOUT))
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "environment", "NCCL collective timeout", "nccl:timeout:ALLREDUCE")
    assert any("Watchdog caught collective operation timeout" in e for e in diagnosis.evidence)


def test_nccl_timeout_signature_ignores_the_sequence_number() -> None:
    # SeqNum differs at every attempt; a signature with it would never repeat, and the
    # crash-loop guard would never see the same timeout twice (review p8: 166 attempts/min).
    signatures = {classify(_end(-6, NCCL_TIMEOUT.replace("SeqNum=12", f"SeqNum={n}"))).signature
                  for n in (12, 290531, 841337)}
    assert signatures == {"nccl:timeout:ALLREDUCE"}
    other_op = NCCL_TIMEOUT.replace("OpType=ALLREDUCE", "OpType=BROADCAST")
    assert classify(_end(-6, other_op)).signature == "nccl:timeout:BROADCAST"


def test_nccl_stuck_rank_fact_when_enqueued_equals_completed() -> None:
    stuck = NCCL_TIMEOUT.replace("last completed NCCL work: 11.", "last completed NCCL work: 12.")
    assert stuck != NCCL_TIMEOUT
    diagnosis = classify(_end(-6, stuck))
    assert any("stuck on the CPU side" in item for item in diagnosis.evidence)
    assert not any("stuck" in item for item in classify(_end(-6, NCCL_TIMEOUT)).evidence)


def test_nccl_heartbeat_and_remote_errors_are_environment() -> None:
    heartbeat = ("[E ProcessGroupNCCL.cpp:1316] [PG 0 Rank 0] Heartbeat monitor timed out! "
                 "Process will be terminated after dumping debug info.")
    remote = ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, "
              "remote process exited or there was a network error\nncclRemoteError: Connection "
              "reset by peer")
    assert classify(_end(-6, heartbeat)).signature == "nccl:heartbeat"
    diagnosis = classify(_end(1, remote))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", "nccl:error")


def test_nccl_unhandled_cuda_error_is_a_cuda_failure_not_the_network() -> None:
    log = ("torch.distributed.DistBackendError: NCCL error in: NCCLUtils.hpp:275, unhandled cuda "
           "error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5")
    diagnosis = classify(_end(1, log))
    assert (diagnosis.kind, diagnosis.signature) == ("code", "cuda:app-error")


def test_a_rank_prefix_does_not_hide_the_traceback() -> None:
    log = "\n".join(f"[rank3]:{line}" for line in SHAPE_ERROR.splitlines())
    assert classify(_end(1, log)).signature == "exc:RuntimeError@model.py:17"


# --- GPU (§5.4) -------------------------------------------------------------------------------


def test_hardware_xid_event_is_environment_and_beats_the_hang() -> None:
    diagnosis = classify(AttemptEnd(exit_code=None, hung=True, xid_events=(43, 79)))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", "xid:79")
    assert "GPU fallen off the bus" in diagnosis.cause


def test_nvrm_xid_lines_in_the_log_count_and_are_sorted_in_the_signature() -> None:
    log = ("NVRM: Xid (PCI:0000:3b:00): 94, pid=4242, Contained: CE User Channel\n"
           "NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, DBE (double bit error)\n" + SHAPE_ERROR)
    diagnosis = classify(_end(1, log))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", "xid:48+94")
    assert any("NVRM: Xid" in item for item in diagnosis.evidence)


def test_follow_on_xid_alone_is_ignored() -> None:
    assert classify(_end(1, SHAPE_ERROR, xid_events=(43, 45))).kind == "code"


def test_application_xid_is_code() -> None:
    diagnosis = classify(_end(-6, "", xid_events=(31,)))
    assert (diagnosis.kind, diagnosis.signature) == ("code", "xid:31")


def test_illegal_memory_access_is_code() -> None:
    log = ("RuntimeError: CUDA error: an illegal memory access was encountered\n"
           "CUDA kernel errors might be asynchronously reported at some other API call")
    diagnosis = classify(_end(1, log))
    assert (diagnosis.kind, diagnosis.signature) == ("code", "cuda:app-error")


def test_uncorrectable_ecc_is_hardware() -> None:
    log = "RuntimeError: CUDA error: uncorrectable ECC error encountered"
    assert classify(_end(1, log)).signature == "gpu:ecc"


# --- memory, disk, loss, tracebacks (§5.2, §5.5, §5.8) ----------------------------------------


def test_cuda_oom_is_code_needing_a_parameter_change() -> None:
    diagnosis = classify(_end(1, CUDA_OOM))
    assert (diagnosis.kind, diagnosis.signature) == ("code", "cuda-oom")
    assert "CUDA out of memory" in diagnosis.cause
    assert "parameter change" in diagnosis.cause


def test_cuda_oom_on_one_rank_beats_the_nccl_timeout_it_causes() -> None:
    assert classify(_end(-6, CUDA_OOM + NCCL_TIMEOUT)).signature == "cuda-oom"


def test_checkpoint_stream_writer_failure_is_disk_full() -> None:
    log = ("RuntimeError: [enforce fail at inline_container.cc:595] . unexpected pos 640 vs 512\n"
           "RuntimeError: PytorchStreamWriter failed writing file data/3: file write failed")
    assert classify(_end(1, log)).signature == "enospc"


@pytest.mark.parametrize("line", ["FAIL: loss is nan", "step=40 loss=nan lr=3e-4",
                                  "nan loss detected at step 40", "loss: inf", "Loss is NaN"])
def test_non_finite_loss_is_code(line: str) -> None:
    diagnosis = classify(_end(1, f"step=39 loss=2.1\n{line}"))
    assert (diagnosis.kind, diagnosis.cause, diagnosis.signature) == (
        "code", "non-finite loss", "nonfinite-loss")


def test_finite_losses_are_not_mistaken_for_nan() -> None:
    assert classify(_end(3, "loss=0.5 nanoseconds=12\ninference loss: 0.2")).signature == "exit:3"


@pytest.mark.parametrize(("line", "signature"), [
    ("RuntimeError: DataLoader worker (pid 77) is killed by signal: Killed.", "dataloader:killed"),
    ("RuntimeError: DataLoader worker (pid 77) is killed by signal: Bus error. It is possible "
     "that dataloader's workers are out of shared memory.", "dataloader:shm"),
])
def test_dataloader_worker_deaths_are_environment(line: str, signature: str) -> None:
    diagnosis = classify(_end(1, line))
    assert (diagnosis.kind, diagnosis.signature) == ("environment", signature)


def test_traceback_signature_uses_innermost_user_frame_not_library_frames() -> None:
    diagnosis = classify(_end(1, SHAPE_ERROR))
    assert diagnosis.kind == "code"
    assert diagnosis.cause == ("python exception: RuntimeError: mat1 and mat2 shapes cannot be "
                               "multiplied (4x3 and 5x2)")
    assert diagnosis.signature == "exc:RuntimeError@model.py:17"


def test_chained_exceptions_report_the_last_one() -> None:
    log = SHAPE_ERROR + textwrap.dedent("""\

        During handling of the above exception, another exception occurred:

        Traceback (most recent call last):
          File "/work/exp/train.py", line 90, in <module>
            raise SystemError("giving up")
        SystemError: giving up
    """)
    assert classify(_end(1, log)).signature == "exc:SystemError@train.py:90"


def test_same_bug_gives_same_signature_whatever_the_message() -> None:
    first = classify(_end(1, SHAPE_ERROR))
    second = classify(_end(1, SHAPE_ERROR.replace("4x3", "8x3")))
    assert first.signature == second.signature
    assert first.cause != second.cause


# --- read_oom_evidence ------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cgroup_v2_oom_kill_increase_is_evidence(tmp_path: Path) -> None:
    proc = _write(tmp_path / "proc-cgroup", "0::/user.slice/job-1\n")
    events = _write(tmp_path / "cg/user.slice/job-1/memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    evidence, counts = read_oom_evidence(cgroup_root=tmp_path / "cg", proc_cgroup=proc)
    assert counts == {str(events): 1}
    events.write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert read_oom_evidence(counts, cgroup_root=tmp_path / "cg", proc_cgroup=proc) == (
        f"oom_kill 1 -> 2 in {events}", {str(events): 2})
    assert read_oom_evidence({str(events): 2}, cgroup_root=tmp_path / "cg",
                             proc_cgroup=proc)[0] is None


def test_nearest_existing_ancestor_cgroup_is_used(tmp_path: Path) -> None:
    proc = _write(tmp_path / "proc-cgroup", "0::/../../kubepods/pod-a/ctr\n")
    events = _write(tmp_path / "cg/kubepods/memory.events", "oom_kill 4\n")
    assert read_oom_evidence({str(events): 4}, cgroup_root=tmp_path / "cg",
                             proc_cgroup=proc) == (None, {str(events): 4})


def test_cgroup_v1_oom_control_is_read(tmp_path: Path) -> None:
    proc = _write(tmp_path / "proc-cgroup", "9:name=systemd:/\n4:cpu,memory:/docker/abc\n0::/\n")
    control = _write(tmp_path / "cg/memory/docker/abc/memory.oom_control",
                     "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    evidence, counts = read_oom_evidence({str(control): 2}, cgroup_root=tmp_path / "cg",
                                         proc_cgroup=proc)
    assert counts == {str(control): 3}
    assert evidence == f"oom_kill 2 -> 3 in {control}"


def test_kernel_log_oom_lines_are_evidence_when_new(tmp_path: Path) -> None:
    dmesg = ["[  10.0] eth0: link up",
             "[ 812.3] Out of memory: Killed process 4242 (python) total-vm:91234kB, "
             "anon-rss:81234kB"]

    def reader() -> str:  # a fake `dmesg`
        return "\n".join(dmesg)

    evidence, counts = read_oom_evidence(None, cgroup_root=tmp_path, kernel_log=reader,
                                         proc_cgroup=tmp_path / "absent")
    assert counts == {"kernel_log": 1}
    assert evidence is not None
    assert "Killed process 4242" in evidence
    assert read_oom_evidence(counts, cgroup_root=tmp_path, kernel_log=reader,
                             proc_cgroup=tmp_path / "absent")[0] is None
    dmesg.append("[ 900.1] Memory cgroup out of memory: Killed process 4343 (python)")
    evidence, counts = read_oom_evidence(counts, cgroup_root=tmp_path, kernel_log=reader,
                                         proc_cgroup=tmp_path / "absent")
    assert counts == {"kernel_log": 2}
    assert "Killed process 4343" in (evidence or "")


def test_every_source_missing_or_failing_is_tolerated(tmp_path: Path) -> None:
    def forbidden() -> str:
        raise PermissionError("dmesg: read kernel buffer failed: Operation not permitted")

    assert read_oom_evidence(cgroup_root=tmp_path / "none", kernel_log=forbidden,
                             proc_cgroup=tmp_path / "absent") == (None, {})


def test_this_machine_is_read_without_errors() -> None:
    evidence, counts = read_oom_evidence()
    again, _ = read_oom_evidence(counts)
    assert again is None or "oom_kill" in again
    assert all(isinstance(value, int) for value in counts.values())
    assert evidence is None or isinstance(evidence, str)


NCCL_ABORT = ("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE, "
              "Timeout(ms)=600000) ran for 600100 milliseconds before timing out.\n"
              "To avoid data inconsistency, we are taking the entire process down.")


def test_an_old_warning_does_not_decide_how_the_run_died() -> None:
    tail = "\n".join(["step=3 loss=nan", *[f"step={i} loss=0.5" for i in range(4, 150)],
                      NCCL_ABORT])
    assert classify(AttemptEnd(exit_code=-6, log_tail=tail)).kind == "environment"


def test_a_rank_traceback_beats_the_nccl_errors_it_caused() -> None:
    tail = ("Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n"
            "    x = 1 / 0\nZeroDivisionError: division by zero\n" + NCCL_ABORT)
    diagnosis = classify(AttemptEnd(exit_code=1, log_tail=tail))
    assert (diagnosis.kind, diagnosis.signature.split("@")[0]) == ("code",
                                                                   "exc:ZeroDivisionError")


def test_nccl_invalid_usage_is_a_code_bug() -> None:
    tail = "NCCL error in: ProcessGroupNCCL.cpp:1970, invalid usage, NCCL version 2.21.5\n" \
           "ncclInvalidUsage: This usually reflects invalid usage of NCCL library."
    assert classify(AttemptEnd(exit_code=1, log_tail=tail)).kind == "code"
