"""Per-step training metrics for L1 and the watchdog, without a device sync every step.

A training script adds a few lines (L1 drives the same calls through an entry point)::

    with Monitor.from_env(model, optimizer, tokens_per_step=B * T, flops_per_step=F) as mon:
        for step in range(1, mon.max_steps + 1):   # entering prints the header at once
            loss = model(batch).loss; loss.backward(); optimizer.step()
            mon.observe(step, loss)                 # after backward/step, before zero_grad
            optimizer.zero_grad()

What it writes (`spml.toolkit.runtime.contract`): at start, when the step budget is known, a
header ``spml-monitor max_steps=N`` (L1 must see the limited total within 30 s); every
``log_every`` steps and at `close`, one JSON object per step of the window appended to the JSONL
file (``$SPML_METRICS_FILE`` by default: L1 sees every step's loss) and ONE ``key=value`` text
line for the log step (read by `metrics.log.parse_log_line`, ``loss_of``, ``grad_norm_of``...).

No sync per step: the loss and the gradient statistics stay device tensors in a window buffer;
`Monitor._materialize` moves the whole window to the host with one ``tolist()`` per device at
the log step. NaN/Inf stay NaN/Inf: the JSON holds the tokens ``NaN``/``Infinity`` (Python's
``json`` and therefore ``spml.toolkit.metrics.log`` read them; strict JSON parsers such as jq
do not), the text line holds ``nan``/``inf``.

Keys of a record (those of `contract.RECORD_KEYS` that are known; unknown ones are omitted,
never invented): ``step``, ``loss``, ``grad_norm`` (total L2 norm, as ``clip_grad_norm_``
computes it), ``nonfinite_grads`` (parameters whose gradient norm is NaN/Inf), ``lr`` (param
group 0) and ``step_time_s`` (host time since the previous `observe`) on every record; the log
step's record adds the window figures ``tokens_per_s``/``samples_per_s``/``throughput``
(samples/s, else tokens/s), ``mfu``, ``tca``, ``mem_*_gb`` (1 GB = 1e9 bytes) and
``param_drift``. On the text line ``step_time_s`` is the window's mean step time, the figure
throughput and MFU use. Under FSDP/tensor parallelism the grad norm is the local shards' norm.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TextIO

import torch

from spml.errors import SpmlError
from spml.toolkit.profiling.gpm import TCA_METRIC, GpmSampler
from spml.toolkit.profiling.gpuinfo import detect_gpu
from spml.toolkit.profiling.mfu import SteadyState, mfu
from spml.toolkit.profiling.peaks import PeakFlops, resolve_peak
from spml.toolkit.runtime.contract import ENV_MAX_STEPS, ENV_METRICS_FILE, RECORD_KEYS

__all__ = ["HEADER", "Monitor"]

log = logging.getLogger(__name__)

HEADER = "spml-monitor"
GB = 1e9
_DRIFT_CHUNK_BYTES = 256 << 20  # bounds the transient copy the drift computation makes
_clock = time.perf_counter  # host clock of step times (a test substitutes a fake one)
_KEY_ORDER = (*RECORD_KEYS, "samples_per_s")
Number = torch.Tensor | float | int


class Monitor:
    """Collects per-step training metrics on the device and logs them every few steps.

    Args:
        model: Whose gradients (and drift) are measured; default: the optimizer's parameters.
        optimizer: Source of ``lr`` (``param_groups[0]["lr"]``) and, without a model, params.
        log_every: Steps per window: a window is logged at a step that is a multiple of it,
            when it holds this many steps, and at `close`.
        log_every_s: Also log once this many seconds passed since the last log (slow steps).
        jsonl: JSON-lines file to append to; None: ``$SPML_METRICS_FILE`` if set; False: none.
        stream: Text lines go here; ``"stdout"``: ``sys.stdout`` as it is at each write
            (redirection works); None: no text lines.
        max_steps: The run's step budget, announced in the header line.
        flops_per_step: Model FLOPs of one optimizer step (all devices), for MFU.
        tokens_per_step, samples_per_step: Per step, unless `observe` is told otherwise.
        peak: Dense peak of one device; None: looked up for the local GPU (none on CPU: no MFU).
        peak_dtype: Dtype of the peak to look up (``bf16``, ``tf32``, ...).
        n_gpus: Devices the step runs on (MFU divides by n_gpus x peak).
        gpm: Sample NVML GPM tensor activity (True, or a `GpmSampler` to use); the mean TCA
            of the GPM windows completed since the last log goes on the next log line.
        track_drift: Log ``param_drift`` = ||theta - theta0|| / ||theta0||, theta0 taken at
            `start` (so start before the first step); keeps a copy of the parameters.
        prefix: Written before every text line (keys stay unprefixed so parsers find them).
    """

    def __init__(  # noqa: PLR0913 - a keyword-only configuration API
            self, model: torch.nn.Module | None = None,
            optimizer: torch.optim.Optimizer | None = None, *, log_every: int = 10,
            log_every_s: float | None = None, jsonl: str | Path | bool | None = None,
            stream: TextIO | Literal["stdout"] | None = "stdout", max_steps: int | None = None,
            flops_per_step: float | None = None, tokens_per_step: float | None = None,
            samples_per_step: float | None = None, peak: PeakFlops | None = None,
            peak_dtype: str = "bf16", n_gpus: int = 1, gpm: bool | GpmSampler = False,
            track_drift: bool = False, prefix: str = "") -> None:
        if log_every < 1:
            raise SpmlError(f"log_every must be >= 1, got {log_every!r}.")
        if max_steps is not None and max_steps < 0:
            raise SpmlError(f"max_steps must be >= 0, got {max_steps!r}.")
        self.log_every, self.log_every_s, self.max_steps = log_every, log_every_s, max_steps
        self.flops_per_step, self.n_gpus, self.peak = flops_per_step, n_gpus, peak
        self.tokens_per_step, self.samples_per_step = tokens_per_step, samples_per_step
        self.mfu_reason = "" if flops_per_step else "no flops_per_step given"  # why no MFU
        self.jsonl_path = _jsonl_path(jsonl)
        self._model, self._optimizer, self._stream = model, optimizer, stream
        self._peak_dtype, self._prefix, self._track_drift = peak_dtype, prefix, track_drift
        self._gpm: GpmSampler | None = GpmSampler() if gpm is True else (gpm or None)
        self._params: list[torch.Tensor] = []
        self._window: list[dict[str, Any]] = []
        self._steady = SteadyState()
        self._jsonl: IO[str] | None = None
        self._theta0: list[torch.Tensor] = []
        self._theta0_norm = torch.zeros(())
        self._amounts = {"tokens": [0.0, 0.0], "samples": [0.0, 0.0]}  # sum, steps
        self._mem_device: torch.device | None = None
        self._started = self._closed = False
        self._last_t: float | None = None
        self._flush_t = 0.0
        self._gpm_seen = 0
        self._observed = 0

    @classmethod
    def from_env(cls, model: torch.nn.Module | None = None,
                 optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> Monitor:
        """A Monitor configured by L1's environment: ``SPML_MAX_STEPS`` gives ``max_steps``
        and ``SPML_METRICS_FILE`` the JSONL file (explicit keyword arguments win).

        Raises:
            SpmlError: ``SPML_MAX_STEPS`` is set but not a non-negative integer.
        """
        raw = os.environ.get(ENV_MAX_STEPS, "").strip()
        if raw and "max_steps" not in kwargs:
            if not raw.isdigit():
                raise SpmlError(f"{ENV_MAX_STEPS} must be a non-negative integer, got {raw!r}.")
            kwargs["max_steps"] = int(raw)
        return cls(model, optimizer, **kwargs)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:  # the training error matters more than a failed last log (e.g. a dead device)
            self.close()
        except Exception as close_error:
            log.warning("Monitor.close failed after %r: %s", exc, close_error)

    def start(self) -> Monitor:
        """Print the header, open the JSONL file, snapshot theta0, start GPM (once)."""
        if self._started:
            return self
        self._started = True
        if self.max_steps is not None:
            self._write_text(f"{HEADER} max_steps={self.max_steps}")
        self._params = _parameters(self._model, self._optimizer)
        self._mem_device = _memory_device(self._params)
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        if self._track_drift:
            self._theta0 = [p.detach().clone() for p in self._params]
            self._theta0_norm = torch.linalg.vector_norm(
                _per_tensor_norms(self._theta0).float()) if self._theta0 else torch.zeros(())
        if self.flops_per_step and self.peak is None:
            self.peak, self.mfu_reason = _local_peak(self._peak_dtype)
        if self._gpm is not None:
            self._gpm.start()
        self._last_t = self._flush_t = _clock()
        return self

    def observe(self, step: int, loss: Number, *, tokens: Number | None = None,
                samples: Number | None = None, grad_norm: Number | None = None) -> None:
        """Record one optimizer step; call it after backward (gradients present), before
        ``zero_grad``. Logs when the window is due. Never waits for the device, except at a
        log step (one transfer for the whole window).

        Args:
            step: The step number (a multiple of ``log_every`` closes the window).
            loss: The step's scalar loss (tensor or number); it is detached, not copied.
            tokens, samples: Processed this step (tensor or number), overriding the per-step
                defaults; a tensor is read with the window, not now.
            grad_norm: The total norm ``clip_grad_norm_`` returned, if the script clips: after
                the step the gradients are clipped, so the Monitor would measure the clipped
                norm. Given, it is logged as is (no second pass over the gradients) and
                ``nonfinite_grads`` is left out (a non-finite norm still shows as NaN/Inf).
        """
        if self._closed:
            raise SpmlError("Monitor.observe after close(): create a new Monitor.")
        if not self._started:
            self.start()
            self._last_t = None  # the first step's start is unknown: no step time for it
        now = _clock()
        # Host clock only, no sync. The CPU can run ahead of the device only as far as the
        # launch queue (and the allocator) let it, after which each observe() waits for the
        # device's progress; the log step's transfer drains the queue. So the intervals sum
        # to the device's time between log steps: their window mean is the real step time in
        # steady state, while single intervals may jitter around it.
        interval = None if self._last_t is None else now - self._last_t
        self._last_t = now
        if interval is not None and interval > 0:
            self._steady.add(interval)
        record: dict[str, Any] = {"step": int(step), "loss": _scalar(loss, "loss"),
                                  "lr": self._lr(), "step_time_s": interval,
                                  "tokens": _scalar(tokens, "tokens", self.tokens_per_step),
                                  "samples": _scalar(samples, "samples", self.samples_per_step)}
        if grad_norm is None:
            record.update(self._grad_stats())
        else:
            record["grad_norm"] = _scalar(grad_norm, "grad_norm")
        self._window.append(record)
        self._observed += 1
        if self._due(int(step), now):
            self.flush()

    def flush(self) -> None:
        """Log the buffered window now (one device->host transfer); nothing when empty."""
        window, self._window = self._window, []
        if not window:
            return
        drift = self._drift() if self._theta0 else None
        slots = [(rec, key) for rec in window for key, value in rec.items()
                 if isinstance(value, torch.Tensor)]
        tensors = [rec[key] for rec, key in slots]
        if drift is not None:
            tensors.append(drift)
        values = self._materialize(tensors)
        for (rec, key), value in zip(slots, values, strict=False):
            rec[key] = value
        self._count_amounts(window)
        records = [_record(rec) for rec in window]
        summary = self._window_figures(window, values[-1] if drift is not None else None)
        records[-1].update({k: v for k, v in summary.items() if k != "step_time_s"})
        self._flush_t = _clock() if self._last_t is None else self._last_t
        self._write_jsonl(records)
        self._write_text(_text_line({**records[-1], **summary}))

    def close(self) -> None:
        """Log the remaining window and a summary line, stop GPM, close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                self.flush()
                if self._observed:
                    self._write_text(f"{HEADER} summary " + _pairs(self.summary()))
        finally:  # release GPM and the file even when the last transfer fails
            if self._gpm is not None:
                self._gpm.stop()
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None

    def summary(self) -> dict[str, float | int]:
        """Steps observed and the steady-state median step time (5-step CV rule of
        `profiling.mfu.SteadyState`), with the throughput and MFU at that step time."""
        out: dict[str, float | int] = {"steps": self._observed}
        median = self._steady.median_step_time_s
        if median is None:
            return out
        out["median_step_time_s"] = median
        per_step = {key: total / steps if steps else None
                    for key, (total, steps) in self._amounts.items()}
        out.update(self._rates(median, per_step["tokens"], per_step["samples"]))
        return out

    # ----------------------------------------------------------------------------- internals

    def _materialize(self, tensors: list[torch.Tensor]) -> list[float]:
        """The window's only device->host transfer: one stack and ``tolist()`` per device."""
        out = [math.nan] * len(tensors)
        groups: dict[torch.device, dict[torch.dtype, list[int]]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(tensor.device, {}).setdefault(tensor.dtype, []).append(index)
        for device, by_dtype in groups.items():
            # One stack per dtype (no lossy promotion of counts to bf16), cast, one cat: a few
            # launches for the whole window, then the single transfer.
            wide = torch.float32 if device.type == "mps" else torch.float64  # mps: no fp64
            parts = [torch.stack([tensors[i].reshape(()) for i in indices]).to(wide)
                     for indices in by_dtype.values()]
            order = [i for indices in by_dtype.values() for i in indices]
            for index, value in zip(order, torch.cat(parts).tolist(), strict=True):
                out[index] = value
        return out

    def _count_amounts(self, window: list[dict[str, Any]]) -> None:
        for key, totals in self._amounts.items():
            for rec in window:
                if rec[key] is not None:
                    totals[0] += rec[key]
                    totals[1] += 1

    def _due(self, step: int, now: float) -> bool:
        if step % self.log_every == 0 or len(self._window) >= self.log_every:
            return True
        return self.log_every_s is not None and now - self._flush_t >= self.log_every_s

    def _lr(self) -> Number | None:
        if self._optimizer is None or not self._optimizer.param_groups:
            return None
        lr = self._optimizer.param_groups[0].get("lr")
        # A tensor lr is updated in place by schedulers: keep this step's value (no sync).
        return lr.detach().clone() if isinstance(lr, torch.Tensor) else lr

    def _grad_stats(self) -> dict[str, torch.Tensor]:
        grads = [p.grad for p in self._params if p.grad is not None and not p.grad.is_sparse]
        if not grads:  # trainable parameters but no gradient (a detached loss): say so, as 0
            return {"grad_norm": 0.0, "nonfinite_grads": 0} if self._params else {}
        norms = _per_tensor_norms(grads)
        nonfinite = norms.numel() - torch.isfinite(norms).sum()
        return {"grad_norm": torch.linalg.vector_norm(norms), "nonfinite_grads": nonfinite}

    def _drift(self) -> torch.Tensor:
        """||theta - theta0|| / ||theta0|| as a device tensor (read with the window)."""
        current = [p.detach() for p in self._params]
        first = self._theta0_norm.device
        moved = torch.stack([_diff_norm(now, then).to(first)
                             for now, then in _chunks(current, self._theta0)])
        start = self._theta0_norm  # all-zero start: absolute drift, not inf
        return torch.linalg.vector_norm(moved) / torch.where(start > 0, start, 1.0)

    def _window_figures(self, window: list[dict[str, Any]],
                        drift: float | None) -> dict[str, float]:
        """Window mean step time and the rates at it, TCA, memory and drift."""
        timed = [rec for rec in window if rec["step_time_s"]]
        figures: dict[str, float] = {}
        if timed:
            total = sum(rec["step_time_s"] for rec in timed)
            figures["step_time_s"] = total / len(timed)
            figures.update(self._rates(figures["step_time_s"], _window_mean(timed, "tokens"),
                                       _window_mean(timed, "samples")))
        extra = {"tca": self._new_tca(), "param_drift": drift, **_memory(self._mem_device)}
        figures.update({key: value for key, value in extra.items() if value is not None})
        return figures

    def _rates(self, step_time_s: float, tokens: float | None,
               samples: float | None) -> dict[str, float]:
        rates: dict[str, float] = {}
        if step_time_s <= 0:
            return rates
        if tokens:
            rates["tokens_per_s"] = tokens / step_time_s
        if samples:
            rates["samples_per_s"] = samples / step_time_s
        if samples or tokens:
            rates["throughput"] = (samples or tokens) / step_time_s
        if self.flops_per_step and self.peak is not None:
            rates["mfu"] = mfu(self.flops_per_step, step_time_s, self.peak, self.n_gpus)
        return rates

    def _new_tca(self) -> float | None:
        """Mean tensor activity (0-1) of the GPM windows completed since the last log."""
        if self._gpm is None:
            return None
        # GpmSampler appends windows from its thread; a list slice is safe to take meanwhile.
        windows = list(getattr(self._gpm, "_windows", ()))[self._gpm_seen:]
        self._gpm_seen += len(windows)
        values = [w.values.get(TCA_METRIC) for w in windows]
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) / 100.0 if kept else None

    def _write_text(self, line: str) -> None:
        stream = sys.stdout if self._stream == "stdout" else self._stream
        if stream is not None:
            stream.write(f"{self._prefix}{line}\n")
            stream.flush()  # stdout to a file is block-buffered: L1 reads it live

    def _write_jsonl(self, records: list[dict[str, Any]]) -> None:
        if self._jsonl is not None:
            # allow_nan: a NaN loss is written as NaN, which json.loads (and L1) read back.
            self._jsonl.write("".join(json.dumps(rec, allow_nan=True) + "\n" for rec in records))
            self._jsonl.flush()


def _jsonl_path(jsonl: str | Path | bool | None) -> Path | None:
    if jsonl is None or jsonl is True:
        jsonl = os.environ.get(ENV_METRICS_FILE, "").strip() or False
    return None if jsonl is False else Path(jsonl)


def _parameters(model: torch.nn.Module | None,
                optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if model is not None:
        params = list(model.parameters())
    elif optimizer is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    else:
        return []
    unique = {id(p): p for p in params}  # tied weights count once, as in clip_grad_norm_
    return [p for p in unique.values() if p.requires_grad]


def _memory_device(params: list[torch.Tensor]) -> torch.device | None:
    for param in params:
        if param.device.type == "cuda":
            return param.device
    if not params and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return None


def _memory(device: torch.device | None) -> dict[str, float]:
    if device is None:
        return {}
    # The caching allocator's counters live on the host: reading them does not sync.
    return {"mem_allocated_gb": torch.cuda.memory_allocated(device) / GB,
            "mem_reserved_gb": torch.cuda.memory_reserved(device) / GB,
            "mem_peak_gb": torch.cuda.max_memory_allocated(device) / GB}


def _local_peak(dtype: str) -> tuple[PeakFlops | None, str]:
    """The local GPU's dense peak, or None and why (CPU: no peak, so no MFU is invented)."""
    if not torch.cuda.is_available():
        return None, "no CUDA device: no peak FLOPS to divide by"
    detection = detect_gpu()
    if detection.gpu is None:
        return None, detection.reason
    info = detection.gpu
    lookup = resolve_peak(info.name, dtype, info.mig_profile, hardware=info.hardware)
    if lookup.peak is None:
        log.warning("MFU not logged: %s", lookup.reason)
    return lookup.peak, lookup.reason


def _scalar(value: Number | None, name: str, default: float | None = None) -> Number | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:  # metadata only, no sync
            raise SpmlError(f"{name} must be a scalar, got shape {tuple(value.shape)}.")
        return value.detach()
    return default if value is None else float(value)


def _window_mean(records: list[dict[str, Any]], key: str) -> float | None:
    values = [rec[key] for rec in records]
    return None if None in values else float(sum(values)) / len(values)


def _per_tensor_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each tensor, stacked on the first one's device (clip_grad_norm_'s way:
    one foreach launch per device and dtype instead of one kernel per tensor)."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    first = tensors[0].device
    if len(groups) == 1 and first.type in ("cuda", "cpu"):
        return torch.stack(torch._foreach_norm(tensors))  # one device/dtype: no per-tensor work
    norms: list[torch.Tensor] = []
    for (device, _), group in groups.items():
        if device.type in ("cuda", "cpu"):
            norms.extend(torch._foreach_norm(group))
        else:
            norms.extend(torch.linalg.vector_norm(t) for t in group)
    return torch.stack([norm.to(first) for norm in norms])


def _chunks(current: list[torch.Tensor], start: list[torch.Tensor]
            ) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Pairs of lists of at most `_DRIFT_CHUNK_BYTES`, one device and dtype per list, so the
    differences' transient copy stays small."""
    chunks: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    key, size = None, 0
    for now, then in zip(current, start, strict=True):
        nbytes = now.numel() * now.element_size()
        if (now.device, now.dtype) != key or size + nbytes > _DRIFT_CHUNK_BYTES:
            chunks.append(([], []))
            key, size = (now.device, now.dtype), 0
        chunks[-1][0].append(now)
        chunks[-1][1].append(then)
        size += nbytes
    return chunks


def _diff_norm(now: list[torch.Tensor], then: list[torch.Tensor]) -> torch.Tensor:
    diffs = torch._foreach_sub(now, then)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)).float())


def _record(rec: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one step: known RECORD_KEYS, in their order."""
    out = {key: rec[key] for key in _KEY_ORDER if rec.get(key) is not None}
    for key in ("step", "nonfinite_grads"):
        if key in out and math.isfinite(out[key]):
            out[key] = int(out[key])
    return out


def _pairs(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value if isinstance(value, int) else format(value, '.6g')}"
                    for key, value in values.items())


def _text_line(values: dict[str, Any]) -> str:
    return _pairs({key: values[key] for key in _KEY_ORDER if values.get(key) is not None})
