"""Dense peak FLOPS of a GPU, looked up in the cited table `peak_flops.yaml`; MIG-aware.

The legacy toolkit matched the first substring in dict order, so an "H100 PCIe" got the SXM's
989 TFLOPS, H200/GH200 raised an error and L40/RTX 4090/RTX 3090 carried sparsity or
FP16-accumulate figures (spml-reference §11.8). Here the table is data with a source on every
row, rows are regexes tried most specific first, and a GPU that is not in the table gives
``None`` plus a reason, never a default. Only when the caller asks (``estimate=True``) and the
local device's SM count, clock and compute capability are known, an estimate
SMs x clock x per-SM rate stands in, flagged ``estimated=True`` with the arithmetic in its note
(toolkit-and-watchdog-notes §1.8).

MIG: a device named "... MIG 3g.40gb" (or an explicit ``mig_profile``) gets the full GPU's peak
scaled by the visible SMs over the full GPU's SMs when the SM count is known, else by the
profile's compute slices over the GPU's slices (3/7 on an H100), as the MIG user guide's
"Fraction of SMs" column gives it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import yaml

from spml.errors import SpmlError

TABLE_FILE = "peak_flops.yaml"
DTYPES = ("bf16", "fp16", "tf32", "fp32", "fp8")
_DTYPE_ALIASES = {
    "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
    "tensorfloat32": "tf32", "float8": "fp8",
}
# "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "MIG 1c.3g.20gb", "MIG 1g.10gb+me" (nvidia-smi -L names).
_MIG_PROFILE = re.compile(r"(?:(?P<ci>\d+)c\.)?(?P<gi>\d+)g\.(?P<mem>\d+)gb(?:\+me)?", re.I)
_MIG_SUFFIX = re.compile(r"\s+MIG\s+(?P<profile>\S+)\s*$", re.I)


@dataclass(frozen=True)
class PeakFlops:
    """A peak throughput to divide by, and where it came from.

    Attributes:
        tflops: Dense peak of one device for ``dtype``, in TFLOPS (MIG scaling applied).
        dtype: The dtype the peak is for (``bf16``, ``fp16``, ``tf32``, ``fp32``, ``fp8``).
        gpu_row: The table row that matched (``"H100 PCIe"``), or what was estimated.
        source: The row's citation (a URL); for MIG, the MIG user guide is appended.
        estimated: True when the figure is an SM x clock estimate, not a datasheet number.
        note: The row's note, or how the figure was scaled or estimated.
    """

    tflops: float
    dtype: str
    gpu_row: str
    source: str
    estimated: bool = False
    note: str = ""


@dataclass(frozen=True)
class Hardware:
    """What the estimate and the MIG scaling need to know about a (local) device."""

    sm_count: int | None = None
    max_sm_clock_mhz: float | None = None
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class PeakLookup:
    """A peak, or ``None`` and the reason there is none (shown as "N/A: <reason>")."""

    peak: PeakFlops | None
    reason: str = ""


@dataclass(frozen=True)
class MigProfile:
    """A MIG device profile: ``Mc.Ng.XXgb`` (compute slices M, default N)."""

    text: str
    compute_slices: int
    memory_gb: int


@dataclass(frozen=True)
class GpuRow:
    """One row of the ``gpus`` table (see the header of peak_flops.yaml)."""

    gpu: str
    pattern: re.Pattern[str]
    tflops: dict[str, float]
    source: str
    note: str = ""
    sms: int | None = None
    mig_slices: int | None = None
    estimate: bool = True
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class RateRow:
    """Dense tensor FLOP per clock per SM of an architecture (``estimate_rates``)."""

    arch: str
    compute_capabilities: tuple[tuple[int, int], ...]
    rates: dict[str, int]
    source: str
    pattern: re.Pattern[str] | None = None
    note: str = ""


@dataclass(frozen=True)
class PeakTable:
    """The parsed peak_flops.yaml."""

    gpus: tuple[GpuRow, ...]
    rates: tuple[RateRow, ...]
    mig_source: str


@functools.cache
def load_table() -> PeakTable:
    """The packaged table, parsed and validated once per process."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return parse_table(yaml.safe_load(text))


def parse_table(data: Any) -> PeakTable:
    """Validate and parse the YAML document of a peak table.

    Raises:
        SpmlError: a row lacks its source, has an unknown dtype or a pattern that is not a regex.
    """
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise SpmlError(f"the peak table must be a mapping with a 'gpus' list, got {data!r:.80}")
    mig_source = str((data.get("mig") or {}).get("source", ""))
    if not mig_source:
        raise SpmlError("the peak table's 'mig' section must cite a source, got none")
    gpus = tuple(_gpu_row(row, i) for i, row in enumerate(data["gpus"]))
    rates = tuple(_rate_row(row, i) for i, row in enumerate(data.get("estimate_rates") or []))
    return PeakTable(gpus=gpus, rates=rates, mig_source=mig_source)


def _gpu_row(row: dict[str, Any], index: int) -> GpuRow:
    where = f"peak_flops.yaml gpus[{index}] ({row.get('gpu', '?')})"
    return GpuRow(
        gpu=str(row["gpu"]),
        pattern=_compile(row.get("pattern"), where),
        tflops=_dtype_map(row.get("tflops") or {}, where),
        source=_source(row, where),
        note=str(row.get("note", "")).strip(),
        sms=row.get("sms"),
        mig_slices=row.get("mig_slices"),
        estimate=bool(row.get("estimate", True)),
        examples=tuple(row.get("examples") or ()),
    )


def _rate_row(row: dict[str, Any], index: int) -> RateRow:
    where = f"peak_flops.yaml estimate_rates[{index}] ({row.get('arch', '?')})"
    ccs = tuple(_parse_cc(str(cc), where) for cc in row.get("compute_capability") or ())
    pattern = _compile(row["pattern"], where) if row.get("pattern") else None
    return RateRow(arch=str(row.get("arch", "")), compute_capabilities=ccs,
                   rates={k: int(v) for k, v in _dtype_map(row.get("rates") or {}, where).items()},
                   source=_source(row, where), pattern=pattern,
                   note=str(row.get("note", "")).strip())


def _source(row: dict[str, Any], where: str) -> str:
    source = str(row.get("source") or "").strip()
    if not source:
        raise SpmlError(f"every peak-table row must cite a source, got none ({where}).")
    return source


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    try:
        return re.compile(str(pattern), re.IGNORECASE)
    except re.error as exc:
        raise SpmlError(f"pattern must be a regex, got {pattern!r} ({where}): {exc}") from exc


def _dtype_map(values: dict[str, Any], where: str) -> dict[str, float]:
    unknown = sorted(set(values) - set(DTYPES))
    if unknown:
        raise SpmlError(f"dtypes must be among {DTYPES}, got {unknown} ({where}).")
    return {k: float(v) for k, v in values.items()}


def _parse_cc(text: str, where: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise SpmlError(f"compute_capability must look like '9.0', got {text!r} ({where}).")
    return int(major), int(minor)


def normalize_dtype(dtype: str) -> str:
    """``bf16``/``bfloat16`` -> ``bf16`` etc.

    Raises:
        SpmlError: the dtype has no column in the table.
    """
    key = dtype.strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise SpmlError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    return key


def parse_mig_profile(text: str) -> MigProfile | None:
    """The MIG profile in a device name or profile string (``3g.40gb``), or None."""
    found = _MIG_PROFILE.search(text)
    if found is None:
        return None
    slices = int(found["ci"] or found["gi"])
    return MigProfile(text=found.group(0), compute_slices=slices, memory_gb=int(found["mem"]))


def split_mig_name(name: str) -> tuple[str, MigProfile | None]:
    """``"NVIDIA H100 80GB HBM3 MIG 3g.40gb"`` -> ``("NVIDIA H100 80GB HBM3", 3g.40gb)``."""
    suffix = _MIG_SUFFIX.search(name)
    if suffix is None:
        return name.strip(), None
    return name[: suffix.start()].strip(), parse_mig_profile(suffix["profile"])


def match_row(name: str, table: PeakTable | None = None) -> GpuRow | None:
    """The first row (most specific first) whose pattern occurs in ``name``, or None."""
    base, _ = split_mig_name(name)
    for row in (table or load_table()).gpus:
        if row.pattern.search(base):
            return row
    return None


def lookup_peak(name: str, dtype: str = "bf16", mig_profile: str | None = None, *,
                estimate: bool = False, hardware: Hardware | None = None) -> PeakFlops | None:
    """The dense peak of GPU ``name`` for ``dtype``, or None; `resolve_peak` also says why."""
    return resolve_peak(name, dtype, mig_profile, estimate=estimate, hardware=hardware).peak


def resolve_peak(name: str, dtype: str = "bf16", mig_profile: str | None = None, *,
                 estimate: bool = False, hardware: Hardware | None = None) -> PeakLookup:
    """Look up (or, on request, estimate) the dense peak of one device.

    Args:
        name: Device name as NVML/torch report it; a " MIG <profile>" suffix is honoured.
        dtype: Compute dtype of the matmuls (``bf16``, ``fp16``, ``tf32``, ``fp32``, ``fp8``).
        mig_profile: MIG profile (``"3g.40gb"``) when the name does not carry it.
        estimate: Allow an SM x clock estimate for a GPU or dtype the table lacks.
        hardware: SM count, max SM clock and compute capability of THIS device (from
            `gpuinfo.detect_gpu`); only pass it when ``name`` is the local device.

    Raises:
        SpmlError: unknown dtype, or a ``mig_profile`` that is not of the form ``Ng.XXgb``.
    """
    dtype = normalize_dtype(dtype)
    base, mig = split_mig_name(name)
    if mig_profile:
        mig = parse_mig_profile(mig_profile)
        if mig is None:
            raise SpmlError(f"mig_profile must look like '3g.40gb', got {mig_profile!r}.")
    row = match_row(base)
    if row is not None and dtype in row.tflops:
        peak = PeakFlops(row.tflops[dtype], dtype, row.gpu, row.source, note=row.note)
        return _scale_for_mig(peak, row, mig, hardware) if mig else PeakLookup(peak)
    reason = _missing_reason(name, row, dtype)
    if not estimate:
        return PeakLookup(None, reason)
    if row is not None and not row.estimate:
        return PeakLookup(None, f"{reason}; no estimate either: {row.note}")
    guess = estimate_peak(base, dtype, hardware)
    return guess if guess.peak else PeakLookup(None, f"{reason}; no estimate: {guess.reason}")


def _missing_reason(name: str, row: GpuRow | None, dtype: str) -> str:
    if row is None:
        return f"GPU {name!r} is not in the peak-FLOPS table ({TABLE_FILE})"
    detail = f" ({row.note})" if row.note else ""
    return f"{row.gpu} has no published dense {dtype} peak{detail}"


def _scale_for_mig(peak: PeakFlops, row: GpuRow, mig: MigProfile,
                   hardware: Hardware | None) -> PeakLookup:
    """Scale a full-GPU peak to a MIG instance: by SMs when known, else by compute slices."""
    source = f"{peak.source}; MIG: {load_table().mig_source}"
    if hardware is not None and hardware.sm_count and row.sms:
        # The SM count of the instance is exact: an A100 7g.40gb has 98 of 108 SMs, not 7/7.
        fraction = min(1.0, hardware.sm_count / row.sms)
        how = f"{hardware.sm_count}/{row.sms} SMs"
    elif row.mig_slices:
        if mig.compute_slices > row.mig_slices:
            return PeakLookup(None, f"MIG profile {mig.text} has more compute slices than "
                                    f"{row.gpu} ({row.mig_slices})")
        fraction = mig.compute_slices / row.mig_slices
        how = f"{mig.compute_slices}/{row.mig_slices} compute slices"
    else:
        return PeakLookup(None, f"{row.gpu} has no MIG slice count in {TABLE_FILE}, so the peak "
                                f"of MIG {mig.text} is unknown")
    note = f"MIG {mig.text}: {how} x {peak.tflops:g} TFLOPS of the full GPU"
    return PeakLookup(replace(peak, tflops=peak.tflops * fraction, source=source, note=note))


def estimate_peak(name: str, dtype: str, hardware: Hardware | None) -> PeakLookup:
    """SMs x max SM clock x dense per-SM rate of the architecture, flagged as an estimate.

    The maximum SM clock NVML reports can exceed the clock a datasheet uses (H100 SXM: 1980 vs
    1830 MHz), so the estimate leans high; it is never returned as a datasheet figure.
    """
    dtype = normalize_dtype(dtype)
    if hardware is None or not (hardware.sm_count and hardware.max_sm_clock_mhz
                                and hardware.compute_capability):
        return PeakLookup(None, "an estimate needs the SM count, max SM clock and compute "
                                "capability of the device, known only for a detected local GPU")
    cc = hardware.compute_capability
    rate_row = next((r for r in load_table().rates if cc in r.compute_capabilities
                     and (r.pattern is None or r.pattern.search(name))), None)
    if rate_row is None or dtype not in rate_row.rates:
        return PeakLookup(None, f"no dense {dtype} per-SM rate known for compute capability "
                                f"{cc[0]}.{cc[1]}")
    rate = rate_row.rates[dtype]
    tflops = hardware.sm_count * hardware.max_sm_clock_mhz * 1e6 * rate / 1e12
    note = (f"ESTIMATE, not a datasheet figure: {hardware.sm_count} SMs x "
            f"{hardware.max_sm_clock_mhz:g} MHz (max SM clock) x {rate} dense {dtype} "
            f"FLOP/clk/SM ({rate_row.arch}); an upper bound")
    return PeakLookup(PeakFlops(tflops, dtype, f"{name} (estimated)", rate_row.source,
                                estimated=True, note=note))
