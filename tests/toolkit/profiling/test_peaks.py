"""The cited peak-FLOPS table: sources, most-specific-first matching, MIG scaling, estimates."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from spml.errors import SpmlError
from spml.toolkit.profiling.peaks import (
    Hardware,
    estimate_peak,
    load_table,
    lookup_peak,
    match_row,
    normalize_dtype,
    parse_mig_profile,
    parse_table,
    resolve_peak,
    split_mig_name,
)

H100_SXM = 989.4


def raw_table() -> dict:
    text = resources.files("spml.toolkit.profiling").joinpath("peak_flops.yaml").read_text()
    return yaml.safe_load(text)


def test_every_row_cites_a_source() -> None:
    data = raw_table()
    rows = data["gpus"] + data["estimate_rates"]
    assert rows
    for row in rows:
        assert str(row.get("source", "")).startswith("https://"), row
    assert data["mig"]["source"].startswith("https://")


def test_every_gpu_row_has_examples_and_a_unique_name() -> None:
    rows = load_table().gpus
    assert all(row.examples for row in rows)
    names = [row.gpu for row in rows]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("device", "row"),
    [(example, row.gpu) for row in load_table().gpus for example in row.examples],
)
def test_each_example_name_resolves_to_its_own_row(device: str, row: str) -> None:
    # This is the ordering test: a more general row listed too early would catch the example.
    matched = match_row(device)
    assert matched is not None
    assert matched.gpu == row


@pytest.mark.parametrize(
    ("device", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", H100_SXM),  # the SXM5 part's NVML name
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", H100_SXM),
        ("NVIDIA H200 NVL", 835),
        ("NVIDIA GH200 480GB", H100_SXM),
        ("NVIDIA H800", H100_SXM),
        ("NVIDIA H800 PCIe", 756),
        ("NVIDIA A100-SXM4-40GB", 312),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100-PCIE-40GB", 312),
        ("NVIDIA A100 80GB PCIe", 312),
        ("NVIDIA A10", 125),
        ("NVIDIA L4", 121),
        ("NVIDIA L40", 181),
        ("NVIDIA L40S", 362),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA GeForce RTX 3090", 71),
        ("NVIDIA B200", 2250),
        ("NVIDIA B100", 1750),
        ("AMD Instinct MI300X", 1307.4),
        ("AMD Instinct MI250X", 191.5),
    ],
)
def test_dense_bf16_peaks(device: str, tflops: float) -> None:
    peak = lookup_peak(device)
    assert peak is not None
    assert peak.tflops == pytest.approx(tflops)
    assert peak.dtype == "bf16"
    assert not peak.estimated
    assert peak.source.startswith("https://")


def test_the_legacy_table_bugs_are_gone() -> None:
    # spml-reference §11.8: PCIe got the SXM peak; L40/4090/3090 carried sparse/FP16-acc figures.
    assert lookup_peak("NVIDIA H100 PCIe").tflops != H100_SXM
    assert lookup_peak("NVIDIA L40").tflops != 362
    assert lookup_peak("NVIDIA GeForce RTX 4090").tflops != 330
    assert lookup_peak("NVIDIA GeForce RTX 3090").tflops != 142


def test_matching_is_case_insensitive_and_word_bounded() -> None:
    assert lookup_peak("nvidia h100 pcie").tflops == 756
    assert match_row("NVIDIA A100-SXM4-40GB").gpu == "A100"  # not the A10 row
    assert match_row("NVIDIA GH200 480GB").gpu == "GH200"  # not the H200 row
    assert match_row("NVIDIA L40S").gpu == "L40S"  # not L40 or L4


def test_an_unknown_gpu_gives_none_and_the_reason() -> None:
    assert lookup_peak("NVIDIA Quantum Flux 9000") is None
    found = resolve_peak("NVIDIA Quantum Flux 9000")
    assert found.peak is None
    assert "not in the peak-FLOPS table" in found.reason


def test_a_dtype_without_a_published_peak_is_not_borrowed() -> None:
    found = resolve_peak("Tesla V100-SXM2-16GB", "bf16")
    assert found.peak is None
    assert "no published dense bf16 peak" in found.reason
    assert lookup_peak("Tesla V100-SXM2-16GB", "fp16").tflops == 125
    assert lookup_peak("Tesla T4", "fp16").tflops == 65


def test_other_dtypes_and_aliases() -> None:
    assert lookup_peak("NVIDIA H100 80GB HBM3", "tf32").tflops == pytest.approx(494.7)
    assert lookup_peak("NVIDIA H100 80GB HBM3", "fp8").tflops == pytest.approx(1978.9)
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "torch.bfloat16").tflops == 312
    assert normalize_dtype("float16") == "fp16"
    with pytest.raises(SpmlError, match="dtype must be one of"):
        lookup_peak("NVIDIA H100 PCIe", "int8")


def test_a10g_has_no_peak_and_no_estimate() -> None:
    assert lookup_peak("NVIDIA A10G") is None  # must not fall through to the A10's 125
    hardware = Hardware(sm_count=80, max_sm_clock_mhz=1710, compute_capability=(8, 6))
    found = resolve_peak("NVIDIA A10G", estimate=True, hardware=hardware)
    assert found.peak is None
    assert "no estimate either" in found.reason


# --- MIG ----------------------------------------------------------------------------------------


def test_mig_profile_in_the_name_scales_by_compute_slices() -> None:
    peak = lookup_peak("NVIDIA H100 80GB HBM3 MIG 3g.40gb")
    assert peak.tflops == pytest.approx(3 / 7 * H100_SXM)
    assert "3/7 compute slices" in peak.note
    assert "mig-user-guide" in peak.source


def test_mig_profile_argument_and_compute_instances() -> None:
    assert lookup_peak("NVIDIA H100 80GB HBM3", mig_profile="3g.40gb").tflops == pytest.approx(
        3 / 7 * H100_SXM)
    # A compute instance gets its own slices, not its GPU instance's.
    assert lookup_peak("NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb").tflops == pytest.approx(312 / 7)
    assert lookup_peak("NVIDIA A30 MIG 2g.12gb").tflops == pytest.approx(165 / 2)
    assert lookup_peak("NVIDIA H100 PCIe MIG 1g.10gb+me").tflops == pytest.approx(756 / 7)


def test_mig_uses_the_visible_sm_count_when_known() -> None:
    # An A100 7g.40gb instance exposes 98 of the 108 SMs.
    hardware = Hardware(sm_count=98, max_sm_clock_mhz=1410, compute_capability=(8, 0))
    peak = lookup_peak("NVIDIA A100-SXM4-40GB MIG 7g.40gb", hardware=hardware)
    assert peak.tflops == pytest.approx(312 * 98 / 108)
    assert "98/108 SMs" in peak.note


def test_mig_without_a_slice_count_or_with_too_many_slices_is_none() -> None:
    found = resolve_peak("NVIDIA L40S MIG 1g.12gb")
    assert found.peak is None
    assert "no MIG slice count" in found.reason
    assert lookup_peak("NVIDIA H100 80GB HBM3", mig_profile="8g.80gb") is None
    with pytest.raises(SpmlError, match="mig_profile must look like"):
        lookup_peak("NVIDIA H100 80GB HBM3", mig_profile="half")


def test_mig_names_are_split_and_parsed() -> None:
    base, profile = split_mig_name("NVIDIA A100-SXM4-40GB MIG 1g.5gb")
    assert base == "NVIDIA A100-SXM4-40GB"
    assert (profile.text, profile.compute_slices, profile.memory_gb) == ("1g.5gb", 1, 5)
    assert split_mig_name("NVIDIA A100-SXM4-40GB") == ("NVIDIA A100-SXM4-40GB", None)
    assert parse_mig_profile("2c.4g.40gb").compute_slices == 2
    assert parse_mig_profile("no profile") is None


# --- estimates ----------------------------------------------------------------------------------


def test_estimate_is_opt_in_and_labelled() -> None:
    hardware = Hardware(sm_count=132, max_sm_clock_mhz=1830, compute_capability=(9, 0))
    assert lookup_peak("NVIDIA Hopper Prototype", hardware=hardware) is None
    peak = lookup_peak("NVIDIA Hopper Prototype", estimate=True, hardware=hardware)
    assert peak.estimated
    assert peak.tflops == pytest.approx(132 * 1830e6 * 4096 / 1e12)  # = the H100 SXM sheet
    assert peak.note.startswith("ESTIMATE")
    assert "(estimated)" in peak.gpu_row


def test_geforce_estimates_use_the_fp32_accumulate_rate() -> None:
    hardware = Hardware(sm_count=76, max_sm_clock_mhz=2505, compute_capability=(8, 9))
    peak = estimate_peak("NVIDIA GeForce RTX 4080", "bf16", hardware).peak
    assert peak.tflops == pytest.approx(76 * 2505e6 * 512 / 1e12)  # 97.5, the 4080 sheet
    pro = estimate_peak("NVIDIA RTX 6000 Ada Generation", "bf16", hardware).peak
    assert pro.tflops == pytest.approx(2 * peak.tflops)


def test_estimate_needs_hardware_and_a_known_rate() -> None:
    found = resolve_peak("Mystery GPU", estimate=True)
    assert found.peak is None
    assert "no estimate" in found.reason
    volta = Hardware(sm_count=80, max_sm_clock_mhz=1530, compute_capability=(7, 0))
    assert resolve_peak("Tesla V100-SXM2-16GB", estimate=True, hardware=volta).peak is None
    assert estimate_peak("Mystery", "bf16", Hardware(10, 1000, (5, 0))).peak is None


def test_laptop_parts_do_not_get_desktop_peaks() -> None:
    assert lookup_peak("NVIDIA GeForce RTX 4090 Laptop GPU") is None
    hardware = Hardware(sm_count=76, max_sm_clock_mhz=2040, compute_capability=(8, 9))
    peak = lookup_peak("NVIDIA GeForce RTX 4090 Laptop GPU", estimate=True, hardware=hardware)
    assert peak.estimated
    assert peak.tflops == pytest.approx(76 * 2040e6 * 512 / 1e12)


# --- table validation ---------------------------------------------------------------------------


def minimal_table(**row: object) -> dict:
    base = {"gpu": "X1", "pattern": "x1", "tflops": {"bf16": 1}, "source": "https://x"}
    base.update(row)
    return {"mig": {"source": "https://mig"}, "gpus": [base]}


def test_table_validation_rejects_rows_without_source_bad_dtypes_and_bad_regexes() -> None:
    assert parse_table(minimal_table()).gpus[0].tflops == {"bf16": 1.0}
    with pytest.raises(SpmlError, match="must cite a source"):
        parse_table(minimal_table(source=""))
    with pytest.raises(SpmlError, match="dtypes must be among"):
        parse_table(minimal_table(tflops={"int8": 1}))
    with pytest.raises(SpmlError, match="pattern must be a regex"):
        parse_table(minimal_table(pattern="("))
    with pytest.raises(SpmlError, match="'gpus' list"):
        parse_table({"rows": []})
    with pytest.raises(SpmlError, match="'mig' section"):
        parse_table({"gpus": []})
