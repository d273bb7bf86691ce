"""Steering a loop from the Prefect UI: notes, stop requests and overrides as Prefect Variables.

A deployment's user may have no shell on the worker, so besides `spml <kind> note/stop/override`
the loop reads these Variables (UI: Variables page; CLI: `prefect variable set`):

* `spml-note-<experiment>`: a text, or a list of texts, for the next round's brief;
* `spml-stop-<experiment>`: any true value ends the loop after its current step;
* `spml-override-<experiment>`: `{"round": N, "verdict": "commit"|"rollback"}` (or a list of
  them), applied when the next round begins (ml-iteration).

Each is moved into the experiment's file-based controls (`spml.toolkit.loop.control`,
`spml.toolkit.loop.overrides`) and then unset, so it acts once.
"""

from __future__ import annotations

import re

import httpx
from prefect import get_run_logger
from prefect.variables import Variable

from spml.errors import SpmlError
from spml.toolkit.loop import control
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.overrides import queue_override


def variable_names(experiment: Experiment, prefix: str = "spml") -> tuple[str, str, str]:
    """The (note, stop, override) Variable names of an experiment."""
    slug = re.sub(r"[^a-z0-9_-]", "-", experiment.name)
    return f"{prefix}-note-{slug}", f"{prefix}-stop-{slug}", f"{prefix}-override-{slug}"


def pull_ui_controls(experiment_dir: str, kind: str = "autoresearch") -> None:
    """Move notes, a stop request and overrides set as Prefect Variables into the experiment.
    A server that does not answer costs nothing but this look: the Variables stay set and are
    read at the next one (the CLI's file controls work without a server)."""
    try:
        _pull(experiment_dir, kind)
    except (httpx.HTTPError, OSError) as exc:  # PrefectHTTPStatusError is an httpx error
        get_run_logger().warning("Prefect Variables not read this time (the server did not "
                                 "answer: %s); notes and stop requests set in the UI wait for "
                                 "the next look", " ".join(str(exc).split())[:200])


def _pull(experiment_dir: str, kind: str) -> None:
    loop_kind = kind_named(kind)
    experiment = Experiment.locate(experiment_dir, loop_kind.protocol_filename)
    note_name, stop_name, override_name = variable_names(experiment, loop_kind.variable_prefix)
    note = Variable.get(note_name, default=None)
    if note:
        for text in note if isinstance(note, list) else [note]:
            control.add_note(experiment, str(text))
        Variable.unset(note_name)
        get_run_logger().info("note(s) from Prefect variable %s queued: %s", note_name, note)
        if warning := control.note_unread_warning(experiment, loop_kind.load_protocol):
            get_run_logger().warning("%s (the note from %s)", warning, note_name)
    if Variable.get(stop_name, default=None):
        control.request_stop(experiment, f"stop requested via Prefect variable {stop_name}")
        Variable.unset(stop_name)
    override = Variable.get(override_name, default=None)
    if override:
        _queue_overrides(experiment, override if isinstance(override, list) else [override])
        Variable.unset(override_name)


def _queue_overrides(experiment: Experiment, overrides: list[object]) -> None:
    logger = get_run_logger()
    for item in overrides:
        try:
            if not isinstance(item, dict):
                raise SpmlError("must be {\"round\": N, \"verdict\": \"commit\"|\"rollback\"}")
            queue_override(experiment, int(item.get("round", 0)), str(item.get("verdict")))
            logger.info("override from the Prefect UI queued: %s", item)
        except (SpmlError, TypeError, ValueError) as exc:
            logger.warning("override %r ignored: %s", item, exc)
