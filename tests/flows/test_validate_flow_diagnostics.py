"""The `validate` flow's L1 artifact ends with SPML's diagnostics when L1 fails."""

from __future__ import annotations

from pathlib import Path

from spml.flows.validate import validate_flow
from spml.tasks.validate import L1_ARTIFACT_KEY
from spml.toolkit.diagnostics import HEADING

FLAT = """import os
steps = int(os.environ["SPML_MAX_STEPS"])
print(f"max_steps={steps}", flush=True)
for step in range(1, steps + 1):
    print(f"step={step} loss=2.0 grad_norm=1.0", flush=True)
"""


def test_a_flat_loss_fails_l1_and_the_artifact_names_the_convergence_tree(
        tmp_path: Path, run_artifact) -> None:
    (tmp_path / "train.py").write_text(FLAT)
    state = validate_flow([str(tmp_path)], runtime={"train_command": "python train.py",
                                                    "max_steps": 20}, return_state=True)
    assert state.is_failed()
    assert "L1 FAIL at Training: loss not decreasing" in state.message
    markdown = str(run_artifact(state.state_details.flow_run_id, L1_ARTIFACT_KEY).data)
    assert markdown.startswith("# L1 runtime validation: FAIL")
    section = markdown.split(f"## {HEADING}\n\n", 1)[1]
    assert section.startswith("- [convergence] the loss is flat (loss 2 -> 2 (+0.0%)) -> likely ")
