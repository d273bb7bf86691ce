"""One Prefect test harness (a real server subprocess on a temp SQLite DB) for all flow tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/flows/" in str(item.fspath):
            item.add_marker(pytest.mark.flows)
