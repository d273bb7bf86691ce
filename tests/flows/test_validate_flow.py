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
    (tmp_path / "pyproject.toml").write_text('[tool.spml.validate]\nprofile = "spml"\n')
    state = validate_flow([str(tmp_path)], select=["L0-06"], return_state=True)
    assert state.is_failed()
    assert "L0 REQUEST_CHANGES: 1 critical" in state.message
    assert state.message.endswith("L1 refused")
    markdown = asyncio.run(_latest_artifact())
    assert markdown.startswith("# L0 static checks: REQUEST_CHANGES")
    assert "L0-06" in markdown
    assert "num_workers" in markdown


def test_clean_code_completes_with_the_json_report(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(GOOD)
    state = validate_flow([str(tmp_path)], select=["L0-06"], return_state=True)
    assert state.is_completed()
    assert state.message.endswith("; L1 not run")  # no [tool.spml.validate.runtime] here
    result = state.result()
    assert result["static"]["verdict"] == "APPROVE"
    assert [c["status"] for c in result["static"]["checks"]] == ["PASS"]
    assert result["runtime"] is None


ENTRY = Path(__file__).parents[1] / "fixtures" / "l1" / "entry"


async def _artifact(key: str) -> str:
    async with get_client() as client:
        found = [a for a in await client.read_latest_artifacts() if a.key == key]
        return str(found[0].data)


def test_l0_then_l1_pass_and_fail_with_the_stage_named(tmp_path: Path) -> None:
    import shutil

    from spml.tasks.validate import L1_ARTIFACT_KEY

    for module in ("good", "zero_lr"):
        shutil.copy(ENTRY / f"{module}.py", tmp_path / f"{module}.py")
    passed = validate_flow([str(tmp_path)], runtime={"entry": "good:l1_entry", "max_steps": 40},
                           return_state=True)
    assert passed.is_completed(), passed.message
    assert passed.message.endswith("; L1 PASS")
    assert passed.result()["runtime"]["passed"] is True
    assert asyncio.run(_artifact(L1_ARTIFACT_KEY)).startswith("# L1 runtime validation: PASS")
    failed = validate_flow([str(tmp_path)],
                           runtime={"entry": "zero_lr:l1_entry", "max_steps": 40},
                           return_state=True)
    assert failed.is_failed()
    assert "L1 FAIL at Training: " in failed.message
    assert "parameters did not move" in failed.message
    assert asyncio.run(_artifact(L1_ARTIFACT_KEY)).startswith("# L1 runtime validation: FAIL")
