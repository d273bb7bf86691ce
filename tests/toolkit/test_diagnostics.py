"""SPML's diagnostics trees: each branch on synthetic evidence, and nothing without evidence."""

from __future__ import annotations

import json
import math

import pytest

from spml.toolkit.diagnostics import Evidence, diagnose

DOWN = [1.0 / (1 + 0.1 * i) for i in range(40)]  # a healthy, falling loss
NORMAL_GRADS = [1.0 + 0.01 * (i % 3) for i in range(40)]


def causes(ev: Evidence) -> list[tuple[str, str]]:
    return [(d.tree, d.cause) for d in diagnose(ev)]


def test_no_evidence_no_diagnosis_and_a_healthy_run_is_quiet():
    assert diagnose(Evidence()) == []
    assert diagnose(Evidence(losses=DOWN, grad_norms=NORMAL_GRADS)) == []


@pytest.mark.parametrize(("losses", "grads", "cause"), [
    ([1.0, 0.9, math.nan, 0.8], NORMAL_GRADS[:4], "numeric instability"),
    (DOWN, [1e-9] * 40, "vanishing gradients"),
    (DOWN, [*NORMAL_GRADS[:39], 5e3], "exploding gradients"),
    ([1.0, 3.0] * 20, NORMAL_GRADS, "learning rate too high"),
    ([1.0 + 0.001 * (i % 2) for i in range(40)], NORMAL_GRADS,
     "learning rate too low or the wrong loss"),
    ([1.0 - 0.04 * i for i in range(20)] + [0.2] * 20, NORMAL_GRADS, "underfitting"),
])
def test_each_convergence_branch(losses, grads, cause):
    found = diagnose(Evidence(losses=losses, grad_norms=grads))
    assert [d.cause for d in found] == [cause]
    assert found[0].tree == "convergence"
    assert found[0].evidence


def test_a_flat_loss_without_gradients_says_what_it_cannot_rule_out():
    [found] = diagnose(Evidence(losses=[2.0] * 10))
    assert "no gradient norms" in found.cause


@pytest.mark.parametrize(("mfu", "wait", "cause"), [
    (0.08, 0.45, "I/O bottleneck (the step waits for data)"),
    (0.08, None, "I/O bottleneck or the wrong backend"),
    (0.30, None, "memory-bound kernels or poor overlap"),
    (0.55, None, "possibly inherent (a memory-bound architecture)"),
])
def test_each_mfu_band(mfu, wait, cause):
    assert causes(Evidence(mfu=mfu, data_wait_share=wait)) == [("efficiency", cause)]


def test_a_dominating_layer_is_named():
    [found] = diagnose(Evidence(layer_shares={"attn.0": 0.7, "mlp.0": 0.2}))
    assert found.first_action == "profile attn.0 and find its inefficient ops"
    assert diagnose(Evidence(layer_shares={"attn.0": 0.3, "mlp.0": 0.3})) == []


@pytest.mark.parametrize(("field", "value", "cause"), [
    ("attention_entropy", 0.05, "attention collapse"),
    ("moe_balance", 0.3, "expert collapse"),
    ("residual_write_ratio", 1.7, "layer outputs swamp the residual stream"),
    ("embedding_norm_max", 250.0, "embedding learning rate too high"),
])
def test_each_architecture_branch(field, value, cause):
    assert causes(Evidence(**{field: value})) == [("architecture", cause)]
    healthy = {"attention_entropy": 0.8, "moe_balance": 0.9, "residual_write_ratio": 0.3,
               "embedding_norm_max": 12.0}[field]
    assert diagnose(Evidence(**{field: healthy})) == []


def test_trees_combine_in_order_and_read_as_one_line():
    found = diagnose(Evidence(losses=[2.0] * 10, mfu=0.1, moe_balance=0.2))
    assert [d.tree for d in found] == ["convergence", "efficiency", "architecture"]
    assert found[1].line().startswith("[efficiency] MFU < 20% (MFU 10%) -> likely ")


def test_evidence_from_l1s_metrics_file(tmp_path):
    from spml.toolkit.diagnostics import evidence_from_metrics_file
    from spml.toolkit.pipeline.levels import diagnostics_text

    lines = [json.dumps({"step": i, "loss": 2.0, "grad_norm": 1e-9}) for i in range(8)]
    (tmp_path / "metrics.jsonl").write_text("\n".join([*lines, "not json", "[1]"]) + "\n")
    ev = evidence_from_metrics_file(tmp_path / "metrics.jsonl")
    assert len(ev.losses) == 8
    assert ev.grad_norms[0] == 1e-9
    text = diagnostics_text(tmp_path)
    assert text.startswith("Diagnostics (SPML's trees):")
    assert "vanishing gradients" in text
    assert diagnostics_text(tmp_path / "missing") == ""
