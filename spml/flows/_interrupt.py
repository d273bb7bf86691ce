"""Ctrl-C and SIGTERM in the Prefect layer: the flow bodies' part of
`spml.toolkit.process.interrupt`, which ends the child process groups, records the
interruption and leaves within seconds with 130 / 143 and one line saying how to resume.

- `enable` (the `spml` CLI, before Prefect starts) and `guarding` (every flow body) install the
  handlers: Prefect's flow engine replaces the SIGTERM handler on entering each flow run, so
  each body installs it again. Handlers are installed only where a supervisor runs: the CLI
  and flow runs started from a deployment (a worker's cancel is a SIGTERM); a flow called
  in-process elsewhere (a test, a notebook) keeps Python's and Prefect's behaviour.
- The reporter gives the tracked flow runs, innermost first, and their running task runs a
  final state: `Cancelled` for SIGINT (a person) and for a worker's cancel (the run is
  `Cancelling`), `Crashed` for any other SIGTERM (preemption, a scheduler's limit: an
  automation may rerun it). Only if the API answers a health check within
  `HEALTH_TIMEOUT_S`, without retries: after a Ctrl-C or a job-wide SIGTERM the embedded
  server is gone too, and Prefect's own crash reports would retry for minutes.
- The finisher stops the embedded server this process started (no atexit hook runs after
  `os._exit`).
- `loop_recorder` and `watchdog_recorder` write the interruption to disk
  (`spml.toolkit.loop.interrupt`, `spml.toolkit.watchdog.interrupt`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from spml.toolkit.process import interrupt
from spml.toolkit.process.interrupt import Recorder

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 0.5  # the health check; when it fails, the API is skipped entirely
API_TIMEOUT_S = 1.0     # each request after it
SERVER_STOP_S = 0.5     # how long the embedded server gets to exit before SIGKILL


@dataclass(frozen=True)
class _ApiTarget:
    url: str
    api_key: str | None
    auth_string: str | None


@dataclass
class _Runs:
    enabled: bool = False          # the CLI asked for the handlers
    depth: int = 0                 # guarded flow bodies now running (subflows inside a loop)
    flow_runs: list[UUID] = field(default_factory=list)  # the guarded flow runs, outermost first
    api: _ApiTarget | None = None  # PREFECT_API_URL as the flow bodies saw it


_RUNS = _Runs()


@contextlib.contextmanager
def enabled(recorder: Recorder | None = None) -> Iterator[None]:
    """While the block runs (a `spml ... run` command), SIGINT and SIGTERM take over: here and
    in every flow body. ``recorder`` records an interruption that comes before a flow body
    guards itself. The previous handlers come back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    _RUNS.enabled = True
    _RUNS.flow_runs.clear()
    interrupt.STATE.recorders[:] = [recorder] if recorder is not None else []
    _hook()
    interrupt.install()
    try:
        yield
    finally:
        _RUNS.enabled = False
        interrupt.uninstall(previous)


@contextlib.contextmanager
def guarding(recorder: Recorder | None = None) -> Iterator[None]:
    """Inside a flow body: install the handlers again (the flow engine replaced SIGTERM's),
    track the current flow run for its final state, and make ``recorder`` the one that writes
    the interruption to disk. A no-op outside the main thread, and unless the CLI enabled the
    handlers, the flow run comes from a deployment, or an enclosing flow body is guarded."""
    if threading.current_thread() is not threading.main_thread() or not (
            _RUNS.enabled or _RUNS.depth or _from_deployment()):  # a subflow: not a deployment's
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    run_id = _current_flow_run_id()
    pushed = [(_RUNS.flow_runs, run_id), (interrupt.STATE.recorders, recorder)]
    for stack, item in pushed:
        if item is not None:
            stack.append(item)
    _RUNS.api = _configured_api() or _RUNS.api
    _hook()
    interrupt.install()
    _RUNS.depth += 1
    try:
        yield
    except BaseException as exc:
        signum = _signal_of(exc)
        if signum is not None:  # a signal that arrived while Prefect's handler was installed
            interrupt.take_over(signum)
        raise
    finally:
        _RUNS.depth -= 1
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for stack, item in pushed:
            if item is not None and stack and stack[-1] is item:
                stack.pop()


def _hook() -> None:
    for hooks, hook in ((interrupt.STATE.reporters, _report_runs),
                        (interrupt.STATE.finishers, _stop_embedded_server)):
        if hook not in hooks:
            hooks.append(hook)


# --- the Prefect API ------------------------------------------------------------------------


def _configured_api() -> _ApiTarget | None:
    """PREFECT_API_URL and its credentials, as this thread's settings say (None: not set)."""
    if "prefect.flow_engine" not in sys.modules:  # no flow ran (maybe Prefect is importing)
        return None
    try:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        url = settings.api.url
        key = settings.api.key.get_secret_value() if settings.api.key else None
        auth = settings.api.auth_string.get_secret_value() if settings.api.auth_string else None
    except Exception:  # noqa: BLE001 - no settings, no API to tell
        return None
    return _ApiTarget(url, key, auth) if url else None


def _embedded_api() -> _ApiTarget | None:
    """The embedded server this process started, while it runs (no PREFECT_API_URL)."""
    server = _embedded_server()
    return _ApiTarget(server.api_url, None, None) if server is not None else None


def _embedded_server() -> Any:
    """The embedded (ephemeral) server this process started and that still runs, if any."""
    module = sys.modules.get("prefect.server.api.server")
    server_class = getattr(module, "SubprocessASGIServer", None)  # None: still importing
    if server_class is None:
        return None
    server = server_class()
    process = getattr(server, "server_process", None)
    if not getattr(server, "running", False) or process is None or process.poll() is not None:
        return None
    return server


def _report_runs(signum: int) -> None:
    """Give the tracked flow runs (innermost first) and their running task runs a final state;
    skipped at once when the API does not answer."""
    run_ids = list(_RUNS.flow_runs)
    try:
        api = _RUNS.api or _embedded_api()
        if api is not None and run_ids:
            _set_final_states(signum, run_ids, api)
    except Exception as exc:  # noqa: BLE001 - the API is best effort; the disk record is not
        log.debug("could not report the interruption to the Prefect API: %s", exc)


def _set_final_states(signum: int, run_ids: list[UUID], api: _ApiTarget) -> None:
    import httpx
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    def connect(timeout_s: float) -> SyncPrefectClient:
        client = SyncPrefectClient(api.url, api_key=api.api_key, auth_string=api.auth_string,
                                   httpx_settings={"timeout": httpx.Timeout(timeout_s)})
        _no_connect_retries(client, api.url)
        return client

    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
        with connect(HEALTH_TIMEOUT_S) as probe:  # a server shutting down may accept, not answer
            if probe.api_healthcheck() is not None:
                return
        with connect(API_TIMEOUT_S) as client:
            for run_id in reversed(run_ids):
                _finish_run(client, run_id, signum)


def _no_connect_retries(client: Any, url: str) -> None:
    """Undo the 3 connection retries (0.5 s apart) that Prefect sets on its client's connection
    pool, the same guarded way it sets them: a refused connection fails at once."""
    import httpx

    transport_for_url = getattr(getattr(client, "_client", None), "_transport_for_url", None)
    if callable(transport_for_url):
        pool = getattr(transport_for_url(httpx.URL(url)), "_pool", None)
        if hasattr(pool, "_retries"):
            pool._retries = 0


def _finish_run(client: Any, run_id: UUID, signum: int) -> None:
    """Cancelled for SIGINT (a person) and for a worker's cancel (the run is `Cancelling`),
    Crashed for any other SIGTERM (preemption, a scheduler's limit: an automation may rerun)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    run = client.read_flow_run(run_id)
    if run.state is not None and run.state.is_final():
        return
    cancel = signum == signal.SIGINT or (run.state is not None and run.state.is_cancelling())
    final = Cancelled if cancel else Crashed
    message = f"interrupted by {signal.Signals(signum).name}"
    running = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(
            type=TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))))
    for task_run in running:
        client.set_task_run_state(task_run.id, final(message=message), force=True)
    client.set_flow_run_state(run_id, final(message=message), force=True)


def _stop_embedded_server() -> None:
    """No atexit hook runs after `os._exit`: stop the embedded server here (it may already be
    going, after a Ctrl-C that reached its process group too)."""
    try:
        server = _embedded_server()
        process = server.server_process if server is not None else None
    except Exception:  # noqa: BLE001
        return
    if process is None:
        return
    with contextlib.suppress(OSError):
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_S)
        except Exception:  # noqa: BLE001 - TimeoutExpired: it must not outlive us
            process.kill()


# --- context --------------------------------------------------------------------------------


def _current_flow_run_id() -> UUID | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.id if context is not None and context.flow_run is not None else None


def _from_deployment() -> bool:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context is not None and context.flow_run is not None
                and context.flow_run.deployment_id is not None)


def _signal_of(exc: BaseException) -> int | None:
    """The signal behind an exception that unwound a flow body, if it was one."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, TerminationSignal):
        return exc.signal
    return None


# --- recorders ------------------------------------------------------------------------------


def loop_recorder(experiment_dir: str, kind: str, max_rounds: int | None = None,
                  allow_dirty: bool = False) -> Recorder:
    """Records an interrupted loop of ``kind`` (see `spml.toolkit.loop.interrupt`); the
    experiment is located now, so the handler itself runs no git."""
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.loop.interrupt import record_interrupted
    from spml.toolkit.loop.kind import kind_named

    def locate() -> Experiment:
        return Experiment.locate(experiment_dir, kind_named(kind).protocol_filename)

    try:
        located = locate()
    except Exception:  # noqa: BLE001 - a bad directory fails the run itself, with its message
        located = None
    flags = (*(("--max-rounds", str(max_rounds)) if max_rounds is not None else ()),
             *(("--allow-dirty",) if allow_dirty else ()))

    def record(name: str) -> str:
        return record_interrupted(located or locate(), flags).describe(name)

    return record


def watchdog_recorder(experiment_dir: str, overrides: dict[str, Any] | None,
                      log_file: str | None = None) -> Recorder:
    """Records an interrupted watchdog (see `spml.toolkit.watchdog.interrupt`)."""

    def record(name: str) -> str:
        from pathlib import Path

        from spml.toolkit.watchdog.interrupt import record_interrupted, resume_command

        exp = Path(experiment_dir).resolve()
        return record_interrupted(exp, exp / log_file if log_file else None,
                                  resume_command(exp, overrides), name)

    return record
