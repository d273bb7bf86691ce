"""The `validate` flow on Prefect's real test harness: L0 report, artifact, state."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect.client.orchestration import get_client

from spml.flows.validate import validate_flow
from spml.tasks.validate import L0_ARTIFACT_KEY

BAD = """import torch
from torch.utils.data import DataLoader
loader = DataLoader(dataset, batch_size=8, num_workers=0)
"""
GOOD = """import torch
from torch.utils.data import DataLoader
loader = DataLoader(dataset, batch_size=8, num_workers=4)
"""


async def _latest_artifact() -> str:
    async with get_client() as client:
        artifact = await client.read_latest_artifacts()
        found = [a for a in artifact if a.key == L0_ARTIFACT_KEY]
        return str(found[0].data)


def test_critical_finding_fails_the_flow_run_and_publishes_the_report(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    state = validate_flow([str(tmp_path)], select=["L0-06"], return_state=True)
    assert state.is_failed()
    assert "L0 REQUEST_CHANGES: 1 critical" in state.message
    markdown = asyncio.run(_latest_artifact())
    assert markdown.startswith("# L0 static checks: REQUEST_CHANGES")
    assert "L0-06" in markdown
    assert "num_workers" in markdown


def test_clean_code_completes_with_the_json_report(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(GOOD)
    state = validate_flow([str(tmp_path)], select=["L0-06"], return_state=True)
    assert state.is_completed()
    report = state.result()
    assert report["verdict"] == "APPROVE"
    assert [c["status"] for c in report["checks"]] == ["PASS"]
