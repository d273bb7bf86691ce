"""The root `prefect.yaml` (style guide H9), checked without a Prefect server.

Every deployment's entrypoint must import to a Prefect `Flow` of the declared name, pass only
parameters that the flow accepts, and say what it does. The nightly sweep is deployed with an
inactive cron schedule, so deploying never starts research runs by surprise.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
from prefect.flows import load_flow_from_entrypoint

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"
# Full deployment name (`<flow name>/<deployment name>`) -> entrypoint.
EXPECTED = {
    "autoresearch/default": "spml.flows.autoresearch.autoresearch_flow",
    "autoresearch/nightly": "spml.flows.autoresearch.autoresearch_flow",
    "watchdog/default": "spml.flows.watchdog.watchdog_flow",
    "validate/default": "spml.flows.validate.validate_flow",
    "ml-iteration/default": "spml.flows.iteration.iteration_flow",
    "brainstorm/default": "spml.flows.design.brainstorm_flow",
    "plan/default": "spml.flows.plan.plan_flow",
    "develop/default": "spml.flows.develop.develop_flow",
    "handoff/default": "spml.flows.handoff.handoff_flow",
    "verification/default": "spml.flows.verification.verification_flow",
    "experiment/default": "spml.flows.experiment.experiment_flow",
}
FLOW_NAMES = {"autoresearch_flow": "autoresearch", "watchdog_flow": "watchdog",
              "validate_flow": "validate", "iteration_flow": "ml-iteration",
              "brainstorm_flow": "brainstorm", "plan_flow": "plan", "develop_flow": "develop",
              "handoff_flow": "handoff", "verification_flow": "verification",
              "experiment_flow": "experiment"}


def _load() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


CONFIG = _load()
DEPLOYMENTS = {f"{FLOW_NAMES[d['entrypoint'].rsplit('.', 1)[1]]}/{d['name']}": d
               for d in CONFIG["deployments"]}


def test_top_level_sections() -> None:
    assert CONFIG["name"] == "spml"
    assert CONFIG["prefect-version"] == "3.9.1"
    assert CONFIG["build"] is None
    assert CONFIG["push"] is None
    steps = [next(iter(step)) for step in CONFIG["pull"]]
    assert steps == ["prefect.deployments.steps.set_working_directory"]
    # No absolute path: resolved on the worker, at run time (deployments/README.md).
    assert CONFIG["pull"][0][steps[0]]["directory"] == "{{ $SPML_PROJECT_DIR }}"


def test_prefect_accepts_the_file() -> None:
    # The pydantic model `prefect deploy` validates prefect.yaml with (Prefect-internal module).
    model = PrefectYamlModel.model_validate(CONFIG)
    assert len(model.deployments) == len(EXPECTED)


def test_deployment_names() -> None:
    assert {k: d["entrypoint"] for k, d in DEPLOYMENTS.items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entrypoint_is_a_flow_taking_the_parameters(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    assert ":" not in deployment["entrypoint"], "entrypoints are module paths (H9)"
    flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
    assert isinstance(flow, Flow)
    assert f"{flow.name}/{deployment['name']}" == name
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment["parameters"]) <= accepted
    required = {p.name for p in inspect.signature(flow.fn).parameters.values()
                if p.default is inspect.Parameter.empty}
    assert required <= set(deployment["parameters"]), "explicit parameters (H9)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deployment_is_described_and_configured(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    assert deployment["description"].strip()
    assert deployment["concurrency_limit"] == 1
    assert "spml" in deployment["tags"]
    pool = deployment["work_pool"]
    assert pool["name"] == "spml-process"
    assert pool["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "spml"


def test_default_has_no_schedule() -> None:
    assert not DEPLOYMENTS["autoresearch/default"].get("schedules")
    assert not DEPLOYMENTS["watchdog/default"].get("schedules")
    assert not DEPLOYMENTS["validate/default"].get("schedules")


def test_nightly_schedule_is_an_inactive_cron() -> None:
    (schedule,) = DEPLOYMENTS["autoresearch/nightly"]["schedules"]
    RawScheduleConfig.model_validate(schedule)
    assert schedule["cron"] == "0 2 * * *"
    assert schedule["timezone"] == "UTC"
    assert schedule["active"] is False
    assert schedule["slug"] == "nightly-sweep"
