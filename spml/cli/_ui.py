"""The Prefect UI address of a CLI-started run, printed once when a server serves a UI."""

from __future__ import annotations

from typing import Any

from spml.cli._output import console


def server_in_use() -> bool:
    """Whether a Prefect server is configured (``PREFECT_API_URL``, from the environment or the
    profile); else the run starts Prefect's embedded one (seconds), which serves no UI."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def announcing_ui(flow: Any) -> Any:
    """``flow``, printing its run's UI address when it starts, where a server is in use."""
    if not server_in_use():
        return flow

    def print_address(_flow: Any, flow_run: Any, _state: Any) -> None:
        from prefect.utilities.urls import url_for

        address = url_for("flow-run", obj_id=flow_run.id)
        if address:
            console.print(f"Prefect UI: {address}", highlight=False, soft_wrap=True)

    return flow.with_options(on_running=[print_address])
