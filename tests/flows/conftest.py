"""One Prefect test harness (a real server subprocess on a temp SQLite DB) for all flow tests.

The server is shared by every flow test of the session, so a test reads back only what it made:
artifacts filtered by its own flow run (`run_artifact`), Prefect Variables named after an
experiment folder unique to the test (`unique_experiment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from helpers import git


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """Start the harness once (16-21 s here); yields the API URL for subprocess supervisors."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(autouse=True)
def _harness(prefect_api_url: str) -> None:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "spml")


@pytest.fixture
def run_artifact() -> Callable[[UUID, str], Any]:
    """``run_artifact(flow_run_id, key)``: the newest artifact ``key`` made by that flow run
    (never one another test's run published under the same key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    def read(flow_run_id: UUID, key: str) -> Any:
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                               flow_run_id=ArtifactFilterFlowRunId(
                                                   any_=[flow_run_id])),
                sort=ArtifactSort.CREATED_DESC, limit=1)
        assert found, f"flow run {flow_run_id} published no artifact {key!r}"
        return found[0]

    return read


@pytest.fixture
def unique_experiment(toy_experiment: Callable[..., Path], tmp_path: Path
                      ) -> Callable[..., Path]:
    """`toy_experiment`, moved (and committed) to a folder named after this test's tmp_path,
    so the experiment's name -- its Prefect Variables and branch -- is this test's alone."""

    def make(*args: Any, **kwargs: Any) -> Path:
        exp = toy_experiment(*args, **kwargs)
        moved = exp.with_name(f"exp-{tmp_path.name}")
        git(exp.parent, "mv", exp.name, moved.name)
        git(exp.parent, "commit", "-qm", "name the experiment after its test")
        return moved

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/flows/" in str(item.fspath):
            item.add_marker(pytest.mark.flows)
