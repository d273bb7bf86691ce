"""Monitor on a real tiny model and optimizer (CPU torch). References are independent: losses
by ``loss.item()``, grad norms by ``clip_grad_norm_`` on a copy; a fake clock (`monitor._clock`)
makes step times, throughput and MFU exact."""

from __future__ import annotations

import copy
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from spml.errors import SpmlError
from spml.toolkit import monitor as monitor_module
from spml.toolkit.metrics.log import (
    STEP_TIME_KEYS,
    MetricHistory,
    find_value,
    grad_norm_of,
    loss_of,
    mfu_of,
    parse_log_line,
    throughput_of,
)
from spml.toolkit.monitor import HEADER, Monitor
from spml.toolkit.profiling.gpm import GpmWindow
from spml.toolkit.profiling.peaks import PeakFlops
from spml.toolkit.runtime.contract import (
    ENV_MAX_STEPS,
    ENV_METRICS_FILE,
    LIMIT_LINE_PATTERN,
    RECORD_KEYS,
)

STEP_S = 0.25  # every read of the fake clock advances it by this much: start(), observe()


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]

    def tick() -> float:
        now[0] += STEP_S
        return now[0]

    monkeypatch.setattr(monitor_module, "_clock", tick)
    monkeypatch.delenv(ENV_MAX_STEPS, raising=False)
    monkeypatch.delenv(ENV_METRICS_FILE, raising=False)
    return now


def make_model(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 6, generator=gen), torch.randn(8, 2, generator=gen)


def train(mon: Monitor, model: torch.nn.Module, opt: torch.optim.Optimizer, steps: range, *,
          reference: bool = False, nan_grad_at: int | None = None,
          nan_loss_at: int | None = None) -> list[dict[str, float]]:
    """Run the steps; with ``reference``, also return independently computed values."""
    refs = []
    for step in steps:
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        if step == nan_loss_at:
            loss = loss * float("nan")
        loss.backward()
        if step == nan_grad_at:
            model[0].weight.grad[0, 0] = float("nan")
        if reference:
            twin = copy.deepcopy(model)
            for mine, theirs in zip(twin.parameters(), model.parameters(), strict=True):
                mine.grad = theirs.grad.clone()
            norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm=float("inf"))
            refs.append({"step": step, "loss": loss.item(), "grad_norm": norm.item(),
                         "lr": opt.param_groups[0]["lr"]})
        opt.step()
        mon.observe(step, loss)
        opt.zero_grad()
    return refs


@pytest.fixture(autouse=True)
def _cpu_only_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run CPU models; on a GPU machine where another test already initialised
    CUDA, a Monitor without a model would add the process's CUDA memory keys to every
    record. Keep the expected records exact there too (the CUDA path has its GPU check)."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(HEADER)]


# --------------------------------------------------------------------------- JSONL records


def test_jsonl_has_every_step_with_independent_loss_grad_norm_and_lr(tmp_path: Path) -> None:
    model, opt = make_model()
    path = tmp_path / "metrics.jsonl"
    with Monitor(model, opt, log_every=4, jsonl=path, stream=None) as mon:
        refs = train(mon, model, opt, range(1, 11), reference=True)
    records = read_jsonl(path)
    assert [r["step"] for r in records] == list(range(1, 11))
    for record, ref in zip(records, refs, strict=True):
        assert set(record) <= set(RECORD_KEYS) | {"samples_per_s"}
        assert record["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert record["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6)
        assert record["nonfinite_grads"] == 0
        assert record["lr"] == ref["lr"]
        assert record["step_time_s"] == pytest.approx(STEP_S)
    # Each line is also what the watchdog's parser reads from the file.
    first = parse_log_line(path.read_text().splitlines()[0])
    assert first is not None
    assert loss_of(first) == pytest.approx(refs[0]["loss"], rel=1e-6)


def test_nan_gradient_counts_the_parameter_and_gives_a_nan_norm(tmp_path: Path) -> None:
    model, opt = make_model()
    path = tmp_path / "m.jsonl"
    with Monitor(model, opt, log_every=5, jsonl=path, stream=None) as mon:
        train(mon, model, opt, range(1, 4), nan_grad_at=2)
    records = {r["step"]: r for r in read_jsonl(path)}
    assert records[1]["nonfinite_grads"] == 0
    assert math.isfinite(records[1]["grad_norm"])
    assert records[2]["nonfinite_grads"] == 1
    assert math.isnan(records[2]["grad_norm"])
    # The NaN reached the weights via SGD: every gradient of step 3 is non-finite.
    assert records[3]["nonfinite_grads"] >= 2


def test_nan_loss_is_kept_in_json_and_text(tmp_path: Path) -> None:
    model, opt = make_model()
    path, out = tmp_path / "m.jsonl", io.StringIO()
    with Monitor(model, opt, log_every=2, jsonl=path, stream=out) as mon:
        train(mon, model, opt, range(1, 3), nan_loss_at=2)
    raw = path.read_text().splitlines()
    assert '"loss": NaN' in raw[1]
    assert math.isnan(read_jsonl(path)[1]["loss"])
    parsed = parse_log_line(raw[1])
    assert parsed is not None
    assert math.isnan(parsed["loss"])
    text = parse_log_line(metric_lines(out.getvalue())[0])
    assert text is not None
    assert math.isnan(text["loss"])
    assert math.isnan(text["grad_norm"])
    assert loss_of(text) is None  # logmetrics reports only finite losses as losses


def test_lr_is_the_value_at_each_step_scheduled_or_a_tensor(tmp_path: Path) -> None:
    model, opt = make_model()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 / (1 + epoch))
    tensor_opt = torch.optim.SGD(make_model()[0].parameters(), lr=torch.tensor(0.1))
    with (Monitor(model, opt, jsonl=tmp_path / "a", stream=None) as mon,
          Monitor(optimizer=tensor_opt, jsonl=tmp_path / "b", stream=None) as tensor_mon):
        for step in range(1, 4):
            train(mon, model, opt, range(step, step + 1))
            sched.step()
            tensor_mon.observe(step, 1.0)
            tensor_opt.param_groups[0]["lr"].mul_(0.5)  # in place, as tensor-lr schedulers do
    assert [r["lr"] for r in read_jsonl(tmp_path / "a")] == pytest.approx([0.05, 0.025, 0.05 / 3])
    assert [r["lr"] for r in read_jsonl(tmp_path / "b")] == pytest.approx([0.1, 0.05, 0.025])


# --------------------------------------------------------------------------- text lines


def test_text_lines_parse_with_logmetrics(tmp_path: Path) -> None:
    model, opt = make_model()
    out, path = io.StringIO(), tmp_path / "m.jsonl"
    with Monitor(model, opt, log_every=5, jsonl=path, stream=out, tokens_per_step=64) as mon:
        train(mon, model, opt, range(1, 11))
    records = {r["step"]: r for r in read_jsonl(path)}
    lines = metric_lines(out.getvalue())
    history = MetricHistory()
    points = history.add_lines(lines, now=0.0)
    assert [p.step for p in points] == [5, 10]
    for point in points:
        record = records[point.step]
        assert loss_of(point.values) == pytest.approx(record["loss"], rel=1e-5)
        assert grad_norm_of(point.values) == pytest.approx(record["grad_norm"], rel=1e-5)
        assert point.values["nonfinite_grads"] == 0
        assert point.values["lr"] == pytest.approx(0.05)
        assert find_value(point.values, STEP_TIME_KEYS) == pytest.approx(STEP_S)
        assert throughput_of(point.values) == pytest.approx(64 / STEP_S)
        assert record["tokens_per_s"] == pytest.approx(64 / STEP_S)


def test_header_announces_max_steps_for_l1() -> None:
    out = io.StringIO()
    mon = Monitor(max_steps=50, stream=out).start()
    header = out.getvalue().splitlines()[0]
    assert header == f"{HEADER} max_steps=50"
    match = re.search(LIMIT_LINE_PATTERN, header)
    assert match is not None
    assert match.group(1) == "50"
    mon.close()
    Monitor(stream=(silent := io.StringIO())).start().close()
    assert re.search(LIMIT_LINE_PATTERN, silent.getvalue()) is None
    late = Monitor(max_steps=3, stream=(out := io.StringIO()), log_every=100)
    assert out.getvalue() == ""
    late.observe(1, 0.5)  # not started explicitly: the first observe prints the header
    assert out.getvalue().splitlines() == [f"{HEADER} max_steps=3"]


def test_prefix_goes_before_each_line_and_keys_still_parse() -> None:
    out = io.StringIO()
    with Monitor(stream=out, log_every=1, prefix="[rank 0] ", max_steps=2) as mon:
        mon.observe(1, 0.75)
    lines = out.getvalue().splitlines()
    assert all(line.startswith("[rank 0] ") for line in lines)
    values = parse_log_line(lines[1])
    assert values is not None
    assert loss_of(values) == 0.75
    assert values["step"] == 1


def test_default_stream_is_stdout_at_write_time(capsys: pytest.CaptureFixture[str]) -> None:
    with Monitor(log_every=1, max_steps=1) as mon:
        mon.observe(1, 2.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{HEADER} max_steps=1"
    assert lines[1].startswith("step=1 loss=2 ")


# --------------------------------------------------------------------------- cadence


@pytest.mark.parametrize(("steps", "logged"), [(range(1, 13), [5, 10, 12]),
                                               (range(0, 12), [0, 5, 10, 11]),
                                               (range(3, 20, 4), [15, 19])])
def test_cadence_and_close_flushes_the_partial_window(tmp_path: Path, steps: range,
                                                      logged: list[int]) -> None:
    model, opt = make_model()
    out, path = io.StringIO(), tmp_path / "m.jsonl"
    mon = Monitor(model, opt, log_every=5, jsonl=path, stream=out)
    train(mon, model, opt, steps)
    mon.close()
    mon.close()  # idempotent
    stepped = [parse_log_line(line) for line in metric_lines(out.getvalue())]
    assert [int(v["step"]) for v in stepped if v and "step" in v] == logged
    assert [r["step"] for r in read_jsonl(path)] == list(steps)


def test_log_every_s_logs_slow_steps_early() -> None:
    out = io.StringIO()
    with Monitor(stream=out, log_every=1000, log_every_s=STEP_S * 2.5) as mon:
        for step in range(1, 7):
            mon.observe(step, 1.0)
    stepped = [parse_log_line(line) for line in metric_lines(out.getvalue())]
    assert [int(v["step"]) for v in stepped if v and "step" in v] == [3, 6]


# --------------------------------------------------------------------------- no sync per step


def test_one_host_transfer_per_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`_materialize` runs once per window, and no other tensor->host read happens at all."""
    calls: list[int] = []
    outside: list[str] = []
    inside = [False]
    original = Monitor._materialize

    def counted(self: Monitor, tensors: list[torch.Tensor]) -> list[float]:
        calls.append(len(tensors))
        inside[0] = True
        try:
            return original(self, tensors)
        finally:
            inside[0] = False

    def guard(name: str) -> Any:
        real = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not inside[0]:
                outside.append(name)
            return real(self, *args, **kwargs)
        return wrapper

    model, opt = make_model()
    monkeypatch.setattr(Monitor, "_materialize", counted)
    mon = Monitor(model, opt, log_every=5, jsonl=tmp_path / "m.jsonl", stream=io.StringIO(),
                  track_drift=True)
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, guard(name))
    per_step = []
    for step in range(1, 24):
        train(mon, model, opt, range(step, step + 1))
        per_step.append(len(calls))
    mon.close()
    assert per_step == [0] * 4 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 4
    assert len(calls) == 5  # windows ending at 5, 10, 15, 20 and the close() at 23
    assert calls[0] == 5 * 3 + 1  # loss, grad norm, non-finite count per step + the drift
    assert outside == []


# --------------------------------------------------------------------------- environment


def test_from_env_reads_max_steps_and_metrics_file(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    monkeypatch.setenv(ENV_MAX_STEPS, "7")
    monkeypatch.setenv(ENV_METRICS_FILE, str(path))
    out = io.StringIO()
    with Monitor.from_env(stream=out, log_every=2) as mon:
        assert mon.max_steps == 7
        assert mon.jsonl_path == path
        for step in range(1, mon.max_steps + 1):
            mon.observe(step, 1.0 / step)
    assert out.getvalue().splitlines()[0] == f"{HEADER} max_steps=7"
    assert [r["step"] for r in read_jsonl(path)] == list(range(1, 8))
    assert Monitor.from_env(max_steps=3, stream=None).max_steps == 3  # explicit wins
    assert Monitor.from_env(jsonl=False, stream=None).jsonl_path is None


def test_from_env_rejects_a_bad_max_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Monitor.from_env(stream=None).max_steps is None  # unset: no budget
    monkeypatch.setenv(ENV_MAX_STEPS, "lots")
    with pytest.raises(SpmlError, match="SPML_MAX_STEPS must be a non-negative integer"):
        Monitor.from_env()


# --------------------------------------------------------------------------- derived figures


def test_throughput_and_mfu_use_the_window_step_time(tmp_path: Path) -> None:
    model, opt = make_model()
    peak = PeakFlops(2e-9, "bf16", "test row", "https://example.org")  # 2000 FLOP/s
    out, path = io.StringIO(), tmp_path / "m.jsonl"
    with Monitor(model, opt, log_every=4, jsonl=path, stream=out, flops_per_step=100.0,
                 samples_per_step=8, peak=peak, n_gpus=2) as mon:
        train(mon, model, opt, range(1, 9))
    expected_mfu = 100.0 / STEP_S / (2 * 2000.0)
    for record in read_jsonl(path):
        if record["step"] % 4:
            assert "mfu" not in record
            assert "throughput" not in record
        else:
            assert record["mfu"] == pytest.approx(expected_mfu)
            assert record["samples_per_s"] == record["throughput"] == pytest.approx(8 / STEP_S)
            assert "tokens_per_s" not in record
    values = parse_log_line(metric_lines(out.getvalue())[-2])
    assert values is not None
    assert mfu_of(values) == pytest.approx(expected_mfu, rel=1e-5)
    assert throughput_of(values) == pytest.approx(8 / STEP_S, rel=1e-5)


def test_tokens_per_observe_may_be_device_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    mon = Monitor(log_every=2, jsonl=path, stream=None, tokens_per_step=1)
    mon.observe(1, torch.tensor(3.0), tokens=torch.tensor(10))
    mon.observe(2, torch.tensor(2.0), tokens=torch.tensor(30))
    mon.close()
    last = read_jsonl(path)[-1]
    # Not started before step 1, so step 1 has no step time: the rate is step 2's alone.
    assert "step_time_s" not in read_jsonl(path)[0]
    assert last["tokens_per_s"] == pytest.approx(30 / STEP_S)
    assert [r["loss"] for r in read_jsonl(path)] == [3.0, 2.0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_no_peak_on_cpu_means_no_mfu_key(tmp_path: Path) -> None:
    model, opt = make_model()
    path, out = tmp_path / "m.jsonl", io.StringIO()
    with Monitor(model, opt, log_every=2, jsonl=path, stream=out, flops_per_step=1e9) as mon:
        train(mon, model, opt, range(1, 5))
        assert mon.peak is None
        assert "no CUDA device" in mon.mfu_reason
    assert all("mfu" not in r and "mem_allocated_gb" not in r for r in read_jsonl(path))
    assert "mfu" not in out.getvalue()
    assert "mem_" not in out.getvalue()


def test_param_drift_matches_an_independent_computation(tmp_path: Path) -> None:
    model, opt = make_model()
    theta0 = [p.detach().clone() for p in model.parameters()]
    path = tmp_path / "m.jsonl"
    with Monitor(model, opt, log_every=100, jsonl=path, stream=None, track_drift=True) as mon:
        train(mon, model, opt, range(1, 6))
    moved = torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(model.parameters(), theta0,
                                                                     strict=True)])
    start = torch.cat([p0.flatten() for p0 in theta0])
    records = read_jsonl(path)
    assert "param_drift" not in records[0]
    assert records[-1]["param_drift"] == pytest.approx((moved.norm() / start.norm()).item(),
                                                       rel=1e-5)


class StubSampler:
    """Stands in for GpmSampler: the Monitor reads its completed windows."""

    def __init__(self) -> None:
        self._windows: list[GpmWindow] = []
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def test_tca_of_new_gpm_windows_goes_on_the_next_log_line(tmp_path: Path) -> None:
    sampler, path = StubSampler(), tmp_path / "m.jsonl"
    mon = Monitor(log_every=2, jsonl=path, stream=None, gpm=sampler)  # type: ignore[arg-type]
    mon.start()
    assert sampler.calls == ["start"]
    for pct in (40.0, None, 60.0):
        sampler._windows.append(GpmWindow(0.0, 1.0, {"any_tensor_util_pct": pct}))
    mon.observe(1, 1.0)
    mon.observe(2, 1.0)
    mon.observe(3, 1.0)
    mon.observe(4, 1.0)  # no new GPM window since step 2: no TCA, never a stale one
    mon.close()
    assert sampler.calls == ["start", "stop"]
    tcas = {r["step"]: r.get("tca") for r in read_jsonl(path)}
    assert tcas == {1: None, 2: pytest.approx(0.5), 3: None, 4: None}


def test_summary_uses_the_steady_state_median(tmp_path: Path) -> None:
    out = io.StringIO()
    with Monitor(stream=out, log_every=10, tokens_per_step=100) as mon:
        for step in range(1, 11):
            mon.observe(step, 1.0)
        summary = mon.summary()
    assert summary["steps"] == 10
    assert summary["median_step_time_s"] == pytest.approx(STEP_S)
    assert summary["tokens_per_s"] == pytest.approx(100 / STEP_S)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"{HEADER} summary steps=10 median_step_time_s=0.25")


def test_without_model_or_optimizer_only_loss_and_time(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with Monitor(log_every=2, jsonl=path, stream=None) as mon:
        mon.observe(1, 0.5)
        mon.observe(2, torch.tensor([0.25]))
    assert read_jsonl(path) == [{"step": 1, "loss": 0.5, "step_time_s": STEP_S},
                                {"step": 2, "loss": 0.25, "step_time_s": STEP_S}]


def test_a_training_error_propagates_after_the_window_is_flushed(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"

    def fail(mon: Monitor) -> None:
        with mon:
            mon.observe(1, 0.5)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail(Monitor(jsonl=path, stream=None))
    assert read_jsonl(path) == [{"step": 1, "loss": 0.5, "step_time_s": STEP_S}]


def test_misuse_is_refused() -> None:
    mon = Monitor(stream=None)
    with pytest.raises(SpmlError, match="loss must be a scalar"):
        mon.observe(1, torch.ones(3))
    mon.close()
    with pytest.raises(SpmlError, match="after close"):
        mon.observe(2, 1.0)
    with pytest.raises(SpmlError, match="log_every must be >= 1"):
        Monitor(log_every=0)


def test_clipped_runs_log_the_norm_clip_grad_norm_returned(tmp_path: Path) -> None:
    model, opt = make_model()
    path = tmp_path / "m.jsonl"
    returned = []
    with Monitor(model, opt, log_every=3, jsonl=path, stream=None) as mon:
        for step in range(1, 4):
            x, y = batch(step)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
            returned.append(norm.item())
            opt.step()
            mon.observe(step, loss, grad_norm=norm)
            opt.zero_grad()
    records = read_jsonl(path)
    assert [r["grad_norm"] for r in records] == pytest.approx(returned, rel=1e-6)
    assert all(n > 1e-2 for n in returned)  # the pre-clip norm, not the clipped 1e-3
    assert all("nonfinite_grads" not in r for r in records)


def test_detached_loss_logs_a_zero_grad_norm_and_zero_init_drift_is_finite(
        tmp_path: Path) -> None:
    # Review repro: a detached loss left no gradients; the records said nothing, so L1 could
    # not see "no gradients reached the parameters". Zero-initialised weights made drift inf.
    model = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "m.jsonl"
    with Monitor(model, opt, log_every=2, jsonl=path, stream=None, track_drift=True) as mon:
        loss = (model(torch.ones(4, 3)) - 1).pow(2).mean()
        loss.backward()
        opt.step()
        mon.observe(1, loss)
        opt.zero_grad()
        mon.observe(2, model(torch.ones(4, 3)).detach().mean())
    first, second = read_jsonl(path)
    assert first["grad_norm"] == pytest.approx(4.0)
    assert second["grad_norm"] == 0.0
    assert second["nonfinite_grads"] == 0
    assert 0 < second["param_drift"] < 10
