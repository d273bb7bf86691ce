"""`spml toolkit mfu`: the peak used and its source, N/A with the reason, bad input."""

from __future__ import annotations

from typer.testing import CliRunner

from spml.cli import app

runner = CliRunner()


def test_mfu_names_the_peak_and_its_source() -> None:
    result = runner.invoke(app, ["toolkit", "mfu", "--flops-per-step", "14.31e12",
                                 "--step-time", "0.0473", "--gpu", "NVIDIA H200"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "MFU: 30.58 %"
    assert "peak used: 989.4 TFLOPS dense bf16 per GPU [H200 SXM]" in result.output
    assert "source: https://" in result.output


def test_pcie_h100_does_not_get_the_sxm_peak() -> None:
    result = runner.invoke(app, ["toolkit", "mfu", "--flops-per-step", "7.56e12",
                                 "--step-time", "0.1", "--gpu", "NVIDIA H100 PCIe",
                                 "--n-gpus", "1"])
    assert result.output.splitlines()[0] == "MFU: 10.00 %"
    assert "[H100 PCIe]" in result.output


def test_unknown_gpu_is_na_with_the_reason_and_exit_1() -> None:
    result = runner.invoke(app, ["toolkit", "mfu", "--flops-per-step", "1e12",
                                 "--step-time", "0.1", "--gpu", "Imaginary GPU 9000"])
    assert result.exit_code == 1
    assert result.output.startswith("MFU: N/A: ")
    assert "%" not in result.output.splitlines()[0]


def test_bad_input_exits_2() -> None:
    result = runner.invoke(app, ["toolkit", "mfu", "--flops-per-step", "1e12",
                                 "--step-time", "0", "--gpu", "NVIDIA H200"])
    assert result.exit_code == 2
    assert "step_time_s must be > 0" in result.output
