"""Steering a loop from the Prefect UI: notes and stop requests as Prefect Variables.

A deployment's user may have no shell on the worker, so besides `spml autoresearch note/stop`
the loop reads two Variables (UI: Variables page; CLI: `prefect variable set`):

* `spml-note-<experiment>`: a text, or a list of texts, for the next round's brief;
* `spml-stop-<experiment>`: any true value ends the loop after its current step.

Each is moved into the experiment's file-based controls (`spml.toolkit.loop.control`) and then
unset, so it acts once.
"""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop import control
from spml.toolkit.loop.experiment import Experiment


def variable_names(experiment: Experiment) -> tuple[str, str]:
    """The (note, stop) Variable names of an experiment."""
    slug = re.sub(r"[^a-z0-9_-]", "-", experiment.name)
    return f"spml-note-{slug}", f"spml-stop-{slug}"


def pull_ui_controls(experiment_dir: str) -> None:
    """Move notes and a stop request set as Prefect Variables into the experiment."""
    experiment = Experiment.locate(experiment_dir, PROTOCOL_FILENAME)
    note_name, stop_name = variable_names(experiment)
    note = Variable.get(note_name, default=None)
    if note:
        for text in note if isinstance(note, list) else [note]:
            control.add_note(experiment, str(text))
        Variable.unset(note_name)
        get_run_logger().info("note(s) from Prefect variable %s queued", note_name)
    if Variable.get(stop_name, default=None):
        control.request_stop(experiment, f"stop requested via Prefect variable {stop_name}")
        Variable.unset(stop_name)


@task(name="pull-ui-controls", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def pull_controls(experiment_dir: str) -> None:
    """Task form of `pull_ui_controls` (run before every round)."""
    pull_ui_controls(experiment_dir)
